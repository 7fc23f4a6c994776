"""What the meta-learner's gates respond to (notebook 06, section 6; paper notes 4, 10).

The input gate i_t of coordinate j reads, through the LSTM, the preprocessed loss
and gradient and, in layer 2, theta_{t-1} and i_{t-1}. Three measurements on a
`GateRecord` made with `record_gates(..., inputs=True)` (E episodes, T steps,
P coordinates) say which of them it follows:

- `gate_features`: the candidate inputs per (episode, step, coordinate):
  magnitude = max(ln|g|, -p) (what the preprocessing passes on, paper notes 4),
  sign(g), loss = max(ln L_t, -p), theta_{t-1}, the previous gate;
- `correlations`: Pearson's r between logit(gate) and each input, per step and
  layer, over the episodes and the layer's coordinates;
- `explained_variance`: the share of logit(gate)'s variance that nested least-squares
  models explain: the step and layer alone (a schedule), then + magnitude, + sign,
  + loss, + theta, + the previous gate (each fitted per step and layer; the order
  is the order of the increments);
- `gate_response`: an intervention on the LSTM itself: at every step of recorded
  episodes, the same state, loss and theta, but every coordinate's gradient
  magnitude set to m (its sign kept), for m over a grid: the median i_t per layer.

    >>> import torch
    >>> r = correlations_of(torch.tensor([1., 2., 3.]), {"x": torch.tensor([3., 2., 1.])})
    >>> round(r["x"], 6)
    -1.0
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

FEATURES = ("magnitude", "sign", "loss", "theta", "previous gate")


def gate_features(record, p: float = 10.0, gate: str = "input") -> dict[str, Tensor]:
    """The inputs a gate could follow, each [E, T, P] (float64)."""
    if record.grad is None or record.theta is None:
        raise ValueError("these measurements need the gradients and thetas: make the record with "
                         "record_gates(..., inputs=True)")
    g = record.grad.double()
    values = record.gate(gate).double()
    previous = torch.cat([torch.zeros_like(values[:, :1]), values[:, :-1]], dim=1)
    loss = record.support_loss.double().clamp_min(math.exp(-p)).log()[:, :, None].expand_as(g)
    return {"magnitude": g.abs().clamp_min(math.exp(-p)).log(), "sign": torch.sign(g), "loss": loss,
            "theta": record.theta[:, :-1].double(), "previous gate": previous}


def _logit(record, gate: str) -> Tensor:
    return torch.logit(record.gate(gate).double().clamp(1e-6, 1 - 1e-6))


def correlations_of(y: Tensor, features: dict[str, Tensor]) -> dict[str, float]:
    """Pearson's r of y with each feature (flattened); nan where a feature does not vary."""
    y = y.flatten().double()
    out = {}
    for name, x in features.items():
        x = x.flatten().double()
        xc, yc = x - x.mean(), y - y.mean()
        denominator = (xc.square().sum() * yc.square().sum()).sqrt()
        out[name] = (xc @ yc / denominator).item() if denominator > 0 else float("nan")
    return out


def correlations(record, layer_of: Tensor, p: float = 10.0, gate: str = "input") -> list[list[dict]]:
    """r of logit(gate) with each of FEATURES, per step and layer: [T][layers] dicts."""
    features, y = gate_features(record, p, gate), _logit(record, gate)
    layers = int(layer_of.max()) + 1
    return [[correlations_of(y[:, t][:, layer_of == l], {k: v[:, t][:, layer_of == l] for k, v in features.items()})
             for l in range(layers)] for t in range(record.steps)]


def explained_variance(record, layer_of: Tensor, p: float = 10.0, gate: str = "input",
                       every: int = 4) -> dict[str, float]:
    """Shares of logit(gate)'s variance (about its grand mean, over every episode, step and
    coordinate; every `every`-th coordinate) explained by nested models fitted per step and layer:

        "step and layer"   a constant per (t, layer): a schedule
        "+ magnitude"      ... + w * max(ln|g|, -p)
        "+ sign", "+ loss", "+ theta", "+ previous gate"   each added in turn
        "unexplained"      what the last model leaves

    The shares of the models' increments and the unexplained rest sum to 1.
    """
    features, y = gate_features(record, p, gate), _logit(record, gate)
    keep = torch.arange(0, y.shape[2], every)
    y, features = y[:, :, keep], {k: v[:, :, keep] for k, v in features.items()}
    layer_of = layer_of[keep]
    total = (y - y.mean()).square().sum().item()
    residual = [0.0] * (len(FEATURES) + 1)
    for t in range(record.steps):
        for l in range(int(layer_of.max()) + 1):
            target = y[:, t][:, layer_of == l].flatten()
            columns = [torch.ones_like(target)]
            for m in range(len(FEATURES) + 1):
                if m > 0:
                    columns.append(features[FEATURES[m - 1]][:, t][:, layer_of == l].flatten())
                design = torch.stack(columns, dim=1)
                solution = torch.linalg.lstsq(design, target[:, None]).solution
                residual[m] += (target - (design @ solution).flatten()).square().sum().item()
    names = ["step and layer"] + [f"+ {name}" for name in FEATURES]
    shares, explained = {}, 0.0
    for name, rest in zip(names, residual):
        r2 = 1 - rest / total if total > 0 else 0.0
        shares[name], explained = max(r2 - explained, 0.0), max(r2, explained)
    shares["unexplained"] = 1 - explained
    return shares


