"""Notebook 04 (batch norm inside episodes, paper notes 7) agrees with the package; its printed claims hold;
its exercise solutions work.

The notebook's cells marked `# package: NAME` are executed in a namespace (after its imports):
its batch norm, its learner forward pass, its meta-test protocol and its naive reused-module
episode are compared with F.batch_norm, metalstm.learner and run_episode on the same inputs, in
float64: in float32 the implementations differ by rounding (PyTorch's batch-norm kernels
accumulate in their own order, up to ~1e-3 in the logits), which can also land on different
sides of a ReLU / max-pool kink, and SGD amplifies that into different trajectories.
The claims its prose makes about printed numbers (one query's probabilities in four batches,
which presentation flips most predictions, the reused module's leak and climb, the momentum
sweep's chance level, plateau and gap) are recomputed here with the notebook's own functions.
"""
import dataclasses
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from metalstm.data.glyphs import load_glyphs
from metalstm.episodes import EpisodeSampler
from metalstm.learner import BNStats, Learner
from metalstm.metalearner import SGDCell, inner_loop, run_episode
from testkit import check_markers, load_solutions, notebook_code

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_batch_norm_in_episodes.ipynb"
SOLUTIONS = ROOT / "notebooks" / "solutions" / "04_batch_norm_in_episodes.py"
STEPS, MOMENTUM, LR = {5: 8, 1: 12}, {5: 0.95, 1: 0.9}, 0.1


@pytest.fixture(scope="module")
def nb():
    """The namespace of the notebook's cells marked '# package: ...' (after its imports)."""
    return notebook_code(NOTEBOOK, "bn_batch", "bn_running", "update_running", "forward", "adapt", "running_averages",
                         "paper_protocol", "naive_episode", "accuracy", "EPS")


@pytest.fixture(scope="module")
def sol():
    return load_solutions(SOLUTIONS.stem)


@pytest.fixture(scope="module")
def episodes():
    val = load_glyphs("val")
    return {k: EpisodeSampler(val, n_way=5, k_shot=k, n_query=15, seed=0) for k in (5, 1)}


@pytest.fixture(scope="module")
def theta0():
    return Learner(5, 1, 28).init_params(torch.Generator().manual_seed(0))


def double(episode):
    return dataclasses.replace(episode, support_x=episode.support_x.double(), query_x=episode.query_x.double())


class Learner64(Learner):
    """The package's learner with float64 running averages (new_bn_stats makes float32 ones)."""

    def new_bn_stats(self, device=None):
        stats = super().new_bn_stats(device)
        return BNStats([m.double() for m in stats.mean], [v.double() for v in stats.var])


def test_notebook_is_stored_without_outputs_except_the_checked_cells():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    checked = [c for c in code if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and all(c.outputs for c in checked)          # nbval compares against these
    assert all(not c.outputs for c in code if c not in checked)


# -- the notebook's batch norm against F.batch_norm ------------------------------------
def test_bn_batch_and_running_update_match_f_batch_norm(nb):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 5, 5, generator=g) * 3 + 2
    gamma, beta = torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    mean, var = torch.zeros(4), torch.ones(4)
    expected = F.batch_norm(x, mean, var, gamma, beta, training=True, momentum=0.3, eps=1e-3)
    y, stats = nb["bn_batch"](x, gamma, beta)
    torch.testing.assert_close(y, expected)
    new_mean, new_var = nb["update_running"]((torch.zeros(4), torch.ones(4)), stats, 0.3)
    torch.testing.assert_close(new_mean, mean)   # F.batch_norm updated mean, var in place
    torch.testing.assert_close(new_var, var)     # (unbiased variance, PyTorch's convention)
    assert nb["EPS"] == 1e-3


def test_bn_running_matches_f_batch_norm_in_eval_mode(nb):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, 5, generator=g)
    gamma, beta = torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    mean, var = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.1
    expected = F.batch_norm(x, mean, var, gamma, beta, training=False, eps=1e-3)
    torch.testing.assert_close(nb["bn_running"](x, gamma, beta, mean, var), expected)


