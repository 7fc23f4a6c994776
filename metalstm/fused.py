"""The meta-learner's update step with a hand-written backward pass (paper notes 3, 4).

`MetaLearner.step` writes the two layers as plain tensor operations and lets
autograd differentiate them; that is the version to read. This module computes
exactly the same step, but as one `torch.autograd.Function` whose backward is
written out by hand, for speed: autograd records ~25 small operations per step
and replays ~40 in the backward pass, each a full sweep over [hidden, n] arrays
(memory-bound on a CPU); the hand-written backward needs fewer sweeps, uses
PyTorch's fused sigmoid/tanh derivative kernels and writes into reused buffers;
the gate activations overwrite the matrix product's output in place; and the
layer-1 product runs in the operand layouts in which MKL is fastest (see
`_layer1_input`). None of these changed a single bit of the step's results on
the development machine (the same operations in the same order); what remains
is the saved activations' memory traffic (README, Speed).

One switch further, `set_native(True)` (`--native` on the command line) runs this
same step, layer 1's matrix products included, as the C loops of `metalstm.native`
(metalstm/native.c), one sweep each way with z and dz never in memory: faster again
on a CPU, the same numbers to rounding. Opt-in, never the default.

Forward (a column per coordinate; L_t and grad_t are constants, paper notes 5):

    layer 1   z = W_1 [pre(L_t), pre(grad_t), h_{t-1}] + b_1             [4H, n]
              i1, f1, o1 = sigmoid(z_i, z_f, z_o);  g1 = tanh(z_g)
              c_t = f1 * c_{t-1} + i1 * g1;         h_t = o1 * tanh(c_t)
    layer 2   a_f = W_F . [h_t, theta_{t-1}, prev_f] + b_F;  f_t = sigmoid(a_f)   (same for i)
              theta_t = f_t * theta_{t-1} - i_t * grad_t

Backward, for upstream gradients d(theta_t), d(h_t), d(c_t), d(f_t), d(i_t), d(a_f), d(a_i):

    d a_f = (d theta_t * theta_{t-1} + d f_t) * f_t (1 - f_t) + d a_f(upstream)
    d a_i = (-d theta_t * grad_t + d i_t) * i_t (1 - i_t) + d a_i(upstream)
    d theta_{t-1} = d theta_t * f_t + W_F[theta] d a_f + W_I[theta] d a_i
    d h_t += W_F[h] d a_f + W_I[h] d a_i
    d c_t += d h_t * o1 * (1 - tanh(c_t)^2)
    d z_i, d z_f, d z_g, d z_o = sigmoid'/tanh' of (d c_t g1, d c_t c_{t-1}, d c_t i1, d h_t tanh(c_t))
    d W_1 = d z [inputs]^T;  d h_{t-1} = W_1[h]^T d z;  d c_{t-1} = d c_t * f1
"""
from __future__ import annotations

import threading
import weakref

import torch
from torch import Tensor

from metalstm import native
from metalstm.preprocess import preprocess


_WORKSPACES = threading.local()    # each thread its own buffers: two threads never share one


def _workspace(name: str, rows: int, cols: int, like: Tensor) -> Tensor:
    """A scratch [rows, cols] buffer reused from step to step, for arrays that live only inside
    one forward or backward call (z, dz, the meta-test inputs): the same memory every step
    instead of a fresh 2-9 MB allocation, which costs cache misses on first touch."""
    buffers = _WORKSPACES.__dict__.setdefault("buffers", {})
    key = (name, rows, cols, like.dtype, like.device)
    if key not in buffers:
        if len(buffers) > 8:              # another learner size or device: drop the old buffers
            buffers.clear()
        buffers[key] = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    return buffers[key]


_SAVED = {"free": {}, "lock": threading.Lock()}    # (shape, dtype) -> arrays no step holds any more


def _saved_array(shape: tuple[int, int], like: Tensor) -> Tensor:
    """A [rows, cols] array for activations a meta-training step saves for its backward pass,
    reused from a step whose graph is gone (`_recycle`): a fresh 2-9 MB array every step
    costs page faults (about a fifth of a 28x28 meta-training episode, measured). CPU only:
    a GPU's caching allocator already reuses memory."""
    if like.device.type == "cpu":
        with _SAVED["lock"]:
            free = _SAVED["free"].get((shape, like.dtype))
            if free:
                return free.pop()
    return like.new_empty(shape)


