"""The distilled rules (metalstm.distill) and the gate measurements (metalstm.viz.mechanism).

Each candidate is a cell like SGDCell: it runs in the one inner loop, reduces to plain SGD
where its form allows, and meta-gradients reach exactly its own parameters. The fits and the
measurements give known values on small records made by hand.
"""
import math

import pytest
import torch

from metalstm.config import get_config
from metalstm.distill import (CANDIDATES, NoForgetting, PowerCell, RMSpropCell, SignCell, StepTable,
                              fit_candidates, fit_magnitude, fit_median, fit_power, fit_rmsprop, fit_sign)
from metalstm.episodes import sampler_for
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner, SGDCell, inner_loop, run_episode
from metalstm.rules import MagnitudeCell, layer_index
from metalstm.viz.mechanism import correlations, correlations_of, explained_variance, gate_response
from metalstm.viz.record import GateRecord

LR, STEPS = 0.1, 3


@pytest.fixture(scope="module")
def learner():
    return Learner(n_way=5)


@pytest.fixture(scope="module")
def episode():
    return sampler_for(get_config("smoke"), "train")[3]


@pytest.fixture(scope="module")
def layers(learner):
    return layer_index(learner)


def theta0(learner):
    return learner.init_params(torch.Generator().manual_seed(0))


def sgd_like(learner, layers):
    """Every candidate that can be plain SGD with step LR, set to it."""
    layer_of, names = layers
    t0, n, L = theta0(learner), learner.n_params, len(names)
    magnitude = MagnitudeCell(t0, LR, layer_of, names, STEPS)
    return {"median": StepTable(t0, torch.ones(STEPS, n), torch.full((STEPS, n), LR)),
            "power": PowerCell(t0, torch.full((STEPS, L), LR), torch.zeros(STEPS, L), layer_of),
            "magnitude": magnitude}


def run(learner, rule, episode, steps=STEPS):
    return inner_loop(learner, rule, episode.support_x, episode.support_y, steps, 5,
                      generator=torch.Generator().manual_seed(5), record=True)


@pytest.mark.parametrize("name", ["median", "power", "magnitude"])
def test_a_candidate_reduces_to_plain_sgd(learner, episode, layers, name):
    rule = sgd_like(learner, layers)[name]
    theta, losses, _ = run(learner, rule, episode)
    ref, ref_losses, _ = run(learner, SGDCell(theta0(learner), LR), episode)
    torch.testing.assert_close(theta, ref, rtol=0, atol=1e-6)
    assert losses == pytest.approx(ref_losses, abs=1e-6)


def test_sign_and_rmsprop_take_the_steps_their_formulas_say(learner, episode, layers):
    layer_of, names = layers
    t0 = theta0(learner)
    s = torch.full((STEPS, len(names)), 0.01)
    theta, _, gates = run(learner, SignCell(t0, s, layer_of), episode, steps=1)
    moved = t0 - theta
    assert torch.allclose(moved.abs()[moved != 0], torch.tensor(0.01))
    rms = RMSpropCell(t0, s, layer_of, beta=0.0, eps=1e-30)
    theta, _, gates = run(learner, rms, episode, steps=1)           # v_1 = g^2: a sign step of 0.01
    moved = t0 - theta
    torch.testing.assert_close(moved.abs()[moved != 0], torch.full_like(moved[moved != 0], 0.01))


@pytest.mark.parametrize("name", ["median", "power", "sign", "rmsprop", "magnitude"])
def test_a_fitted_rule_refuses_a_step_it_has_no_numbers_for(learner, episode, layers, name):
    layer_of, names = layers
    t0, L = theta0(learner), len(names)
    rule = {"median": StepTable(t0, torch.ones(STEPS, t0.numel()), torch.full((STEPS, t0.numel()), LR)),
            "power": PowerCell(t0, torch.full((STEPS, L), LR), torch.zeros(STEPS, L), layer_of),
            "sign": SignCell(t0, torch.full((STEPS, L), 1e-3), layer_of),
            "rmsprop": RMSpropCell(t0, torch.full((STEPS, L), 1e-3), layer_of, 0.9, 1e-8),
            "magnitude": MagnitudeCell(t0, LR, layer_of, names, STEPS)}[name]
    with pytest.raises(ValueError, match=f"for {STEPS} steps"):
        run(learner, rule, episode, steps=STEPS + 1)


