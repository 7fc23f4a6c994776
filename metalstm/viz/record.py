"""Recording the meta-learner's gates and the learner's progress, step by step (paper notes 10).

`trace_episode` is the meta-test protocol of `run_episode(mode="test")`
(paper notes 5, 7) unrolled one update at a time: after every step t it keeps
f_t and i_t for every coordinate of theta and evaluates theta_t on the query
set, so one episode gives T gate vectors and T+1 query accuracies:

    t = 0:    theta_0 = c_0, before any update
    t = 1..T: theta_t = f_t * theta_{t-1} + i_t * (-grad_t)

The query pass normalises with the running averages of the support passes so
far (paper notes 7). At t = 0 no support pass has happened yet, so theta_0 uses the
averages of the first support pass (the forward pass of step 1, made at
theta_0); from t = 1 on, theta_t uses those after t passes - at t = T exactly
what `run_episode(mode="test")` uses, so the last accuracy is its query_acc.

`record_gates` does this on many meta-validation episodes and keeps
everything in a `GateRecord`: gates [episodes, T, n_params], accuracies
[episodes, T+1], with per-layer views through `Learner.slices()`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from metalstm.learner import Learner
from metalstm.metalearner import InnerStep, inner_loop

# the layers of the paper's Figure 2: the four conv weights and the linear weight
LAYERS = ("conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "fc.weight")
LAYER_TITLES = {"conv1.weight": "conv 1", "conv2.weight": "conv 2", "conv3.weight": "conv 3",
                "conv4.weight": "conv 4", "fc.weight": "linear"}
GATES = ("forget", "input")


@dataclass
class EpisodeTrace:
    """One episode, step by step (T update steps, Q query images, N ways, P = n_params).

    forget, input   [T, P]         f_t, i_t of steps t = 1..T
    theta           [T+1, P]       theta_0 = c_0, theta_1, ..., theta_T
    grad            [T, P]         grad_t, the gradient fed to the rule at step t (at theta_{t-1})
    query_logits    [T+1, Q, N]    the query pass at theta_t (running averages, paper notes 7)
    query_acc       [T+1]          its accuracy; query_acc[T] = run_episode(mode="test").query_acc
    query_loss      [T+1]
    support_loss    [T]            L_t, the loss fed to the meta-learner at step t
    batches         T index tensors: the support examples of each step's mini-batch
    """

    forget: Tensor
    input: Tensor
    theta: Tensor
    grad: Tensor
    query_logits: Tensor
    query_acc: Tensor
    query_loss: Tensor
    support_loss: Tensor
    batches: list[Tensor]

    @property
    def steps(self) -> int:
        return self.forget.shape[0]


@torch.no_grad()
def trace_episode(learner: Learner, rule, episode, steps: int, batch_size: int,
                  generator: torch.Generator | None = None) -> EpisodeTrace:
    """`run_episode(mode="test")` one step at a time, keeping gates and query results after every step.

    It runs the same `inner_loop` (same mini-batches from `generator`, same updates, same
    batch-norm protocol: a fresh BNStats, batch statistics in the support passes, running
    averages in the query passes) with a hook that does a query pass after every update.
    """
    stats = learner.new_bn_stats(episode.support_x.device)
    forget, input_, thetas, grads, logits, support_loss, batches = [], [], [rule.c0.detach()], [], [], [], []

    def query_pass(theta):
        logits.append(learner(episode.query_x, theta, bn="running", stats=stats))

    def keep(step: InnerStep) -> None:
        if step.t == 1:
            query_pass(step.theta_prev)    # theta_0 with the averages of the first support pass
        forget.append(step.gates.f.detach())
        input_.append(step.gates.i.detach())
        thetas.append(step.theta.detach())
        grads.append(step.grad)
        support_loss.append(step.loss)
        batches.append(step.batch.cpu())
        query_pass(step.theta)

    theta, _, _ = inner_loop(learner, rule, episode.support_x, episode.support_y, steps, batch_size,
                             bn="batch", stats=stats, generator=generator, hook=keep)
    if not batches:                    # T = 0: theta_0 with fresh averages, as run_episode would
        query_pass(theta)
    logits = torch.stack(logits)
    y = episode.query_y
    empty = theta.new_zeros(0, theta.shape[0])
    stack = lambda values: torch.stack(values) if values else empty        # noqa: E731
    return EpisodeTrace(
        forget=stack(forget), input=stack(input_), theta=torch.stack(thetas), grad=stack(grads),
        query_logits=logits, query_acc=(logits.argmax(dim=2) == y).float().mean(dim=1),
        query_loss=torch.stack([F.cross_entropy(step_logits, y) for step_logits in logits]),
        support_loss=torch.stack(support_loss) if support_loss else theta.new_zeros(0),
        batches=batches)


@dataclass
class GateRecord:
    """Gates and progress of a meta-learner on E episodes of T steps (paper notes 10).

    forget, input   [E, T, P]   f_t, i_t of every coordinate
    query_acc       [E, T+1]    query accuracy of theta_0 ... theta_T
    query_loss      [E, T+1]
    support_loss    [E, T]
    episodes        the E episode indices (of the sampler the record was made from)
    slices          layer name -> slice of theta (Learner.slices())
    name, k_shot, n_way   e.g. "glyphs-5shot", K and N, for titles
    forgotten       [E, P]      sum_t (1 - f_t) * theta_{t-1}: what the forget gate took off theta
    moved           [E, P]      theta_T - theta_0: the whole change the inner loop made
                                (theta_T = theta_0 - forgotten - sum_t i_t * grad_t)
    stepped_theta   [E, P]      sum_t i_t * theta_{t-1}: what a weight decay lambda, added to the
                                gradient (grad_t + lambda theta_{t-1}), would take off: lambda times this
    grad            [E, T, P]   grad_t, what the gates read (record_gates(..., inputs=True) only)
    theta           [E, T+1, P] theta_0 ... theta_T (inputs=True only)
    """

    forget: Tensor
    input: Tensor
    query_acc: Tensor
    query_loss: Tensor
    support_loss: Tensor
    episodes: list[int]
    slices: dict[str, slice]
    name: str = ""
    k_shot: int = 0
    n_way: int = 0
    forgotten: Tensor | None = None
    moved: Tensor | None = None
    stepped_theta: Tensor | None = None
    grad: Tensor | None = None
    theta: Tensor | None = None

    @property
    def steps(self) -> int:
        return self.forget.shape[1]

    @property
    def label(self) -> str:
        return f"{self.k_shot}-shot" if self.k_shot else self.name

    def gate(self, gate: str) -> Tensor:
        """'forget' or 'input' -> [E, T, P]."""
        if gate not in GATES:
            raise ValueError(f"gate must be 'forget' or 'input', got {gate!r}")
        return self.forget if gate == "forget" else self.input

    def layer(self, name: str, gate: str) -> Tensor:
        """The gate values of one layer's coordinates: [E, T, n_layer]."""
        if name not in self.slices:
            raise ValueError(f"unknown layer {name!r}; the learner has {', '.join(self.slices)}")
        return self.gate(gate)[:, :, self.slices[name]]

    def coordinate(self, name: str, gate: str, index: int) -> Tensor:
        """One coordinate (index inside the layer) over episodes and steps: [E, T]."""
        return self.layer(name, gate)[:, :, index]

    def band(self, name: str, gate: str, q: tuple[float, ...] = (0.1, 0.5, 0.9)) -> Tensor:
        """Quantiles over all coordinates of the layer and all episodes, per step: [len(q), T]."""
        values = self.layer(name, gate).transpose(0, 1).flatten(1)            # [T, E * n_layer]
        return torch.quantile(values.double(), torch.tensor(q, dtype=torch.float64), dim=1).float()


