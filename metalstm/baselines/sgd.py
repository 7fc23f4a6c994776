"""Hand-designed optimisers on the support set: SGD and Adam from a given theta_0.

Plain SGD is the LSTM cell with f_t = 1, i_t = lr, c~_t = -grad_t (paper notes 3,
`SGDCell`). Adam fits the same cell shape with a smoothed candidate and a
per-coordinate input gate:

    m_t = b1 m_{t-1} + (1 - b1) grad_t,   v_t = b2 v_{t-1} + (1 - b2) grad_t^2
    theta_t = 1 * theta_{t-1} + [lr / (sqrt(v_t / (1 - b2^t)) + eps)] * (-m_t / (1 - b1^t))
              f_t = 1            i_t                                   c~_t

so both run through `run_episode(mode="test")` exactly like the meta-learner:
T steps on support mini-batches with batch statistics that accumulate fresh
running averages, then a query pass that uses them (paper notes 7). What differs
between the baselines built here is only theta_0:
- a random init (`random_init`): how far a hand-designed optimiser gets in T steps;
- the meta-learner's learned c_0 (`learned_init`): what the learned update
  rule adds beyond the learned initialisation;
- pre-trained conv weights with a new head (`finetune.py`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from metalstm.episodes import Episode
from metalstm.learner import Learner
from metalstm.metalearner import Gates, InnerStep, SGDCell, inner_loop, run_episode
from metalstm.baselines.common import grid_search


class AdamCell(nn.Module):
    """Adam (Kingma & Ba 2015) as an update rule with the meta-learner's interface
    (c0, initial_state, step), so `run_episode` can run it. State: (m, v, t)."""

    def __init__(self, theta0: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.lr, self.betas, self.eps = float(lr), betas, eps
        self.c0 = nn.Parameter(theta0.detach().clone().float(), requires_grad=False)

    def rule_parameters(self) -> list[nn.Parameter]:
        return []

    def initial_state(self) -> tuple[Tensor, Tensor, int]:
        return torch.zeros_like(self.c0), torch.zeros_like(self.c0), 0

    def step(self, loss: Tensor, grad: Tensor, theta: Tensor, state) -> tuple[Tensor, tuple, Gates]:
        (b1, b2), (m, v, t) = self.betas, state
        t += 1
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        i = self.lr / ((v / (1 - b2 ** t)).sqrt() + self.eps)
        f = torch.ones_like(theta)
        return f * theta + i * (-m / (1 - b1 ** t)), (m, v, t), Gates(f, i)


RULES = {"sgd": SGDCell, "adam": AdamCell}


class SupportFit:
    """A few-shot method: `steps` updates of SGD or Adam from theta0 on the support
    set (whole support set per step unless batch_size is given), then classify
    the queries (paper notes 7 batch-norm protocol). Deterministic: the mini-batch order
    comes from a generator seeded with `seed` at every call."""

    def __init__(self, learner: Learner, theta0: Tensor, steps: int, lr: float, optimizer: str = "sgd",
                 batch_size: int | None = None, seed: int = 0, name: str | None = None) -> None:
        if optimizer not in RULES:
            raise ValueError(f"optimizer must be one of {', '.join(RULES)}, got {optimizer!r}")
        if theta0.shape != (learner.n_params,):
            raise ValueError(f"theta0 has {theta0.numel()} values, {learner} needs {learner.n_params}")
        self.learner, self.steps, self.batch_size, self.seed = learner, steps, batch_size, seed
        self.optimizer, self.lr = optimizer, lr
        self.rule = RULES[optimizer](theta0, lr)
        self.name = name or f"{optimizer.upper() if optimizer == 'sgd' else 'Adam'} ({steps} steps, lr {lr:g})"

    def run(self, episode: Episode, record: bool = False):
        """The full `EpisodeResult` (theta_T, support losses, gates, query logits)."""
        if episode.n_way != self.learner.n_way:
            raise ValueError(f"{self.name}: the learner has {self.learner.n_way} outputs, "
                             f"the episode is {episode.n_way}-way")
        batch = self.batch_size or len(episode.support_y)
        g = torch.Generator().manual_seed(self.seed)
        return run_episode(self.learner, self.rule, episode, self.steps, batch, mode="test",
                           generator=g, record=record)

    def predict(self, episode: Episode) -> Tensor:
        return self.run(episode).query_logits

    @torch.no_grad()
    def accuracy_curve(self, episode: Episode, steps: Sequence[int]) -> dict[int, float]:
        """Query accuracy after each number of steps in `steps`, from ONE run of
        max(steps) updates: the same numbers as a method with that many steps
        (the mini-batches of a shorter run are the first ones of a longer run),
        for the cost of one. Used to tune the number of steps."""
        learner, x, y = self.learner, episode.support_x, episode.support_y
        g = torch.Generator().manual_seed(self.seed)
        stats = learner.new_bn_stats(x.device)
        curve = {}

        def query_acc(theta) -> float:
            logits = learner(episode.query_x, theta, bn="running", stats=stats)
            return (logits.argmax(1) == episode.query_y).float().mean().item()

        def after(step: InnerStep) -> None:
            if step.t in steps:
                curve[step.t] = query_acc(step.theta)

        if 0 in steps:
            curve[0] = query_acc(self.rule.c0)          # before any support pass: fresh averages
        inner_loop(learner, self.rule, x, y, max(steps), self.batch_size or len(y), stats=stats,
                   generator=g, hook=after)
        return curve


def random_init(learner: Learner, steps: int, lr: float, optimizer: str = "sgd", seed: int = 0,
                **kwargs) -> SupportFit:
    """Ablation: SGD / Adam from a random theta_0 (Learner.init_params, seeded; the same for every episode)."""
    theta0 = learner.init_params(torch.Generator().manual_seed(seed))
    name = f"{'SGD' if optimizer == 'sgd' else 'Adam'} from random init"
    return SupportFit(learner, theta0, steps, lr, optimizer, seed=seed, name=name, **kwargs)


def learned_init(learner: Learner, c0: Tensor, steps: int, lr: float, optimizer: str = "sgd",
                 **kwargs) -> SupportFit:
    """Ablation: SGD / Adam from a trained meta-learner's c_0 (pass metalearner.c0):
    the learned initialisation without the learned update rule."""
    name = f"{'SGD' if optimizer == 'sgd' else 'Adam'} from learned c_0"
    return SupportFit(learner, c0.detach(), steps, lr, optimizer, name=name, **kwargs)


def tune_lr(make_method, lrs: Sequence[float], val_episodes: Sequence[Episode],
            progress: bool = True) -> tuple[float, dict[float, float]]:
    """The learning rate of `lrs` with the best mean accuracy of make_method(lr) on
    meta-validation episodes; returns (best lr, {lr: accuracy})."""
    best, table = grid_search(make_method, [(lr,) for lr in lrs], val_episodes, progress)
    return best[0], {point[0]: acc for point, acc in table.items()}
