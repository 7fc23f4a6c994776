"""Checkpoints: a plain state_dict plus a JSON-able config and metrics.

Written atomically (a temporary file in the same folder, fsync, rename), so an
interrupted save never leaves a half-written file where a good one was; read
with ``torch.load(weights_only=True)``; carry a SHA-256 of their tensors, so a
damaged or edited file is refused with one clear message.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "metalstm-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, damaged, or of another configuration."""


def _tensors(obj, prefix=""):
    """All tensors inside nested dicts/lists, in a fixed order, with their paths."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def checksum(state: dict, meta: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, and the JSON metadata."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name, t in _tensors(state):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict, config: dict, metrics: dict | None = None) -> Path:
    """Atomically write {state, config, metrics} to `path` with a checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": config, "metrics": metrics or {}}
    payload = {"meta_json": json.dumps(meta, sort_keys=True), "state": state,
               "sha256": checksum(state, meta)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[dict, dict, dict]:
    """Read a checkpoint; return (state, config, metrics). Raises CheckpointError with one clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        meta = json.loads(payload["meta_json"])
        state, stored = payload["state"], payload["sha256"]
    except Exception as exc:  # torch/zip/json errors all mean the same thing to a person
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:120]  # torch's own advice runs to a page
        raise CheckpointError(f"{path} is not a readable metalstm checkpoint (damaged or another "
                              f"format): {type(exc).__name__}: {reason}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if checksum(state, meta) != stored:
        raise CheckpointError(f"{path} is damaged: its contents do not match its checksum")
    return state, meta["config"], meta["metrics"]
