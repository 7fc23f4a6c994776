"""What every command line of the package checks before it starts work.

A person's mistake gets one line that names the bad value and what would be
valid, and exit code 2, never a traceback or a silently changed request:

    ap.add_argument("--episodes", type=positive_int)     # 0 or -5: "must be at least 1"
    ap.add_argument("--threads", type=positive_int)      # 0 would silently mean "torch's choice"
    check_device(args.device)                            # "cuda" without a GPU, "gpu", "cuda:7"
    check_output_file(args.json, "--json")               # a folder, or under a file
    check_path_runs(args.path, args.device)              # --path native without a C compiler, a GPU

Type functions raise argparse.ArgumentTypeError, which argparse prints as
"error: argument --episodes: must be a whole number >= 1, got '0'" (after its
usage line) and exits with 2; the checks raise ValueError, which each main()
prints as "error: ..." and turns into exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from metalstm.checkpoint import atomic_write


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a learning rate: 0 freezes, which tests use)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """An argparse type: a seed, a whole number from 0 to 2**63 - 1 (what torch's generators take)."""
    value = _int(text)
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2**63 - 1, got {text!r}")
    return value


def check_png(path: str | os.PathLike | None, flag: str = "--sample-grid") -> None:
    """check_output_file for a picture: also a name that ends in .png (the file written is the
    file named, never NAME.png beside it)."""
    if path is None:
        return
    if Path(path).suffix.lower() != ".png" and not Path(path).is_dir():
        raise ValueError(f"{flag} {path}: give a file name ending in .png, e.g. {path}.png")
    check_output_file(path, flag)


def save_png(fig, path: str | os.PathLike, **kwargs) -> Path:
    """fig.savefig as PNG to `path`, atomically (`atomic_write`: a failed write keeps the old file)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", **kwargs))

def check_device(device: str) -> str:
    """`device` if torch can compute on it here, else one ValueError saying what can."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: torch sees no CUDA GPU on this machine "
                             f"(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 .. cuda:{count - 1}")
        return device
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {device}: torch sees no Apple GPU here; use --device cpu")
        return device
    raise ValueError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")


def check_output_file(path: str | os.PathLike | None, flag: str = "--json") -> None:
    """ValueError unless a file can be written at `path` (checked before the work, not after):
    not a folder or a device, and the nearest existing folder above it is a writable folder."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {p / 'results.json'}")
    if p.exists() and not p.is_file():
        raise ValueError(f"{flag} {path} is not a regular file (a device or a pipe); give a file name "
                         f"in a writable folder")
    _check_writable_folder(p.parent, f"{flag} {path}")


def _check_writable_folder(folder: Path, what: str) -> None:
    """ValueError unless `folder`, or the nearest existing folder above it, is a folder that a
    file can be created in (tried: a read-only file system passes os.access for root)."""
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{what}: the folder {parent} is not writable")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".metalstm-probe.", suffix=".tmp")
    except OSError as exc:
        raise ValueError(f"{what}: nothing can be written in the folder {parent} "
                         f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def write_json(path: str | os.PathLike | None, data: dict, printed: str = "the table above",
               indent: int = 2) -> int:
    """Write `data` as JSON to `path` after the results were printed: 0, or one error line and 2
    (what was printed stays complete; nothing is raised). No path: nothing to do, 0."""
    if path is None:
        return 0
    try:
        atomic_write(path, json.dumps(data, indent=indent))
    except OSError as exc:
        print(f"error: could not write --json {path} ({exc.strerror or exc}); {printed} is complete"
              + ("; the previous file is unchanged" if Path(path).exists() else ""), file=sys.stderr)
        return 2
    return 0


def check_folder(path: str | os.PathLike | None, flag: str, writable: bool = False) -> None:
    """ValueError when `path` exists and is not a folder (e.g. --cache pointing at a file), and,
    with writable=True, when nothing could be written in it (checked before the work starts)."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a file; it must be a folder (or not exist yet)")
    if path is not None and writable:
        _check_writable_folder(Path(path), f"{flag} {path}")


def set_threads(n: int | None) -> None:
    """torch.set_num_threads(n) when n is given (argparse has checked n >= 1)."""
    if n is not None:
        torch.set_num_threads(n)


PATH_HELP = ("which implementation runs the model, the same numbers to rounding: reference "
             "(MetaLearner.reference_step and plain pooling: the readable one), fused (the default: "
             "metalstm.fast.fused's hand-written backward and channels-last pooling) or native (fused, "
             "with each meta-learner step as the C loops of metalstm/fast/native.c: CPU only, compiled on "
             "first use with the system's C compiler, one thread; docs/speed.md)")


def add_path_option(ap: argparse.ArgumentParser) -> None:
    """--path {reference,fused,native}, default fused (metalstm.config.PATHS)."""
    from metalstm.config import PATHS
    ap.add_argument("--path", choices=PATHS, default="fused", help=PATH_HELP)


def check_path_runs(path: str, device: str) -> None:
    """One ValueError, before any work, when `--path path` cannot run here: native on a device
    other than the CPU, or native.c not compiling (no C compiler; it is compiled now, once)."""
    if path != "native":
        return
    if torch.device(device).type != "cpu":
        raise ValueError(f"--path native runs on the CPU; with --device {device}, pass --path fused")
    from metalstm.fast import native
    try:
        native.library()
    except native.NativeUnavailable as exc:
        raise ValueError(f"--path native: {exc}") from None
