"""The fast paths of the meta-learner step (paper notes 3, 4): `path="fused"` and `path="native"`.

`MetaLearner.reference_step` (metalstm/metalearner.py) writes the step as plain tensor
operations and lets autograd differentiate them; that is the version to read. This module
computes the same step as one `torch.autograd.Function`, `FusedMetaStep`, whose backward is
written out by hand: fewer sweeps over the [H, n] arrays than autograd's, PyTorch's fused
sigmoid/tanh derivative kernels, reused buffers, the gate activations written over layer 1's
pre-activations in place, and layer 1's product in the operand layouts that BLAS runs fastest
(`_layer1_input`). The operations are the reference's, in the same order; the results agree to
rounding (tests/package/test_fused.py, float64 and gradcheck). Where no gradient is wanted
(meta-testing) the same forward runs in its no-save mode: nothing kept for a backward pass,
every scratch array reused.

With native=True (`path="native"`, `--path native`) the forward and the backward run as the C
loops of `metalstm.fast.native` (metalstm/fast/native.c) wherever they can: CPU float32 arrays,
hidden size up to native.MAX_H, p up to native.MAX_P, a C compiler; elsewhere the PyTorch
operations below. The C loops round differently: the same numbers to rounding, not bit for bit.
Why each choice is faster, and by how much: docs/speed.md.

Names (docs/paper.md, the glossary): a column per coordinate, n coordinates, hidden size H.

    loss L_t []  grad grad_t [n]  theta theta_{t-1} [n]      (L_t and grad_t are constants, paper notes 5)
    h, c    layer 1's state [H, n]           f_prev, i_prev  the fed-back gates [n]
    W1 [4H, 4 + H], b1 [4H]: layer 1         W_F, W_I [H + 2], b_F, b_I []: layer 2

Forward:

    layer 1   z = W1 [pre(L_t); pre(grad_t); h] + b1                        [4H, n]
              i1, f1, o1 = sigmoid(z_i, z_f, z_o);  g1 = tanh(z_g)
              c_new = f1 * c + i1 * g1;             h_new = o1 * tanh(c_new)
    layer 2   a_f = W_F . [h_new; theta; f_prev] + b_F;  f = sigmoid(a_f)   (a_i, i the same with W_I, i_prev)
              theta_new = f * theta - i * grad

Backward, for upstream gradients d theta_new, d h_new, d c_new, d f, d i, d a_f, d a_i:

    d a_f = (d theta_new * theta + d f) * f (1 - f) + d a_f(upstream)
    d a_i = (-d theta_new * grad + d i) * i (1 - i) + d a_i(upstream)
    d theta = d theta_new * f + W_F[theta] d a_f + W_I[theta] d a_i
    d h_new += W_F[h] d a_f + W_I[h] d a_i
    d c_new += d h_new * o1 * (1 - tanh(c_new)^2)
    d z_i, d z_f, d z_g, d z_o = sigmoid'/tanh' of (d c_new g1, d c_new c, d c_new i1, d h_new tanh(c_new))
    d W1 = d z [inputs]^T;  d h = W1[h]^T d z;  d c = d c_new * f1
"""
from __future__ import annotations

import threading
import weakref

import torch
from torch import Tensor

from metalstm.fast import native as native_loops
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
    costs page faults (docs/speed.md). CPU only: a GPU's caching allocator already reuses memory."""
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


def _layer1_input(loss, grad, h, W1, b1, p, inputs_out=None, z_out=None):
    """(pre(L_t), inputs, z): z = W1 [pre(L_t); pre(grad_t); h] + b1 [4H, n], as one matrix
    product W1_folded [pre(grad_t); h; 1] (`_folded_bias`: the loss is the same for every
    coordinate, so its two weight columns fold into the bias, and the bias becomes one more
    column against a row of ones - no [4H, n] broadcast).

    inputs is that [H + 3, n] right-hand side stored coordinate-major, as an [n, H + 3] array
    (returned in that form), and W1_folded column-major: the layouts in which BLAS runs this
    product and the backward's dz @ inputs fastest on a CPU, with the same result (docs/speed.md).
    The pieces are written into the array, no cat."""
    H, n = h.shape
    pre_loss, bias = _folded_bias(loss, W1, b1, p)
    inputs = h.new_empty(n, H + 3) if inputs_out is None else inputs_out
    inputs[:, :2] = preprocess(grad, p)
    inputs[:, 2:2 + H].copy_(h.T)
    inputs[:, -1].fill_(1.0)
    W1_folded = torch.cat([W1[:, 2:].T, bias[None]]).T                    # [4H, H + 3], column-major
    z = torch.mm(W1_folded, inputs.T, out=z_out)                           # [4H, n]
    return pre_loss, inputs, z


def _folded_bias(loss, W1, b1, p):
    """(pre(L_t) [2], b1 + W1[:, loss columns] pre(L_t) [4H]): the loss's share of layer 1, the same
    for every coordinate."""
    pre_loss = preprocess(loss, p).reshape(2)
    return pre_loss, torch.addmv(b1, W1[:, :2], pre_loss)