def _recycle(ctx, *arrays: Tensor) -> None:
    """Hand `arrays` back to `_saved_array` once the graph node `ctx` has been freed (after the
    backward pass, when nothing can read its saved tensors again, or when the graph is dropped)."""
    for array in arrays:
        if array.device.type == "cpu":
            weakref.finalize(ctx, _give_back, array)


def _give_back(array: Tensor) -> None:
    with _SAVED["lock"]:
        free = _SAVED["free"]
        if len(free) > 8:                 # another learner size: let the old arrays go
            free.clear()
        kept = free.setdefault((tuple(array.shape), array.dtype), [])
        if len(kept) < 64:                # T steps of an episode or two at most
            kept.append(array)


def release_buffers() -> None:
    """Let go of the reused arrays (this thread's scratch buffers and the saved-activation
    arrays), e.g. after meta-training in a notebook; they are made again when needed."""
    _WORKSPACES.__dict__.pop("buffers", None)
    with _SAVED["lock"]:
        _SAVED["free"].clear()


def _layer1_input(loss, grad, h, W, b, p, inputs_out=None, z_out=None):
    """(pre(L_t), inputs, z): z = W_1 [pre(L_t); pre(grad_t); h_{t-1}] + b_1 [4H, n], as one matrix
    product W' [pre(grad_t); h_{t-1}; 1] - the loss is the same for every coordinate, so its two
    weight columns fold into the bias, and the bias becomes one more column of W' against a row
    of ones (no [4H, n] broadcast).

    inputs is that [H + 3, n] right-hand side stored coordinate-major, as an [n, H + 3] array
    (returned in that form), and W' column-major: on the development machine's CPU, MKL runs
    this product (and the backward's dz @ inputs) 1.4-2.8x faster in these layouts than in
    the row-major ones, with bit-for-bit the same result (measured there; README, Speed).
    The pieces are written into the array, no cat."""
    H, n = h.shape
    pre_loss, bias = _folded_bias(loss, W, b, p)
    inputs = h.new_empty(n, H + 3) if inputs_out is None else inputs_out
    inputs[:, :2] = preprocess(grad, p)
    inputs[:, 2:2 + H].copy_(h.T)
    inputs[:, -1].fill_(1.0)
    weights = torch.cat([W[:, 2:].T, bias[None]]).T                       # [4H, H + 3], column-major
    z = torch.mm(weights, inputs.T, out=z_out)                             # [4H, n]
    return pre_loss, inputs, z


def _folded_bias(loss, W, b, p):
    """(pre(L_t), b_1 + W_1[loss] pre(L_t)): the loss's share of layer 1, the same for every coordinate."""
    pre_loss = preprocess(loss, p).reshape(2)
    return pre_loss, torch.addmv(b, W[:, :2], pre_loss)


def _native_weights(loss, W, b, p):
    """(pre(L_t), W') for the C loops: W' = [W_1's grad and h columns | the folded bias]
    [4H, H + 3] row-major, the same matrix as `_layer1_input`'s, in the other layout."""
    pre_loss, bias = _folded_bias(loss, W, b, p)
    return pre_loss, torch.cat([W[:, 2:], bias[:, None]], dim=1)


def _layer2(h, theta, grad, prev_f, prev_i, W_F, W_I, b_F, b_I):
    """The meta-LSTM cell: (theta_t, f_t, i_t, a_f, a_i); both gates' h-terms in one [2, H] @ [H, n]."""
    H = h.shape[0]
    a = torch.stack([W_F[:H], W_I[:H]]) @ h                              # [2, n]
    a_f = a[0] + W_F[H] * theta + W_F[H + 1] * prev_f + b_F
    a_i = a[1] + W_I[H] * theta + W_I[H + 1] * prev_i + b_I
    f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
    return torch.addcmul(f * theta, i, grad, value=-1.0), f, i, a_f, a_i


