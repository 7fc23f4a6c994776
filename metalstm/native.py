"""The meta-learner step's elementwise work as C loops (metalstm/native.c): an opt-in backend.

`metalstm.fused` computes a step's gates, cell state and layer 2 with ~25 PyTorch
operations forward and ~30 backward, each a sweep over [H, n] arrays; at 28x28
those sweeps, not the matrix products, are most of a meta-training episode (README,
Speed). native.c does each direction in ONE sweep. This module compiles it with
the system's C compiler on first use (about a second; the library is kept in
$METALSTM_CACHE, else ~/.cache/metalstm) and calls it through ctypes. The matrix
products stay PyTorch's.

It is switched on with `metalstm.fused.set_native(True)` (or `--native` on the
command line) and is never on by default: it needs a C compiler, runs on the CPU in
float32 only, and its exp and tanh round differently from PyTorch's, so its
results agree with the default path to rounding, not bit for bit. The loops run on
one thread: with torch.set_num_threads above 1 the default path, whose operations
run in parallel, is the faster (README, Speed).

Example:
    >>> from metalstm import fused, native
    >>> native.available()          # compiles native.c the first time
    True
    >>> fused.set_native(True)      # every CPU float32 step of a MetaLearner runs the C loops
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("native.c")
CACHE_ENV = "METALSTM_CACHE"
# tried in order: the fastest flags first, then what any C compiler accepts
FLAGS = (["-O3", "-march=native"], ["-O3"], ["-O2"])

_LIB: dict = {"lib": None}
_LOCK = threading.Lock()


class NativeUnavailable(RuntimeError):
    """native.c could not be compiled or loaded here (no C compiler, or it failed)."""


def cache_dir() -> Path:
    """Where the compiled library is kept: $METALSTM_CACHE, else $XDG_CACHE_HOME/metalstm or
    ~/.cache/metalstm."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metalstm"


def compiler() -> list[str] | None:
    """The C compiler to use, as a command: $CC (which may carry words, e.g. "ccache gcc"),
    else cc, gcc or clang, whichever is on the PATH; None when there is none. A $CC that
    names no program is an error, not a silent fall-back."""
    if os.environ.get("CC"):
        command = shlex.split(os.environ["CC"])
        if not command or shutil.which(command[0]) is None:
            raise NativeUnavailable(f"$CC is {os.environ['CC']!r}, which names no program on the PATH")
        return command
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def _build(cc: list[str], target: Path) -> None:
    """Compile native.c into `target`, trying FLAGS in order; written to a temporary file and
    renamed, so that processes started together (torchrun) never load half a library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in FLAGS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [*cc, *flags, "-shared", "-fPIC", str(SOURCE), "-o", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                _write_atomically(target.with_suffix(".flags"), " ".join([*cc, *flags]) + "\n")
                os.replace(tmp, target)
                return
            last = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            errors.append(f"`{' '.join(cmd)}`: {last[0]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"`{' '.join(cmd)}`: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise NativeUnavailable("could not compile metalstm/native.c: " + "; ".join(errors))


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _machine() -> bytes:
    """What the library was compiled for (-march=native): the CPU's model and feature flags
    where Linux tells them, else what platform knows. A cache folder shared by two kinds of
    CPU then holds one library for each, never one that the other cannot run."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        cpu = "".join(sorted(set(lines)))
    except OSError:
        cpu = ""
    return "\0".join([platform.machine(), platform.processor(), cpu]).encode()


def _compiler_version(cc: list[str]) -> bytes:
    try:
        return subprocess.run([*cc, "--version"], capture_output=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return b""


def library() -> ctypes.CDLL:
    """The compiled native.c, built on first use (NativeUnavailable when it cannot be)."""
    if _LIB["lib"] is not None:              # every kernel call asks: no lock once it is loaded
        return _LIB["lib"]
    with _LOCK:
        if _LIB["lib"] is not None:
            return _LIB["lib"]
        cc = compiler()
        if cc is None:
            raise NativeUnavailable("the native backend needs a C compiler (cc, gcc or clang on the PATH, "
                                    "or $CC); without one, leave it off: the default path computes the same step")
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(cc).encode(), _compiler_version(cc),
                                         _machine(), repr(FLAGS).encode()])).hexdigest()[:16]
        target = cache_dir() / f"native-{key}.so"
        try:
            if not target.exists():
                _build(cc, target)
            lib = ctypes.CDLL(str(target))
        except OSError as exc:
            raise NativeUnavailable(f"could not build or load {target}: {exc} (${CACHE_ENV} names another "
                                    f"folder for the compiled library)") from exc
        _declare(lib)
        _LIB["lib"] = lib
        return lib


def describe() -> str:
    """How the loaded library was compiled (e.g. "cc -O3 -march=native"), for reports."""
    lib = library()
    flags = Path(lib._name).with_suffix(".flags")
    return flags.read_text().strip() if flags.exists() else Path(lib._name).name


def available() -> bool:
    """Whether the native backend can run here (compiles native.c on the first call)."""
    try:
        library()
        return True
    except NativeUnavailable:
        return False


def _declare(lib: ctypes.CDLL) -> None:
    P, I, L, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    lib.metalstm_forward.argtypes = [I, L] + [P] * 8 + [F, F] + [P] * 7
    lib.metalstm_backward.argtypes = [I, L] + [P] * 16 + [P] * 6
    lib.metalstm_layer1_input.argtypes = [I, L, P, F, F, F, P, P]
    for fn in (lib.metalstm_forward, lib.metalstm_backward, lib.metalstm_layer1_input):
        fn.restype = None