def pick_coordinates(slices: dict[str, slice], layers=LAYERS, seed: int = 0) -> dict[str, int]:
    """One fixed coordinate per layer (an index inside that layer), chosen with `seed` (Figure 2)."""
    g = torch.Generator().manual_seed(seed)
    return {name: int(torch.randint(slices[name].stop - slices[name].start, (1,), generator=g))
            for name in layers}


def record_gates(learner: Learner, metalearner, sampler, cfg, episodes: int | range | list = 20,
                 device: str | torch.device = "cpu", progress: bool = True, inputs: bool = False) -> GateRecord:
    """Run the trained meta-learner (meta-test protocol) on meta-validation episodes and keep
    f_t, i_t of every coordinate and the query accuracy after every step (paper notes 10).

    sampler: e.g. `metalstm.episodes.sampler_for(cfg, "val")`; episodes: the first n, or indices.
    Episode i's mini-batches come from `episode_generator(sampler.seed, i)`, as in
    `metalstm.evaluate.evaluate_rule`, so the last step's accuracies are the ones it reports.
    inputs=True also keeps every grad_t and theta_t (`metalstm.distill` and
    `metalstm.viz.mechanism` fit and explain the gates with them).
    """
    from metalstm.episodes import episode_generator

    indices = list(range(episodes)) if isinstance(episodes, int) else [int(i) for i in episodes]
    if not indices:
        raise ValueError("record_gates needs at least one episode")
    traces = []
    for i in tqdm(indices, desc=f"recording {cfg.name}", leave=False, disable=None if progress else True):
        traces.append(trace_episode(learner, metalearner, sampler[i].to(device), cfg.steps, cfg.batch_size,
                                    generator=episode_generator(sampler.seed, i)))
    stack = lambda field: torch.stack([getattr(t, field).cpu() for t in traces])   # noqa: E731
    forgotten = torch.stack([((1 - t.forget) * t.theta[:-1]).sum(dim=0).cpu() for t in traces])
    moved = torch.stack([(t.theta[-1] - t.theta[0]).cpu() for t in traces])
    stepped_theta = torch.stack([(t.input * t.theta[:-1]).sum(dim=0).cpu() for t in traces])
    return GateRecord(forget=stack("forget"), input=stack("input"), query_acc=stack("query_acc"),
                      query_loss=stack("query_loss"), support_loss=stack("support_loss"),
                      episodes=indices, slices=learner.slices(), name=cfg.name, k_shot=cfg.k_shot,
                      n_way=cfg.n_way, forgotten=forgotten, moved=moved,
                      stepped_theta=stepped_theta,
                      grad=stack("grad") if inputs else None, theta=stack("theta") if inputs else None)