class FusedMetaStep(torch.autograd.Function):
    """One coordinate-wise meta-learner step; outputs (theta_t, h_t, c_t, f_t, i_t, a_f, a_i)."""

    @staticmethod
    def forward(ctx, loss, grad, theta, h, c, prev_f, prev_i, W, b, W_F, W_I, b_F, b_I, p):
        H, n = h.shape
        ctx.native = use_native = _native_for(p, H, grad, theta, h, c, prev_f, prev_i, W, W_F, W_I)
        ctx.hn = (H, n)
        if use_native:            # the whole step in one C sweep; it saves the gate activations
            acts = _saved_array((4 * H, n), theta)
            pre_loss, W1 = _native_weights(loss, W, b, p)
            outs = native.step(grad, p, h, W1, c, theta, prev_f, prev_i, W_F, W_I, b_F, b_I, acts=acts)
            theta_new, h_new, c_new, f, i, a_f, a_i = outs
            ctx.p = p
            ctx.save_for_backward(pre_loss, grad, theta, h, c, W1, W_F, W_I, acts, c_new, h_new, prev_f,
                                  prev_i, f, i)
            _recycle(ctx, acts)
            return outs
        # inputs, z and tanh(c_t) are saved for the backward pass (in reused arrays, handed
        # back when this node is freed); the gate activations overwrite z: acts = [i1; f1; g1; o1]
        inputs, acts = _saved_array((n, H + 3), theta), _saved_array((4 * H, n), theta)
        pre_loss, inputs, acts = _layer1_input(loss, grad, h, W, b, p, inputs_out=inputs, z_out=acts)
        tanh_c = _saved_array((H, n), theta)
        torch.sigmoid_(acts[:2 * H])                                    # i1 and f1, one sweep
        torch.tanh_(acts[2 * H:3 * H])                                  # g1
        torch.sigmoid_(acts[3 * H:])                                    # o1
        i1, f1, g1, o1 = acts.chunk(4)
        c_new = torch.mul(f1, c).addcmul_(i1, g1)
        torch.tanh(c_new, out=tanh_c)
        h_new = torch.mul(o1, tanh_c)
        theta_new, f, i, a_f, a_i = _layer2(h_new, theta, grad, prev_f, prev_i, W_F, W_I, b_F, b_I)
        ctx.save_for_backward(pre_loss, grad, theta, c, prev_f, prev_i, W, W_F, W_I, inputs,
                              acts, tanh_c, h_new, f, i)
        _recycle(ctx, inputs, acts, tanh_c)
        return theta_new, h_new, c_new, f, i, a_f, a_i

    @staticmethod
    def backward(ctx, d_theta, d_h, d_c, d_f, d_i, d_af, d_ai):
        if ctx.native:
            return _native_backward(ctx, d_theta, d_h, d_c, d_f, d_i, d_af, d_ai)
        (pre_loss, grad, theta, c, prev_f, prev_i, W, W_F, W_I, inputs,
         acts, tanh_c, h_new, f, i) = ctx.saved_tensors
        H, n = ctx.hn
        dz = _workspace("dz", 4 * H, n, like=theta)          # [dz_i; dz_f; dz_g; dz_o]
        d_theta = theta.new_zeros(n) if d_theta is None else d_theta
        # layer 2
        g_f = d_theta * theta if d_f is None else torch.addcmul(d_f, d_theta, theta)
        g_i = -d_theta * grad if d_i is None else torch.addcmul(d_i, d_theta, grad, value=-1.0)
        da_f = torch.ops.aten.sigmoid_backward(g_f, f)
        da_i = torch.ops.aten.sigmoid_backward(g_i, i)
        if d_af is not None:
            da_f = da_f + d_af
        if d_ai is not None:
            da_i = da_i + d_ai
        da = torch.stack([da_f, da_i])                                # [2, n]
        d_theta_prev = d_theta * f + W_F[H] * da_f + W_I[H] * da_i
        d_prev_f = da_f * W_F[H + 1]
        d_prev_i = da_i * W_I[H + 1]
        W_h = torch.stack([W_F[:H], W_I[:H]])
        d_h = W_h.T @ da if d_h is None else torch.addmm(d_h, W_h.T, da)  # [H, n]
        # layer 1, in two reused buffers: d c_t, then dz
        i1, f1, g1, o1 = acts.chunk(4)
        d_c_new = _workspace("dc", H, n, like=theta)
        torch.mul(d_h, o1, out=d_c_new)
        torch.ops.aten.tanh_backward(d_c_new, tanh_c, grad_input=d_c_new)
        if d_c is not None:
            d_c_new += d_c
        torch.mul(d_c_new, g1, out=dz[:H])
        torch.mul(d_c_new, c, out=dz[H:2 * H])
        torch.ops.aten.sigmoid_backward(dz[:2 * H], acts[:2 * H], grad_input=dz[:2 * H])
        torch.mul(d_c_new, i1, out=dz[2 * H:3 * H])
        torch.ops.aten.tanh_backward(dz[2 * H:3 * H], g1, grad_input=dz[2 * H:3 * H])
        torch.mul(d_h, tanh_c, out=dz[3 * H:])
        torch.ops.aten.sigmoid_backward(dz[3 * H:], o1, grad_input=dz[3 * H:])
        d_c_prev = d_c_new * f1
        # the weight gradients: layer 2's sums, then layer 1's two products
        dW_F, dW_I, db_F, db_I = _layer2_weight_grads(da, da_f, da_i, h_new, theta, prev_f, prev_i)
        # W_1[h]^T dz with W_1[h] copied contiguous (its transpose column-major: the faster layout)
        d_h_prev = W[:, 4:].contiguous().T @ dz if ctx.needs_input_grad[3] else None
        dW_inputs = dz @ inputs                                           # [4H, 2 + H + 1]
        db = dW_inputs[:, -1]
        dW = torch.cat([torch.outer(db, pre_loss), dW_inputs[:, :-1]], dim=1)
        return (None, None, d_theta_prev, d_h_prev, d_c_prev, d_prev_f, d_prev_i,
                dW, db, dW_F, dW_I, db_F, db_I, None)


