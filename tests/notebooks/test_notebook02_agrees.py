"""Notebook 02 and the package cannot drift apart; its printed claims hold; its exercise solutions work.

The notebook's cells marked `# package: NAME` (the learner as f(x; theta), loss_and_grad, the SGD
step, the LSTM cell update) are taken from the .ipynb, run here, and compared with NAME
(`metalstm.learner.Learner`, `metalstm.metalearner`) on the same inputs. The claim of its prose
about the start made from other episodes (ahead after 2 steps with a paired interval that excludes 0,
the lead shrunk to no measurable difference by step 8, both starts at chance before any step) is
recomputed here.
"""
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from metalstm.learner import Learner
from metalstm.metalearner import SGDCell, inner_loop, loss_and_grad
from testkit import check_markers, load_solutions, notebook_code
from testkit import random_episode as _random_episode

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOK = NOTEBOOKS / "02_gradient_descent_as_an_lstm.ipynb"
# float32 rounding through four conv + batch-norm blocks is ~1e-6 here; a wrong formula is >1e-2
TOL = 1e-4


@pytest.fixture(scope="module")
def nb():
    return notebook_code(NOTEBOOK, "conv_learner_layout", "n_params", "unflatten", "init_theta", "forward",
                         "loss_and_grad", "sgd_step", "accuracy", "lstm_cell_update")


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(NOTEBOOK.stem)



def random_episode(k_shot=2, **kwargs):
    return _random_episode(k_shot=k_shot, **kwargs)


CONFIGS = [(5, 1, 28), (5, 3, 84), (20, 1, 28), (3, 3, 32)]


@pytest.mark.parametrize("n_way,channels,size", CONFIGS)
def test_layout_and_count_match_the_package(nb, n_way, channels, size):
    layout = nb["conv_learner_layout"](n_way=n_way, in_channels=channels, image_size=size)
    learner = Learner(n_way, channels, size)
    assert layout == learner.layout
    assert nb["n_params"](layout) == learner.n_params
    assert nb["n_params"](nb["conv_learner_layout"](5, 3, 84)) == 32_901


@pytest.mark.parametrize("seed", [0, 7])
def test_initialisation_matches_the_package(nb, seed):
    layout = nb["conv_learner_layout"](5, 1, 28)
    ours = nb["init_theta"](layout, torch.Generator().manual_seed(seed))
    theirs = Learner(5, 1, 28).init_params(torch.Generator().manual_seed(seed))
    assert torch.equal(ours, theirs)


def test_unflatten_gives_views_of_theta(nb):
    layout = nb["conv_learner_layout"](5, 1, 28)
    theta = torch.arange(nb["n_params"](layout), dtype=torch.float32)
    parts = nb["unflatten"](theta, layout)
    package_parts = Learner(5, 1, 28).unflatten(theta)
    for name, part in parts.items():
        assert torch.equal(part, package_parts[name])
        assert part.untyped_storage().data_ptr() == theta.untyped_storage().data_ptr()


@pytest.mark.parametrize("n_way,channels,size", [(5, 1, 28), (5, 3, 84)])
def test_forward_gives_the_package_logits(nb, n_way, channels, size):
    layout = nb["conv_learner_layout"](n_way, channels, size)
    learner = Learner(n_way, channels, size)
    g = torch.Generator().manual_seed(1)
    theta = learner.init_params(g) + 0.05 * torch.randn(learner.n_params, generator=g)
    x = torch.rand(6, channels, size, size, generator=g)
    with torch.no_grad():
        ours, theirs = nb["forward"](x, theta, layout), learner(x, theta)
    assert ours.shape == (6, n_way)
    torch.testing.assert_close(theirs, ours, rtol=TOL, atol=TOL)


