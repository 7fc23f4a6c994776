"""The fused meta-learner step (path="fused": metalstm.fast.fused's hand-written backward) equals
the autograd reference (path="reference"), values and meta-gradients, in float64 and under gradcheck."""
import pytest
import torch

from metalstm.fast import fused
from metalstm.fast.fused import FusedMetaStep
from metalstm.metalearner import MetaLearner


def perturbed_meta(n: int, prev_gate: str, seed: int = 0, hidden: int = 20) -> MetaLearner:
    """A double-precision meta-learner whose weights are far from their init (gates not saturated)."""
    g = torch.Generator().manual_seed(seed)
    meta = MetaLearner(n, hidden=hidden, theta0=torch.randn(n, generator=g, dtype=torch.float64), generator=g,
                       prev_gate=prev_gate).double()
    with torch.no_grad():
        for param in meta.rule_parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=g, dtype=torch.float64))
        meta.b_F.fill_(0.5)
        meta.b_I.fill_(-0.5)
    return meta


def unroll(meta: MetaLearner, steps: int, path: str, seed: int = 1):
    """theta_T, the last state and every step's gates on `path`, for gradients spanning 7 orders
    of magnitude."""
    g = torch.Generator().manual_seed(seed)
    n, dtype = meta.n_params, meta.c0.dtype
    meta.path = path
    theta, state, gates = meta.c0, meta.initial_state(), []
    for t in range(steps):
        scale = 10.0 ** torch.randint(-7, 1, (n,), generator=g)
        grad = (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)
        theta, state, gate = meta.step(torch.tensor(2.0 / (t + 1), dtype=dtype), grad, theta, state)
        gates.append(gate)
    return theta, state, gates


def assert_fused_agrees(meta: MetaLearner, steps: int = 4) -> None:
    """THE agreement check: the fused step's values and meta-gradients equal autograd's through
    `reference_step`, for a loss that reaches every output of the step (theta, h, c, the gates)."""
    r = torch.randn(meta.n_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    results = {}
    for path in ("fused", "reference"):
        meta.zero_grad()
        theta, state, gates = unroll(meta, steps, path)
        loss = (theta * r).sum() + state.h.pow(2).sum() + 0.3 * state.c.sum() + (gates[1].f * r).sum() \
            + gates[2].i.sum() + state.f.sum() + state.i.pow(2).sum()
        loss.backward()
        results[path] = (theta.detach(), state, [p.grad.clone() for p in meta.parameters()])
    meta.path = "fused"
    (theta_f, state_f, grads_f), (theta_r, state_r, grads_r) = results["fused"], results["reference"]
    torch.testing.assert_close(theta_f, theta_r, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state_f.h, state_r.h, rtol=1e-12, atol=1e-14)
    for (name, _), got, want in zip(meta.named_parameters(), grads_f, grads_r):
        assert want.abs().sum() > 0, name     # every meta-parameter receives a gradient
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("prev_gate", ["value", "logit"])
def test_fused_step_has_the_reference_values_and_meta_gradients(prev_gate):
    assert_fused_agrees(perturbed_meta(40, prev_gate))


@pytest.mark.slow
def test_fused_step_passes_gradcheck():
    meta = perturbed_meta(6, "value", seed=3)
    n, H = 6, meta.hidden
    g = torch.Generator().manual_seed(4)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    loss, grad = torch.tensor(0.7, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    inputs = (loss, grad, rand(n), rand(H, n), rand(H, n), rand(n).sigmoid().detach().requires_grad_(),
              rand(n), *(w.detach().clone().requires_grad_() for w in meta.weights()), meta.p, False)
    assert torch.autograd.gradcheck(FusedMetaStep.apply, inputs)


def test_meta_test_step_needs_no_graph_and_agrees():
    meta = perturbed_meta(30, "value").float()
    with torch.no_grad():
        theta_f, state_f, _ = unroll(meta, 3, "fused")
        theta_r, state_r, _ = unroll(meta, 3, "reference")
    assert theta_f.grad_fn is None
    torch.testing.assert_close(theta_f, theta_r.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state_f.c, state_r.c.float(), rtol=1e-5, atol=1e-6)


# FusedMetaStep.backward's outputs, in forward's argument order
INPUTS = ("loss", "grad", "theta", "h", "c", "f_prev", "i_prev", "W1", "b1", "W_F", "W_I", "b_F", "b_I", "p", "native")


@pytest.mark.parametrize("wrong_input", ["theta", "h", "c", "f_prev", "W1", "W_F", "b_I"])
def test_a_wrong_backward_is_caught(monkeypatch, wrong_input):
    """The agreement check can fail: with the real fused backward made wrong in one derivative
    (1% off), `assert_fused_agrees` - the check the tests above rely on - raises."""
    meta = perturbed_meta(20, "value")
    assert_fused_agrees(meta, steps=3)                     # the real backward passes
    original, index, calls = FusedMetaStep.backward, INPUTS.index(wrong_input), []

    def wrong(ctx, *grads):
        out = list(original(ctx, *grads))
        if out[index] is not None:                         # (no d h_0: the first h is a constant)
            out[index] = out[index] * 1.01
            calls.append(wrong_input)
        return tuple(out)

    monkeypatch.setattr(FusedMetaStep, "backward", staticmethod(wrong))
    with pytest.raises(AssertionError):
        assert_fused_agrees(meta, steps=3)
    assert calls                                           # the fused path ran the wrong backward


def test_each_thread_has_its_own_scratch_buffers():
    import threading

    like = torch.zeros(1)
    mine = fused._workspace("z", 3, 4, like)
    assert fused._workspace("z", 3, 4, like) is mine          # reused from step to step
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(fused._workspace("z", 3, 4, like)))
    worker.start()
    worker.join()
    assert theirs[0] is not mine and theirs[0].data_ptr() != mine.data_ptr()


def test_the_meta_test_step_is_the_forward_without_saving(monkeypatch):
    """Meta-testing runs the same forward as meta-training, in its no-save mode (one copy of the
    maths): bit-for-bit the values of FusedMetaStep's forward, and nothing taken from the pool
    of saved-activation arrays."""
    meta = perturbed_meta(50, "value").float()
    meta.path = "fused"
    calls = []
    real = fused._forward
    monkeypatch.setattr(fused, "_forward", lambda *a, save: calls.append(save) or real(*a, save=save))
    loss, grad, state = torch.tensor(0.8), 1e-3 * torch.randn(50, generator=torch.Generator().manual_seed(0)), \
        meta.initial_state()
    with torch.no_grad():
        tested = meta.step(loss, grad, meta.c0, state)
    trained = meta.step(loss, grad, meta.c0, state)
    assert calls == [False, True]
    assert tested[0].grad_fn is None and trained[0].grad_fn is not None
    for a, b in ((tested[0], trained[0]), (tested[1].h, trained[1].h), (tested[1].c, trained[1].c),
                 (tested[2].f, trained[2].f)):
        assert torch.equal(a, b.detach())


def test_the_step_takes_its_weights_by_name():
    """MetaLearner.weights() is the StepWeights the fused step reads: W1 and b1 are the stored
    lstm_weight and lstm_bias (nn.LSTMCell's names), the rest as in the equations."""
    meta = perturbed_meta(5, "value")
    w = meta.weights()
    assert w._fields == ("W1", "b1", "W_F", "W_I", "b_F", "b_I")
    assert w.W1 is meta.lstm_weight and w.b1 is meta.lstm_bias and w.W_F is meta.W_F and w.b_I is meta.b_I
    assert w.W1.shape == (4 * meta.hidden, 4 + meta.hidden) and w.W_F.shape == (meta.hidden + 2,)
