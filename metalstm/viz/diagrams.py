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
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

FONT = 15                                  # points; the smallest text is FONT - 3
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


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: float = FONT,
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
    """The two-layer coordinate-wise meta-learner (paper notes 4): the path of ONE coordinate j,
    drawn in front of the stack of all coordinates, which share every weight."""
    fig, ax = _canvas(16.9, 8.8)
    frame_w, frame_h, fx, fy = 14.6, 5.7, 0.2, 1.25
    # the other coordinates: the same network, stacked behind coordinate j
    for k, label in enumerate(["coordinate $n$ = " + n_coordinates, "...", "coordinate 2"]):
        off = 0.36 * (3 - k)
        ax.add_patch(FancyBboxPatch((fx + off, fy + off), frame_w, frame_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.2", facecolor="#f7f7f7",
                                    edgecolor="#9a9a9a", linewidth=1.2, zorder=0))
        ax.text(fx + off + frame_w - 0.15, fy + off + frame_h + 0.02, label, ha="right", va="bottom",
                fontsize=FONT - 3, color="#666666", zorder=0)
    ax.add_patch(FancyBboxPatch((fx, fy), frame_w, frame_h, boxstyle="round,pad=0.02,rounding_size=0.2",
                                facecolor="white", edgecolor="#333333", linewidth=1.8, zorder=1))
    ax.text(fx + 0.2, fy + frame_h - 0.15, "coordinate $j$ of $\\theta$", ha="left", va="top", fontsize=FONT,
            weight="bold", zorder=2)

    # inputs
    loss = _box(ax, 0.45, 4.65, 2.3, 1.0, "loss $\\mathcal{L}_t$\n(shared by all $j$)", COLORS["input"])
    grad = _box(ax, 0.45, 2.85, 2.3, 1.0, "gradient\n$\\nabla_{t,j}$", COLORS["input"])
    # preprocessing
    pre_l = _box(ax, 3.3, 4.7, 2.1, 0.9, "pre$(\\mathcal{L}_t)$: 2", COLORS["pre"])
    pre_g = _box(ax, 3.3, 2.9, 2.1, 0.9, "pre$(\\nabla_{t,j})$: 2", COLORS["pre"])
    _arrow(ax, (loss[0] + 1.15, loss[1]), (pre_l[0] - 1.05, pre_l[1]))
    _arrow(ax, (grad[0] + 1.15, grad[1]), (pre_g[0] - 1.05, pre_g[1]))
    ax.text(4.35, 4.25, "log / sign, $p = 10$", ha="center", va="center", fontsize=FONT - 3, style="italic")
    # layer 1
    _box(ax, 6.1, 3.2, 2.6, 2.1, "layer 1\nLSTM, hidden 20\n$x_{t,j} \\in \\mathbb{R}^4$",
         COLORS["lstm"], weight="bold")
    _arrow(ax, (pre_l[0] + 1.05, pre_l[1]), (6.1, 4.75))
    _arrow(ax, (pre_g[0] + 1.05, pre_g[1]), (6.1, 3.75))
    ax.add_patch(FancyArrowPatch((8.05, 5.3), (6.75, 5.3), arrowstyle="-|>", mutation_scale=16, lw=1.8,
                                 color="#333333", connectionstyle="arc3,rad=1.4", zorder=2))
    ax.text(7.4, 6.32, "state $h_{t-1,j},\\ c_{t-1,j}$", ha="center", va="bottom", fontsize=FONT - 3)
    # layer 2: the gates
    _box(ax, 9.55, 4.65, 2.45, 1.05, "forget gate $f_{t,j}$\n$W_F, b_F$", COLORS["gate"])
    _box(ax, 9.55, 2.8, 2.45, 1.05, "input gate $i_{t,j}$\n$W_I, b_I$", COLORS["gate"])
    _arrow(ax, (8.7, 4.5), (9.55, 5.15))
    _arrow(ax, (8.7, 4.0), (9.55, 3.35))
    ax.text(8.8, 4.25, "$h_{t,j}$", ha="left", va="center", fontsize=FONT - 1)
    # the update: layer 2's cell state is theta itself
    upd = _box(ax, 12.45, 3.35, 1.95, 1.8, "$\\theta_{t,j} =$\n$f_{t,j}\\,\\theta_{t-1,j}$\n"
               "$- \\; i_{t,j}\\,\\nabla_{t,j}$", COLORS["theta"], weight="bold")
    _arrow(ax, (12.0, 5.15), (12.45, 4.7))
    _arrow(ax, (12.0, 3.35), (12.45, 3.8))
    _arrow(ax, (14.4, upd[1]), (15.45, upd[1]), lw=2.4)
    ax.text(15.5, upd[1] + 0.2, "$\\theta_{t,j}$", ha="left", va="bottom", fontsize=FONT + 1, weight="bold")
    ax.text(15.5, upd[1] - 0.2, "to step\n$t+1$", ha="left", va="top", fontsize=FONT - 3)
    # theta_{t-1, j} and the previous gates feed layer 2
    _box(ax, 9.55, 1.55, 2.45, 0.8, "$\\theta_{t-1,j}$,  $f_{t-1,j}$,  $i_{t-1,j}$", COLORS["theta"],
         size=FONT - 1)
    _arrow(ax, (10.3, 2.35), (10.3, 2.8))
    ax.add_patch(FancyArrowPatch((9.6, 2.15), (9.65, 4.7), arrowstyle="-|>", mutation_scale=16, lw=1.8,
                                 color="#333333", connectionstyle="arc3,rad=-0.45", zorder=2))
    _arrow(ax, (12.0, 1.95), (13.1, 3.35), rad=0.2)
    # the raw gradient goes straight to the update, below everything
    raw = "#1f5fa8"
    ax.plot([grad[0], grad[0], 14.05, 14.05], [2.85, 1.5, 1.5, 2.6], color=raw, lw=2.0, ls="--", zorder=2)
    _arrow(ax, (14.05, 2.55), (14.05, 3.35), color=raw, style="--")
    ax.text(5.6, 1.72, "the raw gradient, not preprocessed", ha="center", va="center", fontsize=FONT - 2,
            color=raw)

    # what is shared
    ax.text(8.3, 0.6, "every coordinate $j = 1, \\dots, n$ runs this same network with the SAME weights "
            "$W_1, b_1$ (2,000) and $W_F, W_I, b_F, b_I$ (46): 2,046 in all, whatever $n$;\n"
            "the coordinates are the batch dimension, and only the state ($h, c$, previous gates) "
            "differs between them", ha="center", va="center", fontsize=FONT - 2)
    ax.text(8.3, 8.5, "The coordinate-wise meta-learner: one coordinate's update", ha="center", va="center",
            fontsize=FONT + 3, weight="bold")
    return fig