# -- the learner's forward pass and the protocol against metalstm ------------------------
def test_forward_matches_learner_in_both_modes(nb, episodes, theta0):
    package = Learner64(5, 1, 28, bn_eps=1e-3)
    e = double(episodes[5][3])
    theta = (theta0 + 0.05 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(3))).double()
    logits, batch_stats = nb["forward"](e.query_x, theta)
    torch.testing.assert_close(logits, package(e.query_x, theta, bn="batch"), rtol=1e-9, atol=1e-9)
    # the batch statistics it returns are what a momentum-1 update stores
    one = Learner64(5, 1, 28, bn_momentum=1.0)
    stats = one.new_bn_stats()
    one(e.query_x, theta, bn="batch", stats=stats)
    for (mean, var), pkg_mean, pkg_var in zip(batch_stats, stats.mean, stats.var):
        torch.testing.assert_close(mean, pkg_mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(var, pkg_var, rtol=1e-9, atol=1e-9)
    running = [(m * 0.5, v * 2.0) for m, v in batch_stats]
    stats = BNStats([m for m, _ in running], [v for _, v in running])
    torch.testing.assert_close(nb["forward"](e.query_x, theta, running)[0],
                               package(e.query_x, theta, bn="running", stats=stats), rtol=1e-9, atol=1e-9)


def test_forward_agrees_with_learner_in_float32_up_to_rounding(nb, episodes, theta0):
    e = episodes[5][3]
    logits = nb["forward"](e.query_x, theta0)[0]
    torch.testing.assert_close(logits, Learner(5, 1, 28)(e.query_x, theta0, bn="batch"), rtol=0, atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("k, momentum", [(5, 0.95), (1, 0.9), (5, 0.3)])   # 0.3: the initial 0, 1 still count
def test_running_averages_match_the_package_bn_stats(nb, episodes, theta0, k, momentum):
    e = double(episodes[k][1])
    package = Learner64(5, 1, 28, bn_momentum=momentum)
    stats = package.new_bn_stats()
    with torch.no_grad():
        inner_loop(package, SGDCell(theta0, LR).double(), e.support_x, e.support_y, STEPS[k], 5 * k, stats=stats)
    _, history = nb["adapt"](theta0.double(), e.support_x, e.support_y, STEPS[k], LR)
    assert len(history) == STEPS[k] == stats.updates
    for (mean, var), pkg_mean, pkg_var in zip(nb["running_averages"](history, momentum), stats.mean, stats.var):
        torch.testing.assert_close(mean, pkg_mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(var, pkg_var, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("k", [5, 1])
def test_paper_protocol_matches_run_episode_test_mode(nb, episodes, theta0, k):
    package = Learner64(5, 1, 28, bn_eps=1e-3, bn_momentum=MOMENTUM[k])
    e = double(episodes[k][0])     # 5-shot episode 0: one where float32 runs drift apart at a kink
    ours = nb["paper_protocol"](theta0.double(), e, STEPS[k], LR, MOMENTUM[k])
    result = run_episode(package, SGDCell(theta0, LR).double(), e, STEPS[k], 5 * k, mode="test")
    torch.testing.assert_close(ours, result.query_logits, rtol=1e-9, atol=1e-9)
    # not vacuous: the train-mode query pass (batch statistics) is a different function
    train = run_episode(package, SGDCell(theta0, LR).double(), e, STEPS[k], 5 * k, mode="train")
    assert (train.query_logits - ours).abs().max() > 1e-2


@pytest.mark.slow
def test_naive_module_episode_is_the_protocol_when_fresh_and_leaks_when_reused(nb, episodes, theta0):
    a, b = double(episodes[5][1]), double(episodes[5][0])
    package = Learner64(5, 1, 28, bn_momentum=0.1)
    expected = run_episode(package, SGDCell(theta0, LR).double(), b, STEPS[5], 25, mode="test").query_logits
    fresh = nb["naive_episode"](package.to_module(theta0).double(), theta0.double(), b, STEPS[5], LR)
    torch.testing.assert_close(fresh, expected, rtol=1e-9, atol=1e-9)
    net = package.to_module(theta0).double()
    nb["naive_episode"](net, theta0.double(), a, STEPS[5], LR)
    after_a = nb["naive_episode"](net, theta0.double(), b, STEPS[5], LR)
    assert (after_a - fresh).abs().max() > 1e-2          # episode A's statistics reach episode B
    # a fresh BNStats per episode: B after A is B
    run_episode(package, SGDCell(theta0, LR).double(), a, STEPS[5], 25, mode="test")
    again = run_episode(package, SGDCell(theta0, LR).double(), b, STEPS[5], 25, mode="test").query_logits
    assert torch.equal(again, expected)


# -- the exercise solutions ------------------------------------------------------------
@pytest.mark.slow
def test_exercise1_query_depends_on_support_but_not_on_other_queries(sol, episodes, theta0):
    learner = Learner(5, 1, 28, bn_momentum=0.95)
    e, other = episodes[5][2], episodes[5][3]
    support_change, query_change = sol.query_dependence(learner, SGDCell(theta0, LR), e, other, STEPS[5], 25)
    assert support_change > 0.1
    assert query_change < 1e-5


@pytest.mark.slow
def test_exercise2_momentum_one_keeps_the_last_step_and_refresh_uses_theta_T(sol, nb, episodes, theta0):
    e = double(episodes[5][4])
    rule = SGDCell(theta0, LR).double()
    one = Learner64(5, 1, 28, bn_momentum=1.0)
    theta_T, stats = sol.adapt_with_stats(one, rule, e.support_x, e.support_y, STEPS[5], 25)
    theta_prev, _ = sol.adapt_with_stats(one, rule, e.support_x, e.support_y, STEPS[5] - 1, 25)
    at_prev = sol.refreshed_stats(one, theta_prev, e.support_x)
    at_T = sol.refreshed_stats(one, theta_T, e.support_x)
    for k in range(4):   # momentum 1.0: the running averages are the last step's statistics, at theta_{T-1}
        torch.testing.assert_close(stats.mean[k], at_prev.mean[k], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(stats.var[k], at_prev.var[k], rtol=1e-9, atol=1e-9)
    # refreshed = the notebook's batch statistics of the support set at theta_T
    _, batch_stats = nb["forward"](e.support_x, theta_T)
    for k, (mean, var) in enumerate(batch_stats):
        torch.testing.assert_close(at_T.mean[k], mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(at_T.var[k], var, rtol=1e-9, atol=1e-9)
    assert max((a - b).abs().max() for a, b in zip(at_T.mean, at_prev.mean)) > 1e-3   # stale != fresh
    learner = Learner(5, 1, 28, bn_momentum=0.95)
    accs = sol.refresh_accuracies(learner, SGDCell(theta0, LR), episodes[5].take(2), STEPS[5], 25)
    assert set(accs) == {"running averages", "refreshed"} and all(0.2 < a <= 1 for a in accs.values())


@pytest.mark.slow
def test_exercise3_transductive_bn_is_batch_statistics_and_depends_on_the_batch(sol, nb, episodes, theta0):
    learner = Learner64(5, 1, 28, bn_momentum=0.95)
    e = double(episodes[5][5])
    theta, _ = sol.adapt_with_stats(learner, SGDCell(theta0, LR).double(), e.support_x, e.support_y, STEPS[5], 25)
    logits = sol.transductive_logits(learner, theta, e.query_x)
    torch.testing.assert_close(logits, nb["forward"](e.query_x, theta)[0], rtol=1e-9, atol=1e-9)
    first = sol.transductive_logits(learner, theta, e.query_x[:15])            # class 0 alone
    assert (first - logits[:15]).abs().max() > 0.1
    learner = Learner(5, 1, 28, bn_momentum=0.95)
    accs = sol.transductive_accuracies(learner, SGDCell(theta0, LR), episodes[5].take(2, start=100), STEPS[5], 25)
    assert set(accs) == {"running averages", "transductive", "transductive, one class at a time",
                         "transductive, first 5 per class", "running averages, first 5 per class"}
    assert accs["transductive, one class at a time"] < accs["transductive"] - 0.05


# -- the markers and the claims the prose makes about printed numbers ---------------------
def test_the_markers_name_package_functions_whose_source_the_notebook_shows():
    names = check_markers(NOTEBOOK)
    assert {"torch.nn.functional.batch_norm", "metalstm.learner.Learner.__call__", "metalstm.metalearner.inner_loop",
            "metalstm.metalearner.run_episode", "metalstm.learner.Learner.to_module"} <= set(names)


@pytest.fixture(scope="module")
def adapted(nb, episodes, theta0):
    """Section 1's setting: episode 0 (5-shot) adapted once; its running averages; episode 1."""
    episode = episodes[5][0]
    theta_T, history = nb["adapt"](theta0, episode.support_x, episode.support_y, STEPS[5], LR)
    return episode, theta_T, nb["running_averages"](history, MOMENTUM[5]), episodes[5][1]


def test_one_query_in_four_batches_changes_its_probabilities_only_with_batch_statistics(nb, adapted):
    episode, theta_T, running, other = adapted
    q0, y0 = episode.query_x[:1], episode.query_y[0].item()
    batches = [episode.query_x, episode.query_x[episode.query_y == y0], torch.cat([q0, other.query_x[1:]]), q0]
    with torch.no_grad():
        batch = [nb["forward"](b, theta_T)[0][0].softmax(0) for b in batches]
        run = [nb["forward"](b, theta_T, running)[0][0].softmax(0) for b in batches]
    true_batch = torch.stack([p[y0] for p in batch])
    true_run = torch.stack([p[y0] for p in run])
    assert true_batch.max() - true_batch.min() > 0.2          # "moves a lot from batch to batch"
    assert true_run.max() - true_run.min() < 1e-5             # "the four bars ... are identical"
    assert {p.argmax().item() for p in batch} == {y0}         # "happens to stay the same in all four"


def test_one_class_at_a_time_flips_the_most_predictions_and_costs_transductive_accuracy(nb, adapted):
    episode, theta_T, _, other = adapted
    y = episode.query_y

    def logits(batches, extra=None):
        out = torch.empty(75, 5)
        for idx in batches:
            x = episode.query_x[idx] if extra is None else torch.cat([episode.query_x[idx], extra])
            out[idx] = nb["forward"](x, theta_T)[0][: len(idx)]
        return out

    with torch.no_grad():
        usual = logits([torch.arange(75)])
        cases = {"class": logits([torch.nonzero(y == c).flatten() for c in range(5)]),
                 "random 5": logits(list(torch.randperm(75, generator=torch.Generator().manual_seed(0)).split(5))),
                 "other episode": logits([torch.arange(75)], extra=other.query_x)}
    flips = {name: (out.argmax(1) != usual.argmax(1)).sum().item() for name, out in cases.items()}
    assert flips["class"] > max(flips["random 5"], flips["other episode"])          # "the worst"
    assert nb["accuracy"](usual, y) - nb["accuracy"](cases["class"], y) > 0.15      # "drops sharply"


@pytest.mark.slow
def test_a_reused_module_leaks_at_momentum_0_1_hides_it_at_0_95_and_climbs_over_a_sequence(nb, episodes, theta0):
    b, a = episodes[5][0], episodes[5][1]
    for momentum in (0.1, 0.95):
        fresh = nb["naive_episode"](Learner(5, 1, 28, bn_momentum=momentum).to_module(theta0), theta0, b, STEPS[5], LR)
        net = Learner(5, 1, 28, bn_momentum=momentum).to_module(theta0)
        nb["naive_episode"](net, theta0, a, STEPS[5], LR)
        after_a = nb["naive_episode"](net, theta0, b, STEPS[5], LR)
        change = (after_a - fresh).abs().max().item()
        if momentum == 0.1:
            assert change > 0.1 and (after_a.argmax(1) != fresh.argmax(1)).sum() == 0   # logits, not predictions
            assert nb["accuracy"](fresh, b.query_y) < 0.3                               # "B alone ... chance"
        else:
            assert change < 1e-5                                                        # vanishes in rounding
    shared = Learner(5, 1, 28, bn_momentum=0.1).to_module(theta0)
    first = nb["accuracy"](nb["naive_episode"](shared, theta0, b, STEPS[5], LR), b.query_y)
    for e in episodes[5].take(11, start=1):
        nb["naive_episode"](shared, theta0, e, STEPS[5], LR)
    again = nb["accuracy"](nb["naive_episode"](shared, theta0, b, STEPS[5], LR), b.query_y)
    assert again > first + 0.3                                                          # "climbs"


@pytest.mark.slow
@pytest.mark.parametrize("k", [5, 1])
def test_the_momentum_sweep_chance_plateau_and_gap(nb, episodes, theta0, k):
    from metalstm.stats import mean_ci95, paired_difference, significant

    momenta, n_eval = [0.01, 0.1, 0.7, 0.9, 0.95, 1.0], 25       # the notebook's 25 episodes per setting
    acc_batch, acc_running = [], []
    for e in episodes[k].take(n_eval, start=100):
        theta_e, history_e = nb["adapt"](theta0, e.support_x, e.support_y, STEPS[k], LR)
        with torch.no_grad():
            acc_batch.append(nb["accuracy"](nb["forward"](e.query_x, theta_e)[0], e.query_y))
            acc_running.append([nb["accuracy"](nb["forward"](e.query_x, theta_e, nb["running_averages"](history_e, m))[0],
                                               e.query_y) for m in momenta])
    acc_running = torch.tensor(acc_running)
    reference = acc_running[:, momenta.index(MOMENTUM[k])].tolist()
    for j in (0, 1):                                           # 0.01 and 0.1: "about chance", tens of points below
        assert mean_ci95(acc_running[:, j].tolist())[0] < 0.32
        d = paired_difference(acc_running[:, j].tolist(), reference)
        assert significant(*d) and d[0] < -0.2
    for m in (0.7, 0.9, 1.0):                                  # "no measurable difference ... within about a point"
        d = paired_difference(acc_running[:, momenta.index(m)].tolist(), reference)
        assert not significant(*d) and abs(d[0]) + d[1] < 0.015
    gap = paired_difference(acc_batch, reference)              # "its interval excludes 0 in both settings"
    assert significant(*gap) and 0.02 < gap[0] < 0.15         # "a gap of several points remains"
