"""The ladder of update rules: each rung adds one ingredient (paper notes 3, 11).

Every rung is the same cell update as plain SGD (paper notes 3),

    theta_t = f_t * theta_{t-1} + i_t * (-grad_t),     theta_0 = c_0,

and differs only in what is fixed and what is learned:

    rung       c_0             f_t   i_t                                 learned numbers
    sgd        fixed (random)  1     alpha (one tuned number)             0
    init       learned         1     alpha (one tuned number)             n        first-order MAML
    meta-sgd   learned         1     alpha[j], one per coordinate j       2n       Meta-SGD
    schedule   learned         1     alpha[t, layer(j)], per step+layer   n + T*5
    magnitude  learned         1     sigmoid(a[t, layer(j)]               n + T*5*2
                                       + b[t, layer(j)] * max(ln|g_j|, -p))
    lstm       learned         LSTM  LSTM (metalstm.metalearner)          n + 2,046

`magnitude` is a per-layer form of the strategy that notebook 06 distils from
the trained LSTM's gates (`metalstm.distill`, which fits one a_t and b_t per step
to the recorded gates), meta-trained like every rung: per step and layer, the
input gate is a logistic function of the gradient's log-magnitude, clamped where
the preprocessing clamps it (paper notes 4), so large gradients get smaller
steps. With b = 0 it is the schedule with alpha = sigmoid(a).

Every rung is meta-trained by the same loop (`metalstm.train`), under the
paper's rule that L_t and grad_t are detached (no second derivatives): for
`init` that is first-order MAML (Finn et al. 2017), for `meta-sgd` a
first-order Meta-SGD (Li et al. 2017). Each rule has the interface that
`metalstm.metalearner.inner_loop` runs: `c0`, `initial_state()`,
`step(loss, grad, theta, state) -> (theta, state, Gates)`, `rule_parameters()`.

    >>> from metalstm.learner import Learner
    >>> learner = Learner(n_way=5)
    >>> rule = make_rule("meta-sgd", learner, learner.init_params(), lr=0.1, steps=8)
    >>> sorted(name for name, _ in rule.named_parameters())
    ['alpha', 'c0']
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from metalstm.config import RUNGS
from metalstm.learner import Learner
from metalstm.metalearner import Gates, SGDCell

RUNG_NAMES = {"sgd": "SGD (random init)", "init": "Learned init (FO-MAML)", "meta-sgd": "Meta-SGD",
              "schedule": "Learned schedule", "magnitude": "Schedule x gradient magnitude",
              "lstm": "Meta-Learner LSTM"}


def layer_index(learner: Learner) -> tuple[Tensor, list[str]]:
    """(layer of every coordinate of theta [n_params], layer names): conv block k (its conv
    weight and bias and its batch-norm affine) is layer k-1, the linear classifier the last.
    A learner of another network (metalstm.module_learner.ModuleLearner) gives its own."""
    if hasattr(learner, "layer_index"):
        return learner.layer_index()
    names = [f"conv{k}" for k in range(1, learner.n_blocks + 1)] + ["linear"]
    index = torch.empty(learner.n_params, dtype=torch.long)
    for name, sl in learner.slices().items():
        layer = name.split(".")[0]
        index[sl] = names.index("linear" if layer == "fc" else f"conv{layer[-1]}")
    return index, names


class MetaSGDCell(nn.Module):
    """Learned c_0 and a learned step size per coordinate, f = 1 (Meta-SGD, Li et al. 2017):
    theta_t = theta_{t-1} - alpha * grad_t, alpha in R^n starting at `lr` everywhere."""

    def __init__(self, theta0: Tensor, lr: float) -> None:
        super().__init__()
        self.c0 = nn.Parameter(theta0.detach().clone().float())
        self.alpha = nn.Parameter(torch.full_like(self.c0, float(lr)))

    def rule_parameters(self) -> list[nn.Parameter]:
        """The step sizes (not c_0)."""
        return [self.alpha]

    def initial_state(self) -> None:
        return None

    def step(self, loss: Tensor, grad: Tensor, theta: Tensor, state: None) -> tuple[Tensor, None, Gates]:
        f = torch.ones_like(theta)
        return theta - self.alpha * grad, state, Gates(f, self.alpha)


class ScheduleCell(nn.Module):
    """Learned c_0 and a learned step size per layer and per step, f = 1:
    theta_t = theta_{t-1} - alpha[t, layer(j)] * grad_t[j], alpha [T, layers] starting at `lr`.

    The state is the step counter t; running more than `steps` steps is an error.

    `layer_of` (the layer of every coordinate, n integers: 228 KB for the glyph learner) is
    recomputed from the learner (`layer_index`), so it is not saved, as in MagnitudeCell: a
    checkpoint holds c_0 and alpha only. A checkpoint written before that holds it too; it
    loads, and must hold the layers this learner gives (else load_state_dict says so).
    """

    def __init__(self, theta0: Tensor, lr: float, layer_of: Tensor, layer_names: list[str],
                 steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"a schedule needs at least one step, got steps={steps}")
        self.c0 = nn.Parameter(theta0.detach().clone().float())
        self.alpha = nn.Parameter(torch.full((steps, len(layer_names)), float(lr)))
        self.register_buffer("layer_of", layer_of.clone(), persistent=False)
        self.layer_names = list(layer_names)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """An older checkpoint's saved layer_of is checked against the recomputed one and dropped."""
        saved = state_dict.pop(prefix + "layer_of", None)
        if saved is not None and not (saved.shape == self.layer_of.shape and
                                      torch.equal(saved.to(self.layer_of.device), self.layer_of)):
            error_msgs.append(f"{prefix}layer_of: the checkpoint's layer of each coordinate "
                              f"({tuple(saved.shape)}) is not this learner's ({tuple(self.layer_of.shape)})")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def rule_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def initial_state(self) -> int:
        return 0

    def step(self, loss: Tensor, grad: Tensor, theta: Tensor, state: int) -> tuple[Tensor, int, Gates]:
        if state >= self.alpha.shape[0]:
            raise ValueError(f"this schedule was learned for {self.alpha.shape[0]} steps; "
                             f"step {state + 1} has no step size")
        i = self.alpha[state][self.layer_of]          # [n]: the step size of each coordinate's layer
        return theta - i * grad, state + 1, Gates(torch.ones_like(theta), i)