def _layer2_weight_grads(da, da_f, da_i, h_new, theta, prev_f, prev_i):
    """Layer 2's weight gradients (dW_F, dW_I, db_F, db_I) from da = [da_f; da_i] [2, n] (and its
    two rows as they were computed: BLAS's dot may round by its operands' alignment)."""
    dW_h = da @ h_new.T                                                   # [2, H]
    dW_F = torch.cat([dW_h[0], torch.stack([da_f @ theta, da_f @ prev_f])])
    dW_I = torch.cat([dW_h[1], torch.stack([da_i @ theta, da_i @ prev_i])])
    return dW_F, dW_I, da_f.sum(), da_i.sum()


def _native_backward(ctx, d_theta, d_h, d_c, d_f, d_i, d_af, d_ai):
    """FusedMetaStep.backward through the C loops (native.step_backward): every derivative of the
    hand-written backward above, layer 1's two products included, in one sweep."""
    pre_loss, grad, theta, h, c, W1, W_F, W_I, acts, c_new, h_new, prev_f, prev_i, f, i = ctx.saved_tensors
    d_theta_prev, d_prev_f, d_prev_i, da, d_c_prev, d_h_prev, dW1 = native.step_backward(
        d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, grad, ctx.p, h, W1, theta, acts, c, c_new, f, i, W_F, W_I,
        want_dh=ctx.needs_input_grad[3])
    dW_F, dW_I, db_F, db_I = _layer2_weight_grads(da, da[0], da[1], h_new, theta, prev_f, prev_i)
    db = dW1[:, -1]
    dW = torch.cat([torch.outer(db, pre_loss), dW1[:, :-1]], dim=1)
    return (None, None, d_theta_prev, d_h_prev, d_c_prev, d_prev_f, d_prev_i,
            dW, db, dW_F, dW_I, db_F, db_I, None)


def fused_step(loss: Tensor, grad: Tensor, theta: Tensor, h: Tensor, c: Tensor, prev_f: Tensor,
               prev_i: Tensor, W: Tensor, b: Tensor, W_F: Tensor, W_I: Tensor, b_F: Tensor, b_I: Tensor,
               p: float) -> tuple[Tensor, ...]:
    """(theta_t, h_t, c_t, f_t, i_t, a_f, a_i) of one step; equal to `MetaLearner.step`'s.

    Where no gradient is wanted (meta-testing: grad mode off, or no input needs one), the
    step runs `inference_step`, which works in place in two reused buffers, or, after
    `set_compile(True)`, `compiled_step`."""
    args = (loss, grad, theta, h, c, prev_f, prev_i, W, b, W_F, W_I, b_F, b_I)
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in args):
        with torch.no_grad():          # set_native takes precedence over set_compile
            compiled = _COMPILE["on"] and not _native_for(p, h.shape[0], *args[1:])
            return compiled_step(*args, p) if compiled else inference_step(*args, p)
    return FusedMetaStep.apply(*args, p)


def inference_step(loss, grad, theta, h, c, prev_f, prev_i, W, b, W_F, W_I, b_F, b_I, p):
    """The forward of `FusedMetaStep` without saving anything for a backward pass: inputs and z
    live in two reused buffers and the gate activations overwrite z in place, so only h_t and
    c_t are new [H, n] arrays."""
    H, n = h.shape
    if _native_for(p, H, grad, theta, h, c, prev_f, prev_i, W, W_F, W_I):
        _, W1 = _native_weights(loss, W, b, p)
        return native.step(grad, p, h, W1, c, theta, prev_f, prev_i, W_F, W_I, b_F, b_I)
    _, _, z = _layer1_input(loss, grad, h, W, b, p, inputs_out=_workspace("inputs", n, H + 3, like=theta),
                            z_out=_workspace("z", 4 * H, n, like=theta))
    torch.sigmoid_(z[:2 * H])                                   # i1, f1
    torch.tanh_(z[2 * H:3 * H])                                 # g1
    torch.sigmoid_(z[3 * H:])                                   # o1
    i1, f1, g1, o1 = z.chunk(4)
    c_new = (f1 * c).addcmul_(i1, g1)
    h_new = torch.tanh(c_new).mul_(o1)
    theta_new, f, i, a_f, a_i = _layer2(h_new, theta, grad, prev_f, prev_i, W_F, W_I, b_F, b_I)
    return theta_new, h_new, c_new, f, i, a_f, a_i