@pytest.mark.parametrize("name", ["median", "power", "sign", "rmsprop", "magnitude", "no-forget"])
def test_meta_gradients_reach_exactly_the_rules_own_parameters(learner, episode, layers, name):
    layer_of, names = layers
    t0, L = theta0(learner), len(names)
    meta = MetaLearner(learner.n_params, theta0=t0, generator=torch.Generator().manual_seed(1))
    rule = {"median": StepTable(t0, torch.ones(STEPS, t0.numel()), torch.full((STEPS, t0.numel()), LR)),
            "power": PowerCell(t0, torch.full((STEPS, L), LR), torch.full((STEPS, L), -0.2), layer_of),
            "sign": SignCell(t0, torch.full((STEPS, L), 1e-3), layer_of),
            "rmsprop": RMSpropCell(t0, torch.full((STEPS, L), 1e-3), layer_of, 0.9, 1e-8),
            "magnitude": MagnitudeCell(t0, LR, layer_of, names, STEPS),
            "no-forget": NoForgetting(meta)}[name]
    res = run_episode(learner, rule, episode, STEPS, 5, mode="train", generator=torch.Generator().manual_seed(2))
    res.query_loss.backward()
    own = {id(q) for q in rule.rule_parameters()}
    assert own, "every candidate but a fixed table has numbers of its own"
    for pname, q in rule.named_parameters():
        if id(q) in own:
            assert q.grad is not None and q.grad.abs().sum() > 0, f"{pname} got no meta-gradient"
        elif name in ("magnitude", "no-forget") and pname.endswith("c0"):   # a learned c_0 learns too
            assert q.grad is not None and q.grad.abs().sum() > 0
        else:                  # a fitted rule's c_0; the LSTM's forget-gate weights once f = 1
            assert q.grad is None or not q.grad.any(), f"{pname} must get no meta-gradient"


