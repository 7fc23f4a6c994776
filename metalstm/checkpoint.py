"""Checkpoints: {meta_json, state, sha256} dicts; the run folder's lock.

A checkpoint is a dict of three entries: `meta_json` (the JSON text of
{format, config, metrics}), `state` (nested dicts of tensors, e.g. the
meta-learner's parameters) and `sha256` (the checksum of both, `checksum`).

Written atomically (a temporary file in the same folder, fsync, rename), so an
interrupted save never leaves a half-written file where a good one was: a
failed write (a full disk) is one `CheckpointWriteError` line and the old file
stays as it was. Read with ``torch.load(weights_only=True)``; carry a SHA-256
of their tensors, so a damaged or edited file is refused with one clear
message. A checkpoint whose tensors hold NaN or infinity is never written and
never loaded (a diverged run has nothing worth keeping).

A run folder is held by one run at a time (`hold_folder`: an flock on
FOLDER/.lock, which the kernel releases when the process dies, even by kill -9,
so a killed run never leaves its folder locked, and removed when the run ends);
the holder may clean the temporary files that a kill in the middle of a save
leaves behind (`remove_temporaries`). Files get the mode a plain open() would
give (0644 under the usual umask 022: results readable by others).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import torch

try:
    import fcntl
except ImportError:        # Windows: no flock; a run folder is then not locked
    fcntl = None

def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks: what results and built libraries are keyed by."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


FORMAT = "metalstm-checkpoint-1"
LOCK_NAME = ".lock"
# what the other checkpoints of the package are, and which command reads them
KINDS = {
    "matching": "a Matching Network baseline (metalstm.baselines), not a meta-learner; "
                "`python -m metalstm.evaluate --checkpoint META-LEARNER.pt --baselines matching "
                "--cache {folder}` reads it",
    "pretrained": "a pre-trained classifier of the baselines (metalstm.baselines), not a meta-learner; "
                  "`python -m metalstm.evaluate --checkpoint META-LEARNER.pt --baselines finetune "
                  "nearest --cache {folder}` reads it",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, damaged, or of another configuration."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission); the old file is unchanged."""


class FolderInUseError(OSError):
    """Another living process holds the run folder."""


