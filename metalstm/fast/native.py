"""One meta-learner step as C loops, layer 1's matrix products included (metalstm/fast/native.c):
the third implementation of the step, `path="native"` (`--path native`).

`metalstm.fast.fused` computes a step as PyTorch operations, each a sweep over [H, n] arrays,
around three matrix products whose [4H, n] results go through memory. native.c computes the
same step in ONE sweep each way, its products as register-blocked loops, so that z and dz
never reach memory. This module compiles it with the system's C compiler on first use (the
library is kept in $METALSTM_CACHE, else ~/.cache/metalstm) and calls it through ctypes.

Contract: float32 CPU arrays, a column per coordinate (element (r, j) of an [R, n] array at
r * n + j), hidden size H up to MAX_H, p up to MAX_P; anything else is a ValueError here,
before C reads a byte. The names are the fused step's (docs/paper.md, the glossary), and
W1_folded [4H, H + 3] = [W1's grad and h columns | b1 + W1's loss columns . pre(L_t)], the
loss folded into the bias (fused.py's `_folded_weights`). The C loops' exp, tanh and sums
round differently from PyTorch's: the same numbers to rounding, not bit for bit. They run on
one thread (docs/speed.md).

Example:
    >>> from metalstm.fast import native
    >>> native.available()          # compiles native.c the first time
    True
    >>> # MetaLearner(..., path="native") then runs every CPU float32 step on the C loops
"""
from __future__ import annotations

import contextlib
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

from metalstm.checkpoint import file_sha256

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


def _build(cc: list[str], target: Path, source: Path = SOURCE) -> None:
    """Compile native.c (or a copy of it, `source`) into `target`, trying FLAGS in order; written
    to a temporary file and renamed, so that processes started together (torchrun) never load
    half a library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in FLAGS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [*cc, *flags, "-shared", "-fPIC", str(source), "-o", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                _write_atomically(target.with_suffix(".flags"), " ".join([*cc, *flags]) + "\n")
                _write_atomically(target.with_suffix(".sha256"), file_sha256(Path(tmp)) + "\n")
                os.replace(tmp, target)
                return
            errors.append(f"`{' '.join(cmd)}`: {_compiler_error(proc.stderr, proc.returncode)}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"`{' '.join(cmd)}`: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise NativeUnavailable(f"could not compile {source}: " + "; ".join(errors))


def _compiler_error(stderr: str, returncode: int) -> str:
    """The compiler's first error, with where it is ("native.c:12:5: error: ..."), not only
    the caret line that ends its report."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    first = next((line for line in lines if "error" in line.lower()), None)
    return first or (lines[-1] if lines else f"exit code {returncode}")


def _write_atomically(path: Path, text: str) -> None:
    from metalstm.checkpoint import atomic_write
    atomic_write(path, text)



def verified(target: Path) -> bool:
    """Whether the cached library `target` is the file that was built: its SHA-256 equals the one
    written beside it (TARGET.sha256) when it was compiled. A library cut short or changed
    (a full disk, a copy gone wrong) must never be loaded: the dynamic loader would map it
    and the process would die of SIGBUS with no message."""
    try:
        stored = target.with_suffix(".sha256").read_text().strip()
        return stored == file_sha256(target)
    except OSError:
        return False


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


def _compiler_or_raise() -> list[str]:
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("the native backend needs a C compiler (cc, gcc or clang on the PATH, "
                                "or $CC); without one, leave it off: the default path computes the same step")
    return cc


def library() -> ctypes.CDLL:
    """The compiled native.c, built on first use (NativeUnavailable when it cannot be)."""
    if _LIB["lib"] is not None:              # every kernel call asks: no lock once it is loaded
        return _LIB["lib"]
    with _LOCK:
        if _LIB["lib"] is not None:
            return _LIB["lib"]
        cc = _compiler_or_raise()
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(cc).encode(), _compiler_version(cc),
                                         _machine(), repr(FLAGS).encode()])).hexdigest()[:16]
        target = cache_dir() / f"native-{key}.so"
        try:
            if not verified(target):         # missing, or damaged: built again, never loaded
                _build(cc, target)
            lib = ctypes.CDLL(str(target))
        except OSError as exc:
            raise NativeUnavailable(f"could not build or load {target}: {exc} (${CACHE_ENV} names another "
                                    f"folder for the compiled library)") from exc
        _declare(lib)
        _LIB["lib"] = lib
        return lib


def load_copy(source: Path, target: Path) -> ctypes.CDLL:
    """A changed copy of native.c, compiled into `target` as native.c is (the same compiler and
    flags) and loaded, for `use` (metalstm.tools.native_ab); NativeUnavailable if it fails."""
    _build(_compiler_or_raise(), target, source)
    lib = ctypes.CDLL(str(target))
    _declare(lib)
    return lib