MAX_P = 80.0      # e^-p stays a normal float32 (log_f's range) and e^p a finite one


def supports(p: float, *tensors: Tensor) -> bool:
    """Whether the C loops take this step: every tensor float32 on the CPU, and the
    preprocessing's p at most MAX_P (paper notes 4 uses 10)."""
    return p <= MAX_P and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _read(t: Tensor, shape: tuple[int, ...], name: str) -> Tensor:
    """t as the C loops read it: a contiguous float32 CPU array of exactly this shape (a copy
    when t is a strided view). Anything else is a ValueError: C would read the wrong numbers,
    or past the array's end."""
    if t.device.type != "cpu" or t.dtype != torch.float32 or tuple(t.shape) != shape:
        raise ValueError(f"native: {name} must be a float32 CPU array of shape {list(shape)}, "
                         f"got {t.dtype} {list(t.shape)} on {t.device}")
    return t.detach().contiguous()


def _written(t: Tensor, shape: tuple[int, ...], name: str) -> Tensor:
    """An array the C loops write into: as `_read`, and contiguous itself (no copy to lose)."""
    if not t.is_contiguous():
        raise ValueError(f"native: {name} must be contiguous")
    return _read(t, shape, name)


def layer1_input(grad: Tensor, p: float, h: Tensor, inputs: Tensor) -> Tensor:
    """inputs [n, H + 3] = [pre(grad_t) | h_{t-1}^T | 1] (fused._layer1_input's layout) in one
    pass, with pre = metalstm.preprocess.preprocess (paper notes 4) computed in C."""
    H, n = h.shape
    if not 0 < p <= MAX_P:
        raise ValueError(f"native: p must be in (0, {MAX_P}], got {p}")
    grad, h, out = _read(grad, (n,), "grad"), _read(h, (H, n), "h"), _written(inputs, (n, H + 3), "inputs")
    library().metalstm_layer1_input(H, n, grad.data_ptr(), float(p), math.exp(-p), math.exp(p),
                                    h.data_ptr(), out.data_ptr())
    return inputs


def forward(acts: Tensor, c: Tensor, theta: Tensor, grad: Tensor, prev_f: Tensor, prev_i: Tensor,
            W_F: Tensor, W_I: Tensor, b_F: Tensor, b_I: Tensor) -> tuple[Tensor, ...]:
    """The step after layer 1's product (paper notes 3, 4), one sweep: acts holds z on entry and
    the gate activations [i1; f1; g1; o1] on return; (theta_t, h_t, c_t, f_t, i_t, a_f, a_i)."""
    H, n = c.shape
    ins = [_written(acts, (4 * H, n), "acts"), _read(c, (H, n), "c")]
    ins += [_read(t, (n,), name) for t, name in ((theta, "theta"), (grad, "grad"), (prev_f, "prev_f"),
                                                 (prev_i, "prev_i"))]
    ins += [_read(W_F, (H + 2,), "W_F"), _read(W_I, (H + 2,), "W_I")]
    c_new, h_new = c.new_empty(H, n), c.new_empty(H, n)
    outs = (theta_new, f, i, a_f, a_i) = tuple(theta.new_empty(n) for _ in range(5))
    library().metalstm_forward(H, n, *(t.data_ptr() for t in ins), float(b_F), float(b_I),
                               c_new.data_ptr(), h_new.data_ptr(), *(t.data_ptr() for t in outs))
    return theta_new, h_new, c_new, f, i, a_f, a_i


def backward(d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, theta, grad, acts, c, c_new, f, i, W_F, W_I,
             dz: Tensor, d_c_prev: Tensor) -> tuple[Tensor, ...]:
    """The step's elementwise derivatives, one sweep, up to dz (written into dz [4H, n] and
    d_c_prev [H, n]); upstream gradients that did not arrive (None) count as zeros.
    Returns (d theta_{t-1}, d prev_f, d prev_i, da = [da_f; da_i] [2, n])."""
    H, n = c.shape
    zeros = {}                               # shape -> one zeros array for every missing gradient

    def read(t, shape, name):
        if t is None:
            if shape not in zeros:
                zeros[shape] = theta.new_zeros(shape)
            return zeros[shape]
        return _read(t, shape, name)

    vec = lambda t, name: read(t, (n,), name)
    mat = lambda t, name: read(t, (H, n), name)

    ins = [vec(t, name) for t, name in ((d_theta, "d_theta"), (d_f, "d_f"), (d_i, "d_i"), (d_af, "d_af"),
                                        (d_ai, "d_ai"))]
    ins += [mat(d_h, "d_h"), mat(d_c, "d_c"), vec(theta, "theta"), vec(grad, "grad"),
            _read(acts, (4 * H, n), "acts"), mat(c, "c"), mat(c_new, "c_new"), vec(f, "f"), vec(i, "i"),
            _read(W_F, (H + 2,), "W_F"), _read(W_I, (H + 2,), "W_I")]
    outs = [_written(dz, (4 * H, n), "dz"), _written(d_c_prev, (H, n), "d_c_prev")]
    d_theta_prev, d_prev_f, d_prev_i = (theta.new_empty(n) for _ in range(3))
    da = theta.new_empty(2, n)
    library().metalstm_backward(H, n, *(t.data_ptr() for t in ins),
                                *(t.data_ptr() for t in (*outs, d_theta_prev, d_prev_f, d_prev_i, da)))
    return d_theta_prev, d_prev_f, d_prev_i, da