def _non_finite(state: dict) -> list[str]:
    """Paths of the floating tensors in `state` that hold NaN or infinity."""
    return [name.lstrip("/") for name, t in _tensors(state)
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _not_loadable(obj, prefix="") -> list[tuple[str, str]]:
    """(path, type name) of what torch.load(weights_only=True) would refuse inside `obj`."""
    if torch.is_tensor(obj) or obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return []
    if isinstance(obj, dict):
        return [bad for k, v in obj.items() for bad in _not_loadable(v, f"{prefix}/{k}".lstrip("/"))]
    if isinstance(obj, (list, tuple)):
        return [bad for i, v in enumerate(obj) for bad in _not_loadable(v, f"{prefix}/{i}".lstrip("/"))]
    return [(prefix, type(obj).__name__)]


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes | str) -> Path:
    """Write a file so that it is either complete or as it was: `write(f)` (or the bytes / text
    given) into a temporary file in the same folder, flush, fsync, then os.replace onto `path`.

    The one way the package writes its files (checkpoints, JSON, CSV, PNG, caches). Any failure
    (a full disk: OSError ENOSPC; an interrupt) removes the temporary file, leaves whatever was at
    `path` untouched and raises as it was; a new file is never left behind half-written or empty.
    """
    path = Path(path)
    if isinstance(write, str):
        write = write.encode("utf-8")
    if isinstance(write, bytes):
        data, write = write, (lambda f: f.write(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with suppress(OSError, AttributeError):      # the mode a plain open() would give
                os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, state: dict, config: dict, metrics: dict | None = None) -> Path:
    """Atomically write {state, config, metrics} to `path` with a checksum.

    Refuses (CheckpointError) a state with NaN or infinity; a failed write raises
    CheckpointWriteError (one line) and leaves the file that was at `path` as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot write a checkpoint to {path}: it is a folder; give a file "
                              f"name, e.g. {path / 'model.pt'}")
    if not isinstance(state, dict):
        raise CheckpointError(f"refusing to write {path}: the state must be a dict of tensors, got "
                              f"{type(state).__name__}")
    odd = _not_loadable(state)
    if odd:
        raise CheckpointError(f"refusing to write {path}: {odd[0][0] or 'the state'} is a "
                              f"{odd[0][1]}; a checkpoint holds tensors, numbers, strings and nested "
                              f"dicts / lists of them (what torch.load(weights_only=True) reads back)")
    for what, value in (("config", config), ("metrics", metrics or {})):
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"refusing to write {path}: its {what} must be JSON-able (dicts, "
                                  f"lists, strings, numbers): {exc}") from None
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(f"refusing to write {path}: {', '.join(bad[:3])} "
                              f"{'holds' if len(bad) == 1 else 'hold'} NaN or infinity")
    meta = {"format": FORMAT, "config": config, "metrics": metrics or {}}
    payload = {"meta_json": json.dumps(meta, sort_keys=True), "state": state,
               "sha256": checksum(state, meta)}
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, CheckpointWriteError):
            raise
        raise CheckpointWriteError(f"could not write {path}: {_write_failure(exc, path.parent)}; "
                                   + (f"the previous {path.name} is unchanged" if path.exists()
                                      else "nothing was written")) from None
    return path


def _write_failure(exc: BaseException, folder: Path) -> str:
    """One line for why a write failed: the OS's reason, or what torch's zip writer means."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:   # torch's writer reports a short write as "[enforce fail at inline_container.cc] ..."
        reason = "the file could not be written in full"
    try:
        free = shutil.disk_usage(folder).free
        reason += f" ({free / 2**20:.1f} MiB free in {folder}; is the disk full?)"
    except OSError:
        pass
    return reason


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
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinity (in {', '.join(bad[:3])}): it comes "
                              f"from a run that diverged; use an earlier checkpoint")
    return state, meta["config"], meta["metrics"]


def stored_checksum(path: str | os.PathLike) -> str:
    """The SHA-256 that the checkpoint at `path` carries, after checking that its contents still
    match it (CheckpointError otherwise): what a result made from the file is keyed by."""
    load_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=True)["sha256"]

def refuse_other_kinds(path: str | os.PathLike,
                       wanted: str = "a meta-learner checkpoint (a best.pt or data/checkpoints/*.pt)") -> None:
    """CheckpointError naming what the file is and which command reads it, when `path` is
    one of the baselines' checkpoints (KINDS) rather than a trained update rule."""
    _, config, metrics = load_checkpoint(path)
    kind = metrics.get("kind") if isinstance(metrics, dict) else None
    if kind in KINDS:
        raise CheckpointError(f"{path} is {KINDS[kind].format(folder=Path(path).parent)}; "
                              f"this command needs {wanted}")


# -- the run folder ------------------------------------------------------------------
@contextmanager
def hold_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create `folder` if needed and hold it for this process while the block runs.

    FolderInUseError (one line, with the holder's pid) when another living process
    holds it. The lock is an flock on folder/.lock: the kernel drops it when the
    holder exits or is killed, so a dead run never keeps the folder. The holder
    removes .lock when the block ends (a run leaves only its own files); one killed
    leaves it, and the next run takes it over. A lock file removed while another
    process was about to lock it is not trusted: that process locks the new one.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a run folder")
    lock = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise type(exc)(f"cannot write to the run folder {folder}: {exc.strerror or exc}") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUseError(f"{folder} is in use by another run (pid {holder}); wait for "
                                   f"it to end, or choose another --out") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break                                 # the file that .lock names now: held
        except FileNotFoundError:
            pass
        os.close(fd)                                  # its holder removed it meanwhile: again
    try:
        if fcntl is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        with suppress(OSError):
            os.unlink(lock)                           # while still held: no one locks a removed file
        os.close(fd)                                  # releases the lock


def remove_temporaries(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that saves of these file names left behind when a process
    was killed mid-write (.NAME.*.tmp); call it only while holding the folder."""
    gone = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone
