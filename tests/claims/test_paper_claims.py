"""The paper's claims about the Meta-Learner LSTM, each as a test that a wrong
implementation fails (Ravi & Larochelle 2017; paper notes 2-7). The tests that take a learner run over
every path (conftest.py's `path`: reference, fused, native)."""
import math

import pytest
import torch
import torch.nn.functional as F

import metalstm.metalearner as ml
from metalstm.data.glyphs import load_glyphs
from metalstm.episodes import Episode, EpisodeSampler
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner, SGDCell, inner_loop, loss_and_grad, run_episode


@pytest.fixture(scope="module")
def episodes():
    """5-way 5-shot episodes (15 queries per class) of the glyph data set's meta-train split."""
    return EpisodeSampler(load_glyphs("train"), n_way=5, k_shot=5, n_query=15, seed=0)


@pytest.fixture(scope="module")
def learner(path):
    return Learner(n_way=5, in_channels=1, image_size=28, bn_momentum=0.95, path=path)


def meta_learner(learner, seed=0):
    """A meta-learner on the learner's path (reference, fused or native)."""
    g = torch.Generator().manual_seed(seed)
    return MetaLearner(learner.n_params, theta0=learner.init_params(g), generator=g, path=learner.path)


def flat(module):
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach()


# -- paper notes 3: gradient descent is an LSTM cell update ----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("rule_kind", ["SGDCell", "MetaLearner with f=1, i=lr"])
def test_cell_update_with_forget_one_and_input_lr_is_torch_sgd_step_by_step(episodes, learner, rule_kind):
    ep, lr, steps = episodes[0], 0.1, 5
    theta0 = learner.init_params(torch.Generator().manual_seed(1))
    if rule_kind == "SGDCell":
        rule = SGDCell(theta0, lr)
    else:   # pin the learned gates: zero weights, sigmoid(30) == 1.0 in float32, sigmoid(logit(lr)) = lr
        rule = MetaLearner(learner.n_params, theta0=theta0, path=learner.path)
        with torch.no_grad():
            for p in rule.rule_parameters():
                p.zero_()
            rule.b_F.fill_(30.0)
            rule.b_I.fill_(math.log(lr / (1 - lr)))
    net = learner.to_module(theta0).train()
    sgd = torch.optim.SGD(net.parameters(), lr=lr)
    theta, state = rule.c0, rule.initial_state()
    with torch.no_grad():
        for t in range(steps):
            loss, grad = loss_and_grad(learner, ep.support_x, ep.support_y, theta)
            theta, state, gates = rule.step(loss, grad, theta, state)
            sgd.zero_grad()
            with torch.enable_grad():
                net_loss = F.cross_entropy(net(ep.support_x), ep.support_y)
                net_loss.backward()
            sgd.step()
            assert loss.item() == pytest.approx(net_loss.item(), rel=1e-6)
            torch.testing.assert_close(theta, flat(net), rtol=1e-5, atol=1e-6)
            assert torch.equal(gates.f, torch.ones_like(gates.f))
    assert (theta - theta0).abs().max() > 1e-3                  # it did move
    # and inner_loop gives the same theta_T
    theta_T, _, _ = inner_loop(learner, rule, ep.support_x, ep.support_y, steps, batch_size=25)
    torch.testing.assert_close(theta_T.detach(), flat(net), rtol=1e-5, atol=1e-6)


# -- paper notes 6: the meta-learner starts as gradient descent with a small learning rate ----------------
@pytest.mark.slow
def test_at_initialisation_forget_gate_is_near_one_and_input_gate_near_0_01(episodes, learner):
    rule = meta_learner(learner)
    for ep in episodes.take(2):
        with torch.no_grad():
            _, losses, gates = inner_loop(learner, rule, ep.support_x, ep.support_y, 8, 25, record=True)
        assert losses[-1] < losses[0]                           # real gradients, real descent
        for g in gates:
            assert g.f.min() > 0.98 and g.f.max() < 1.0
            assert g.i.min() >= 0.006 and g.i.max() <= 0.02


# -- paper notes 5: the meta-gradient, first order ----------------------------------------------------------
@pytest.mark.slow
def test_meta_gradient_reaches_c0_and_both_lstm_layers(episodes, learner):
    rule = meta_learner(learner)
    result = run_episode(learner, rule, episodes[1], steps=3, batch_size=25, mode="train")
    result.query_loss.backward()
    for name, p in rule.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_meta_learner_is_fed_detached_loss_and_gradient(episodes, learner, monkeypatch):
    rule = meta_learner(learner)
    fed = []
    step = rule.step

    def spy(loss, grad, theta, state):
        fed.append((loss, grad, theta))
        return step(loss, grad, theta, state)

    monkeypatch.setattr(rule, "step", spy)
    run_episode(learner, rule, episodes[1], steps=3, batch_size=25, mode="train")
    assert len(fed) == 3
    for t, (loss, grad, theta) in enumerate(fed):
        assert not loss.requires_grad and not grad.requires_grad
        assert theta.requires_grad                              # theta_{t-1} itself stays in the graph
        assert (theta is rule.c0) == (t == 0)


def second_order_loss_and_grad(learner, x, y, theta, bn="batch", stats=None):
    """What paper notes 5 rules out: a gradient that stays in the graph (second derivatives)."""
    loss = F.cross_entropy(learner(x, theta, bn, stats), y)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    return loss, grad