@torch.no_grad()
def gate_response(learner, metalearner, episode, steps: int, batch_size: int, generator,
                  magnitudes: Tensor, layer_of: Tensor) -> Tensor:
    """The LSTM's input gate when every gradient magnitude is set to m: [T, len(magnitudes), layers],
    the median over each layer's coordinates of i_t computed from the recorded state, loss and theta
    before step t, with grad = sign(grad_t) * m (the episode itself runs unchanged)."""
    from metalstm.metalearner import inner_loop

    before, states = [], [metalearner.initial_state()]

    def keep(step) -> None:
        before.append((step.loss, step.grad, step.theta_prev.detach().clone()))
        states.append(_clone(step.state))

    inner_loop(learner, metalearner, episode.support_x, episode.support_y, steps, batch_size,
               stats=learner.new_bn_stats(), generator=generator, hook=keep)
    step_of = getattr(metalearner, "reference_step", metalearner.step)    # no buffers reused between calls
    layers = int(layer_of.max()) + 1
    out = torch.empty(len(before), len(magnitudes), layers)
    for t, (loss, grad, theta) in enumerate(before):
        direction = torch.where(grad < 0, -1.0, 1.0)
        for k, m in enumerate(magnitudes.tolist()):
            _, _, gates = step_of(loss, direction * m, theta, _clone(states[t]))
            out[t, k] = torch.stack([gates.i[layer_of == l].median() for l in range(layers)])
    return out


def recorded_response(record, coordinates: Tensor, magnitudes: Tensor, gate: str = "input") -> Tensor:
    """The recorded gate's median, per step, over the given coordinates' values whose |grad_t| lies
    within half a decade of each magnitude: [T, len(magnitudes)], nan where none does (the dots
    beside `gate_response`'s lines)."""
    if record.grad is None:
        raise ValueError("make the record with record_gates(..., inputs=True)")
    g = record.grad[:, :, coordinates].abs().clamp_min(1e-30).log10()         # [E, T, n]
    values = record.gate(gate)[:, :, coordinates]
    out = torch.full((record.steps, len(magnitudes)), float("nan"))
    for k, m in enumerate(magnitudes.log10().tolist()):
        near = (g - m).abs() <= 0.5
        for t in range(record.steps):
            chosen = values[:, t][near[:, t]]
            if chosen.numel():
                out[t, k] = chosen.median()
    return out


def _clone(state):
    if hasattr(state, "__dataclass_fields__"):
        return type(state)(**{k: v.clone() if isinstance(v, Tensor) else v for k, v in vars(state).items()})
    return state


def plot_gate_response(responses: dict[str, Tensor], magnitudes: Tensor, observed: dict | None = None,
                       steps_shown=(1, 2, 3, 5), layer: int = 0, layer_name: str = "conv 1"):
    """i_t against the gradient magnitude, one panel per setting, one line per step shown
    (the responses of `gate_response`, averaged over episodes: {label: [E, T, M, layers]}),
    with the recorded (magnitude, gate) medians as dots where `observed` gives them; the legend names the
    steps, the dots and the dotted line at e^{-p} (p = 10), below which the preprocessing clamps ln|g|."""
    import matplotlib.pyplot as plt

    from metalstm.viz.style import RC, WIDE

    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(responses), figsize=(WIDE[0], 4.4), sharey=True, squeeze=False,
                                 layout="constrained")
        for ax, (label, r) in zip(axes[0], responses.items()):
            mean = r.mean(dim=0)                                                 # [T, M, layers]
            for t in steps_shown:
                if t <= mean.shape[0]:
                    line, = ax.plot(magnitudes, mean[t - 1, :, layer], label=f"step {t}")
                    if observed and (label, t) in observed:
                        x, y = observed[label, t]
                        ax.plot(x, y, "o", ms=6, color=line.get_color())
            ax.set_xscale("log")
            ax.axvline(math.exp(-10), color="grey", lw=0.8, ls=":")
            ax.set_xlabel("gradient magnitude |g| fed to the LSTM")
            ax.set_title(f"{label}, {layer_name}")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("input gate $i_t$ (median)")
        handles, _ = axes[0][-1].get_legend_handles_labels()
        from matplotlib.lines import Line2D
        if observed:
            handles.append(Line2D([], [], ls="", marker="o", ms=6, color="grey", label="recorded (median)"))
        handles.append(Line2D([], [], color="grey", lw=0.8, ls=":", label=r"$e^{-p}$: $\ln|g|$ clamped below"))
        fig.legend(handles=handles, loc="outside lower center", ncol=3)     # beside no data
    return fig
