"""Notebook 03 and the package cannot drift apart; its printed claims hold; its exercise solutions work.

The notebook's cells marked `# package: NAME` (the preprocessing, the coordinate-wise
meta-learner's weights, initial state and step) are taken from the .ipynb, run here, and
compared with NAME (`metalstm.preprocess.preprocess`, `metalstm.metalearner.MetaLearner`) on the
same inputs. The claims its prose makes about printed numbers (the span of the gradients, the
conv biases' rounding noise, the gates' spread at initialisation, the meta-learner at
initialisation beside SGD and the constant-gate cell) are recomputed here.
"""
import math
from pathlib import Path

import nbformat
import pytest
import torch

from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner
from metalstm.preprocess import preprocess
from testkit import check_markers, load_solutions, notebook_code

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOK = NOTEBOOKS / "03_preprocessing_and_parameter_sharing.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_code(NOTEBOOK, "preprocess", "init_meta_params", "meta_initial_state", "meta_step")


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(NOTEBOOK.stem)


def values_and_boundary(p: float, dtype: torch.dtype) -> torch.Tensor:
    """Magnitudes from 1e-30 to 1e6 of both signs, 0, and +-e^-p with its neighbours in `dtype`."""
    span = torch.logspace(-30 if dtype == torch.float64 else -20, 6, 400, dtype=dtype)
    b = torch.tensor(math.exp(-p), dtype=dtype)
    edge = torch.stack([torch.nextafter(b, torch.zeros((), dtype=dtype)), b,
                        torch.nextafter(b, torch.ones((), dtype=dtype))])
    return torch.cat([span, -span, edge, -edge, torch.zeros(1, dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [10.0, 5.0])
def test_preprocess_matches_the_package_including_the_boundary(nb, p, dtype):
    x = values_and_boundary(p, dtype)
    ours, theirs = nb["preprocess"](x, p), preprocess(x, p)
    assert ours.shape == x.shape + (2,) and ours.dtype == dtype
    torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-7)
    # the branch taken at and next to the boundary: e^-p itself gives (-1, 1), the number below it
    # the small branch (second channel e^p x, not exactly 1)
    b = torch.tensor(math.exp(-p), dtype=dtype)
    below = torch.nextafter(b, torch.zeros((), dtype=dtype))
    for impl in (nb["preprocess"], preprocess):
        assert impl(b, p).tolist() == [-1.0, 1.0]
        assert impl(-b, p).tolist() == [-1.0, -1.0]
        assert impl(below, p)[1] == below * math.exp(p)
    # the formula, written out once more with Python floats
    for value, (m, s) in zip(x.tolist(), ours.tolist()):
        if abs(value) >= math.exp(-p):
            assert m == pytest.approx(math.log(abs(value)) / p, rel=1e-5, abs=1e-6)
            assert s == math.copysign(1.0, value)
        else:
            assert m == -1.0 and s == pytest.approx(value * math.exp(p), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("hidden", [20, 7])
def test_meta_weights_have_the_package_names_and_sizes(nb, hidden):
    ours = nb["init_meta_params"](hidden, torch.Generator().manual_seed(0))
    learner = Learner(5, 1, 28)
    meta = MetaLearner(learner.n_params, hidden=hidden, theta0=learner.init_params(),
                       generator=torch.Generator().manual_seed(0))
    package = {k: v.numel() for k, v in meta.named_parameters() if k != "c0"}
    assert {k: v.numel() for k, v in ours.items()} == package
    assert sum(package.values()) == sum(v.numel() for v in meta.rule_parameters())
    if hidden == 20:
        assert sum(v.numel() for v in ours.values()) == 2_046


def test_meta_weight_count_does_not_depend_on_the_learner(nb):
    counts = set()
    for learner in (Learner(5, 1, 28), Learner(5, 3, 84), Learner(20, 3, 84)):
        meta = MetaLearner(learner.n_params, theta0=learner.init_params())
        counts.add(sum(v.numel() for v in meta.rule_parameters()))
    assert counts == {sum(v.numel() for v in nb["init_meta_params"]().values())} == {2_046}


def test_meta_initialisation_ranges(nb):
    w = nb["init_meta_params"](20, torch.Generator().manual_seed(1))
    for name in ("lstm_weight", "lstm_bias", "W_F", "W_I"):
        assert w[name].abs().max() <= 0.01 and w[name].std() > 0.003
    assert 4 <= w["b_F"] <= 5 and -5 <= w["b_I"] <= -4
    again = nb["init_meta_params"](20, torch.Generator().manual_seed(1))
    assert all(torch.equal(w[k], again[k]) for k in w)


def package_weights(meta: MetaLearner, reference: dict) -> dict:
    """The package's weights as the notebook's meta_step takes them: the same names, shapes and
    layout (W1 [4H, 4 + H], each coordinate a column), no transposing."""
    weights = {k: v.detach() for k, v in meta.named_parameters() if k != "c0"}
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in reference.items()}
    return weights


@pytest.mark.parametrize("hidden", [20, 7])
def test_meta_steps_match_the_package(nb, hidden):
    n = 3000
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(n, generator=g) * 0.1
    meta = MetaLearner(n, hidden=hidden, theta0=theta, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():   # weights large enough that every term matters, gates far from saturation
        for name, param in meta.named_parameters():
            if name in ("lstm_weight", "lstm_bias", "W_F", "W_I"):
                param.mul_(50)
        meta.b_F.fill_(1.0), meta.b_I.fill_(-1.0)
    weights = package_weights(meta, nb["init_meta_params"](hidden))
    ours_theta = theirs_theta = theta
    ours_state, theirs_state = nb["meta_initial_state"](n, hidden), meta.initial_state()
    with torch.no_grad():
        for step in range(4):   # several steps: layer-1 state and fed-back gates must agree too
            loss = torch.tensor(2.0 / (step + 1))
            grad = torch.randn(n, generator=g) * 10.0 ** torch.randint(-9, 0, (n,), generator=g)
            ours_theta, ours_state, (f, i) = nb["meta_step"](weights, loss, grad, ours_theta, ours_state)
            theirs_theta, theirs_state, gates = meta.step(loss, grad, theirs_theta, theirs_state)
            torch.testing.assert_close(theirs_theta, ours_theta, rtol=1e-5, atol=1e-6)
            for ours, theirs in zip(ours_state, (theirs_state.h, theirs_state.c, theirs_state.f, theirs_state.i)):
                torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)   # the same [H, n] layout
            torch.testing.assert_close(gates.f, f, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(gates.i, i, rtol=1e-5, atol=1e-6)
    assert f.std() > 1e-3 and i.std() > 1e-3     # the gates really vary across coordinates


def test_meta_step_at_initialisation_is_small_step_sgd(nb):
    n = 500
    g = torch.Generator().manual_seed(4)
    theta, grad = torch.randn(n, generator=g), torch.randn(n, generator=g) * 1e-2
    w = nb["init_meta_params"](20, torch.Generator().manual_seed(5))
    new_theta, _, (f, i) = nb["meta_step"](w, torch.tensor(1.6), grad, theta, nb["meta_initial_state"](n))
    assert f.min() > 0.98 and f.max() < 0.994 and i.min() > 0.006 and i.max() < 0.019
    torch.testing.assert_close(new_theta, f * theta - i * grad)


def test_the_markers_name_package_functions_whose_source_the_notebook_shows():
    assert check_markers(NOTEBOOK) == ["metalstm.preprocess.preprocess", "metalstm.metalearner.MetaLearner.__init__",
                                       "metalstm.metalearner.MetaLearner.initial_state",
                                       "metalstm.metalearner.MetaLearner.reference_step"]


# -- the claims the prose makes about printed numbers ---------------------------------
@pytest.fixture(scope="module")
def glyph_steps():
    """The notebook's 40 SGD steps on 4 glyph episodes: (learner, episodes, losses [40], grads [40, n])."""
    from metalstm.data.glyphs import load_glyphs
    from metalstm.episodes import EpisodeSampler
    from metalstm.metalearner import loss_and_grad

    learner = Learner(5, 1, 28)
    episodes = EpisodeSampler(load_glyphs("train"), 5, 5, 15, seed=0).take(4)
    losses, grads = [], []
    for e, episode in enumerate(episodes):
        theta = learner.init_params(torch.Generator().manual_seed(e))
        for _ in range(10):
            loss, grad = loss_and_grad(learner, episode.support_x, episode.support_y, theta)
            losses.append(loss.item())
            grads.append(grad)
            theta = theta - 0.1 * grad
    return learner, episodes, torch.tensor(losses), torch.stack(grads)


@pytest.mark.slow
def test_gradients_span_nine_orders_without_the_conv_biases_and_the_loss_falls_10_to_40_fold(glyph_steps):
    learner, _, losses, grads = glyph_steps
    nonzero = grads.abs()[grads != 0]
    assert math.log10(nonzero.max() / nonzero.min()) > 11                    # "with them, more than eleven"
    signal = torch.cat([grads[:, part].flatten() for name, part in learner.slices().items()
                        if not (name.startswith("conv") and name.endswith(".bias"))]).abs()
    signal = signal[signal > 0]
    assert 8.5 < math.log10(signal.max() / signal.min()) < 9                 # "almost nine orders of magnitude"
    falls = [(losses[e * 10:(e + 1) * 10].max() / losses[e * 10:(e + 1) * 10].min()).item() for e in range(4)]
    assert min(falls) > 9 and max(falls) < 45                                # "a factor of about 10 to 40"
    slices = learner.slices()
    bias = torch.cat([grads[:, slices[f"conv{k}.bias"]].flatten() for k in range(1, 5)]).abs()
    weight = torch.cat([grads[:, slices[f"conv{k}.weight"]].flatten() for k in range(1, 5)]).abs()
    assert bias.max() < 1e-3 and bias[bias > 0].min() < 1e-10                # "about 1e-12 to 1e-4"
    assert 1e-3 < weight.median() < 1e-2                                     # "median about 1e-3 to 1e-2"


@pytest.mark.slow
def test_at_initialisation_the_gates_barely_vary_and_the_meta_learner_is_small_step_sgd(nb, glyph_steps):
    from metalstm.metalearner import loss_and_grad

    learner, episodes, _, _ = glyph_steps
    episode = episodes[0]
    theta0 = learner.init_params(torch.Generator().manual_seed(0))
    loss, grad = loss_and_grad(learner, episode.support_x, episode.support_y, theta0)
    spread = 0.0
    for seed in range(3):
        params = nb["init_meta_params"](20, torch.Generator().manual_seed(seed))
        _, _, (f, i) = nb["meta_step"](params, loss, grad, theta0, nb["meta_initial_state"](learner.n_params))
        spread = max(spread, (f.max() - f.min()).item(), (i.max() - i.min()).item())
    assert 1e-5 < spread < 3e-4                                              # "by about 1e-4"

    params = nb["init_meta_params"](20, torch.Generator().manual_seed(0))
    _, _, (f1, i1) = nb["meta_step"](params, loss, grad, theta0, nb["meta_initial_state"](learner.n_params))
    f_bar, i_bar = f1.mean().item(), i1.mean().item()

    def run(update):
        theta, state, seen = theta0, None, []
        for _ in range(8):
            loss, grad = loss_and_grad(learner, episode.support_x, episode.support_y, theta)
            theta, state = update(loss, grad, theta, state)
            seen.append(loss.item())
        return torch.tensor(seen), theta

    def meta_update(loss, grad, theta, state):
        theta, state, _ = nb["meta_step"](params, loss, grad, theta, state or nb["meta_initial_state"](len(theta)))
        return theta, state

    meta_losses, meta_theta = run(meta_update)
    sgd_losses, _ = run(lambda loss, grad, theta, state: (theta - 0.01 * grad, None))
    cell_losses, cell_theta = run(lambda loss, grad, theta, state: (f_bar * theta - i_bar * grad, None))
    # "the three loss curves stay within a few hundredths of each other over the 8 steps"
    assert (meta_losses - sgd_losses).abs().max() < 0.05 and (meta_losses - cell_losses).abs().max() < 0.05
    assert 2e-4 < (meta_theta - cell_theta).abs().max() < 5e-3               # "within about 1e-3"
    assert 0.005 < 1 - f_bar < 0.012 and 0.04 < 1 - f_bar ** 8 < 0.09        # gamma's shrinkage per step, in 8


def test_notebook_is_stored_without_outputs_except_checked_cells():
    nbk = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nbk.cells:
        if cell.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" not in cell.source:
            assert cell.outputs == [], f"stored outputs in cell:\n{cell.source[:200]}"
    sources = "\n".join(c.source for c in nbk.cells)
    assert "from metalstm.preprocess import preprocess" in sources and "MetaLearner" in sources


# -- the exercises' solutions ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unpreprocess_inverts_the_preprocessing(solutions, dtype):
    x = values_and_boundary(10.0, dtype)
    for p in (10.0, 3.0):
        back = solutions.unpreprocess(preprocess(x, p), p)
        torch.testing.assert_close(back, x, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0.0)


@pytest.mark.parametrize("hidden", [1, 5, 20, 32])
def test_count_meta_params_formula(solutions, hidden):
    meta = MetaLearner(10, hidden=hidden, theta0=torch.zeros(10))
    assert solutions.count_meta_params(hidden) == sum(v.numel() for v in meta.rule_parameters())
    assert solutions.count_meta_params(20) == 2_046


@pytest.mark.parametrize("b_F,b_I", [(4.5, -4.5), (4.0, -5.0), (2.0, -1.0)])
def test_effective_sgd_is_one_meta_learner_step(solutions, b_F, b_I):
    n = 200
    g = torch.Generator().manual_seed(6)
    theta, grad = torch.randn(n, generator=g), torch.randn(n, generator=g) * 1e-2
    meta = MetaLearner(n, theta0=theta, weight_range=0.0, forget_bias=(b_F, b_F), input_bias=(b_I, b_I))
    with torch.no_grad():
        stepped, _, _ = meta.step(torch.tensor(1.0), grad, theta, meta.initial_state())
    lr, wd = solutions.effective_sgd(b_F, b_I)
    torch.testing.assert_close(stepped, theta - lr * (grad + wd * theta), rtol=1e-5, atol=1e-7)
    if b_F == -b_I:
        assert wd == pytest.approx(1.0)