def test_forward_on_a_glyph_episode_gives_the_package_logits(nb):
    """The notebook's own check, on real images: glyphs are mostly background, so batch norm
    sees channels whose mean is large next to their spread (where a one-pass variance loses digits)."""
    from metalstm.data.glyphs import load_glyphs
    from metalstm.episodes import EpisodeSampler

    ep = EpisodeSampler(load_glyphs("train"), 5, 5, 15, seed=0)[0]
    layout, learner = nb["conv_learner_layout"](5, 1, 28), Learner(5, 1, 28)
    theta = learner.init_params(torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = nb["forward"](ep.query_x.double(), theta.double(), layout)   # float64
        ours, theirs = nb["forward"](ep.query_x, theta, layout), learner(ep.query_x, theta)
    assert (ours.double() - reference).abs().max() < 1e-5          # float32 rounding only
    torch.testing.assert_close(theirs, ours, rtol=TOL, atol=TOL)


def test_loss_and_grad_match_the_package(nb):
    layout, learner, ep = nb["conv_learner_layout"](5, 1, 28), Learner(5, 1, 28), random_episode()
    theta = learner.init_params(torch.Generator().manual_seed(2))
    loss, grad = nb["loss_and_grad"](layout, ep.support_x, ep.support_y, theta)
    package_loss, package_grad = loss_and_grad(learner, ep.support_x, ep.support_y, theta)
    assert not loss.requires_grad and not grad.requires_grad
    torch.testing.assert_close(package_loss, loss, rtol=TOL, atol=TOL)
    torch.testing.assert_close(package_grad, grad, rtol=TOL, atol=TOL)


def test_the_cell_with_f_one_and_i_lr_is_exactly_sgd(nb):
    g = torch.Generator().manual_seed(3)
    theta, grad = torch.randn(1000, generator=g), torch.randn(1000, generator=g) * 1e-3
    for lr in (0.1, 0.0133, 1e-4):
        cell = nb["lstm_cell_update"](theta, -grad, torch.ones_like(theta), torch.full_like(theta, lr))
        assert torch.equal(cell, nb["sgd_step"](theta, grad, lr))
    # and a gate below 1 really forgets: f = 0.5, no gradient, halves theta
    assert torch.equal(nb["lstm_cell_update"](theta, torch.zeros_like(theta), 0.5, 0.1), theta / 2)


def test_sgd_steps_end_where_the_package_inner_loop_ends(nb):
    layout, learner, ep = nb["conv_learner_layout"](5, 1, 28), Learner(5, 1, 28), random_episode(seed=4)
    theta0 = learner.init_params(torch.Generator().manual_seed(4))
    theta, losses = theta0, []
    for _ in range(5):
        loss, grad = nb["loss_and_grad"](layout, ep.support_x, ep.support_y, theta)
        theta = nb["lstm_cell_update"](theta, -grad, torch.ones_like(theta), torch.full_like(theta, 0.1))
        losses.append(loss.item())
    theta_T, package_losses, _ = inner_loop(learner, SGDCell(theta0, lr=0.1), ep.support_x, ep.support_y,
                                            steps=5, batch_size=len(ep.support_y))
    torch.testing.assert_close(theta_T, theta, rtol=TOL, atol=TOL)
    torch.testing.assert_close(torch.tensor(package_losses), torch.tensor(losses), rtol=TOL, atol=TOL)
    assert losses[-1] < losses[0]


def test_loss_and_grad_takes_its_arguments_in_the_package_order(nb):
    import inspect

    ours = list(inspect.signature(nb["loss_and_grad"]).parameters)
    theirs = list(inspect.signature(loss_and_grad).parameters)
    assert ours == ["layout", "x", "y", "theta"] and theirs[:4] == ["learner", "x", "y", "theta"]


def test_the_markers_name_package_functions_whose_source_the_notebook_shows():
    names = check_markers(NOTEBOOK)
    assert {"metalstm.learner.Learner.__call__", "metalstm.metalearner.loss_and_grad",
            "metalstm.metalearner.SGDCell.step"} <= set(names)


@pytest.mark.slow
def test_a_start_made_from_other_episodes_leads_early_and_the_lead_then_shrinks(nb):
    """The claim after the c_0 figure, with paired 95% intervals over the 8 episodes: ahead after 2
    steps (the interval excludes 0), no measurable difference by step 8; before any step both
    starts are at chance (20% inside their intervals), and any predictions average exactly 20%
    over the 120 orders of the labels."""
    import itertools

    from metalstm.data.glyphs import load_glyphs
    from metalstm.episodes import EpisodeSampler
    from metalstm.stats import mean_ci95, paired_difference, significant

    layout = nb["conv_learner_layout"](5, 1, 28)
    theta0 = nb["init_theta"](layout, torch.Generator().manual_seed(0))

    def sgd(theta, episode, steps):
        for _ in range(steps):
            _, grad = nb["loss_and_grad"](layout, episode.support_x, episode.support_y, theta)
            theta = nb["sgd_step"](theta, grad, 0.1)
        return theta

    better = theta0
    for other in EpisodeSampler(load_glyphs("train"), 5, 5, 15, seed=1).take(20):
        better = better + 0.3 * (sgd(better, other, 5) - better)
    episodes = EpisodeSampler(load_glyphs("val"), 5, 5, 15, seed=0).take(8)
    per_episode = []
    for start in (theta0, better):
        accs = torch.zeros(len(episodes), 9)
        for e, ep in enumerate(episodes):
            theta = start
            for t in range(9):
                if t:
                    theta = sgd(theta, ep, 1)
                with torch.no_grad():
                    accs[e, t] = nb["accuracy"](nb["forward"](ep.query_x, theta, layout), ep.query_y)
        per_episode.append(accs)
    random_, better_ = per_episode
    for accs in per_episode:                                            # "both starts are at chance"
        mean, half = mean_ci95(accs[:, 0].tolist())
        assert abs(mean - 0.2) <= half
    at_2 = paired_difference(better_[:, 2].tolist(), random_[:, 2].tolist())
    at_8 = paired_difference(better_[:, 8].tolist(), random_[:, 8].tolist())
    assert significant(*at_2) and at_2[0] > 0.05                        # ahead after 2 steps
    assert not significant(*at_8) and at_8[0] < at_2[0] / 2             # "a couple of points ... cannot tell from 0"
    with torch.no_grad():
        predicted = nb["forward"](episodes[0].query_x, better, layout).argmax(dim=1)
    by_order = torch.tensor([(torch.tensor(o)[predicted] == episodes[0].query_y).float().mean().item()
                             for o in itertools.permutations(range(5))])
    assert abs(by_order.mean().item() - 0.2) < 1e-6 and by_order.min() < 0.1 and by_order.max() > 0.3


def test_notebook_is_stored_without_outputs_except_checked_cells():
    nbk = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nbk.cells:
        if cell.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" not in cell.source:
            assert cell.outputs == [], f"stored outputs in cell:\n{cell.source[:200]}"
    sources = "\n".join(c.source for c in nbk.cells)
    assert "from metalstm.learner import Learner" in sources and "SGDCell" in sources


# -- the exercises' solutions ---------------------------------------------------------
def test_weight_decay_gates_give_sgd_on_the_penalised_loss(solutions):
    learner, ep = Learner(5, 1, 28), random_episode(seed=5)
    theta = learner.init_params(torch.Generator().manual_seed(5))
    lr, wd = 0.1, 0.5
    f, i = solutions.weight_decay_gates(lr, wd)
    _, grad = loss_and_grad(learner, ep.support_x, ep.support_y, theta)
    cell = f * theta + i * (-grad)

    leaf = theta.clone().requires_grad_(True)
    penalised = F.cross_entropy(learner(ep.support_x, leaf), ep.support_y) + wd / 2 * leaf.pow(2).sum()
    (full_grad,) = torch.autograd.grad(penalised, leaf)
    torch.testing.assert_close(cell, theta - lr * full_grad, rtol=1e-5, atol=1e-6)
    assert 0 < f < 1


@pytest.mark.parametrize("n_way,channels,size,filters,blocks",
                         [(5, 1, 28, 32, 4), (5, 3, 84, 32, 4), (20, 3, 84, 32, 4), (7, 2, 40, 16, 3)])
def test_count_params_formula(solutions, n_way, channels, size, filters, blocks):
    assert solutions.count_params(n_way, channels, size, filters, blocks) == \
        Learner(n_way, channels, size, n_filters=filters, n_blocks=blocks).n_params
    assert solutions.count_params(5, 3, 84) == 32_901


def test_c0_meta_gradient_is_the_query_gradient_at_theta_T(solutions):
    learner, ep = Learner(5, 1, 28), random_episode(seed=6)
    c0 = learner.init_params(torch.Generator().manual_seed(6))

    def query_grad(theta):
        leaf = theta.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(learner(ep.query_x, leaf), ep.query_y), leaf)[0]

    # no steps: the plain query gradient at c0
    torch.testing.assert_close(solutions.c0_meta_gradient(learner, ep, c0, lr=0.1, steps=0), query_grad(c0))
    # three steps: the query gradient at theta_3, not at c0
    theta = c0
    for _ in range(3):
        theta = theta - 0.1 * loss_and_grad(learner, ep.support_x, ep.support_y, theta)[1]
    meta = solutions.c0_meta_gradient(learner, ep, c0, lr=0.1, steps=3)
    torch.testing.assert_close(meta, query_grad(theta), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(meta, query_grad(c0), atol=1e-4)
