"""Pictures of a `GateRecord`: the paper's Figure 2 and the query accuracy after each step (paper notes 10).

    plot_gates(r1, r5, gate="forget")   one gate: a row per record, a column per layer (the first
                                        and the last): a fixed coordinate per layer, one line per
                                        episode, over the band (10%-90%) and median of the layer
    plot_gate_bands(r1, r5)             the bands alone, all layers on one axis per gate and record
    plot_step_sizes(r1, r5, ...)        the input gate as a learning rate per step, beside the ladder's
                                        learned steps (schedule, meta-sgd) and SGD's tuned step
    plot_query_accuracy_by_step(r1, r5) query accuracy (mean, 95% interval) and losses per step
    plot_seed_spread(rows)              the ladder over training seeds: each seed's mean, and the
                                        mean with its t interval (metalstm.tools.ladder_seeds)
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from metalstm.stats import t975

from metalstm.viz.record import GATES, LAYER_TITLES, LAYERS, GateRecord, pick_coordinates
from metalstm.viz.style import RC, WIDE

GATE_LABELS = {"forget": "forget gate $f_t$", "input": "input gate $i_t$"}
LAYER_COLORS = dict(zip(LAYERS, plt.get_cmap("tab10").colors))


def _check(records) -> None:
    if not records or not all(isinstance(r, GateRecord) for r in records):
        raise ValueError("pass one or more GateRecord objects (from record_gates)")


def _limits(values: list[torch.Tensor], pad: float = 0.05) -> tuple[float, float]:
    low = min(v.min().item() for v in values)
    high = max(v.max().item() for v in values)
    margin = pad * (high - low) or 1e-3
    return low - margin, high + margin


PROJECTOR = RC                 # the course style (metalstm.viz.style): legible when projected
FORGET_FLOOR = 1e-8          # 1 - f below this (f = 1 in float32: 1 - f < 6e-8) is drawn at the floor
FIGURE2_LAYERS = (LAYERS[0], LAYERS[-1])     # the first and the last layer: what a slide has room for


def plot_gates(*records: GateRecord, gate: str = "forget", layers=FIGURE2_LAYERS, seed: int = 0,
               band: bool = True):
    """The paper's Figure 2 for ONE gate, sized for a slide: one row per record, one column per
    layer (default: the first and the last, FIGURE2_LAYERS); in each panel the gate vs step for
    ONE coordinate of the layer (chosen with `seed`, its index in brackets), one line per episode;
    grey band = 10%-90% of all the layer's coordinates and episodes, dashed = their median.
    The forget gate is drawn as its distance from 1, 1 - f_t, on a log scale (f_t itself is
    0.9990-1.0000 and would read as a flat line); the input gate as i_t. All panels share the
    y-axis, so layers and records compare directly. Call it once per gate (GATES)."""
    _check(records)
    if gate not in GATES:
        raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
    coords = pick_coordinates(records[0].slices, layers, seed)
    show = (lambda v: (1 - v.double()).clamp_min(FORGET_FLOOR)) if gate == "forget" else (lambda v: v)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(len(records), len(layers), figsize=(WIDE[0], min(2.45 * len(records) + 0.9, 5.6)),
                                 squeeze=False, sharex=True, sharey=True, layout="constrained")
        shown = []
        for row, record in enumerate(records):
            steps = torch.arange(1, record.steps + 1).numpy()
            for col, name in enumerate(layers):
                ax = axes[row, col]
                trace = show(record.coordinate(name, gate, coords[name]))                 # [E, T]
                shown.append(trace)
                if band:
                    low, mid, high = (show(v) for v in record.band(name, gate))
                    if gate == "forget":
                        low, high = high, low                # 1 - f: the 90% quantile of f is the low end
                    ax.fill_between(steps, low.numpy(), high.numpy(), color="0.82", label="10%-90% of the layer")
                    ax.plot(steps, mid.numpy(), "k--", lw=2, label="median of the layer")
                    shown += [low, high]
                colors = plt.get_cmap("viridis")(torch.linspace(0, 0.9, len(trace)).numpy())
                for e, line in enumerate(trace):
                    ax.plot(steps, line.numpy(), color=colors[e], lw=1.2, alpha=0.75,
                            label="one coordinate, one line per episode" if e == 0 else None)
                if gate == "forget":
                    ax.set_yscale("log")
                ax.set_title(f"{record.label}, {LAYER_TITLES.get(name, name)} [#{coords[name]}]")
                if row == len(records) - 1:
                    ax.set_xlabel("step t")
                if col == 0:
                    ax.set_ylabel("$1 - f_t$" if gate == "forget" else "$i_t$")
                ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
                ax.grid(alpha=0.3)
        low = min(v.min().item() for v in shown)
        high = max(v.max().item() for v in shown)
        if gate == "forget":
            axes[0, 0].set_ylim(low / 1.5, high * 1.5)
        else:
            margin = 0.05 * (high - low) or 1e-3
            axes[0, 0].set_ylim(low - margin, high + margin)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False,
                   handlelength=1.5, columnspacing=1.0)
        fig.suptitle(("Forget gate, as $1 - f_t$ (log scale)" if gate == "forget" else "Input gate $i_t$")
                     + f", {len(records[0].episodes)} meta-validation episodes")
    return fig


def plot_step_sizes(*records: GateRecord, schedule: dict | None = None, meta_sgd: dict | None = None,
                    sgd: float | None = None, layers=LAYERS):
    """The input gate read as a learning rate: one panel per record, step size vs step t.

    Meta-Learner LSTM: solid, the median over episodes of each layer's median i_t over its
    weights (`step_sizes`); grey band: 10%-90% of the episodes (all layers pooled).
    schedule: {k_shot: alpha [T, len(layers)]}, the `schedule` rung's alpha[t, layer] (dashed);
    meta_sgd: {k_shot: [len(layers)]}, the median of the `meta-sgd` rung's alpha over each layer's
    weights (dotted, the same at every step); sgd: the fixed step of `sgd` and `init` (black)."""
    from matplotlib.lines import Line2D

    from metalstm.viz.record import step_sizes

    _check(records)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(records), figsize=WIDE, squeeze=False,
                                 sharey=True, layout="constrained")
        for ax, record in zip(axes[0], records):
            steps = torch.arange(1, record.steps + 1).numpy()
            per_layer = torch.stack([step_sizes(record, name) for name in layers])        # [L, E, T]
            pooled = per_layer.flatten(0, 1)                                            # [L * E, T]
            low, high = torch.quantile(pooled, torch.tensor([0.1, 0.9], dtype=pooled.dtype), dim=0)
            ax.fill_between(steps, low.numpy(), high.numpy(), color="0.85")
            for j, name in enumerate(layers):
                color = LAYER_COLORS.get(name)
                ax.plot(steps, per_layer[j].median(dim=0).values.numpy(), color=color, marker="o", ms=4, lw=2)
                if schedule is not None and record.k_shot in schedule:
                    alpha = torch.as_tensor(schedule[record.k_shot]).detach()
                    ax.plot(torch.arange(1, alpha.shape[0] + 1).numpy(), alpha[:, j].numpy(), color=color,
                            ls="--", marker="s", ms=4, lw=1.5)
                if meta_sgd is not None and record.k_shot in meta_sgd:
                    value = float(torch.as_tensor(meta_sgd[record.k_shot])[j])
                    ax.plot([steps[0], steps[-1]], [value, value], color=color, ls=":", lw=2)
            if sgd is not None:
                ax.axhline(sgd, color="k", lw=1.5)
            ax.set(title=f"{record.label} (T = {record.steps})", xlabel="step t")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("step size (layer median)")
        styles = [Line2D([], [], color="0.3", marker="o", lw=2, label="LSTM: $i_t$"),
                  Line2D([], [], color="0.85", lw=8, label="its 10%-90%")]
        if schedule is not None:
            styles.append(Line2D([], [], color="0.3", ls="--", marker="s", label="schedule: $\\alpha_{t,layer}$"))
        if meta_sgd is not None:
            styles.append(Line2D([], [], color="0.3", ls=":", lw=2, label="meta-sgd: median $\\alpha_j$"))
        if sgd is not None:
            styles.append(Line2D([], [], color="k", lw=1.5, label=f"SGD: {sgd:g}"))
        layer_keys = [Line2D([], [], color=LAYER_COLORS.get(n), lw=3, label=LAYER_TITLES.get(n, n)) for n in layers]
        fig.legend(handles=styles + layer_keys, loc="outside right upper", frameon=False)
    return fig


def plot_gate_bands(*records: GateRecord, layers=LAYERS):
    """Median and 10%-90% band over all coordinates and episodes, every layer on one axis,
    one column per record, one row per gate (the forget gate as 1 - f_t, log scale, as in
    `plot_gates`): do the layers (and 1-shot / 5-shot) differ?"""
    _check(records)
    with plt.rc_context(RC):
        return _plot_gate_bands(records, layers)


def _plot_gate_bands(records, layers):
    fig, axes = plt.subplots(len(GATES), len(records), figsize=(WIDE[0], 5.4),
                             squeeze=False, sharex=True, sharey="row", layout="constrained")
    for col, record in enumerate(records):
        steps = torch.arange(1, record.steps + 1).numpy()
        for row, gate in enumerate(GATES):
            ax = axes[row, col]
            for name in layers:
                low, mid, high = record.band(name, gate).double()
                if gate == "forget":             # drawn as 1 - f on a log scale, as in plot_gates
                    low, mid, high = ((1 - v).clamp_min(FORGET_FLOOR) for v in (high, mid, low))
                color = LAYER_COLORS.get(name)
                ax.fill_between(steps, low.numpy(), high.numpy(), color=color, alpha=0.15)
                ax.plot(steps, mid.numpy(), color=color, marker=".", label=LAYER_TITLES.get(name, name))
            if gate == "forget":
                ax.set_yscale("log")
            ax.set_title(f"{record.label}: " + ("$1 - f_t$ (log scale)" if gate == "forget" else GATE_LABELS[gate]))
            if row == len(GATES) - 1:
                ax.set_xlabel("step t")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("$1 - f_t$" if gate == "forget" else "$i_t$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False, title="median,\n10%-90%")
    return fig


def accuracy_by_step(record: GateRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean query accuracy after each step (t = 0..T) and the half-width of its 95% interval."""
    acc = record.query_acc.double()
    n = acc.shape[0]
    half = t975(n - 1) * acc.std(dim=0) / math.sqrt(n) if n > 1 else torch.zeros(acc.shape[1], dtype=acc.dtype)
    return acc.mean(dim=0), half