def gate_summary(record: GateRecord, layers=LAYERS) -> list[dict]:
    """Per layer, numbers to read Figure 2 by (paper notes 10). One dict per layer with

    forget_mean, input_mean      mean over coordinates, steps and episodes
    forget_p10/p90, input_p10/p90  10% and 90% quantiles over the same values
    forget_std, input_std        their standard deviation
    forget_episode_std, input_episode_std
        how much a coordinate's gate differs BETWEEN episodes: the std over
        episodes of each (coordinate, step), averaged over coordinates and steps
    forget_min                   the smallest forget gate anywhere in the layer
    """
    rows = []
    for name in layers:
        row = {"layer": name}
        for gate in GATES:
            values = record.layer(name, gate).double()                        # [E, T, n]
            flat = values.flatten()
            sample = flat[:: -(-flat.numel() // 2**24)]      # torch.quantile takes at most 2**24 values
            p10, p90 = torch.quantile(sample, torch.tensor([0.1, 0.9], dtype=torch.float64)).tolist()
            row.update({f"{gate}_mean": flat.mean().item(), f"{gate}_std": flat.std().item(),
                        f"{gate}_p10": p10, f"{gate}_p90": p90,
                        f"{gate}_episode_std": (values.std(dim=0).mean().item()
                                                if values.shape[0] > 1 else 0.0)})
        row["forget_min"] = record.layer(name, "forget").min().item()
        rows.append(row)
    return rows


def variance_shares(record: GateRecord, name: str, gate: str) -> dict[str, float]:
    """Where a layer's gate values vary: shares of their total variance (summing to 1) explained by

    step        the step t alone: a schedule shared by every episode and coordinate
    episode     the episode, at a given step: what differs between data sets
    coordinate  the coordinate, within an episode and step

    (the sums of squares about the grand mean, the step means and the (episode, step) means)
    """
    v = record.layer(name, gate).double()                                   # [E, T, n]
    step_mean = v.mean(dim=(0, 2), keepdim=True)                            # [1, T, 1]
    cell_mean = v.mean(dim=2, keepdim=True)                                 # [E, T, 1]
    e, _, n = v.shape
    parts = {"step": ((step_mean - v.mean()) ** 2).sum() * e * n,
             "episode": ((cell_mean - step_mean) ** 2).sum() * n,
             "coordinate": ((v - cell_mean) ** 2).sum()}
    total = sum(parts.values())
    return {k: (p / total).item() if total > 0 else 0.0 for k, p in parts.items()}


# -- the strategy in numbers (notebook 06, section 6) --------------------------------
def step_sizes(record: GateRecord, layer: str) -> Tensor:
    """The input gate as a step size: its median over the layer's coordinates, for every
    episode and step, [E, T] (a per-step learning rate, comparable with SGD's alpha)."""
    return record.layer(layer, "input").double().median(dim=2).values


def retained_fraction(record: GateRecord, layer: str) -> Tensor:
    """prod_t f_t, the part of theta_0 that the T steps' forgetting leaves, averaged over
    the layer's coordinates: one number per episode, [E]."""
    return record.layer(layer, "forget").double().prod(dim=1).mean(dim=1)


def implied_weight_decay(record: GateRecord, layer: str) -> Tensor:
    """lambda_t = (1 - f_t) / i_t, the weight decay of the update written as
        theta_t = theta_{t-1} - i_t * (grad_t + lambda_t * theta_{t-1}):
    its median over the layer's coordinates and the episodes, for every step, [T]."""
    f, i = record.layer(layer, "forget").double(), record.layer(layer, "input").double()
    return ((1 - f) / i).transpose(0, 1).flatten(1).median(dim=1).values


def forgetting_share(record: GateRecord, layer: str) -> Tensor:
    """How much of the inner loop's change to the layer the forget gate made, per episode, [E]:
    ||sum_t (1 - f_t) theta_{t-1}|| / ||theta_T - theta_0|| over the layer's coordinates
    (0: plain gradient steps; a weight decay that matters makes it a few percent or more)."""
    return _share_of_change(record, layer, record.forgotten)


def weight_decay_share(record: GateRecord, layer: str, decay: float) -> Tensor:
    """The same share for a usual weight decay `decay` (e.g. 5e-4) at the meta-learner's own step
    sizes, i.e. f_t = 1 - i_t * decay: ||decay * sum_t i_t theta_{t-1}|| / ||theta_T - theta_0||, [E]
    (to first order: the decay would change the path a little too)."""
    return decay * _share_of_change(record, layer, record.stepped_theta)


def _share_of_change(record: GateRecord, layer: str, part_of_change: Tensor | None) -> Tensor:
    if part_of_change is None or record.moved is None:
        raise ValueError("this record does not hold the parts of theta's change (make it with record_gates)")
    part = record.slices[layer]
    return (part_of_change[:, part].double().norm(dim=1)
            / record.moved[:, part].double().norm(dim=1).clamp_min(1e-30))


def format_summary(*records: GateRecord, layers=LAYERS) -> str:
    """A plain-text table of `gate_summary` for one or more records, one line per (record, layer)."""
    head = (f"{'':8} {'layer':7} {'forget mean':>11} {'10%-90%':>15} {'min':>7}   "
            f"{'input mean':>10} {'10%-90%':>15} {'between-episode std':>22}")
    lines = [head, "-" * len(head)]
    for record in records:
        for row in gate_summary(record, layers):
            lines.append(
                f"{record.label:8} {LAYER_TITLES.get(row['layer'], row['layer']):7} "
                f"{row['forget_mean']:11.4f} {row['forget_p10']:7.4f}-{row['forget_p90']:.4f} "
                f"{row['forget_min']:7.4f}   {row['input_mean']:10.4f} "
                f"{row['input_p10']:7.4f}-{row['input_p90']:.4f} "
                f"{'f %.5f / i %.5f' % (row['forget_episode_std'], row['input_episode_std']):>22}")
    return "\n".join(lines)
