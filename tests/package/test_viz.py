"""metalstm.viz: gate recording, per-layer views, accuracy after each step, plots, the explorer."""
import io
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import metalstm.viz.explorer as explorer_module  # noqa: E402
from metalstm.config import get_config  # noqa: E402
from metalstm.metalearner import SGDCell, inner_loop, loss_and_grad, run_episode, support_batches  # noqa: E402
from metalstm.paths import shipped_checkpoint  # noqa: E402
from metalstm.model import build_model  # noqa: E402
from metalstm.episodes import episode_generator, sampler_for  # noqa: E402
from metalstm.viz import (LAYERS, GateRecord, InnerLoopExplorer, forgetting_share, format_summary,  # noqa: E402
                          gate_summary, implied_weight_decay, pick_coordinates, plot_gate_bands, plot_gates,
                          plot_query_accuracy_by_step, plot_step_sizes, record_gates, retained_fraction,
                          step_sizes, trace_episode, weight_decay_share)
from testkit import perturb_rule_  # noqa: E402

CFG = get_config("smoke")          # 5-way 1-shot, 5 queries, T = 3 steps of batch 5
EPISODES = 3


@pytest.fixture(scope="module")
def model():
    """The smoke model with its update rule's weights perturbed (seeded), so that the gates
    differ between coordinates, steps and episodes as a trained meta-learner's do."""
    torch.manual_seed(0)
    learner, meta = build_model(CFG)
    return learner, perturb_rule_(meta, seed=1)


@pytest.fixture(scope="module")
def sampler():
    return sampler_for(CFG, "val")


@pytest.fixture(scope="module")
def record(model, sampler):
    return record_gates(*model, sampler, CFG, episodes=EPISODES, progress=False)


def reference(model, sampler, i, steps=CFG.steps, record=True):
    learner, meta = model
    return run_episode(learner, meta, sampler[i], steps, CFG.batch_size, mode="test",
                       generator=episode_generator(sampler.seed, i), record=record)


def test_record_shapes(model, record):
    learner, _ = model
    T, P = CFG.steps, learner.n_params
    assert isinstance(record, GateRecord)
    assert record.forget.shape == record.input.shape == (EPISODES, T, P)
    assert record.query_acc.shape == record.query_loss.shape == (EPISODES, T + 1)
    assert record.support_loss.shape == (EPISODES, T)
    assert record.episodes == list(range(EPISODES)) and record.steps == T
    assert (record.forget > 0).all() and (record.forget < 1).all()
    assert (record.input > 0).all() and (record.input < 1).all()
    # the perturbed rule gives gates that change from step to step and episode to episode
    assert record.input.std(dim=0).max() > 0 and (record.forget[:, 1:] != record.forget[:, :-1]).any()


def test_gates_are_run_episodes_gates_and_layers_are_learner_slices(model, sampler, record):
    learner, _ = model
    sizes = {name: math.prod(shape) for name, shape in learner.layout}
    for e in range(EPISODES):
        gates = reference(model, sampler, e).gates
        for t, g in enumerate(gates):
            assert torch.equal(record.forget[e, t], g.f) and torch.equal(record.input[e, t], g.i)
            f_parts, i_parts = learner.unflatten(g.f), learner.unflatten(g.i)
            for name in LAYERS:
                layer_f = record.layer(name, "forget")
                assert layer_f.shape == (EPISODES, CFG.steps, sizes[name])
                assert torch.equal(layer_f[e, t], f_parts[name].flatten())
                assert torch.equal(record.layer(name, "input")[e, t], i_parts[name].flatten())
    with pytest.raises(ValueError, match="unknown layer"):
        record.layer("conv9.weight", "forget")
    with pytest.raises(ValueError, match="forget"):
        record.layer("fc.weight", "output")


@pytest.mark.slow
def test_accuracy_after_each_step_is_run_episode_with_that_many_steps(model, sampler, record):
    """query_acc[:, t] (t >= 1) = run_episode(mode="test") stopped after t steps; t = T is the
    reported query accuracy; support losses are run_episode's."""
    assert record.query_acc.shape[1] == CFG.steps + 1
    for e in range(EPISODES):
        full = reference(model, sampler, e)
        assert record.query_acc[e, -1].item() == pytest.approx(full.query_acc, abs=0)
        assert record.support_loss[e].tolist() == pytest.approx(full.support_losses, abs=0)
        for t in range(1, CFG.steps + 1):
            res = reference(model, sampler, e, steps=t, record=False)
            assert record.query_acc[e, t].item() == pytest.approx(res.query_acc, abs=0)
            assert record.query_loss[e, t].item() == pytest.approx(res.query_loss.item(), rel=1e-6)


