"""Solutions to the exercises of notebook 06_gate_visualization (checked by tests/notebooks/test_notebook06_agrees.py)."""
from __future__ import annotations

import math

import torch
from torch import nn

from metalstm.metalearner import Gates
from metalstm.viz import GateRecord, trace_episode


# Exercise 1 -------------------------------------------------------------------
class NoForgetting(nn.Module):
    """The meta-learner with its forget gate switched off: every step runs the meta-learner's
    own step (so its state, input gate and the gates it feeds back are unchanged) but applies
    theta_t = theta_{t-1} - i_t * grad_t, i.e. f_t = 1. Same c_0."""

    def __init__(self, metalearner: nn.Module) -> None:
        super().__init__()
        self.metalearner = metalearner
        self.c0 = metalearner.c0

    def initial_state(self):
        return self.metalearner.initial_state()

    def step(self, loss, grad, theta, state):
        _, state, gates = self.metalearner.step(loss, grad, theta, state)
        return theta - gates.i * grad, state, Gates(torch.ones_like(theta), gates.i)


def paired_accuracy_gap(learner, metalearner, sampler, cfg, episodes: range) -> tuple[float, float]:
    """Mean per-episode accuracy difference, meta-learner minus NoForgetting, on the same
    episodes (meta-test protocol), and the half-width of its 95% interval."""
    from metalstm.evaluate import evaluate_rule
    from metalstm.stats import mean_ci95

    ours = evaluate_rule(learner, metalearner, sampler, episodes, cfg)
    without = evaluate_rule(learner, NoForgetting(metalearner), sampler, episodes, cfg)
    return mean_ci95([a - b for a, b in zip(ours, without)])


# Exercise 2 -------------------------------------------------------------------
class ScheduleRule(nn.Module):
    """A fixed update rule: theta_t = f_t * theta_{t-1} - i_t * grad_t with per-step gate
    vectors forget[t], input[t] ([T, n_params]) that are the same for every episode.
    Its state is the step counter; c0 is the meta-learner's learned initialisation."""

    def __init__(self, c0: torch.Tensor, forget: torch.Tensor, input: torch.Tensor) -> None:
        super().__init__()
        if forget.shape != input.shape or forget.shape[1:] != c0.shape:
            raise ValueError(f"forget and input must both be [T, {c0.numel()}], "
                             f"got {tuple(forget.shape)} and {tuple(input.shape)}")
        self.c0 = nn.Parameter(c0.detach().clone(), requires_grad=False)
        self.register_buffer("forget", forget.detach().clone())
        self.register_buffer("input", input.detach().clone())

    def initial_state(self) -> int:
        return 0

    def step(self, loss, grad, theta, t: int):
        if t >= self.forget.shape[0]:
            raise ValueError(f"the schedule has {self.forget.shape[0]} steps; step {t + 1} asked for")
        f, i = self.forget[t], self.input[t]
        return f * theta + i * (-grad), t + 1, Gates(f, i)


def schedule_from_record(record: GateRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """The meta-learner's average strategy: for every tensor of theta (every entry of
    record.slices: conv and linear weights and biases, batch-norm parameters) and every
    step, the median gate over its coordinates and the episodes. Returns forget, input [T, P]."""
    out = []
    for gate in ("forget", "input"):
        values = record.gate(gate)                                              # [E, T, P]
        schedule = torch.empty(values.shape[1:])
        for part in record.slices.values():
            block = values[:, :, part].transpose(0, 1).flatten(1)               # [T, E * n]
            schedule[:, part] = block.median(dim=1).values[:, None]
        out.append(schedule)
    return out[0], out[1]


def compare_with_schedule(learner, metalearner, sampler, cfg, record: GateRecord,
                          episodes: range) -> tuple[float, float]:
    """Mean query accuracy (meta-test protocol) of the meta-learner and of its median schedule
    (same c_0) on the same episodes - episodes the record was NOT made from."""
    from metalstm.evaluate import evaluate_rule

    rule = ScheduleRule(metalearner.c0, *schedule_from_record(record))
    ours = evaluate_rule(learner, metalearner, sampler, episodes, cfg)
    fixed = evaluate_rule(learner, rule, sampler, episodes, cfg)
    return sum(ours) / len(ours), sum(fixed) / len(fixed)


# Exercise 3 -------------------------------------------------------------------
def accuracy_beyond_T(learner, metalearner, sampler, cfg, factor: int = 2, episodes: int = 10) -> torch.Tensor:
    """Mean query accuracy of theta_0 .. theta_{factor*T}: the meta-learner run for more steps than
    the T it was trained for (same episodes and mini-batch order as record_gates; the first
    T+1 entries are therefore the record's). Returns [factor*T + 1]."""
    from metalstm.episodes import episode_generator

    accs = [trace_episode(learner, metalearner, sampler[i], factor * cfg.steps, cfg.batch_size,
                          generator=episode_generator(sampler.seed, i)).query_acc for i in range(episodes)]
    return torch.stack(accs).mean(dim=0)


# Exercise 4 -------------------------------------------------------------------
def substitution_gap(learner, metalearner, rule, sampler, cfg, episodes) -> tuple[float, float]:
    """The substitution test: mean per-episode query accuracy difference rule - metalearner, with its
    95% half-width, on the same episodes under the meta-test protocol."""
    from metalstm.evaluate import evaluate_rule
    from metalstm.stats import paired_difference

    theirs = evaluate_rule(learner, rule, sampler, episodes, cfg)
    ours = evaluate_rule(learner, metalearner, sampler, episodes, cfg)
    return paired_difference(theirs, ours)


class SharedSlopeRule(nn.Module):
    """One proposal: section 6.5's logistic rule with ONE slope b for every step,
    i_t = sigmoid(a_t + b * max(ln|g|, -p)), f = 1, from the meta-learner's c_0 (2T -> T+1 numbers)."""

    def __init__(self, c0: torch.Tensor, a: torch.Tensor, b: float, p: float = 10.0) -> None:
        super().__init__()
        self.c0 = nn.Parameter(c0.detach().clone(), requires_grad=False)
        self.register_buffer("a", a.detach().clone())
        self.b, self.p = float(b), float(p)

    def initial_state(self) -> int:
        return 0

    def step(self, loss, grad, theta, t: int):
        if t >= self.a.shape[0]:
            raise ValueError(f"fitted for {self.a.shape[0]} steps; step {t + 1} asked for")
        i = torch.sigmoid(self.a[t] + self.b * grad.abs().clamp_min(math.exp(-self.p)).log())
        return theta - i * grad, t + 1, Gates(torch.ones_like(theta), i)


def shared_slope_from(magnitude_cell) -> SharedSlopeRule:
    """The proposal fitted from section 6.5's rule (metalstm.distill.fit_magnitude): its a_t, the mean b_t."""
    return SharedSlopeRule(magnitude_cell.c0, magnitude_cell.a[:, 0].detach(), magnitude_cell.b.mean().item(),
                           magnitude_cell.p)