# -- opt-in: the C loops of metalstm/native.c ---------------------------------------------
_NATIVE = {"on": False}


def set_native(on: bool = True) -> None:
    """Run every CPU float32 step (meta-training and meta-testing) with hidden size up to
    `native.MAX_H` as the C loops of `metalstm.native` (on=True), layer 1's products included,
    or as the PyTorch operations above (False, the default). Switching on compiles native.c if
    it is not compiled yet, and raises `native.NativeUnavailable` with the reason when that
    cannot be done (no C compiler). The equations are the same either way; the C loops' exp,
    tanh and sums round differently, so results agree to rounding (tested), not bit for bit.
    Never switched on by the package itself."""
    if on:
        native.library()
    _NATIVE["on"] = bool(on)


def native_on() -> bool:
    """Whether `set_native(True)` is in force."""
    return _NATIVE["on"]


def _native_for(p: float, H: int, *tensors: Tensor) -> bool:
    """Whether this step runs the C loops: switched on, every array a CPU float32 one, and p and
    the hidden size H within the C loops' range (`native.supports`)."""
    return _NATIVE["on"] and native.supports(p, H, *tensors)


# -- opt-in: torch.compile ---------------------------------------------------------------
_COMPILE = {"on": False, "fn": None}


def set_compile(on: bool = True) -> None:
    """Run the meta-test steps (no gradient wanted) through `compiled_step` (on=True) or
    `inference_step` (False, the default). Meta-training steps keep the hand-written
    `FusedMetaStep`: compiled, they measured no faster (1-shot) or slower (5-shot) on the
    development machine, while the compiled meta-test step was 6-13% faster (README, Speed).
    For long runs only: the first meta-test step of each learner size compiles for tens of
    seconds (a C++ compiler must be installed), and the generated kernels round differently
    from the eager ones, so results agree with the default path to rounding, not bit for bit.
    Never switched on by the package itself."""
    _COMPILE["on"] = bool(on)


def compiling() -> bool:
    """Whether `set_compile(True)` is in force."""
    return _COMPILE["on"]


def plain_step(loss, grad, theta, h, c, prev_f, prev_i, W, b, W_F, W_I, b_F, b_I, p):
    """`MetaLearner.reference_step`'s equations as one function of tensors, for torch.compile
    (which fuses the elementwise work of the forward and of autograd's backward): the layer-1
    product in `_layer1_input`'s layouts, and tanh(x) as 2 sigmoid(2x) - 1, which the
    compiled CPU kernels compute faster than tanh (measured: README, Speed)."""
    H, n = h.shape
    pre_loss = preprocess(loss, p).reshape(2)
    bias = torch.addmv(b, W[:, :2], pre_loss)
    inputs = torch.cat([preprocess(grad, p), h.T, h.new_ones(n, 1)], dim=1)     # [n, H + 3]
    z = torch.mm(torch.cat([W[:, 2:].T, bias[None]]).T, inputs.T)              # [4H, n]
    z_i, z_f, z_g, z_o = z.chunk(4)
    c_new = torch.sigmoid(z_f) * c + torch.sigmoid(z_i) * (2 * torch.sigmoid(2 * z_g) - 1)
    h_new = torch.sigmoid(z_o) * (2 * torch.sigmoid(2 * c_new) - 1)
    a_f = W_F[:H] @ h_new + W_F[H] * theta + W_F[H + 1] * prev_f + b_F
    a_i = W_I[:H] @ h_new + W_I[H] * theta + W_I[H + 1] * prev_i + b_I
    f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
    return f * theta - i * grad, h_new, c_new, f, i, a_f, a_i


def compiled_step(*args):
    """`plain_step` through torch.compile (compiled on first use, again for each new shape)."""
    if _COMPILE["fn"] is None:
        _COMPILE["fn"] = torch.compile(plain_step, dynamic=False)
    return _COMPILE["fn"](*args)