def test_inner_loop_hook_sees_every_step_and_changes_nothing(model, sampler):
    """The one inner loop: its hook gets t = 1..T with theta_{t-1} -> theta_t, the loss and
    gradient fed to the rule, the gates and the mini-batch; running it changes no number."""
    learner, meta = model
    ep = sampler[1]
    seen = []
    with torch.no_grad():
        stats_a, stats_b = learner.new_bn_stats(), learner.new_bn_stats()
        theta_a, losses_a, gates_a = inner_loop(learner, meta, ep.support_x, ep.support_y, CFG.steps,
                                                CFG.batch_size, stats=stats_a, record=True,
                                                generator=episode_generator(sampler.seed, 1))
        theta_b, losses_b, _ = inner_loop(learner, meta, ep.support_x, ep.support_y, CFG.steps,
                                          CFG.batch_size, stats=stats_b, hook=seen.append,
                                          generator=episode_generator(sampler.seed, 1))
    assert torch.equal(theta_a, theta_b) and losses_a == losses_b
    assert stats_a.updates == stats_b.updates == CFG.steps
    assert all(torch.equal(a, b) for a, b in zip(stats_a.mean + stats_a.var, stats_b.mean + stats_b.var))
    assert [s.t for s in seen] == list(range(1, CFG.steps + 1))
    batches = support_batches(len(ep.support_y), CFG.batch_size, CFG.steps, episode_generator(sampler.seed, 1))
    previous = meta.c0
    for step, gates, loss, idx in zip(seen, gates_a, losses_a, batches):
        assert step.theta_prev is previous and torch.equal(step.gates.f, gates.f)
        assert step.loss.item() == loss and torch.equal(step.batch, idx)
        l, g = loss_and_grad(learner, ep.support_x[idx], ep.support_y[idx], previous)
        assert torch.equal(step.grad, g) and l.item() == loss
        torch.testing.assert_close(step.theta, step.gates.f * previous - step.gates.i * step.grad)
        previous = step.theta
    assert torch.equal(previous, theta_a)


def test_sgd_trace_gates_are_the_fixed_step(model, sampler):
    learner, meta = model
    trace = trace_episode(learner, SGDCell(meta.c0, 0.1), sampler[0], CFG.steps, CFG.batch_size,
                          episode_generator(sampler.seed, 0))
    assert (trace.forget == 1).all() and (trace.input == 0.1).all()
    torch.testing.assert_close(trace.theta[1:], trace.theta[:-1] - 0.1 * trace.grad)


def test_step_zero_evaluates_c0_with_the_first_support_pass_statistics(model, sampler):
    learner, meta = model
    ep = sampler[0]
    trace = trace_episode(learner, meta, ep, CFG.steps, CFG.batch_size, episode_generator(sampler.seed, 0))
    stats = learner.new_bn_stats()
    first = support_batches(len(ep.support_y), CFG.batch_size, 1, episode_generator(sampler.seed, 0))[0]
    loss, _ = loss_and_grad(learner, ep.support_x[first], ep.support_y[first], meta.c0, "batch", stats)
    with torch.no_grad():
        logits = learner(ep.query_x, meta.c0, bn="running", stats=stats)
    assert torch.equal(trace.query_logits[0], logits)
    assert trace.support_loss[0].item() == loss.item()
    assert torch.equal(trace.theta[0], meta.c0.detach())
    assert trace.theta.shape == (CFG.steps + 1, learner.n_params)


def test_the_record_splits_thetas_change_into_forgetting_and_gradient_steps(model, sampler, record):
    """moved = theta_T - theta_0 = -forgotten - sum_t i_t grad_t, from each episode's trace."""
    learner, meta = model
    for e in range(EPISODES):
        trace = trace_episode(learner, meta, sampler[e], CFG.steps, CFG.batch_size,
                              episode_generator(sampler.seed, e))
        torch.testing.assert_close(record.moved[e], trace.theta[-1] - trace.theta[0])
        torch.testing.assert_close(record.forgotten[e], ((1 - trace.forget) * trace.theta[:-1]).sum(0))
        torch.testing.assert_close(record.stepped_theta[e], (trace.input * trace.theta[:-1]).sum(0))
        stepped = (trace.input * trace.grad).sum(0)
        torch.testing.assert_close(record.moved[e], -record.forgotten[e] - stepped, rtol=1e-4, atol=1e-5)