@contextlib.contextmanager
def use(lib: ctypes.CDLL):
    """Inside the block, every C call goes to `lib` (a `load_copy`) instead of native.c's library."""
    library()
    previous, _LIB["lib"] = _LIB["lib"], lib
    try:
        yield lib
    finally:
        _LIB["lib"] = previous


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
    lib.metalstm_step.argtypes = [I, L, P, F, F, F] + [P] * 8 + [F, F] + [P] * 8
    lib.metalstm_step.restype = I
    lib.metalstm_step_backward.argtypes = [I, L] + [P] * 8 + [F, F, F] + [P] * 10 + [P] * 7
    lib.metalstm_step_backward.restype = I
    lib.metalstm_layer1_input.argtypes = [I, L, P, F, F, F, P, P]
    lib.metalstm_layer1_input.restype = I
    lib.metalstm_products.argtypes = [I, L, I] + [P] * 6
    lib.metalstm_products.restype = I


MAX_P = 80.0      # e^-p stays a normal float32 (log_f's range) and e^p a finite one


MAX_H = 64        # native.c's MAX_H: the hidden sizes its blocks' stack buffers hold (it refuses others)


def supports(p: float, H: int, *tensors: Tensor) -> bool:
    """Whether the C loops take this step: every tensor float32 on the CPU, the hidden size H
    at most MAX_H (the paper's is 20) and the preprocessing's p at most MAX_P (paper notes 4
    uses 10)."""
    return p <= MAX_P and H <= MAX_H and all(t.device.type == "cpu" and t.dtype == torch.float32
                                             for t in tensors)


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


def _pre(p: float) -> tuple[float, float, float]:
    """(p, e^-p, e^p): the preprocessing's constants as the C loops take them."""
    if not 0 < p <= MAX_P:
        raise ValueError(f"native: p must be in (0, {MAX_P}], got {p}")
    return float(p), math.exp(-p), math.exp(p)


def _hidden(h: Tensor) -> tuple[int, int]:
    """(H, n) of an [H, n] state, H within what the C loops hold."""
    H, n = h.shape
    if not 1 <= H <= MAX_H:
        raise ValueError(f"native: the hidden size must be in [1, {MAX_H}], got {H}")
    return H, n


def _check(code: int, H: int) -> None:
    """The C functions' return codes: 0 done, 1 out of memory, 2 hidden size refused."""
    if code == 1:
        raise MemoryError(f"native: no memory for the {4 * H} x {H + 3} weight-gradient accumulators")
    if code:
        raise ValueError(f"native: the C loops refused hidden size {H} (at most {MAX_H})")


def layer1_input(grad: Tensor, p: float, h: Tensor) -> Tensor:
    """x [H + 3, n] = [pre(grad_t); h; 1], layer 1's right-hand side as `step` and
    `step_backward` compute it (block by block, never stored), with pre =
    metalstm.preprocess.preprocess (paper notes 4) in C: for tests and for reading."""
    H, n = _hidden(h)
    pre, grad, h = _pre(p), _read(grad, (n,), "grad"), _read(h, (H, n), "h")
    x = h.new_empty(H + 3, n)
    _check(library().metalstm_layer1_input(H, n, grad.data_ptr(), *pre, h.data_ptr(), x.data_ptr()), H)
    return x


def _weights(W1_folded: Tensor, H: int) -> Tensor:
    return _read(W1_folded, (4 * H, H + 3), "W1_folded")


def step(grad: Tensor, p: float, h: Tensor, W1_folded: Tensor, c: Tensor, theta: Tensor, f_prev: Tensor,
         i_prev: Tensor, W_F: Tensor, W_I: Tensor, b_F: Tensor, b_I: Tensor,
         acts: Tensor | None = None) -> tuple[Tensor, ...]:
    """One meta-learner step (paper notes 3, 4), layer 1's product included, in one sweep:
    (theta_new, h_new, c_new, f, i, a_f, a_i), as fused.py's forward; h, c [H, n], W1_folded
    [4H, H + 3], the vectors [n], W_F, W_I [H + 2]. acts [4H, n], if given, receives the gate
    activations [i1; f1; g1; o1] that `step_backward` needs."""
    H, n = _hidden(h)
    pre = _pre(p)
    ins = [_read(h, (H, n), "h"), _weights(W1_folded, H), _read(c, (H, n), "c")]
    ins += [_read(t, (n,), name) for t, name in ((theta, "theta"), (f_prev, "f_prev"), (i_prev, "i_prev"))]
    ins += [_read(W_F, (H + 2,), "W_F"), _read(W_I, (H + 2,), "W_I")]
    grad = _read(grad, (n,), "grad")
    saved = None if acts is None else _written(acts, (4 * H, n), "acts")
    c_new, h_new = c.new_empty(H, n), c.new_empty(H, n)
    outs = (theta_new, f, i, a_f, a_i) = tuple(theta.new_empty(n) for _ in range(5))
    _check(library().metalstm_step(H, n, grad.data_ptr(), *pre, *(t.data_ptr() for t in ins), float(b_F),
                                   float(b_I), c_new.data_ptr(), h_new.data_ptr(), *(t.data_ptr() for t in outs),
                                   None if saved is None else saved.data_ptr()), H)
    return theta_new, h_new, c_new, f, i, a_f, a_i