class MagnitudeCell(nn.Module):
    """Learned c_0 and an input gate that reads the step and the gradient's log-magnitude, f = 1:

        i_t[j] = sigmoid(a[t, l] + b[t, l] * max(ln|grad_t[j]|, -p)),   l = layer(j)
        theta_t = theta_{t-1} - i_t * grad_t

    a, b: [T, layers]. The clamp at -p is the preprocessing's (paper notes 4): below
    |g| = e^-p the LSTM sees the same log-magnitude input, and so does this rule. b < 0 gives
    large gradients smaller steps (i ~ |g|^b while i is small: a step ~ |g|^(1+b)). It starts
    at a = logit(lr), b = 0: plain SGD with step lr. The state is the step counter t.

    >>> import torch
    >>> cell = MagnitudeCell(torch.zeros(3), 0.1, torch.zeros(3, dtype=torch.long), ["all"], steps=2)
    >>> theta, t, gates = cell.step(None, torch.tensor([1.0, -2.0, 0.0]), torch.zeros(3), 0)
    >>> [round(v, 6) for v in theta.tolist()], t
    ([-0.1, 0.2, 0.0], 1)
    """

    def __init__(self, theta0: Tensor, lr: float, layer_of: Tensor, layer_names: list[str],
                 steps: int, p: float = 10.0) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"a magnitude rule needs at least one step, got steps={steps}")
        if not 0 < lr < 1:
            raise ValueError(f"its step is a sigmoid, so the initial step lr must lie in (0, 1), got {lr!r}")
        self.c0 = nn.Parameter(theta0.detach().clone().float())
        start = torch.logit(torch.tensor(float(lr))).item()
        self.a = nn.Parameter(torch.full((steps, len(layer_names)), start))
        self.b = nn.Parameter(torch.zeros(steps, len(layer_names)))
        self.register_buffer("layer_of", layer_of.clone(), persistent=False)
        self.layer_names, self.p = list(layer_names), float(p)

    def rule_parameters(self) -> list[nn.Parameter]:
        return [self.a, self.b]

    def initial_state(self) -> int:
        return 0

    def gate(self, grad: Tensor, t: int) -> Tensor:
        """i_t for every coordinate, [n]."""
        if t >= self.a.shape[0]:
            raise ValueError(f"this rule was learned for {self.a.shape[0]} steps; step {t + 1} has no gate")
        magnitude = grad.abs().clamp_min(math.exp(-self.p)).log()       # max(ln|g|, -p)
        return torch.sigmoid(self.a[t][self.layer_of] + self.b[t][self.layer_of] * magnitude)

    def step(self, loss: Tensor, grad: Tensor, theta: Tensor, state: int) -> tuple[Tensor, int, Gates]:
        i = self.gate(grad, state)
        return theta - i * grad, state + 1, Gates(torch.ones_like(theta), i)


def make_rule(name: str, learner: Learner, theta0: Tensor, lr: float, steps: int) -> nn.Module:
    """The rung `name` (one of RUNGS but 'lstm', which `metalstm.metalearner.MetaLearner` is),
    starting from theta0 with the fixed or initial step size lr: a finite number >= 0 (for
    `magnitude`, whose step is a sigmoid, in (0, 1)); anything else is one ValueError."""
    if name not in RUNGS or name == "lstm":
        raise ValueError(f"unknown update rule {name!r}; the ladder is: {', '.join(RUNGS)}")
    what = f"lr (the {name} rule's {'' if name in ('sgd', 'init') else 'initial '}step size)"
    number = isinstance(lr, numbers.Real) and not isinstance(lr, bool)
    if name == "magnitude" and not number:        # MagnitudeCell refuses the numbers outside (0, 1)
        raise ValueError(f"{what} must be a number in (0, 1), got {lr!r}")
    if name != "magnitude" and not (number and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"{what} must be a finite number >= 0, got {lr!r}")
    if name == "sgd":
        return SGDCell(theta0, lr)
    if name == "init":
        return SGDCell(theta0, lr, train_c0=True)
    if name == "meta-sgd":
        return MetaSGDCell(theta0, lr)
    if name == "schedule":
        layer_of, names = layer_index(learner)
        return ScheduleCell(theta0, lr, layer_of, names, steps)
    if name == "magnitude":
        layer_of, names = layer_index(learner)
        return MagnitudeCell(theta0, lr, layer_of, names, steps)
    raise ValueError(f"unknown update rule {name!r}; the ladder is: {', '.join(RUNGS)}")