def test_strategy_numbers(record):
    """step sizes, retained fraction, implied weight decay and the shares of theta's change, by hand."""
    E, T = EPISODES, CFG.steps
    for name in ("conv2.weight", "fc.weight"):
        f, i = record.layer(name, "forget").double(), record.layer(name, "input").double()
        sizes = step_sizes(record, name)
        assert sizes.shape == (E, T)
        assert sizes[1, 2].item() == i[1, 2].median().item()
        kept = retained_fraction(record, name)
        assert kept.shape == (E,) and kept[0].item() == pytest.approx(f[0].prod(dim=0).mean().item())
        lam = implied_weight_decay(record, name)
        assert lam.shape == (T,) and lam[0].item() == pytest.approx(((1 - f[:, 0]) / i[:, 0]).median().item())
        part = record.slices[name]
        share = forgetting_share(record, name)
        assert share[2].item() == pytest.approx(
            (record.forgotten[2, part].norm() / record.moved[2, part].norm()).item(), rel=1e-6)
        decay = weight_decay_share(record, name, 5e-4)
        assert decay[0].item() == pytest.approx(
            (5e-4 * record.stepped_theta[0, part].norm() / record.moved[0, part].norm()).item(), rel=1e-6)
    # a record of f = 1 - 0.01 i (weight decay 0.01 at every step): the forgetting IS that weight decay
    made = GateRecord(forget=1 - 0.01 * record.input, input=record.input, query_acc=record.query_acc,
                      query_loss=record.query_loss, support_loss=record.support_loss, episodes=record.episodes,
                      slices=record.slices, forgotten=0.01 * record.stepped_theta, moved=record.moved,
                      stepped_theta=record.stepped_theta)
    torch.testing.assert_close(implied_weight_decay(made, "conv1.weight"),
                               torch.full((T,), 0.01, dtype=torch.float64), rtol=1e-3, atol=0)
    torch.testing.assert_close(forgetting_share(made, "conv1.weight"), weight_decay_share(made, "conv1.weight", 0.01))
    bare = GateRecord(forget=record.forget, input=record.input, query_acc=record.query_acc,
                      query_loss=record.query_loss, support_loss=record.support_loss, episodes=record.episodes,
                      slices=record.slices)
    with pytest.raises(ValueError, match="record_gates"):
        forgetting_share(bare, "fc.weight")


def test_pick_coordinates_is_seeded_and_in_range(model):
    slices = model[0].slices()
    a, b = pick_coordinates(slices, seed=0), pick_coordinates(slices, seed=0)
    assert a == b and set(a) == set(LAYERS)
    assert all(0 <= a[n] < slices[n].stop - slices[n].start for n in LAYERS)
    assert any(pick_coordinates(slices, seed=s) != a for s in (1, 2, 3))


def test_band_and_summary_are_the_quantiles_and_means_of_the_layer(record):
    for name in ("conv1.weight", "fc.weight"):
        values = record.layer(name, "input").numpy()              # [E, T, n]
        band = record.band(name, "input").numpy()                 # [3, T]
        import numpy as np
        per_step = values.transpose(1, 0, 2).reshape(record.steps, -1)
        np.testing.assert_allclose(band, np.quantile(per_step, [0.1, 0.5, 0.9], axis=1), rtol=1e-5)
        row = next(r for r in gate_summary(record) if r["layer"] == name)
        assert row["input_mean"] == pytest.approx(values.mean(dtype=np.float64), rel=1e-6)
        assert row["input_p90"] == pytest.approx(np.quantile(values, 0.9), rel=1e-5)
        assert row["forget_min"] == pytest.approx(record.layer(name, "forget").min().item())
        assert row["input_episode_std"] == pytest.approx(values.std(axis=0, ddof=1).mean(), rel=1e-4)
    table = format_summary(record, record)
    assert len(table.splitlines()) == 2 + 2 * len(LAYERS) and "linear" in table


@pytest.mark.slow
def test_plots_render(record):
    fig = plot_gates(record, record)
    assert len(fig.axes) == 2 * 2                  # one gate: a row per record, the first and last layer
    assert len(plot_gates(record, gate="input", layers=LAYERS).axes) == len(LAYERS)
    alpha = {CFG.k_shot: torch.linspace(0.1, 0.5, CFG.steps)[:, None].expand(CFG.steps, len(LAYERS))}
    sizes = plot_step_sizes(record, schedule=alpha, meta_sgd={CFG.k_shot: torch.full((len(LAYERS),), 0.1)}, sgd=0.1)
    assert len(sizes.axes) == 1 and len(sizes.axes[0].lines) == 3 * len(LAYERS) + 1
    for make in (lambda: fig, lambda: sizes, lambda: plot_gate_bands(record, record),
                 lambda: plot_query_accuracy_by_step(record, record)):
        make().savefig(io.BytesIO(), format="png", dpi=30)
    plt.close("all")
    with pytest.raises(ValueError, match="GateRecord"):
        plot_gates()