def _folded_weights(loss, W1, b1, p):
    """(pre(L_t), W1_folded) for the C loops: W1_folded = [W1's grad and h columns | the folded bias]
    [4H, H + 3] row-major, `_layer1_input`'s matrix in the other layout."""
    pre_loss, bias = _folded_bias(loss, W1, b1, p)
    return pre_loss, torch.cat([W1[:, 2:], bias[:, None]], dim=1)


def _layer2(h_new, theta, grad, f_prev, i_prev, W_F, W_I, b_F, b_I):
    """The meta-LSTM cell: (theta_new, f, i, a_f, a_i); both gates' h-terms in one [2, H] @ [H, n]."""
    H = h_new.shape[0]
    a = torch.stack([W_F[:H], W_I[:H]]) @ h_new                           # [2, n]
    a_f = a[0] + W_F[H] * theta + W_F[H + 1] * f_prev + b_F
    a_i = a[1] + W_I[H] * theta + W_I[H + 1] * i_prev + b_I
    f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
    return torch.addcmul(f * theta, i, grad, value=-1.0), f, i, a_f, a_i


def _uses_native(native: bool, p: float, H: int, *tensors: Tensor) -> bool:
    """Whether this step runs the C loops: asked for (native=True), every array a CPU float32 one,
    p and the hidden size H within the C loops' range (`native.supports`), and native.c compiled
    here (`native.available`)."""
    return native and native_loops.supports(p, H, *tensors) and native_loops.available()


def _forward(loss, grad, theta, h, c, f_prev, i_prev, W1, b1, W_F, W_I, b_F, b_I, p, native, save):
    """((theta_new, h_new, c_new, f, i, a_f, a_i), saved): the step's forward, on the C loops where
    `_uses_native`. save=True keeps what the backward pass needs (`saved`, in arrays reused from
    freed graphs); save=False keeps nothing (saved is None) and works in this thread's scratch
    buffers, so that only h_new and c_new are new [H, n] arrays."""
    H, n = h.shape

    def buffer(name, rows, cols):
        return _saved_array((rows, cols), theta) if save else _workspace(name, rows, cols, like=theta)

    if _uses_native(native, p, H, grad, theta, h, c, f_prev, i_prev, W1, W_F, W_I):
        acts = _saved_array((4 * H, n), theta) if save else None   # the C loops' gate activations
        pre_loss, W1_folded = _folded_weights(loss, W1, b1, p)
        outs = native_loops.step(grad, p, h, W1_folded, c, theta, f_prev, i_prev, W_F, W_I, b_F, b_I, acts=acts)
        theta_new, h_new, c_new, f, i, a_f, a_i = outs
        saved = None if not save else ("native", pre_loss, grad, theta, h, c, W1_folded, W_F, W_I, acts, c_new,
                                       h_new, f_prev, i_prev, f, i)
        return outs, saved
    # the gate activations overwrite z: acts = [i1; f1; g1; o1]
    inputs, acts = buffer("inputs", n, H + 3), buffer("z", 4 * H, n)
    pre_loss, inputs, acts = _layer1_input(loss, grad, h, W1, b1, p, inputs_out=inputs, z_out=acts)
    tanh_c = buffer("tanh_c", H, n)
    torch.sigmoid_(acts[:2 * H])                                    # i1 and f1, one sweep
    torch.tanh_(acts[2 * H:3 * H])                                  # g1
    torch.sigmoid_(acts[3 * H:])                                    # o1
    i1, f1, g1, o1 = acts.chunk(4)
    c_new = torch.mul(f1, c).addcmul_(i1, g1)
    torch.tanh(c_new, out=tanh_c)
    h_new = torch.mul(o1, tanh_c)
    theta_new, f, i, a_f, a_i = _layer2(h_new, theta, grad, f_prev, i_prev, W_F, W_I, b_F, b_I)
    saved = None if not save else ("torch", pre_loss, grad, theta, c, f_prev, i_prev, W1, W_F, W_I, inputs,
                                   acts, tanh_c, h_new, f, i)
    return (theta_new, h_new, c_new, f, i, a_f, a_i), saved


