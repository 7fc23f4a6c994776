"""Pictures of a `GateRecord`: the paper's Figure 2 and the query accuracy after each step (SPEC 10).

    plot_gates(r1, r5)                  one row per gate, one panel per layer, 1-shot beside 5-shot:
                                        a fixed coordinate per layer, one line per episode, over the
                                        band (10%-90%) and median of all the layer's coordinates
    plot_gate_bands(r1, r5)             the bands alone, all layers on one axis per gate and record
    plot_query_accuracy_by_step(r1, r5) query accuracy (mean, 95% interval) and losses per step
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from metalstm.viz.record import GATES, LAYER_TITLES, LAYERS, GateRecord, pick_coordinates

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


def plot_gates(*records: GateRecord, layers=LAYERS, seed: int = 0, band: bool = True):
    """The paper's Figure 2: per layer, gate value vs step for ONE coordinate (chosen with
    `seed`), one line per episode; grey band = 10%-90% of all the layer's coordinates and
    episodes, dashed = their median. Rows: forget, input; one block of panels per record."""
    _check(records)
    coords = pick_coordinates(records[0].slices, layers, seed)
    fig = plt.figure(figsize=(1.9 * len(layers) * len(records) + 0.6, 4.8), layout="constrained")
    blocks = fig.subfigures(1, len(records), squeeze=False)[0]
    axes = [block.subplots(len(GATES), len(layers), sharex=True, squeeze=False) for block in blocks]
    for gate_row, gate in enumerate(GATES):
        shown = []
        for record, block, ax_grid in zip(records, blocks, axes):
            steps = torch.arange(1, record.steps + 1).numpy()
            for col, name in enumerate(layers):
                ax = ax_grid[gate_row, col]
                trace = record.coordinate(name, gate, coords[name])                 # [E, T]
                shown.append(trace)
                if band:
                    low, mid, high = record.band(name, gate)
                    ax.fill_between(steps, low.numpy(), high.numpy(), color="0.8", label="10%-90% of the layer")
                    ax.plot(steps, mid.numpy(), "k--", lw=1, label="median of the layer")
                    shown += [low, high]
                colors = plt.get_cmap("viridis")(torch.linspace(0, 0.9, len(trace)).numpy())
                for e, line in enumerate(trace):
                    ax.plot(steps, line.numpy(), color=colors[e], lw=0.9, alpha=0.7)
                if gate_row == 0:
                    ax.set_title(f"{LAYER_TITLES.get(name, name)}  [#{coords[name]}]", fontsize=9)
                if gate_row == len(GATES) - 1:
                    ax.set_xlabel("step t")
                if col == 0:
                    ax.set_ylabel(GATE_LABELS[gate])
                ax.tick_params(labelsize=7)
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            block.suptitle(f"{record.label}: {len(record.episodes)} meta-validation episodes",
                           fontsize=11)
        low, high = _limits(shown)
        for ax_grid in axes:
            for ax in ax_grid[gate_row]:
                ax.set_ylim(low, high)
                if ax is not ax_grid[gate_row, 0]:
                    ax.tick_params(labelleft=False)
    if band:
        axes[-1][0, -1].legend(fontsize=7, loc="lower left")
    return fig


def plot_gate_bands(*records: GateRecord, layers=LAYERS):
    """Median and 10%-90% band over all coordinates and episodes, every layer on one axis,
    one column per record, one row per gate: do the layers (and 1-shot / 5-shot) differ?"""
    _check(records)
    fig, axes = plt.subplots(len(GATES), len(records), figsize=(5.2 * len(records), 6.4),
                             squeeze=False, sharey="row", layout="constrained")
    for col, record in enumerate(records):
        steps = torch.arange(1, record.steps + 1).numpy()
        for row, gate in enumerate(GATES):
            ax = axes[row, col]
            for name in layers:
                low, mid, high = record.band(name, gate).numpy()
                color = LAYER_COLORS.get(name)
                ax.fill_between(steps, low, high, color=color, alpha=0.15)
                ax.plot(steps, mid, color=color, marker=".", label=LAYER_TITLES.get(name, name))
            ax.set_title(f"{record.label}: {GATE_LABELS[gate]}", fontsize=10)
            ax.set_xlabel("step t")
            if col == 0:
                ax.set_ylabel(f"{gate} gate (median, 10%-90%)")
    axes[0, -1].legend(fontsize=8)
    return fig


def accuracy_by_step(record: GateRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean query accuracy after each step (t = 0..T) and the half-width of its 95% interval."""
    acc = record.query_acc.double()
    n = acc.shape[0]
    half = 1.96 * acc.std(dim=0) / math.sqrt(n) if n > 1 else torch.zeros(acc.shape[1], dtype=acc.dtype)
    return acc.mean(dim=0), half


def plot_query_accuracy_by_step(*records: GateRecord):
    """Left: query accuracy of theta_t, t = 0..T (mean over episodes, 95% interval);
    right: the support loss L_t fed to the meta-learner and the query loss of theta_t."""
    _check(records)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for k, record in enumerate(records):
        color = plt.get_cmap("tab10")(k)
        mean, half = (v.numpy() for v in accuracy_by_step(record))
        steps = torch.arange(record.steps + 1).numpy()
        ax_acc.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
        ax_acc.plot(steps, mean, marker="o", color=color, label=f"{record.label} (T={record.steps})")
        ax_loss.plot(steps[1:], record.support_loss.mean(dim=0).numpy(), marker=".", color=color,
                     label=f"{record.label}: support loss $L_t$")
        ax_loss.plot(steps, record.query_loss.mean(dim=0).numpy(), ls="--", color=color,
                     label=f"{record.label}: query loss of $\\theta_t$")
    if records[0].n_way:
        ax_acc.axhline(1 / records[0].n_way, color="0.5", lw=0.8, ls=":", label="chance")
    ax_acc.set(xlabel="step t (0 = the learned initialisation $c_0$)", ylabel="query accuracy",
               title="query accuracy of $\\theta_t$ (mean, 95% interval)")
    ax_loss.set(xlabel="step t", ylabel="cross-entropy", title="losses per step")
    ax_acc.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    return fig
