"""Distilled update rules: closed forms fitted to a trained meta-learner's gates (notebook 06).

A sentence that says what the Meta-Learner LSTM does is a hypothesis about its
update rule. It is tested by substitution: the LSTM is replaced by the rule the
sentence describes, with the same c_0, on the same episodes, and the paired
accuracy difference says whether the sentence holds (`metalstm.tools.substitute`).

Every candidate is a cell like `metalstm.metalearner.SGDCell` (`c0`,
`initial_state()`, `step(loss, grad, theta, state) -> (theta, state, Gates)`,
`rule_parameters()`), with f_t = 1 unless stated, and its few numbers fitted by
a `fit_*` function on a `GateRecord` of meta-validation episodes made with
`record_gates(..., inputs=True)` (never on meta-test episodes). l = layer(j)
(`metalstm.rules.layer_index`), t the step, g = grad_t[j], p the preprocessing's
scale (paper notes 4):

    name        the sentence                                  the rule
    median      "a learned learning-rate schedule"            f, i = median over the record per step and tensor
    power       "a schedule times a power of |g|"             i = s[t, l] * max(|g|, e^-p) ** b[t, l]
    sign        "a step of fixed length in the sign's         theta -= s[t, l] * sign(g)
                 direction"
    rmsprop     "RMSprop with a learned schedule"             i = s[t, l] / (sqrt(v_t) + eps),
                                                               v_t = beta v_{t-1} + (1 - beta) g^2, v_1 = g^2
    magnitude   "a schedule whose step shrinks with |g|,      i = sigmoid(a_t + b_t * max(ln|g|, -p))
                 logistic in the log-magnitude"                (`metalstm.rules.MagnitudeCell`, a and b
                                                               shared by the layers)
    no-forget   "the forget gate does nothing"                the LSTM's own i_t, with f_t = 1

    >>> import torch
    >>> cell = PowerCell(torch.zeros(2), torch.full((1, 1), 0.1), torch.zeros(1, 1),
    ...                  torch.zeros(2, dtype=torch.long))
    >>> cell.step(None, torch.tensor([1.0, -1.0]), torch.zeros(2), 0)[0].tolist()   # b = 0: SGD
    [-0.10000000149011612, 0.10000000149011612]
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from metalstm.metalearner import Gates
from metalstm.rules import MagnitudeCell

CANDIDATES = ("median", "power", "sign", "rmsprop", "magnitude", "no-forget")
SENTENCES = {
    "median": "a learned learning-rate schedule (the median gates per step and tensor)",
    "power": "a learned schedule times a power of the gradient's magnitude",
    "sign": "a learned step length in the direction of the gradient's sign",
    "rmsprop": "RMSprop with a learned schedule",
    "magnitude": "a learned schedule whose step shrinks as the gradient grows (logistic in its log)",
    "no-forget": "the forget gate does nothing (the LSTM with f = 1)",
}


class _StepCounter(nn.Module):
    """The part every fitted rule shares: a fixed c_0 and a step counter as the state."""

    def __init__(self, c0: Tensor, steps: int) -> None:
        super().__init__()
        self.c0 = nn.Parameter(c0.detach().clone().float(), requires_grad=False)
        self.steps = int(steps)

    def initial_state(self):
        return 0

    def _check(self, t: int) -> None:
        if t >= self.steps:
            raise ValueError(f"this rule was fitted for {self.steps} steps; step {t + 1} has none")

    def rule_parameters(self) -> list[nn.Parameter]:
        return [q for name, q in self.named_parameters() if name != "c0"]


class StepTable(_StepCounter):
    """Fixed gates per step, the same in every episode: theta_t = f[t] * theta_{t-1} - i[t] * grad_t,
    forget, input: [T, n] (exercise 2 of notebook 06 with the record's medians)."""

    def __init__(self, c0: Tensor, forget: Tensor, input: Tensor, groups: int | None = None) -> None:
        super().__init__(c0, forget.shape[0])
        self.groups = groups            # how many tensors share one value per step (for `describe`)
        self.forget = nn.Parameter(forget.detach().clone().float())
        self.input = nn.Parameter(input.detach().clone().float())

    def step(self, loss, grad: Tensor, theta: Tensor, t: int):
        self._check(t)
        f, i = self.forget[t], self.input[t]
        return f * theta - i * grad, t + 1, Gates(f, i)


class PowerCell(_StepCounter):
    """i = s[t, l] * max(|g|, e^-p) ** b[t, l]; s, b: [T, layers]; b = 0 is a schedule."""

    def __init__(self, c0: Tensor, s: Tensor, b: Tensor, layer_of: Tensor, p: float = 10.0) -> None:
        super().__init__(c0, s.shape[0])
        self.s, self.b = nn.Parameter(s.detach().clone().float()), nn.Parameter(b.detach().clone().float())
        self.register_buffer("layer_of", layer_of.clone(), persistent=False)
        self.p = float(p)

    def step(self, loss, grad: Tensor, theta: Tensor, t: int):
        self._check(t)
        magnitude = grad.abs().clamp_min(math.exp(-self.p))
        i = self.s[t][self.layer_of] * magnitude ** self.b[t][self.layer_of]
        return theta - i * grad, t + 1, Gates(torch.ones_like(theta), i)


class SignCell(_StepCounter):
    """theta_t = theta_{t-1} - s[t, l] * sign(grad_t); s: [T, layers]. Its gate is i = s / |g|."""

    def __init__(self, c0: Tensor, s: Tensor, layer_of: Tensor) -> None:
        super().__init__(c0, s.shape[0])
        self.s = nn.Parameter(s.detach().clone().float())
        self.register_buffer("layer_of", layer_of.clone(), persistent=False)

    def step(self, loss, grad: Tensor, theta: Tensor, t: int):
        self._check(t)
        length = self.s[t][self.layer_of]
        i = length / grad.abs().clamp_min(1e-30)
        return theta - length * torch.sign(grad), t + 1, Gates(torch.ones_like(theta), i)


class RMSpropCell(_StepCounter):
    """i = s[t, l] / (sqrt(v_t) + eps), v_t = beta v_{t-1} + (1 - beta) g^2 with v_1 = g_1^2.
    The state is (t, v)."""

    def __init__(self, c0: Tensor, s: Tensor, layer_of: Tensor, beta: float, eps: float) -> None:
        super().__init__(c0, s.shape[0])
        self.s = nn.Parameter(s.detach().clone().float())
        self.register_buffer("layer_of", layer_of.clone(), persistent=False)
        self.beta, self.eps = float(beta), float(eps)

    def initial_state(self):
        return (0, None)

    def step(self, loss, grad: Tensor, theta: Tensor, state):
        t, v = state
        self._check(t)
        v = grad * grad if v is None else self.beta * v + (1 - self.beta) * grad * grad
        i = self.s[t][self.layer_of] / (v.sqrt() + self.eps)
        return theta - i * grad, (t + 1, v), Gates(torch.ones_like(theta), i)


class NoForgetting(nn.Module):
    """The meta-learner's own steps with f_t = 1: theta_t = theta_{t-1} - i_t * grad_t, where i_t and
    the state come from `metalearner.step` (notebook 06, exercise 1)."""

    def __init__(self, metalearner: nn.Module) -> None:
        super().__init__()
        self.metalearner = metalearner
        self.c0 = metalearner.c0

    def rule_parameters(self) -> list[nn.Parameter]:
        """The meta-learner's parameters but c_0 and the forget gate's W_F, b_F (unused with f = 1)."""
        unused = {"c0", "W_F", "b_F"}
        return [q for name, q in self.metalearner.named_parameters() if name not in unused]

    def initial_state(self):
        return self.metalearner.initial_state()

    def step(self, loss, grad: Tensor, theta: Tensor, state):
        _, state, gates = self.metalearner.step(loss, grad, theta, state)
        return theta - gates.i * grad, state, Gates(torch.ones_like(theta), gates.i)


class StopAfter(nn.Module):
    """The meta-learner's first `steps` updates only: from step steps+1 on, theta stays where it is
    (the state still advances). Tests "the later steps add nothing"."""

    def __init__(self, metalearner: nn.Module, steps: int) -> None:
        super().__init__()
        self.metalearner, self.steps = metalearner, int(steps)
        self.c0 = metalearner.c0

    def rule_parameters(self) -> list[nn.Parameter]:
        return self.metalearner.rule_parameters()

    def initial_state(self):
        return (0, self.metalearner.initial_state())

    def step(self, loss, grad: Tensor, theta: Tensor, state):
        t, inner = state
        new_theta, inner, gates = self.metalearner.step(loss, grad, theta, inner)
        if t >= self.steps:
            return theta, (t + 1, inner), Gates(torch.ones_like(theta), torch.zeros_like(theta))
        return new_theta, (t + 1, inner), gates


# -- fitting (on a GateRecord of meta-validation episodes, made with inputs=True) -------------------
def _inputs(record) -> tuple[Tensor, Tensor]:
    if record.grad is None:
        raise ValueError("fitting needs the gradients the gates read: make the record with "
                         "record_gates(..., inputs=True)")
    return record.input.double(), record.grad.double()


def _per_layer(values: Tensor, layer_of: Tensor, layers: int, reduce) -> Tensor:
    """reduce(values of step t in layer l, over episodes and coordinates) -> [T, layers]; values [E, T, n]."""
    return torch.tensor([[reduce(values[:, t][:, layer_of == l].flatten()) for l in range(layers)]
                         for t in range(values.shape[1])], dtype=torch.float64)


def _least_squares(x: Tensor, y: Tensor) -> tuple[float, float]:
    """(intercept, slope) of y ~ intercept + slope * x."""
    design = torch.stack([torch.ones_like(x), x], dim=1)
    solution = torch.linalg.lstsq(design, y[:, None]).solution.flatten()
    return solution[0].item(), solution[1].item()


def fit_median(record, c0: Tensor) -> StepTable:
    """The median f_t and i_t of the record for every step and tensor (`record.slices`)."""
    forget = torch.empty(record.steps, c0.shape[0])
    input_ = torch.empty(record.steps, c0.shape[0])
    for part in record.slices.values():
        forget[:, part] = record.forget[:, :, part].transpose(0, 1).flatten(1).median(dim=1).values[:, None]
        input_[:, part] = record.input[:, :, part].transpose(0, 1).flatten(1).median(dim=1).values[:, None]
    return StepTable(c0, forget, input_, groups=len(record.slices))


def fit_power(record, c0: Tensor, layer_of: Tensor, p: float = 10.0) -> PowerCell:
    """ln i = ln s + b * max(ln|g|, -p), least squares per step and layer."""
    i, g = _inputs(record)
    layers = int(layer_of.max()) + 1
    s, b = torch.empty(record.steps, layers), torch.empty(record.steps, layers)
    x, y = g.abs().clamp_min(math.exp(-p)).log(), i.clamp_min(1e-12).log()
    for t in range(record.steps):
        for l in range(layers):
            intercept, slope = _least_squares(x[:, t][:, layer_of == l].flatten(), y[:, t][:, layer_of == l].flatten())
            s[t, l], b[t, l] = math.exp(intercept), slope
    return PowerCell(c0, s, b, layer_of, p)


def fit_sign(record, c0: Tensor, layer_of: Tensor) -> SignCell:
    """s[t, l] = the median step length |i_t * g_t| per step and layer."""
    i, g = _inputs(record)
    return SignCell(c0, _per_layer(i * g.abs(), layer_of, int(layer_of.max()) + 1, torch.median).float(), layer_of)


def fit_rmsprop(record, c0: Tensor, layer_of: Tensor, betas=(0.0, 0.5, 0.9, 0.99),
                epsilons=(1e-8, 1e-6, 1e-4)) -> RMSpropCell:
    """s[t, l] = median of i_t * (sqrt(v_t) + eps) per step and layer, with (beta, eps) from the grids
    chosen by the smallest mean squared error of ln i over the record (an imitation fit)."""
    i, g = _inputs(record)
    layers, best = int(layer_of.max()) + 1, None
    for beta in betas:
        v, scale = torch.empty_like(g), torch.empty_like(g)
        for t in range(record.steps):
            v[:, t] = g[:, t] ** 2 if t == 0 else beta * v[:, t - 1] + (1 - beta) * g[:, t] ** 2
        for eps in epsilons:
            scale = v.sqrt() + eps
            s = _per_layer(i * scale, layer_of, layers, torch.median)             # [T, layers]
            fitted = s[:, layer_of][None] / scale
            error = ((fitted.clamp_min(1e-30).log() - i.clamp_min(1e-12).log()) ** 2).mean().item()
            if best is None or error < best[0]:
                best = (error, s, beta, eps)
    _, s, beta, eps = best
    return RMSpropCell(c0, s.float(), layer_of, beta, eps)


def fit_magnitude(record, c0: Tensor, layer_of: Tensor, p: float = 10.0) -> MagnitudeCell:
    """logit i = a_t + b_t * max(ln|g|, -p), least squares per step over every layer and episode."""
    i, g = _inputs(record)
    x, y = g.abs().clamp_min(math.exp(-p)).log(), torch.logit(i.clamp(1e-6, 1 - 1e-6))
    layers = int(layer_of.max()) + 1
    cell = MagnitudeCell(c0, 0.5, layer_of, [str(l) for l in range(layers)], record.steps, p)
    with torch.no_grad():
        for t in range(record.steps):
            a, b = _least_squares(x[:, t].flatten(), y[:, t].flatten())
            cell.a[t], cell.b[t] = a, b
    cell.c0.requires_grad_(False)
    return cell


def fit_candidates(record, metalearner: nn.Module, layer_of: Tensor, p: float = 10.0) -> dict[str, nn.Module]:
    """Every candidate of CANDIDATES, fitted on `record` (the meta-learner's own gates), with its c_0."""
    c0 = metalearner.c0.detach()
    return {"median": fit_median(record, c0), "power": fit_power(record, c0, layer_of, p),
            "sign": fit_sign(record, c0, layer_of), "rmsprop": fit_rmsprop(record, c0, layer_of),
            "magnitude": fit_magnitude(record, c0, layer_of, p), "no-forget": NoForgetting(metalearner)}


def describe(rule: nn.Module) -> dict:
    """The fitted numbers of a candidate, JSON-able (what the substitution table stores)."""
    if isinstance(rule, NoForgetting):
        return {"numbers": 0, "note": "the meta-learner's own input gate, f = 1"}
    if isinstance(rule, StepTable):
        return {"numbers": 2 * rule.steps * (rule.groups or rule.c0.numel()), "note": "median f, i per step and tensor"}
    if isinstance(rule, MagnitudeCell):              # a and b are shared by the layers: one column each
        return {"a": rule.a[:, 0].tolist(), "b": rule.b[:, 0].tolist(), "numbers": 2 * rule.a.shape[0]}
    out = {name: q.detach().tolist() for name, q in rule.named_parameters() if name != "c0"}
    out["numbers"] = sum(q.numel() for name, q in rule.named_parameters() if name != "c0")
    if isinstance(rule, RMSpropCell):
        out.update(beta=rule.beta, eps=rule.eps)
    return out