class FusedMetaStep(torch.autograd.Function):
    """One coordinate-wise meta-learner step with a hand-written backward:
    apply(loss, grad, theta, h, c, f_prev, i_prev, W1, b1, W_F, W_I, b_F, b_I, p, native)
    -> (theta_new, h_new, c_new, f, i, a_f, a_i). (An autograd.Function takes its tensors one by
    one; `fused_step` is the call with named weights.)"""

    @staticmethod
    def forward(ctx, loss, grad, theta, h, c, f_prev, i_prev, W1, b1, W_F, W_I, b_F, b_I, p, native):
        outs, saved = _forward(loss, grad, theta, h, c, f_prev, i_prev, W1, b1, W_F, W_I, b_F, b_I, p, native,
                               save=True)
        kind, *tensors = saved
        ctx.native, ctx.p, ctx.hn = kind == "native", p, tuple(h.shape)
        ctx.save_for_backward(*tensors)
        # the arrays taken from `_saved_array` go back to it once this node is freed
        _recycle(ctx, *((tensors[8],) if ctx.native else (tensors[9], tensors[10], tensors[11])))
        return outs

    @staticmethod
    def backward(ctx, d_theta, d_h, d_c, d_f, d_i, d_af, d_ai):
        if ctx.native:
            return _native_backward(ctx, d_theta, d_h, d_c, d_f, d_i, d_af, d_ai)
        (pre_loss, grad, theta, c, f_prev, i_prev, W1, W_F, W_I, inputs,
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
        d_f_prev = da_f * W_F[H + 1]
        d_i_prev = da_i * W_I[H + 1]
        W_h = torch.stack([W_F[:H], W_I[:H]])
        d_h = W_h.T @ da if d_h is None else torch.addmm(d_h, W_h.T, da)  # [H, n]
        # layer 1, in two reused buffers: d c_new, then dz
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
        dW_F, dW_I, db_F, db_I = _layer2_weight_grads(da, da_f, da_i, h_new, theta, f_prev, i_prev)
        # W1[h]^T dz with W1[h] copied contiguous (its transpose column-major: the faster layout)
        d_h_prev = W1[:, 4:].contiguous().T @ dz if ctx.needs_input_grad[3] else None
        dW_inputs = dz @ inputs                                           # [4H, 2 + H + 1]
        db1 = dW_inputs[:, -1]
        dW1 = torch.cat([torch.outer(db1, pre_loss), dW_inputs[:, :-1]], dim=1)
        return (None, None, d_theta_prev, d_h_prev, d_c_prev, d_f_prev, d_i_prev,
                dW1, db1, dW_F, dW_I, db_F, db_I, None, None)


def _layer2_weight_grads(da, da_f, da_i, h_new, theta, f_prev, i_prev):
    """Layer 2's weight gradients (dW_F, dW_I, db_F, db_I) from da = [da_f; da_i] [2, n] (and its
    two rows as they were computed: BLAS's dot may round by its operands' alignment)."""
    dW_h = da @ h_new.T                                                   # [2, H]
    dW_F = torch.cat([dW_h[0], torch.stack([da_f @ theta, da_f @ f_prev])])
    dW_I = torch.cat([dW_h[1], torch.stack([da_i @ theta, da_i @ i_prev])])
    return dW_F, dW_I, da_f.sum(), da_i.sum()


def _native_backward(ctx, d_theta, d_h, d_c, d_f, d_i, d_af, d_ai):
    """FusedMetaStep.backward through the C loops (native.step_backward): every derivative of the
    hand-written backward above, layer 1's two products included, in one sweep."""
    (pre_loss, grad, theta, h, c, W1_folded, W_F, W_I, acts, c_new, h_new, f_prev, i_prev, f,
     i) = ctx.saved_tensors
    d_theta_prev, d_f_prev, d_i_prev, da, d_c_prev, d_h_prev, dW1_folded = native_loops.step_backward(
        d_theta, d_f, d_i, d_af, d_ai, d_h, d_c, grad, ctx.p, h, W1_folded, theta, acts, c, c_new, f, i, W_F, W_I,
        want_dh=ctx.needs_input_grad[3])
    dW_F, dW_I, db_F, db_I = _layer2_weight_grads(da, da[0], da[1], h_new, theta, f_prev, i_prev)
    db1 = dW1_folded[:, -1]
    dW1 = torch.cat([torch.outer(db1, pre_loss), dW1_folded[:, :-1]], dim=1)
    return (None, None, d_theta_prev, d_h_prev, d_c_prev, d_f_prev, d_i_prev,
            dW1, db1, dW_F, dW_I, db_F, db_I, None, None)


def fused_step(loss: Tensor, grad: Tensor, theta: Tensor, h: Tensor, c: Tensor, f_prev: Tensor, i_prev: Tensor,
               weights, p: float, native: bool = False) -> tuple[Tensor, ...]:
    """(theta_new, h_new, c_new, f, i, a_f, a_i) of one step, equal to `MetaLearner.reference_step`'s
    to rounding.

    weights: a `metalstm.metalearner.StepWeights` (W1, b1, W_F, W_I, b_F, b_I); p: the
    preprocessing's scale; native: run on the C loops where they can (see the module docstring).
    Where no gradient is wanted (meta-testing: grad mode off, or no input needs one), the forward
    runs in its no-save mode and builds no graph."""
    args = (loss, grad, theta, h, c, f_prev, i_prev, *weights)
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in args):
        with torch.no_grad():
            return _forward(*args, p, native, save=False)[0]
    return FusedMetaStep.apply(*args, p, native)
