"""Two diagrams for the lecture, drawn with matplotlib (large fonts: they are meant to be projected).

    coordinatewise_metalearner()   notebook 03: one coordinate's path from (L_t, grad_t) through the
                                   preprocessing and layer 1 (an LSTM, hidden 20) to f_t, i_t and theta_t,
                                   and every coordinate sharing the same 2,046 weights (paper notes 4)
    unrolled_metatraining()        notebook 05: theta_0 = c_0 -> theta_1 -> ... -> theta_T -> L_test,
                                   the detached L_t / grad_t inputs, and the backward path of the
                                   meta-gradient to c_0 and to the meta-learner's weights (paper notes 5)

Each returns a matplotlib Figure; nothing is computed, so they draw in well under a second.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from metalstm.viz.style import BODY, SMALL

BIG = BODY + 1                             # points: box text BIG - 1, labels SMALL (metalstm.viz.style)
COLORS = {"input": "#dbe9f6", "pre": "#fde9c9", "lstm": "#d5ecd4", "gate": "#f6d5d5", "theta": "#eeeeee",
          "meta": "#d5ecd4", "learner": "#dbe9f6", "loss": "#f6d5d5", "weights": "#fff6bf"}
BACKWARD = "#c0392b"


def _canvas(width: float, height: float):
    """A figure whose data units are inches, without axes."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: float = BODY,
         weight: str = "normal", z: int = 3, edge: str = "#333333", lw: float = 1.6):
    """A rounded box with its lower-left corner at (x, y) and centred text; returns its centre."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=color, edgecolor=edge, linewidth=lw, zorder=z))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight, zorder=z + 1)
    return x + w / 2, y + h / 2


def _arrow(ax, start, end, color: str = "#333333", style: str = "-", lw: float = 2.0, rad: float = 0.0,
           z: int = 2, head: float = 18):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=head, color=color, lw=lw,
                                 linestyle=style, connectionstyle=f"arc3,rad={rad}", zorder=z,
                                 shrinkA=2, shrinkB=2))


def coordinatewise_metalearner(n_coordinates: str = "28,485"):
    """The two-layer coordinate-wise meta-learner (paper notes 4), sized for a slide: the path of
    ONE coordinate j, drawn in front of the stack of all coordinates, which share every weight."""
    fig, ax = _canvas(10.6, 5.1)
    size, small = BIG - 1, SMALL
    fx, fy, frame_w, frame_h = 0.05, 0.75, 9.3, 3.3
    # the other coordinates: the same network, stacked behind coordinate j
    for off in (0.4, 0.2):
        ax.add_patch(FancyBboxPatch((fx + off, fy + off), frame_w, frame_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.15", facecolor="#f7f7f7",
                                    edgecolor="#9a9a9a", linewidth=1.2, zorder=0))
    ax.text(fx + 0.4 + frame_w, fy + 0.4 + frame_h + 0.04, f"coordinates 2, ..., coordinate $n$ = {n_coordinates}",
            ha="right", va="bottom", fontsize=small, color="#222222", zorder=0)
    ax.add_patch(FancyBboxPatch((fx, fy), frame_w, frame_h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor="white", edgecolor="#333333", linewidth=1.8, zorder=1))
    ax.text(fx + 0.12, fy + frame_h - 0.1, "coordinate $j$ of $\\theta$", ha="left", va="top", fontsize=size,
            weight="bold", zorder=2)

    # inputs and their preprocessing
    y_l, y_g = 3.1, 1.95
    loss = _box(ax, 0.2, y_l - 0.33, 1.25, 0.66, "loss $\\mathcal{L}_t$", COLORS["input"], size=size)
    grad = _box(ax, 0.2, y_g - 0.4, 1.25, 0.8, "gradient\n$\\nabla_{t,j}$", COLORS["input"], size=size)
    pre_l = _box(ax, 1.75, y_l - 0.33, 1.2, 0.66, "pre$(\\mathcal{L}_t)$", COLORS["pre"], size=size)
    pre_g = _box(ax, 1.75, y_g - 0.33, 1.2, 0.66, "pre$(\\nabla_{t,j})$", COLORS["pre"], size=size)
    _arrow(ax, (1.45, y_l), (1.75, y_l))
    _arrow(ax, (1.45, y_g), (1.75, y_g))
    ax.text(2.35, (y_l + y_g) / 2, "log / sign, $p = 10$", ha="center", va="center", fontsize=small, style="italic")
    # layer 1
    _box(ax, 3.3, 1.85, 1.85, 1.45, "layer 1\nLSTM, hidden 20\n$x_{t,j} \\in \\mathbb{R}^4$", COLORS["lstm"],
         size=small, weight="bold")
    _arrow(ax, (2.95, y_l), (3.3, 2.95))
    _arrow(ax, (2.95, y_g), (3.3, 2.2))
    ax.add_patch(FancyArrowPatch((4.8, 3.3), (3.65, 3.3), arrowstyle="-|>", mutation_scale=16, lw=1.8,
                                 color="#333333", connectionstyle="arc3,rad=1.0", zorder=2))
    ax.text(5.05, 3.72, "state $h_{t-1,j}, c_{t-1,j}$", ha="left", va="center", fontsize=small)
    # layer 2: the gates
    y_f, y_i = 3.05, 2.05
    _box(ax, 5.65, y_f - 0.37, 1.7, 0.74, "forget gate $f_{t,j}$\n$W_F, b_F$", COLORS["gate"], size=small)
    _box(ax, 5.65, y_i - 0.37, 1.7, 0.74, "input gate $i_{t,j}$\n$W_I, b_I$", COLORS["gate"], size=small)
    _arrow(ax, (5.15, 2.75), (5.65, y_f))
    _arrow(ax, (5.15, 2.35), (5.65, y_i))
    ax.text(5.4, 2.55, "$h_{t,j}$", ha="center", va="center", fontsize=size)
    # the update: layer 2's cell state is theta itself
    upd = _box(ax, 7.6, 1.85, 1.45, 1.45, "$\\theta_{t,j} =$\n$f_{t,j}\\,\\theta_{t-1,j}$\n"
               "$- \\; i_{t,j}\\,\\nabla_{t,j}$", COLORS["theta"], size=size, weight="bold")
    _arrow(ax, (7.35, y_f), (7.6, 2.95))
    _arrow(ax, (7.35, y_i), (7.6, 2.2))
    _arrow(ax, (9.05, upd[1]), (9.85, upd[1]), lw=2.4)
    ax.text(9.9, upd[1] + 0.08, "$\\theta_{t,j}$", ha="left", va="bottom", fontsize=size + 1, weight="bold")
    ax.text(9.9, upd[1] - 0.08, "to\n$t+1$", ha="left", va="top", fontsize=small)
    # theta_{t-1, j} and the previous gates feed layer 2 and the update
    _box(ax, 5.6, 0.98, 1.8, 0.5, "$\\theta_{t-1,j}, f_{t-1,j}, i_{t-1,j}$", COLORS["theta"], size=small)
    _arrow(ax, (6.5, 1.48), (6.5, y_i - 0.37))
    ax.add_patch(FancyArrowPatch((5.6, 1.3), (5.72, y_f - 0.37), arrowstyle="-|>", mutation_scale=16, lw=1.8,
                                 color="#333333", connectionstyle="arc3,rad=-0.35", zorder=2))
    _arrow(ax, (7.4, 1.25), (7.95, 1.85), rad=0.2)
    # the raw gradient goes straight to the update, below everything
    raw = "#1f5fa8"
    ax.plot([grad[0], grad[0], 8.7, 8.7], [y_g - 0.4, 0.88, 0.88, 1.5], color=raw, lw=2.0, ls="--", zorder=2)
    _arrow(ax, (8.7, 1.45), (8.7, 1.85), color=raw, style="--")
    ax.text(3.2, 1.1, "the raw gradient, not preprocessed", ha="center", va="center", fontsize=small, color=raw)

    # what is shared
    ax.text(5.0, 0.38, "every coordinate $j$ runs this network with the SAME weights: 2,046 in all, whatever $n$",
            ha="center", va="center", fontsize=small)
    ax.text(5.0, 4.88, "The coordinate-wise meta-learner: one coordinate's update", ha="center", va="center",
            fontsize=BIG + 1, weight="bold")
    return fig


def unrolled_metatraining(steps: int = 3):
    """Meta-training unrolled over T inner steps (paper notes 5), sized for a slide: the forward chain
    theta_0 = c_0 -> theta_1 -> ... -> theta_T -> L_test; each step's L_t and grad_t enter the
    meta-learner detached (dashed); the meta-gradient (red) flows back along the theta chain to
    c_0 and into the meta-learner's weights at every step. At most three steps are drawn
    (1, 2, ..., T): more would not leave room for legible text."""
    if steps < 2:
        raise ValueError(f"draw at least 2 steps, got {steps}")
    names = ["1", "2", "T"] if steps > 2 else ["1", "T"]
    before = ["0", "1", "T-1"] if steps > 2 else ["0", "1"]
    size, small = BIG - 1, SMALL                       # box text, labels (points)
    meta_w, meta_h, gap, dots = 1.15, 0.78, 0.95, 0.45 if steps > 3 else 0.0
    y_theta, y_learn, y_back = 1.93, 3.4, 1.1
    starts = [1.35 + gap + k * (meta_w + gap) + (dots if k == len(names) - 1 else 0.0) for k in range(len(names))]
    x_test = starts[-1] + meta_w + gap
    width = max(x_test + 1.6, 10.2)
    fig, ax = _canvas(width, 5.05)
    c0 = _box(ax, 0.15, y_theta - meta_h / 2, 1.2, meta_h, "$\\theta_0 = c_0$", COLORS["weights"], size=size,
              weight="bold")
    left, metas = (1.35, y_theta), []
    for k, (t, prev, xs) in enumerate(zip(names, before, starts)):
        if dots and k == len(names) - 1:
            ax.text(xs - gap / 2 - dots / 2 + 0.1, y_theta + 0.12, "$\\cdots$", ha="center", va="center",
                    fontsize=BIG + 4)
        # the learner on the support batch of step t, at theta_{t-1}
        learn = _box(ax, xs - 0.15, y_learn - 0.42, meta_w + 0.3, 0.84, f"learner\n$f(X_{{{t}}};\\,\\theta_{{{prev}}})$",
                     COLORS["learner"], size=size)
        # the meta-learner step: theta_{t-1} -> theta_t
        meta = _box(ax, xs, y_theta - meta_h / 2, meta_w, meta_h, "meta-\nlearner", COLORS["meta"], size=size,
                    weight="bold")
        metas.append(meta)
        _arrow(ax, left, (xs, y_theta))
        # theta_{t-1} also feeds the learner (forward, in the graph)
        _arrow(ax, (xs - 0.45, y_theta + 0.04), (xs - 0.05, y_learn - 0.42), rad=-0.2)
        # L_t and grad_t: detached inputs of the meta-learner
        _arrow(ax, (meta[0], y_learn - 0.42), (meta[0], y_theta + meta_h / 2), style="--", color="#555555")
        ax.text(meta[0] + 0.08, (y_learn - 0.42 + y_theta + meta_h / 2) / 2,
                f"$\\mathcal{{L}}_{{{t}}},\\nabla_{{{t}}}$\ndetached", ha="left", va="center", fontsize=small,
                color="#555555", linespacing=1.0)
        ax.text(meta[0] - 0.06, (y_learn - 0.42 + y_theta + meta_h / 2) / 2, "//", ha="right", va="center",
                fontsize=BIG, color="#555555", weight="bold")
        # theta_t, below the chain, and its share of the meta-gradient below it
        end = xs + meta_w + gap
        ax.text(xs + meta_w + gap / 2, y_theta - 0.1, f"$\\theta_{{{t}}}$", ha="center", va="top", fontsize=BIG + 1)
        ax.text(xs + meta_w + gap / 2, y_back + 0.07, f"$\\partial\\mathcal{{L}}_{{test}}/\\partial\\theta_{{{t}}}$",
                ha="center", va="bottom", fontsize=small, color=BACKWARD)
        left = (xs + meta_w, y_theta)
        if k < len(names) - 1:
            _arrow(ax, left, (starts[k + 1], y_theta))
            left = (end - 0.5, y_theta)
    # the query loss
    test = _box(ax, x_test, y_theta - 0.5, 1.45, 1.0, "query loss\n$\\mathcal{L}_{test}(\\theta_T)$", COLORS["loss"],
                size=size, weight="bold")
    _arrow(ax, (starts[-1] + meta_w, y_theta), (x_test, y_theta))
    # the meta-learner's weights, shared by every step
    wx0, wx1 = metas[0][0] - 0.55, max(metas[-1][0] + 0.7, metas[0][0] + 6.0)
    _box(ax, wx0, 0.12, wx1 - wx0, 0.5, "meta-learner weights $W$ (2,046, the same at every step)",
         COLORS["weights"], size=small)
    for meta in metas:
        _arrow(ax, (meta[0] - 0.3, 0.62), (meta[0] - 0.3, y_theta - meta_h / 2), lw=1.8)
    # the backward path of the meta-gradient: from L_test back along the theta chain to c_0,
    # and at every step into the meta-learner's weights
    ax.plot([test[0], test[0]], [y_theta - 0.5, y_back], color=BACKWARD, lw=2.6, zorder=5)
    _arrow(ax, (test[0], y_back), (c0[0], y_back), color=BACKWARD, lw=2.6, z=5)
    _arrow(ax, (c0[0], y_back), (c0[0], y_theta - meta_h / 2), color=BACKWARD, lw=2.6, z=5)
    for meta in metas:
        _arrow(ax, (meta[0] + 0.3, y_back), (meta[0] + 0.3, 0.62), color=BACKWARD, lw=2.2, z=5)
    # title and legend
    ax.text(0.15, 4.75, "Meta-training, unrolled over $T$ steps", ha="left", va="center", fontsize=BIG + 2,
            weight="bold")
    keys = [Line2D([], [], color="#333333", lw=2.4, label="forward"),
            Line2D([], [], color="#555555", lw=2.4, ls="--", label="detached: no second derivatives"),
            Line2D([], [], color=BACKWARD, lw=2.4, label="backward: the meta-gradient, to $c_0$ and $W$")]
    legend = ax.legend(handles=keys, loc="center left", bbox_to_anchor=(0.0, 4.3 / 5.05), ncols=3, frameon=False,
                       fontsize=small, handlelength=1.8, columnspacing=1.2, borderaxespad=0.2)
    legend.get_texts()[2].set_color(BACKWARD)
    return fig
