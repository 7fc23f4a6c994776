"""Notebook 06 and metalstm.viz cannot drift apart; the notebook's exercise solutions work.

The notebook develops `step_through` (the meta-test protocol one update at a
time); its source is taken from the .ipynb and run here against
`metalstm.viz.trace_episode` on the same episodes. No checkpoint is needed: a
smoke-sized meta-learner with perturbed (seeded) weights stands in.
"""
from pathlib import Path

import nbformat
import pytest
import torch

from metalstm.config import get_config
from metalstm.metalearner import SGDCell, loss_and_grad, run_episode, support_batches
from metalstm.rules import build_model
from metalstm.episodes import episode_generator, sampler_for
from metalstm.evaluate import evaluate_rule
from metalstm.viz import LAYERS, GateRecord, record_gates, trace_episode
from testkit import cell_defining, load_solutions, perturb_rule_

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "06_gate_visualization.ipynb"
CFG = get_config("smoke")


def notebook_function(name: str):
    """The function `name` as defined in the notebook's code cell that defines it."""
    namespace = {"torch": torch, "loss_and_grad": loss_and_grad, "support_batches": support_batches}
    exec(compile(cell_defining(NOTEBOOK, name), f"{NOTEBOOK.name}:{name}", "exec"), namespace)
    return namespace[name]


@pytest.fixture(scope="module")
def solutions():
    return load_solutions("06_gate_visualization")


@pytest.fixture(scope="module")
def model():
    learner, meta = build_model(CFG)
    return learner, perturb_rule_(meta, seed=2)


@pytest.fixture(scope="module")
def sampler():
    return sampler_for(CFG, "val")


@pytest.fixture(scope="module")
def record(model, sampler):
    return record_gates(*model, sampler, CFG, episodes=3, progress=False)


def test_notebook_step_through_is_trace_episode(model, sampler):
    step_through = notebook_function("step_through")
    learner, meta = model
    for i in range(3):
        ep = sampler[i]
        forget, input_, accuracy = step_through(learner, meta, ep, CFG.steps, CFG.batch_size,
                                                episode_generator(sampler.seed, i))
        trace = trace_episode(learner, meta, ep, CFG.steps, CFG.batch_size, episode_generator(sampler.seed, i))
        assert torch.equal(forget, trace.forget) and torch.equal(input_, trace.input)
        assert torch.equal(accuracy, trace.query_acc)
    # with plain SGD as the rule too (other gates, another state type)
    sgd = SGDCell(meta.c0, lr=0.1)
    ep = sampler[3]
    ours = step_through(learner, sgd, ep, 2 * CFG.steps, CFG.batch_size, episode_generator(sampler.seed, 3))
    trace = trace_episode(learner, sgd, ep, 2 * CFG.steps, CFG.batch_size, episode_generator(sampler.seed, 3))
    assert torch.equal(ours[2], trace.query_acc) and torch.equal(ours[1], trace.input)


def test_exercise1_implied_decay_and_retained_fraction(solutions, record):
    T, P = record.steps, record.forget.shape[2]
    f = torch.tensor([0.99, 0.98, 0.97])[:T, None].expand(2, T, P).clone()
    made = GateRecord(forget=f, input=torch.full((2, T, P), 0.1), query_acc=torch.zeros(2, T + 1),
                      query_loss=torch.zeros(2, T + 1), support_loss=torch.zeros(2, T),
                      episodes=[0, 1], slices=record.slices)
    decay = solutions.implied_weight_decay(made, "conv2.weight")
    torch.testing.assert_close(decay, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)[:T], rtol=1e-5, atol=1e-6)
    assert solutions.retained_fraction(made, "fc.weight") == pytest.approx(0.99 * 0.98 * 0.97)
    # on a real record: the median of (1 - f) / i, coordinate by coordinate
    lam = solutions.implied_weight_decay(record, "fc.weight")
    f, i = record.layer("fc.weight", "forget").double(), record.layer("fc.weight", "input").double()
    for t in range(T):
        assert lam[t].item() == pytest.approx(((1 - f[:, t]) / i[:, t]).flatten().median().item())


def test_exercise2_schedule_rule(solutions, model, sampler, record):
    learner, meta = model
    # gates f = 1, i = lr everywhere: the schedule rule is plain SGD
    T, P = CFG.steps, learner.n_params
    rule = solutions.ScheduleRule(meta.c0, torch.ones(T, P), torch.full((T, P), 0.05))
    for i in range(2):
        a = run_episode(learner, rule, sampler[i], T, CFG.batch_size, mode="test",
                        generator=episode_generator(sampler.seed, i))
        b = run_episode(learner, SGDCell(meta.c0, 0.05), sampler[i], T, CFG.batch_size, mode="test",
                        generator=episode_generator(sampler.seed, i))
        torch.testing.assert_close(a.query_logits, b.query_logits)
    forget, input_ = solutions.schedule_from_record(record)
    assert forget.shape == input_.shape == (T, P)
    for name, part in record.slices.items():
        block = record.layer(name, "input").transpose(0, 1).flatten(1)
        assert torch.equal(input_[:, part], block.median(dim=1).values[:, None].expand(T, part.stop - part.start))
    ours, fixed = solutions.compare_with_schedule(learner, meta, sampler, CFG, record, range(3, 5))
    assert ours == pytest.approx(sum(evaluate_rule(learner, meta, sampler, range(3, 5), CFG)) / 2)
    assert 0 <= fixed <= 1
    with pytest.raises(ValueError, match="schedule has"):
        run_episode(learner, solutions.ScheduleRule(meta.c0, forget, input_), sampler[0], T + 1,
                    CFG.batch_size, mode="test")


def test_exercise3_beyond_T_starts_with_the_record(solutions, model, sampler, record):
    acc = solutions.accuracy_beyond_T(*model, sampler, CFG, factor=2, episodes=3)
    assert acc.shape == (2 * CFG.steps + 1,)
    torch.testing.assert_close(acc[: CFG.steps + 1], record.query_acc.mean(dim=0))


def test_notebook_uses_the_package_on_both_checkpoints_and_twenty_episodes():
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    for needed in ('shipped_checkpoint(f"glyphs-{k}shot")', "EPISODES = 20", "record_gates(",
                   "plot_gates(records[1], records[5])", "explorer.show()", "%matplotlib inline"):
        assert needed in source
    assert all(name in LAYERS for name in ("conv1.weight", "fc.weight"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), "store the notebook with outputs stripped"