@pytest.fixture()
def explorer(model, sampler, monkeypatch):
    calls = []
    real = explorer_module.trace_episode
    monkeypatch.setattr(explorer_module, "trace_episode", lambda *a, **k: calls.append(1) or real(*a, **k))
    ex = InnerLoopExplorer(*model, sampler, CFG, episodes=2)
    ex.trace_calls = calls
    return ex


@pytest.mark.slow
def test_explorer_static_figure_renders_every_layer_and_step(explorer):
    for layer in LAYERS:
        for step in range(CFG.steps + 1):
            fig = explorer.static_figure(0, layer, step)
            assert f"step t = {step} of {CFG.steps}" in fig._suptitle.get_text()
            fig.savefig(io.BytesIO(), format="png", dpi=25)
    assert len(explorer.trace_calls) == 1          # the episode's T steps were computed once
    with pytest.raises(ValueError, match="step"):
        explorer.static_figure(0, "fc.weight", CFG.steps + 1)
    with pytest.raises(ValueError, match="layer"):
        explorer.static_figure(0, "bn1.weight", 0)
    with pytest.raises(ValueError, match="episode"):
        explorer.static_figure(2, "fc.weight", 0)


@pytest.mark.slow
def test_explorer_widget_callbacks_update_state(explorer, record):
    import ipywidgets

    box = explorer.widget()
    assert isinstance(box, ipywidgets.VBox) and explorer.widget() is box
    assert isinstance(explorer.controls["step"], ipywidgets.IntSlider)
    assert explorer.redraws == 1 and explorer.step == CFG.steps
    explorer.controls["step"].value = 1
    assert explorer.step == 1 and explorer.redraws == 2
    assert "step t = 1" in explorer.figure._suptitle.get_text()
    assert explorer.accuracy == record.query_acc[0, 1].item()
    explorer.controls["layer"].value = "conv3.weight"
    assert explorer.layer == "conv3.weight"
    assert any(ax.get_title().startswith("conv 3: forget") for ax in explorer.figure.axes)
    assert len(explorer.trace_calls) == 1          # moving step / layer reuses the computed trace
    explorer.controls["episode"].value = 1
    assert explorer.episode == 1 and len(explorer.trace_calls) == 2
    assert explorer.accuracy == record.query_acc[1, 1].item()
    explorer.controls["episode"].value = 0
    assert len(explorer.trace_calls) == 2 and explorer.redraws == 5


@pytest.mark.slow
def test_show_carries_a_static_picture_and_falls_back_without_ipywidgets(explorer, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    explorer.show()
    bundle = shown[-1]
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"]
    monkeypatch.setitem(sys.modules, "ipywidgets", None)       # `import ipywidgets` now fails
    explorer.show()
    assert isinstance(shown[-1], IPython.display.Image) and shown[-1].data.startswith(b"\x89PNG")


def test_record_and_checkpoint_errors(model, sampler, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="at least one episode"):
        record_gates(*model, sampler, CFG, episodes=0, progress=False)
    monkeypatch.setenv("METALSTM_CHECKPOINTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--config glyphs-5shot"):
        shipped_checkpoint("glyphs-5shot")
    (tmp_path / "glyphs-5shot.pt").write_bytes(b"")
    assert shipped_checkpoint("glyphs-5shot") == tmp_path / "glyphs-5shot.pt"
    monkeypatch.delenv("METALSTM_CHECKPOINTS")
    assert shipped_checkpoint("glyphs-1shot").parts[-3:] == ("data", "checkpoints", "glyphs-1shot.pt")
    with pytest.raises(FileNotFoundError, match="data/checkpoints/glyphs-7shot.pt"):
        shipped_checkpoint("glyphs-7shot")
    # a rung of the ladder: data/checkpoints/ladder/<config>-<rung>.pt, or in $METALSTM_CHECKPOINTS/ladder
    with pytest.raises(FileNotFoundError, match="--rule schedule --episodes 2000 --out runs/glyphs-5shot-schedule"):
        shipped_checkpoint("glyphs-5shot", root=tmp_path, rung="schedule")
    (tmp_path / "ladder").mkdir()
    (tmp_path / "ladder" / "glyphs-5shot-meta-sgd.pt").write_bytes(b"")
    monkeypatch.setenv("METALSTM_CHECKPOINTS", str(tmp_path))
    assert shipped_checkpoint("glyphs-5shot", rung="meta-sgd") == tmp_path / "ladder" / "glyphs-5shot-meta-sgd.pt"
    with pytest.raises(ValueError, match="unknown rung"):
        shipped_checkpoint("glyphs-5shot", rung="adam")
