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
results agree with the default path to rounding, not bit for bit.

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


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang, whichever is on the PATH."""
    for name in filter(None, (os.environ.get("CC"), "cc", "gcc", "clang")):
        if shutil.which(name):
            return name
    return None


def _build(cc: str, target: Path) -> None:
    """Compile native.c into `target`, trying FLAGS in order; written to a temporary file and
    renamed, so that processes started together (torchrun) never load half a library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in FLAGS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cc, *flags, "-shared", "-fPIC", str(SOURCE), "-o", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            target.with_suffix(".flags").write_text(" ".join([cc, *flags]) + "\n")
            os.replace(tmp, target)
            return
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    raise NativeUnavailable("could not compile metalstm/native.c: " + "; ".join(map(str, errors)))


def library() -> ctypes.CDLL:
    """The compiled native.c, built on first use (NativeUnavailable when it cannot be)."""
    with _LOCK:
        if _LIB["lib"] is not None:
            return _LIB["lib"]
        cc = compiler()
        if cc is None:
            raise NativeUnavailable("the native backend needs a C compiler (cc, gcc or clang on the PATH, "
                                    "or $CC); without one, leave it off: the default path computes the same step")
        source = SOURCE.read_bytes()
        key = hashlib.sha256(b"\0".join([source, cc.encode(), platform.machine().encode(),
                                         platform.node().encode(), repr(FLAGS).encode()])).hexdigest()[:16]
        target = cache_dir() / f"native-{key}.so"
        try:
            if not target.exists():
                _build(cc, target)
            lib = ctypes.CDLL(str(target))
        except OSError as exc:
            raise NativeUnavailable(f"could not build or load {target}: {exc}") from exc
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
    P, I, L, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
    lib.metalstm_forward.argtypes = [I, L] + [P] * 8 + [F, F] + [P] * 7
    lib.metalstm_backward.argtypes = [I, L] + [P] * 16 + [P] * 6
    lib.metalstm_layer1_input.argtypes = [I, L, P, F, F, F, P, P]
    for fn in (lib.metalstm_forward, lib.metalstm_backward, lib.metalstm_layer1_input):
        fn.restype = None


def supports(*tensors: Tensor) -> bool:
    """Whether these tensors are ones the C loops take: float32 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _ptr(t: Tensor) -> int:
    if not t.is_contiguous():
        raise ValueError("native: every array must be contiguous")
    return t.data_ptr()


def layer1_input(grad: Tensor, p: float, h: Tensor, inputs: Tensor) -> Tensor:
    """inputs [n, H + 3] = [pre(grad_t) | h_{t-1}^T | 1] (fused._layer1_input's layout) in one
    pass, with pre = metalstm.preprocess.preprocess (paper notes 4) computed in C."""
    H, n = h.shape
    library().metalstm_layer1_input(H, n, _ptr(grad), float(p), math.exp(-p), math.exp(p), _ptr(h),
                                    _ptr(inputs))
    return inputs


def forward(acts: Tensor, c: Tensor, theta: Tensor, grad: Tensor, prev_f: Tensor, prev_i: Tensor,
            W_F: Tensor, W_I: Tensor, b_F: Tensor, b_I: Tensor) -> tuple[Tensor, ...]:
    """The step after layer 1's product (paper notes 3, 4), one sweep: acts holds z on entry and
    the gate activations [i1; f1; g1; o1] on return; (theta_t, h_t, c_t, f_t, i_t, a_f, a_i)."""
    H, n = c.shape
    c_new, h_new = c.new_empty(H, n), c.new_empty(H, n)
    theta_new, f, i, a_f, a_i = (theta.new_empty(n) for _ in range(5))
    W_F, W_I = W_F.detach().contiguous(), W_I.detach().contiguous()
    library().metalstm_forward(H, n, _ptr(acts), _ptr(c), _ptr(theta), _ptr(grad), _ptr(prev_f),
                               _ptr(prev_i), _ptr(W_F), _ptr(W_I), float(b_F), float(b_I),
                               _ptr(c_new), _ptr(h_new), _ptr(theta_new), _ptr(f), _ptr(i), _ptr(a_f), _ptr(a_i))
    return theta_new, h_new, c_new, f, i, a_f, a_i


def backward(d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, theta, grad, acts, c, c_new, f, i, W_F, W_I,
             dz: Tensor, d_c_prev: Tensor) -> tuple[Tensor, ...]:
    """The step's elementwise derivatives, one sweep, up to dz (written into dz [4H, n] and
    d_c_prev [H, n]); upstream gradients that did not arrive (None) count as zeros.
    Returns (d theta_{t-1}, d prev_f, d prev_i, da = [da_f; da_i] [2, n])."""
    H, n = c.shape
    zeros_n = zeros_hn = None
    def vec(t):
        nonlocal zeros_n
        if t is not None:
            return t.contiguous()
        if zeros_n is None:
            zeros_n = theta.new_zeros(n)
        return zeros_n
    def mat(t):
        nonlocal zeros_hn
        if t is not None:
            return t.contiguous()
        if zeros_hn is None:
            zeros_hn = theta.new_zeros(H, n)
        return zeros_hn
    d_theta, d_f, d_i, d_af, d_ai = (vec(t) for t in (d_theta, d_f, d_i, d_af, d_ai))
    d_h, d_c = mat(d_h), mat(d_c)
    d_theta_prev, d_prev_f, d_prev_i = (theta.new_empty(n) for _ in range(3))
    da = theta.new_empty(2, n)
    W_F, W_I = W_F.detach().contiguous(), W_I.detach().contiguous()
    library().metalstm_backward(H, n, *map(_ptr, (d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, theta, grad,
                                                  acts, c, c_new, f, i, W_F, W_I)),
                                *map(_ptr, (dz, d_c_prev, d_theta_prev, d_prev_f, d_prev_i, da)))
    return d_theta_prev, d_prev_f, d_prev_i, da