def unrolled_metatraining(steps: int = 3):
    """Meta-training unrolled over T inner steps (paper notes 5): the forward chain
    theta_0 = c_0 -> theta_1 -> ... -> theta_T -> L_test; each step's L_t and grad_t enter the
    meta-learner detached (dashed); the meta-gradient (red) flows back along the theta chain to
    c_0 and into the meta-learner's weights at every step."""
    if steps < 2:
        raise ValueError(f"draw at least 2 steps, got {steps}")
    gap = 0.9 if steps > 2 else 0.0             # room for the elided steps before step T
    width = max(3.1 + 3.3 * steps + gap + 3.0, 16.6)   # at least as wide as the legend
    fig, ax = _canvas(width, 9.4)
    names = [f"{t}" for t in range(1, steps)] + ["T"]
    before = ["0"] + names[:-2] + (["T-1"] if steps > 2 else names[:1])
    y_theta, y_learn, y_data, y_back = 2.9, 5.2, 7.0, 1.7
    c0 = _box(ax, 0.3, y_theta - 0.55, 1.9, 1.1, "$\\theta_0 = c_0$", COLORS["weights"], weight="bold")
    left = (2.2, y_theta)
    metas, thetas = [], [c0]
    for k, (t, prev) in enumerate(zip(names, before)):
        xs = 2.8 + 3.3 * k + (gap if k == steps - 1 else 0.0)
        if k == steps - 1 and gap:
            ax.text(xs - 0.55, y_theta + 0.05, "$\\cdots$", ha="center", va="center", fontsize=FONT + 4)
            left = (xs - 0.95, y_theta)
        # the learner on the support batch of step t, at theta_{t-1}
        learn = _box(ax, xs, y_learn - 0.6, 2.3, 1.2, f"learner\n$f(X_{{{t}}};\\,\\theta_{{{prev}}})$",
                     COLORS["learner"], size=FONT - 1)
        data = _box(ax, xs + 0.35, y_data - 0.4, 1.6, 0.8, f"$(X_{{{t}}}, Y_{{{t}}})$", "white", size=FONT - 1)
        _arrow(ax, (data[0], y_data - 0.4), (learn[0], y_learn + 0.6))
        # the meta-learner step: theta_{t-1} -> theta_t
        meta = _box(ax, xs + 0.2, y_theta - 0.6, 1.9, 1.2, "meta-\nlearner", COLORS["meta"], weight="bold")
        metas.append(meta)
        _arrow(ax, left, (xs + 0.2, y_theta))
        # theta_{t-1} also feeds the learner (forward, in the graph)
        _arrow(ax, (xs - 0.25, y_theta + 0.1), (xs + 0.3, y_learn - 0.6), rad=-0.25)
        # L_t and grad_t: detached inputs of the meta-learner
        _arrow(ax, (learn[0], y_learn - 0.6), (meta[0], y_theta + 0.6), style="--", color="#555555")
        ax.text(learn[0] + 0.12, (y_learn + y_theta) / 2 + 0.05,
                f"$\\mathcal{{L}}_{{{t}}},\\ \\nabla_{{{t}}}$\ndetached",
                ha="left", va="center", fontsize=FONT - 3, color="#555555")
        ax.text(learn[0] - 0.08, (y_learn + y_theta) / 2 + 0.1, "//", ha="right", va="center", fontsize=FONT + 2,
                color="#555555", weight="bold")
        theta = _box(ax, xs + 2.45, y_theta - 0.45, 0.85, 0.9, f"$\\theta_{{{t}}}$", COLORS["theta"], size=FONT + 1)
        thetas.append(theta)
        _arrow(ax, (xs + 2.1, y_theta), (xs + 2.45, y_theta))
        left = (xs + 3.3, y_theta)
    # the query loss
    xq = left[0] + 0.35
    test = _box(ax, xq, y_theta - 0.6, 2.6, 1.2, "learner on $D_{test}$\n$\\mathcal{L}_{test}(\\theta_T)$",
                COLORS["loss"], weight="bold", size=FONT - 1)
    _arrow(ax, left, (xq, y_theta))
    # the meta-learner's weights, shared by every step
    wx0 = metas[0][0] - 1.0
    wx1 = max(metas[-1][0] + 1.0, wx0 + 7.8)       # wide enough for its label
    _box(ax, wx0, 0.25, wx1 - wx0, 0.75, "meta-learner weights $\\phi$ (2,046, the same at every step)",
         COLORS["weights"], size=FONT - 1)
    for meta in metas:
        _arrow(ax, (meta[0] - 0.4, 1.0), (meta[0] - 0.4, y_theta - 0.6), lw=1.6)
    # the backward path of the meta-gradient: from L_test back along the theta chain to c_0,
    # and at every step into the meta-learner's weights
    ax.plot([test[0], test[0]], [y_theta - 0.6, y_back], color=BACKWARD, lw=2.6, zorder=5)
    _arrow(ax, (test[0], y_back), (c0[0], y_back), color=BACKWARD, lw=2.6, z=5)
    _arrow(ax, (c0[0], y_back), (c0[0], y_theta - 0.55), color=BACKWARD, lw=2.6, z=5)
    for meta in metas:
        _arrow(ax, (meta[0] + 0.35, y_back), (meta[0] + 0.35, 1.0), color=BACKWARD, lw=2.2, z=5)
    for theta, label in zip(thetas[1:], names):
        ax.text(theta[0], y_back + 0.12, f"$\\partial\\mathcal{{L}}_{{test}}/\\partial\\theta_{{{label}}}$",
                ha="center", va="bottom", fontsize=FONT - 4, color=BACKWARD)
    ax.text(test[0] + 0.15, y_back - 0.45, "the meta-gradient\nreaches $c_0$ and $\\phi$",
            ha="center", va="top", fontsize=FONT - 2, color=BACKWARD, weight="bold")
    # title and legend
    ax.text(0.3, 8.95, "Meta-training, unrolled over $T$ steps", ha="left", va="center", fontsize=FONT + 3,
            weight="bold")
    lx, ly = 0.3, 8.3
    for k, (color, style, text) in enumerate([("#333333", "-", "forward, in the graph"),
                                              ("#555555", "--", "detached: no gradient flows back "
                                               "(no second derivatives)"),
                                              (BACKWARD, "-", "backward: the meta-gradient")]):
        x0 = lx + (0.0, 4.6, 11.3)[k]
        ax.plot([x0, x0 + 0.7], [ly, ly], color=color, lw=2.4, ls=style)
        ax.text(x0 + 0.85, ly, text, va="center", fontsize=FONT - 3, color=color if k == 2 else "#222222")
    return fig