def plot_query_accuracy_by_step(*records: GateRecord):
    """Left: query accuracy of theta_t, t = 0..T (mean over episodes, 95% interval);
    right: the mean support and query losses of theta_t (the support loss of theta_t is L_{t+1}, the
    one the meta-learner reads at step t + 1)."""
    _check(records)
    with plt.rc_context(RC):
        return _plot_query_accuracy_by_step(records)


def _plot_query_accuracy_by_step(records):
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=WIDE, layout="constrained")
    for k, record in enumerate(records):
        color = plt.get_cmap("tab10")(k)
        mean, half = (v.numpy() for v in accuracy_by_step(record))
        steps = torch.arange(record.steps + 1).numpy()
        ax_acc.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
        ax_acc.plot(steps, mean, marker="o", color=color, label=f"{record.label} (T={record.steps})")
        # L_t, the support loss the meta-learner reads at step t, is the loss of theta_{t-1}: drawn at
        # t - 1, so that at every x both curves are losses of the same theta_x
        ax_loss.plot(steps[:-1], record.support_loss.mean(dim=0).numpy(), marker=".", color=color,
                     label=f"{record.label}: support")
        ax_loss.plot(steps, record.query_loss.mean(dim=0).numpy(), ls="--", color=color,
                     label=f"{record.label}: query")
    if records[0].n_way:
        ax_acc.axhline(1 / records[0].n_way, color="0.5", lw=0.8, ls=":", label="chance")
    ax_acc.set(xlabel="step t (0: $\\theta_0 = c_0$)", ylabel="query accuracy",
               title="query accuracy of $\\theta_t$ (95% interval)")
    ax_loss.set(xlabel="step t (losses of $\\theta_t$)", ylabel="cross-entropy (log)", title="mean losses per step",
                yscale="log")
    ax_acc.legend(loc="lower right")
    ax_loss.legend(loc="upper right")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.grid(alpha=0.3)
    return fig


