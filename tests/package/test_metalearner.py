"""The coordinate-wise meta-learner, SGD as a cell, the inner loop and episodes (paper notes 3-7); the
tests that take a learner run over every path (conftest.py's `path`: reference, fused, native)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalstm.learner import Learner
from metalstm.metalearner import (EpisodeResult, Gates, MetaLearner, SGDCell, inner_loop, loss_and_grad,
                                  run_episode, support_batches)
from metalstm.preprocess import preprocess
from testkit import random_episode


@pytest.fixture
def learner(path):
    return Learner(5, 1, 28, path=path)


@pytest.fixture
def meta(learner):
    g = torch.Generator().manual_seed(0)
    return MetaLearner(learner.n_params, theta0=learner.init_params(g), generator=g, path=learner.path)


def test_parameter_shapes_and_initial_ranges(meta, learner):
    shapes = {name: tuple(p.shape) for name, p in meta.named_parameters()}
    assert shapes == {"lstm_weight": (80, 24), "lstm_bias": (80,), "W_F": (22,), "W_I": (22,),
                      "b_F": (), "b_I": (), "c0": (learner.n_params,)}
    for p in (meta.lstm_weight, meta.lstm_bias, meta.W_F, meta.W_I):
        assert p.abs().max() <= 0.01 and p.std() > 0.003         # U(-0.01, 0.01), not all zero
    assert 4 <= meta.b_F.item() <= 5 and -5 <= meta.b_I.item() <= -4
    assert sum(p.numel() for p in meta.rule_parameters()) == 2046
    assert all(p is not meta.c0 for p in meta.rule_parameters())


def test_initialisation_is_deterministic_and_c0_is_a_copy_of_theta0(learner):
    theta0 = learner.init_params(torch.Generator().manual_seed(3))
    a = MetaLearner(learner.n_params, theta0=theta0, generator=torch.Generator().manual_seed(1))
    b = MetaLearner(learner.n_params, theta0=theta0, generator=torch.Generator().manual_seed(1))
    c = MetaLearner(learner.n_params, theta0=theta0, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lstm_weight, c.lstm_weight)
    assert torch.equal(a.c0, theta0) and a.c0.data_ptr() != theta0.data_ptr()
    d = MetaLearner(learner.n_params, learner=learner, generator=torch.Generator().manual_seed(4))
    assert torch.equal(d.c0, learner.init_params(torch.Generator().manual_seed(4)))


def test_meta_learner_errors_are_clear(learner):
    with pytest.raises(ValueError, match="theta0=learner.init_params"):
        MetaLearner(learner.n_params)
    with pytest.raises(ValueError, match="n_params=28485"):
        MetaLearner(learner.n_params, theta0=torch.zeros(10))
    with pytest.raises(ValueError, match="prev_gate"):
        MetaLearner(learner.n_params, learner=learner, prev_gate="pre")


def reference_step(meta, loss, grad, theta, h, c, f_prev, i_prev):
    """Paper notes 4 by other means: nn.LSTMCell for layer 1, a loop over coordinates for layer 2."""
    cell = nn.LSTMCell(4, meta.hidden)
    with torch.no_grad():
        cell.weight_ih.copy_(meta.lstm_weight[:, :4])
        cell.weight_hh.copy_(meta.lstm_weight[:, 4:])
        cell.bias_ih.copy_(meta.lstm_bias)
        cell.bias_hh.zero_()                                    # ours has ONE bias
    x = torch.cat([preprocess(loss).expand(len(grad), 2), preprocess(grad)], dim=1)
    h, c = cell(x, (h, c))
    new_theta, fs, is_ = [], [], []
    for k in range(len(theta)):
        f = torch.sigmoid(torch.dot(meta.W_F, torch.cat([h[k], theta[k:k + 1], f_prev[k:k + 1]])) + meta.b_F)
        i = torch.sigmoid(torch.dot(meta.W_I, torch.cat([h[k], theta[k:k + 1], i_prev[k:k + 1]])) + meta.b_I)
        new_theta.append(f * theta[k] - i * grad[k])
        fs.append(f), is_.append(i)
    return torch.stack(new_theta), h, c, torch.stack(fs), torch.stack(is_)


def test_two_steps_follow_the_equations_coordinate_by_coordinate(path):
    n = 6
    g = torch.Generator().manual_seed(0)
    theta0 = torch.randn(n, generator=g)
    meta = MetaLearner(n, theta0=theta0, generator=g, path=path)
    with torch.no_grad():                       # larger weights so every term matters
        for p in meta.rule_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    state = meta.initial_state()
    assert torch.equal(state.f, torch.zeros(n)) and torch.equal(state.h, torch.zeros(20, n))
    theta, h, c, f, i = theta0, torch.zeros(n, 20), torch.zeros(n, 20), torch.zeros(n), torch.zeros(n)
    ours = meta.c0
    with torch.no_grad():
        for loss, grad in [(torch.tensor(2.3), torch.tensor([1e-7, -3e-3, 0.5, -2.0, 0.0, 4e-5])),
                           (torch.tensor(0.4), torch.randn(n, generator=g))]:
            theta, h, c, f, i = reference_step(meta, loss, grad, theta, h, c, f, i)
            ours, state, gates = meta.step(loss, grad, ours, state)
            torch.testing.assert_close(ours, theta)
            torch.testing.assert_close(state.h, h.T)        # our state: one column per coordinate
            torch.testing.assert_close(state.c, c.T)
            torch.testing.assert_close(gates.f, f)
            torch.testing.assert_close(gates.i, i)


@pytest.mark.slow
def test_logit_feedback_is_the_authors_variant_and_differs_from_step_two(learner):
    theta0 = learner.init_params(torch.Generator().manual_seed(0))
    kw = dict(theta0=theta0, generator=None)
    paper = MetaLearner(learner.n_params, path=learner.path, **kw)
    authors = MetaLearner(learner.n_params, prev_gate="logit", path=learner.path, **kw)
    authors.load_state_dict(paper.state_dict())
    ep = random_episode()
    with torch.no_grad():
        t1 = [inner_loop(learner, m, ep.support_x, ep.support_y, 1, 25)[0] for m in (paper, authors)]
        t2 = [inner_loop(learner, m, ep.support_x, ep.support_y, 2, 25)[0] for m in (paper, authors)]
    assert torch.equal(t1[0], t1[1])                 # both start from zero previous gates
    assert not torch.equal(t2[0], t2[1])


def test_inner_loop_with_sgd_cell_is_theta_minus_lr_times_grad(learner):
    ep = random_episode()
    theta0 = learner.init_params(torch.Generator().manual_seed(0))
    lr = 0.2
    theta_T, losses, gates = inner_loop(learner, SGDCell(theta0, lr), ep.support_x, ep.support_y,
                                        steps=3, batch_size=25, record=True)
    theta = theta0.clone()
    expected_losses = []
    for _ in range(3):                                  # by hand: theta <- theta - lr * dL/dtheta
        theta.requires_grad_(True)
        loss = F.cross_entropy(learner(ep.support_x, theta), ep.support_y)
        (grad,) = torch.autograd.grad(loss, theta)
        theta = (theta - lr * grad).detach()
        expected_losses.append(loss.item())
    torch.testing.assert_close(theta_T, theta)
    assert losses == pytest.approx(expected_losses, rel=1e-6)
    assert len(gates) == 3 and torch.equal(gates[0].f, torch.ones(learner.n_params))
    assert torch.allclose(gates[2].i, torch.full((learner.n_params,), lr))


def test_loss_and_grad_are_detached_and_correct(learner):
    theta = learner.init_params().requires_grad_(True)
    x, y = random_episode().support_x, random_episode().support_y
    stats = learner.new_bn_stats()
    loss, grad = loss_and_grad(learner, x, y, theta * 1.0, "batch", stats)
    assert not loss.requires_grad and not grad.requires_grad and grad.grad_fn is None
    assert stats.updates == 1
    expected = torch.autograd.grad(F.cross_entropy(learner(x, theta), y), theta)[0]
    torch.testing.assert_close(grad, expected)


def test_support_batches_cover_each_example_once_per_pass_and_are_seeded():
    batches = support_batches(10, 4, 6, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert sorted(torch.cat(batches[3:]).tolist()) == list(range(10))
    again = support_batches(10, 4, 6, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not torch.equal(torch.cat(batches[:3]), torch.arange(10))         # shuffled
    assert torch.equal(support_batches(25, 25, 2)[1], torch.arange(25))     # no generator: in order
    with pytest.raises(ValueError, match="between 1 and the support set's size 25"):
        support_batches(25, 26, 8)


@pytest.mark.slow
def test_one_shot_batches_of_five_run_twelve_steps(learner, meta):
    ep = random_episode(k_shot=1)
    result = run_episode(learner, meta, ep, steps=12, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert len(result.support_losses) == 12 and result.gates is None


def test_run_episode_result_in_both_modes(learner, meta):
    ep = random_episode()
    train = run_episode(learner, meta, ep, steps=2, batch_size=25, record=True)
    assert isinstance(train, EpisodeResult) and train.query_loss.requires_grad
    assert train.query_logits.shape == (15, 5) and len(train.support_losses) == 2
    assert len(train.gates) == 2 and isinstance(train.gates[0], Gates)
    assert train.query_acc == pytest.approx((train.query_logits.argmax(1) == ep.query_y).float().mean().item())
    test = run_episode(learner, meta, ep, steps=2, batch_size=25, mode="test")
    assert not test.query_loss.requires_grad and not test.theta.requires_grad
    assert test.support_losses == pytest.approx(train.support_losses)      # same support steps
    torch.testing.assert_close(test.theta, train.theta.detach())
    with pytest.raises(ValueError, match="'train' or 'test'"):
        run_episode(learner, meta, ep, steps=2, batch_size=25, mode="eval")


def test_zero_steps_leave_c0(learner, meta):
    result = run_episode(learner, meta, random_episode(), steps=0, batch_size=25, mode="test")
    assert torch.equal(result.theta, meta.c0) and result.support_losses == []


def test_initial_state_is_made_like_c0(learner, meta):
    meta = meta.double()
    state = meta.initial_state()
    assert state.h.dtype == torch.float64 and state.h.shape == (20, learner.n_params)
    assert state.i.dtype == torch.float64 and state.i.shape == (learner.n_params,)
