"""The ladder of update rules (metalstm.rules): each rung is tested like SGDCell."""
import pytest
import torch

from metalstm.config import get_config
from metalstm.learner import Learner
from metalstm.metalearner import SGDCell, inner_loop, run_episode
from metalstm.rules import RUNGS, MetaSGDCell, ScheduleCell, layer_index, make_rule
from metalstm.model import build_model, load_trained
from metalstm.evaluate import evaluate_rule
from metalstm.episodes import sampler_for
from metalstm.train import train

LR = 0.1


@pytest.fixture(scope="module")
def learner():
    return Learner(n_way=5)


@pytest.fixture(scope="module")
def episode():
    cfg = get_config("smoke")
    return sampler_for(cfg, "train")[3]


def theta0(learner, seed=0):
    return learner.init_params(torch.Generator().manual_seed(seed))


def test_layer_index_puts_each_block_in_its_layer(learner):
    index, names = layer_index(learner)
    assert names == ["conv1", "conv2", "conv3", "conv4", "linear"]
    sl = learner.slices()
    assert (index[sl["conv1.weight"]] == 0).all() and (index[sl["bn1.bias"]] == 0).all()
    assert (index[sl["conv4.bias"]] == 3).all() and (index[sl["bn3.weight"]] == 2).all()
    assert (index[sl["fc.weight"]] == 4).all() and (index[sl["fc.bias"]] == 4).all()
    counts = torch.bincount(index).tolist()
    assert counts == [32 * 9 + 32 * 3, 32 * 32 * 9 + 32 * 3, 32 * 32 * 9 + 32 * 3,
                      32 * 32 * 9 + 32 * 3, 5 * 32 + 5]
    assert sum(counts) == learner.n_params


@pytest.mark.parametrize("rung", ["sgd", "init", "meta-sgd", "schedule", "magnitude"])
def test_every_rung_starts_as_plain_sgd(learner, episode, rung):
    """Untrained, every first-order rung takes exactly SGD's steps from the same c_0."""
    t0 = theta0(learner)
    rule = make_rule(rung, learner, t0, LR, steps=3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    theta, losses, _ = inner_loop(learner, rule, episode.support_x, episode.support_y, 3, 5, generator=g1)
    ref, ref_losses, _ = inner_loop(learner, SGDCell(t0, LR), episode.support_x, episode.support_y, 3, 5,
                                    generator=g2)
    torch.testing.assert_close(theta, ref, rtol=0, atol=1e-6)
    assert losses == pytest.approx(ref_losses, abs=1e-6)


def test_meta_sgd_uses_its_own_step_per_coordinate(learner, episode):
    t0 = theta0(learner)
    rule = MetaSGDCell(t0, LR)
    with torch.no_grad():
        rule.alpha[:100] = 0.0                       # these coordinates must not move
        rule.alpha[100:] = 0.5
    theta, _, gates = inner_loop(learner, rule, episode.support_x, episode.support_y, 2, 5, record=True)
    assert torch.equal(theta[:100], t0[:100])
    assert not torch.equal(theta[100:], t0[100:])
    assert (gates[0].f == 1).all() and (gates[0].i[100:] == 0.5).all()


def test_schedule_uses_the_step_size_of_each_step_and_layer(learner, episode):
    t0 = theta0(learner)
    index, names = layer_index(learner)
    rule = ScheduleCell(t0, LR, index, names, steps=3)
    with torch.no_grad():
        rule.alpha.copy_(torch.arange(15.0).view(3, 5) / 100)
    _, _, gates = inner_loop(learner, rule, episode.support_x, episode.support_y, 3, 5, record=True)
    for t in range(3):
        torch.testing.assert_close(gates[t].i, rule.alpha[t][index].detach())
    with pytest.raises(ValueError, match="learned for 3 steps"):
        inner_loop(learner, rule, episode.support_x, episode.support_y, 4, 5)


def test_magnitude_gives_larger_gradients_smaller_gates(learner, episode):
    """i_t = sigmoid(a[t, l] + b[t, l] * max(ln|g|, -p)): with b < 0 the gate falls as |g| grows,
    and it is flat below e^-p, where the preprocessing clamps ln|g|."""
    t0 = theta0(learner)
    index, names = layer_index(learner)
    rule = make_rule("magnitude", learner, t0, LR, steps=3)
    with torch.no_grad():
        rule.b.fill_(-0.3)
    grad = torch.tensor([1e-9, 1e-6, 1e-3, 1.0]).repeat(learner.n_params // 4 + 1)[: learner.n_params]
    i = rule.gate(grad, 0)[:4]
    assert i[0] == i[1] and i[1] > i[2] > i[3]
    torch.testing.assert_close(i[3], torch.sigmoid(rule.a[0, int(index[3])]))
    with pytest.raises(ValueError, match="learned for 3 steps"):
        inner_loop(learner, rule, episode.support_x, episode.support_y, 4, 5)


EXPECTED = {"sgd": set(), "init": {"c0"}, "meta-sgd": {"c0", "alpha"}, "schedule": {"c0", "alpha"},
            "magnitude": {"c0", "a", "b"},
            "lstm": {"c0", "lstm_weight", "lstm_bias", "W_F", "W_I", "b_F", "b_I"}}


@pytest.mark.parametrize("rung", RUNGS)
def test_meta_gradients_reach_c0_and_the_rungs_own_parameters_only(rung, episode):
    cfg = get_config("smoke", rule=rung)
    learner, rule = build_model(cfg)
    res = run_episode(learner, rule, episode, cfg.steps, cfg.batch_size, mode="train",
                      generator=torch.Generator().manual_seed(0))
    trainable = {n for n, p in rule.named_parameters() if p.requires_grad}
    assert trainable == EXPECTED[rung]
    if not trainable:
        assert not res.query_loss.requires_grad       # plain SGD from a fixed init learns nothing
        return
    res.query_loss.backward()
    for name, p in rule.named_parameters():
        if name in EXPECTED[rung]:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_every_rung_starts_from_the_same_c0():
    c0s = [build_model(get_config("smoke", rule=r))[1].c0 for r in RUNGS]
    for c0 in c0s[1:]:
        assert torch.equal(c0, c0s[0])


def test_unknown_rule_is_one_clear_error(learner):
    with pytest.raises(ValueError, match="the ladder is: sgd, init, meta-sgd, schedule, magnitude, lstm"):
        make_rule("adam", learner, theta0(learner), LR, steps=3)


@pytest.mark.slow
@pytest.mark.parametrize("rung", ["init", "meta-sgd", "schedule", "magnitude", "lstm"])
def test_a_few_episodes_of_meta_training_raise_accuracy(rung, tmp_path):
    """Integration: each rung, meta-trained a few dozen episodes, beats its untrained start on
    fixed meta-validation episodes (the same ones before and after)."""
    torch.set_num_threads(1)
    cfg = get_config("smoke", rule=rung, episodes=40, val_every=40, val_episodes=30, lr=3e-3)
    learner, untrained = build_model(cfg)
    val = sampler_for(cfg, "val")
    before = sum(evaluate_rule(learner, untrained, val, 30, cfg)) / 30
    train(cfg, tmp_path, progress=False)
    res = load_trained(tmp_path / "last.pt")
    after = sum(evaluate_rule(learner, res[1], val, 30, cfg)) / 30
    assert after > before + 0.05, (before, after)   # measured: +0.10 to +0.20