def plot_seed_spread(rows: list[dict], test_sets=None):
    """The ladder over training seeds (`metalstm.tools.ladder_seeds.seed_rows`): one row of
    panels per shot, one column per test set (glyphs, digits); per rung, each training seed's
    mean accuracy as a dot and the mean over seeds with its 95% t interval (df = seeds - 1) as
    a bar. A rung with one seed has no interval: its mean is drawn without a bar."""
    if not rows:
        raise ValueError("no rows to draw: pass the rows of ladder_seeds.seed_rows (from its JSON files)")
    from metalstm.config import RUNGS
    test_sets = list(test_sets or dict.fromkeys(r["test_set"] for r in rows))
    shots = sorted({r["shot"] for r in rows})
    rungs = [g for g in RUNGS if any(r["rung"] == g for r in rows)]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(len(shots), len(test_sets), figsize=(WIDE[0], min(2.8 * len(shots) + 0.4, 5.6)),
                                 squeeze=False, layout="constrained")
        for i, shot in enumerate(shots):
            for j, t in enumerate(test_sets):
                ax = axes[i, j]
                for x, rung in enumerate(rungs):
                    r = next((r for r in rows if (r["shot"], r["test_set"], r["rung"]) == (shot, t, rung)), None)
                    if r is None:
                        continue
                    seeds = list(r["seed_means"].values())
                    jitter = torch.linspace(-0.12, 0.12, len(seeds)).tolist() if len(seeds) > 1 else [0.0]
                    ax.scatter([x + d for d in jitter], [100 * m for m in seeds], s=28, color="0.45", zorder=3,
                               label="one seed's mean" if x == 0 else None)
                    half = r["half"] if len(seeds) > 1 and not math.isnan(r["half"]) else None
                    ax.errorbar([x + 0.3], [100 * r["mean"]], yerr=None if half is None else [100 * half],
                                fmt="D", color="C0" if half is not None else "C3", capsize=5, lw=2, zorder=4,
                                label=("mean, 95% t interval" if half is not None else "mean (1 seed, no interval)"))
                ax.set_xticks(range(len(rungs)), rungs, rotation=20)
                ax.set_title(f"{shot}-shot, meta-test on {t}")
                if j == 0:
                    ax.set_ylabel("accuracy (%)")
                ax.grid(axis="y", alpha=0.3)
                handles, labels = ax.get_legend_handles_labels()
                unique = dict(zip(labels, handles))
                if i == 0 and j == 0:
                    fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncols=len(unique),
                               frameon=False)
    return fig