def step_backward(d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, grad, p, h, W1_folded, theta, acts, c, c_new, f, i,
                  W_F, W_I, want_dh: bool = True) -> tuple[Tensor, ...]:
    """The step's derivatives in one sweep, layer 1's two products included: from the upstream
    gradients (None counts as zeros) and what `step` used and saved, (d theta, d f_prev,
    d i_prev, da = [da_f; da_i] [2, n], d c, d h (None unless want_dh),
    d W1_folded [4H, H + 3] = dz [pre(grad); h; 1]^T)."""
    H, n = _hidden(c)
    zeros = {}                               # shape -> one zeros array for every missing gradient

    def read(t, shape, name):
        if t is None:
            if shape not in zeros:
                zeros[shape] = theta.new_zeros(shape)
            return zeros[shape]
        return _read(t, shape, name)

    vec = lambda t, name: read(t, (n,), name)
    mat = lambda t, name: read(t, (H, n), name)
    pre = _pre(p)
    ups = [vec(t, name) for t, name in ((d_theta, "d_theta"), (d_f, "d_f"), (d_i, "d_i"), (d_af, "d_af"),
                                        (d_ai, "d_ai"))]
    ups += [mat(d_h, "d_h"), mat(d_c, "d_c"), vec(grad, "grad")]
    saved = [mat(h, "h"), _weights(W1_folded, H), vec(theta, "theta"), _read(acts, (4 * H, n), "acts"), mat(c, "c"),
             mat(c_new, "c_new"), vec(f, "f"), vec(i, "i"), _read(W_F, (H + 2,), "W_F"),
             _read(W_I, (H + 2,), "W_I")]
    d_c_prev = theta.new_empty(H, n)
    d_h_prev = theta.new_empty(H, n) if want_dh else None
    d_theta_prev, d_f_prev, d_i_prev = (theta.new_empty(n) for _ in range(3))
    da, dW1_folded = theta.new_empty(2, n), theta.new_empty(4 * H, H + 3)
    _check(library().metalstm_step_backward(
        H, n, *(t.data_ptr() for t in ups), *pre, *(t.data_ptr() for t in saved), d_c_prev.data_ptr(),
        None if d_h_prev is None else d_h_prev.data_ptr(),
        *(t.data_ptr() for t in (d_theta_prev, d_f_prev, d_i_prev, da, dW1_folded))), H)
    return d_theta_prev, d_f_prev, d_i_prev, da, d_c_prev, d_h_prev, dW1_folded


def products(W1_folded: Tensor, x: Tensor, dz: Tensor | None = None) -> tuple[Tensor, ...]:
    """Layer 1's three matrix products alone, with `step`'s loops: (z,) = (W1_folded x,) [4H, n],
    or, with dz [4H, n] given, (z, d W1_folded = dz x^T [4H, H + 3], d h = W1_folded[h]^T dz
    [H, n]) - what a step computes inside its sweeps, as separate products whose operands and
    results go through memory: the benchmark's (g_C) and (g_fwd_C) (metalstm/tools/bench.py).

    Example:
        >>> W1_folded, x = torch.randn(80, 23), torch.randn(23, 1000)
        >>> (z,) = products(W1_folded, x)
        >>> torch.allclose(z, W1_folded @ x, atol=1e-4)
        True
    """
    if W1_folded.dim() != 2 or x.dim() != 2 or not 1 <= W1_folded.shape[0] // 4 <= MAX_H:
        raise ValueError(f"native: W1_folded must be [4H, H + 3] with H in [1, {MAX_H}] and x [H + 3, n], "
                         f"got {list(W1_folded.shape)} and {list(x.shape)}")
    H, n = W1_folded.shape[0] // 4, x.shape[1]
    W1, x = _weights(W1_folded, H), _read(x, (H + 3, n), "x")
    z = x.new_empty(4 * H, n)
    if dz is None:
        _check(library().metalstm_products(H, n, 0, W1.data_ptr(), x.data_ptr(), None, z.data_ptr(), None,
                                           None), H)
        return (z,)
    dz = _read(dz, (4 * H, n), "dz")
    dW1, dh = x.new_empty(4 * H, H + 3), x.new_empty(H, n)
    _check(library().metalstm_products(H, n, 1, W1.data_ptr(), x.data_ptr(), dz.data_ptr(), z.data_ptr(),
                                       dW1.data_ptr(), dh.data_ptr()), H)
    return z, dW1, dh