@pytest.mark.slow
def test_meta_gradient_ignores_second_derivatives(episodes, learner, monkeypatch):
    """With SGD and a learned c0, theta_T = c0 - lr * sum(grad_t) with the gradients treated as
    constants, so dL_test/dc0 must equal dL_test/dtheta_T exactly. Keeping second-order terms
    would add -lr * Hessian products and change it."""
    ep, lr = episodes[2], 0.5
    rule = SGDCell(learner.init_params(torch.Generator().manual_seed(2)), lr, train_c0=True)

    def meta_grad():
        rule.c0.grad = None
        result = run_episode(learner, rule, ep, steps=3, batch_size=25, mode="train")
        theta_T = result.theta
        theta_T.retain_grad()
        result.query_loss.backward()
        return rule.c0.grad.clone(), theta_T.grad.clone()

    d_c0, d_theta_T = meta_grad()
    torch.testing.assert_close(d_c0, d_theta_T, rtol=0, atol=0)
    monkeypatch.setattr(ml, "loss_and_grad", second_order_loss_and_grad)
    d_c0_second, _ = meta_grad()
    assert (d_c0_second - d_c0).norm() > 1e-3 * d_c0.norm()


# -- paper notes 4: parameter sharing ------------------------------------------------------------------------
def test_meta_learner_size_does_not_depend_on_the_learner():
    sizes = set()
    for learner in (Learner(5, 1, 28), Learner(20, 1, 28), Learner(5, 3, 84)):
        rule = MetaLearner(learner.n_params, learner=learner)
        sizes.add(sum(p.numel() for p in rule.rule_parameters()))
        assert rule.c0.numel() == learner.n_params
    assert sizes == {2046}
    h = 10   # 4h (4 + h) + 4h for layer 1, 2 (h + 2) + 2 for layer 2
    rule = MetaLearner(100, hidden=h, theta0=torch.zeros(100))
    assert sum(p.numel() for p in rule.rule_parameters()) == 4 * h * (4 + h) + 4 * h + 2 * (h + 2) + 2


# -- paper notes 2 -------------------------------------------------------------------------------------------
def test_learner_has_32901_parameters_on_mini_imagenet_and_works_on_28x28():
    assert Learner(n_way=5, in_channels=3, image_size=84).n_params == 32_901
    small = Learner(n_way=5, in_channels=1, image_size=28)
    assert small.n_features == 32
    logits = small(torch.rand(4, 1, 28, 28), small.init_params())
    assert logits.shape == (4, 5)


# -- paper notes 7: batch norm inside episodes ---------------------------------------------------------------
def with_query(ep, query_x):
    return Episode(ep.support_x, ep.support_y, query_x, ep.query_y, ep.classes)


@pytest.mark.slow
def test_meta_test_query_prediction_depends_only_on_its_image_and_the_support_set(episodes, learner):
    rule = meta_learner(learner)
    ep, other = episodes[3], episodes[4]
    changed_x = other.query_x.clone()
    changed_x[0] = ep.query_x[0]                  # the same first query image, all others different
    logits = {}
    for mode in ("test", "train"):
        with torch.no_grad():
            a = run_episode(learner, rule, ep, steps=4, batch_size=25, mode=mode).query_logits[0]
            b = run_episode(learner, rule, with_query(ep, changed_x), steps=4, batch_size=25,
                            mode=mode).query_logits[0]
        logits[mode] = (a, b)
    torch.testing.assert_close(*logits["test"], rtol=1e-5, atol=1e-5)     # running averages
    assert (logits["train"][0] - logits["train"][1]).abs().max() > 1e-3    # batch statistics


@pytest.mark.slow
def test_batch_norm_statistics_never_carry_from_one_episode_to_the_next(episodes, learner):
    rule = meta_learner(learner)
    a, b = episodes[5], episodes[6]
    for mode in ("test", "train"):
        with torch.no_grad():
            first = run_episode(learner, rule, a, steps=4, batch_size=25, mode=mode)
            run_episode(learner, rule, b, steps=4, batch_size=25, mode=mode)
            again = run_episode(learner, rule, a, steps=4, batch_size=25, mode=mode)
        assert torch.equal(first.query_logits, again.query_logits), mode
        assert first.support_losses == again.support_losses


@pytest.mark.slow
def test_meta_test_query_pass_uses_averages_reset_at_the_start_of_the_episode(episodes, learner):
    rule = meta_learner(learner)
    ep = episodes[7]
    with torch.no_grad():
        result = run_episode(learner, rule, ep, steps=4, batch_size=25, mode="test")
        fresh = learner.new_bn_stats()
        theta, _, _ = inner_loop(learner, rule, ep.support_x, ep.support_y, 4, 25, stats=fresh)
        assert fresh.updates == 4
        expected = learner(ep.query_x, theta, bn="running", stats=fresh)
        # averages that started from another episode's statistics give other predictions
        stale = learner.new_bn_stats()
        inner_loop(learner, rule, episodes[8].support_x, episodes[8].support_y, 4, 25, stats=stale)
        inner_loop(learner, rule, ep.support_x, ep.support_y, 4, 25, stats=stale)
        leaked = learner(ep.query_x, theta, bn="running", stats=stale)
    torch.testing.assert_close(result.query_logits, expected)
    assert (leaked - expected).abs().max() > 1e-4
