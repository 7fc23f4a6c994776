"""Notebook 05 (meta-training, paper notes 5) agrees with metalstm.train, and its exercise solutions work.

The notebook's cells marked '# package: ...' (`meta_train_step`, `meta_validate`)
are taken from the .ipynb, run here, and compared with `metalstm.train.train` and
`evaluate_rule` + `mean_ci95` on the same episodes: meta-parameters and Adam's
state must be bit-identical after the same updates.
"""
import csv
from pathlib import Path

import nbformat
import pytest
import torch

from metalstm.checkpoint import load_checkpoint
from metalstm.config import get_config
from metalstm.metalearner import run_episode
from metalstm.model import build_model
from metalstm.episodes import episode_generator, sampler_for
from metalstm.evaluate import evaluate_rule
from metalstm.stats import mean_ci95
from metalstm.train import train
from testkit import without_magics, check_markers, load_solutions, notebook_code

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "05_meta_training.ipynb"
SMOKE = get_config("smoke")


@pytest.fixture(scope="module")
def nb():
    return notebook_code(NOTEBOOK, "meta_train_step", "meta_validate")


def test_the_markers_name_package_functions_whose_source_the_notebook_shows():
    check_markers(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(NOTEBOOK.stem)


def package_state(cfg, tmp_path):
    """The meta-learner and Adam state after `train(cfg)` (its last.pt)."""
    train(cfg, tmp_path, progress=False)
    state, _, metrics = load_checkpoint(tmp_path / "last.pt")
    assert metrics["episode"] == cfg.episodes
    return state


def assert_same_state(meta, opt, state):
    for name, value in meta.state_dict().items():
        assert torch.equal(value, state["metalearner"][name]), f"meta-parameter {name} differs"
    ours, theirs = opt.state_dict()["state"], state["optimizer"]["state"]
    assert len(ours) == len(theirs) > 0
    for key in ours:
        for field, value in ours[key].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(theirs[key][field])), (key, field)


@pytest.mark.parametrize("name,episodes", [("smoke", 3), ("glyphs-5shot", 1)])
def test_meta_train_steps_give_the_package_meta_parameters(nb, tmp_path, name, episodes):
    cfg = get_config(name).replace(episodes=episodes, val_every=episodes, val_episodes=2)
    state = package_state(cfg, tmp_path)
    learner, meta = build_model(cfg)
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr)
    s = sampler_for(cfg, "train")
    norms = []
    for i in range(episodes):
        loss, acc, norm = nb["meta_train_step"](learner, meta, opt, s[i], cfg, episode_generator(s.seed, i))
        assert loss > 0 and 0 <= acc <= 1
        norms.append(norm)
    assert_same_state(meta, opt, state)
    assert max(norms) > cfg.clip          # clipping is active: without it the states would differ


def test_a_step_without_clipping_would_differ(nb, tmp_path):
    """The comparison above can fail: the same step with clipping switched off lands elsewhere."""
    cfg = SMOKE.replace(episodes=1, val_every=1, val_episodes=2)
    state = package_state(cfg, tmp_path)
    learner, meta = build_model(cfg)
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr)
    s = sampler_for(cfg, "train")
    nb["meta_train_step"](learner, meta, opt, s[0], cfg.replace(clip=1e9), episode_generator(s.seed, 0))
    with pytest.raises(AssertionError):
        assert_same_state(meta, opt, state)


def test_meta_validate_is_evaluate_rule_and_mean_ci95(nb):
    learner, meta = build_model(SMOKE)
    val = sampler_for(SMOKE, "val")
    ours = nb["meta_validate"](learner, meta, val, 6, SMOKE)
    theirs = mean_ci95(evaluate_rule(learner, meta, val, 6, SMOKE))
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert 0 <= ours[0] <= 1 and ours[1] >= 0


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:200]


def test_the_set_up_cell_runs_quick_mode_on_one_thread_unless_asked_for_the_full_run(monkeypatch, capsys):
    # the cell that sets QUICK, run as the kernel runs it: its behaviour, not its wording
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(c.source for c in notebook.cells if c.cell_type == "code" and "QUICK =" in c.source)
    threads = torch.get_num_threads()
    try:
        for full, quick in ((None, True), ("0", True), ("1", False)):
            if full is None:
                monkeypatch.delenv("METALSTM_FULL", raising=False)
            else:
                monkeypatch.setenv("METALSTM_FULL", full)
            torch.set_num_threads(2)
            namespace = {}
            exec(without_magics(setup), namespace)
            assert namespace["QUICK"] is quick and torch.get_num_threads() == 1
            assert callable(namespace["train"]) and callable(namespace["evaluate_methods"])
            assert ("quick mode" if quick else "full mode") in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)


# -- the exercises' solutions ---------------------------------------------------------
def write_log(path, val_accs):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["episode", "train_loss", "train_acc", "val_acc", "val_ci95", "seconds"])
        w.writeheader()
        for k, acc in enumerate(val_accs, 1):
            w.writerow({"episode": 10 * k, "train_loss": 1.0, "train_acc": 0.5, "val_acc": acc,
                        "val_ci95": 0.1, "seconds": k})


def test_best_from_log_keeps_the_first_of_tied_validations(solutions, tmp_path):
    write_log(tmp_path / "log.csv", [0.4, 0.7, 0.6, 0.7, 0.5])
    assert solutions.best_from_log(tmp_path / "log.csv") == (20, 0.7)


@pytest.mark.slow
def test_best_from_log_names_the_run_s_best_pt(solutions, tmp_path):
    cfg = SMOKE.replace(episodes=8, val_every=2, val_episodes=3)
    train(cfg, tmp_path, progress=False)
    metrics = load_checkpoint(tmp_path / "best.pt")[2]
    assert solutions.best_from_log(tmp_path / "log.csv") == (metrics["episode"], metrics["val_acc"])


@pytest.mark.slow
def test_meta_batch_step_gives_the_package_meta_parameters(solutions, tmp_path):
    cfg = SMOKE.replace(episodes=4, val_every=4, val_episodes=2, meta_batch=2)
    state = package_state(cfg, tmp_path)
    learner, meta = build_model(cfg)
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr)
    s = sampler_for(cfg, "train")
    for first in (0, 2):
        loss = solutions.meta_train_step_batch(learner, meta, opt, [s[first], s[first + 1]],
                                               [episode_generator(s.seed, i) for i in (first, first + 1)], cfg)
        assert loss > 0
    assert_same_state(meta, opt, state)


@pytest.mark.slow
def test_train_c0_only_moves_c0_and_nothing_else(solutions):
    cfg = SMOKE
    _, fresh = build_model(cfg)
    learner, meta = solutions.train_c0_only(cfg, 2)
    for (name, before), after in zip(fresh.named_parameters(), meta.parameters()):
        if name == "c0":
            assert not torch.equal(before, after)
        else:
            assert torch.equal(before, after), f"{name} changed"
    # the first update of c_0 alone is Adam's first step on the clipped c_0 gradient: lr * g / (|g| + eps)
    _, one = solutions.train_c0_only(cfg, 1)
    _, ref = build_model(cfg)
    s = sampler_for(cfg, "train")
    res = run_episode(learner, ref, s[0], cfg.steps, cfg.batch_size, mode="train",
                      generator=episode_generator(s.seed, 0))
    (g,) = torch.autograd.grad(res.query_loss, ref.c0)
    g = g * min(1.0, cfg.clip / (g.norm().item() + 1e-6))
    expected = ref.c0.detach() - cfg.lr * g / (g.abs() + 1e-8)
    torch.testing.assert_close(one.c0.detach(), expected, rtol=1e-5, atol=1e-6)