# -- fits on records made by hand ------------------------------------------------------------------
def hand_record(input_, grad, forget=None, theta=None, loss=None):
    e, t, n = input_.shape
    return GateRecord(forget=torch.ones_like(input_) if forget is None else forget, input=input_,
                      query_acc=torch.zeros(e, t + 1), query_loss=torch.zeros(e, t + 1),
                      support_loss=torch.ones(e, t) if loss is None else loss, episodes=list(range(e)),
                      slices={"a": slice(0, n // 2), "b": slice(n // 2, n)}, grad=grad,
                      theta=torch.zeros(e, t + 1, n) if theta is None else theta)


def random_grads(e=3, t=2, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.empty(e, t, n).uniform_(-12, 0, generator=g)) * torch.sign(torch.randn(e, t, n, generator=g))


def test_fit_magnitude_recovers_a_logistic_gate():
    g = random_grads()
    a, b = torch.tensor([-2.0, -1.0]), torch.tensor([-0.3, -0.5])
    x = g.abs().clamp_min(math.exp(-10)).log()
    i = torch.sigmoid(a[None, :, None] + b[None, :, None] * x)
    cell = fit_magnitude(hand_record(i, g), torch.zeros(40), torch.zeros(40, dtype=torch.long))
    torch.testing.assert_close(cell.a[:, 0].detach(), a, atol=1e-3, rtol=0)
    torch.testing.assert_close(cell.b[:, 0].detach(), b, atol=1e-3, rtol=0)


def test_fit_power_sign_and_median_recover_their_numbers():
    g = random_grads()
    layer_of = torch.tensor([0] * 20 + [1] * 20)
    s, b = torch.tensor([[0.2, 0.1], [0.3, 0.05]]), torch.tensor([[-0.2, -0.4], [-0.1, 0.0]])
    x = g.abs().clamp_min(math.exp(-10))
    i = s[:, layer_of][None] * x ** b[:, layer_of][None]
    power = fit_power(hand_record(i, g), torch.zeros(40), layer_of)
    torch.testing.assert_close(power.s.detach(), s, rtol=1e-3, atol=0)
    torch.testing.assert_close(power.b.detach(), b, atol=1e-4, rtol=0)
    lengths = torch.tensor([[1e-3, 2e-3], [3e-3, 4e-3]])
    sign = fit_sign(hand_record(lengths[:, layer_of][None] / g.abs(), g), torch.zeros(40), layer_of)
    torch.testing.assert_close(sign.s.detach(), lengths, rtol=1e-4, atol=0)
    steps = torch.tensor([0.1, 0.5])[None, :, None].expand(3, 2, 40).clone()
    median = fit_median(hand_record(steps, g), torch.zeros(40))
    assert torch.equal(median.input.detach(), torch.tensor([0.1, 0.5])[:, None].expand(2, 40))


def test_fit_rmsprop_picks_the_beta_and_eps_that_made_the_record():
    g = random_grads()
    layer_of = torch.zeros(40, dtype=torch.long)
    v1 = g[:, 0] ** 2
    v2 = 0.5 * v1 + 0.5 * g[:, 1] ** 2
    i = torch.stack([0.01 / (v1.sqrt() + 1e-6), 0.02 / (v2.sqrt() + 1e-6)], dim=1)
    cell = fit_rmsprop(hand_record(i, g), torch.zeros(40), layer_of)
    assert (cell.beta, cell.eps) == (0.5, 1e-6)
    torch.testing.assert_close(cell.s[:, 0].detach(), torch.tensor([0.01, 0.02]), rtol=1e-4, atol=0)


def test_fitting_needs_a_record_with_its_gradients():
    record = hand_record(torch.full((1, 2, 4), 0.1), None)
    with pytest.raises(ValueError, match="inputs=True"):
        fit_power(record, torch.zeros(4), torch.zeros(4, dtype=torch.long))


def test_fit_candidates_fits_every_candidate_on_a_real_record(learner, layers):
    from metalstm.viz import record_gates
    cfg = get_config("smoke")
    meta = MetaLearner(learner.n_params, theta0=theta0(learner), generator=torch.Generator().manual_seed(1))
    record = record_gates(learner, meta, sampler_for(cfg, "val"), cfg, episodes=2, progress=False, inputs=True)
    assert record.grad.shape == record.input.shape and record.theta.shape[1] == cfg.steps + 1
    rules = fit_candidates(record, meta, layers[0])
    assert tuple(rules) == CANDIDATES


# -- the measurements --------------------------------------------------------------------------------
def test_correlations_of_known_values():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    r = correlations_of(y, {"same": 2 * y + 1, "opposite": -y, "flat": torch.ones(4)})
    assert r["same"] == pytest.approx(1.0) and r["opposite"] == pytest.approx(-1.0)
    assert math.isnan(r["flat"])


def test_explained_variance_splits_a_gate_into_schedule_and_magnitude():
    g = random_grads(e=4, t=2, n=64)
    x = g.abs().clamp_min(math.exp(-10)).log()
    layer_of = torch.zeros(64, dtype=torch.long)
    only_step = torch.sigmoid(torch.tensor([-2.0, 1.0])[None, :, None].expand(4, 2, 64))
    shares = explained_variance(hand_record(only_step, g), layer_of, every=1)
    assert shares["step and layer"] == pytest.approx(1.0, abs=1e-6)
    assert shares["unexplained"] == pytest.approx(0.0, abs=1e-6)
    # a gate that follows the magnitude only, the same way at both steps: no schedule at all
    only_magnitude = torch.sigmoid(-0.3 * x - 4)
    shares = explained_variance(hand_record(only_magnitude, g), layer_of, every=1)
    assert shares["+ magnitude"] > 0.9 and shares["unexplained"] == pytest.approx(0.0, abs=1e-5)
    assert sum(shares.values()) == pytest.approx(1.0)
    r = correlations(hand_record(only_magnitude, g), layer_of)
    assert r[0][0]["magnitude"] == pytest.approx(-1.0)


def test_gate_response_of_a_magnitude_cell_is_its_formula(learner, episode, layers):
    layer_of, names = layers
    cell = MagnitudeCell(theta0(learner), LR, layer_of, names, STEPS)
    with torch.no_grad():
        cell.a.fill_(-1.0)
        cell.b.fill_(-0.25)
    magnitudes = torch.tensor([1e-8, 1e-3, 1.0])
    out = gate_response(learner, cell, episode, STEPS, 5, torch.Generator().manual_seed(0), magnitudes, layer_of)
    expected = torch.sigmoid(-1.0 - 0.25 * magnitudes.clamp_min(math.exp(-10)).log())
    assert out.shape == (STEPS, 3, len(names))
    torch.testing.assert_close(out[:, :, 0], expected.expand(STEPS, 3), atol=1e-6, rtol=0)
