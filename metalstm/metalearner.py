"""The coordinate-wise Meta-Learner LSTM and the inner loop (paper notes 3, 4, 5, 6).

Gradient descent is an LSTM cell update (paper notes 3):

    theta_t = f_t * theta_{t-1} + i_t * (-grad_t)        c_t = f_t * c_{t-1} + i_t * c~_t

with the learner's parameters as the cell state c_t, the negative gradient as
the candidate c~_t, and f_t = 1, i_t = alpha for plain SGD (`SGDCell`). The
`MetaLearner` learns the gates instead, one small LSTM shared by every
coordinate of theta (the coordinates are the batch dimension, paper notes 4):

    layer 1, a standard LSTM (hidden 20, one bias), per coordinate:
        x_t = [preprocess(L_t) (2), preprocess(grad_t) (2)]
        [z_i, z_f, z_g, z_o] = W_1 [x_t, h_{t-1}] + b_1     # ONE matmul for all n coordinates:
                                                          # [80, 24] @ [24, n]
        c1_t = sigmoid(z_f) * c1_{t-1} + sigmoid(z_i) * tanh(z_g)
        h_t  = sigmoid(z_o) * tanh(c1_t)
    layer 2, the meta-LSTM cell, per coordinate:
        f_t = sigmoid(a_f),  a_f = W_F . [h_t, theta_{t-1}, f_{t-1}] + b_F     # W_F: 22 x 1
        i_t = sigmoid(a_i),  a_i = W_I . [h_t, theta_{t-1}, i_{t-1}] + b_I     # W_I: 22 x 1
        theta_t = f_t * theta_{t-1} + i_t * (-grad_t)              # the RAW gradient
    theta_0 = c_0, a meta-parameter (the learned initialisation).

Paper notes 3's equations let the gates read [grad_t, L_t, theta_{t-1}, gate_{t-1}]
directly; the paper's experiments (and the authors' code) put the first LSTM
layer in between, reading the preprocessed loss and gradient. That is what is
built here.

Meta-parameters: 80*24 + 80 = 2,000 (layer 1) + 2*22 + 2 = 46 (layer 2) = 2,046
for hidden 20, whatever the learner's size, plus c_0 (the learner's n_params).

Names and shapes (docs/paper.md, the glossary), a column per coordinate: layer 1's weight W1
[4H, 4 + H] and bias b1 [4H] (stored as `lstm_weight`, `lstm_bias`, nn.LSTMCell's names);
its pre-activations z [4H, n] = [z_i; z_f; z_g; z_o]; its state h, c [H, n]; layer 2's W_F,
W_I [H + 2], b_F, b_I [], pre-activations a_f, a_i [n] and gates f, i [n]; the fed-back
gates f_prev, i_prev [n] (`MetaLearnerState.f`, `.i`).

Three implementations of one step, chosen by `path` (Config.path, `--path`): "reference"
runs `MetaLearner.reference_step` below; "fused" (the default) and "native" run
`metalstm.fast` (a hand-written backward; C loops), imported only when a step needs them.

`inner_loop` runs T such steps on the support set; the loss and gradient fed to
the meta-learner are DETACHED (paper notes 5: no second derivatives), while theta_t
itself stays in the autograd graph, so the query loss of `run_episode`
backpropagates through theta_T ... theta_1 to c_0 and both layers.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalstm.config import check_path
from metalstm.learner import BNStats, Learner, all_finite
from metalstm.preprocess import preprocess


@dataclass
class Gates:
    """Forget and input gate of one update step, [n_params] each."""

    f: Tensor
    i: Tensor


class StepWeights(NamedTuple):
    """The meta-learner's weights as one step reads them (paper notes 4): layer 1's W1 [4H, 4 + H]
    (columns: pre(L_t) (2), pre(grad_t) (2), h (H); rows: the gates i, f, g, o, H each) and
    b1 [4H]; layer 2's W_F, W_I [H + 2] (reading [h, theta, previous gate]) and b_F, b_I []."""

    W1: Tensor
    b1: Tensor
    W_F: Tensor
    W_I: Tensor
    b_F: Tensor
    b_I: Tensor


@dataclass
class MetaLearnerState:
    """What the meta-learner carries from step t-1 to step t (theta itself is passed separately).

    h, c:  layer 1's hidden and cell state, [hidden, n_params] (a column per coordinate)
    f, i:  layer 2's previous forget / input gate, [n_params], as fed back
           (gate values, or pre-sigmoid logits with prev_gate="logit")
    """

    h: Tensor
    c: Tensor
    f: Tensor
    i: Tensor


class MetaLearner(nn.Module):
    """Two-layer coordinate-wise meta-learner (paper notes 3, 4, 6) with learned c_0.

    Initialisation (paper notes 6, as the authors' code): every weight and layer 1's
    bias U(-0.01, 0.01); forget bias b_F ~ U(4, 5), so f_t starts near 1;
    input bias b_I ~ U(-5, -4), so i_t starts near 0.01. The meta-learner thus
    begins as gradient descent with a small learning rate. c_0 starts at
    `theta0` (or `learner.init_params(generator)`).

    Previous gates f_0, i_0 start at 0, as in the authors' code. The paper
    writes the previous gate VALUE (i_{t-1}, f_{t-1}) into the gates' input;
    that is the default here (prev_gate="value"). The authors' Lua code feeds
    back the pre-sigmoid logits instead: prev_gate="logit".

    path picks the implementation of `step` (Config.path, `--path`): "reference" runs
    `reference_step`, the equations as written below, differentiated by autograd;
    "fused" (the default) `metalstm.fast.fused.fused_step`, the same equations with a
    hand-written backward pass and a meta-test step that keeps nothing; "native" that fused
    step as C loops (metalstm/fast/native.c) where they can run (CPU float32 and a C
    compiler), else as "fused". All three agree to rounding (tested); speeds: docs/speed.md.
    """

    def __init__(self, n_params: int, hidden: int = 20, p: float = 10.0,
                 forget_bias: tuple[float, float] = (4.0, 5.0), input_bias: tuple[float, float] = (-5.0, -4.0),
                 weight_range: float = 0.01, theta0: Tensor | None = None,
                 generator: torch.Generator | None = None, *, learner: Learner | None = None,
                 prev_gate: str = "value", path: str = "fused") -> None:
        super().__init__()
        if theta0 is None:
            if learner is None:
                raise ValueError("MetaLearner needs the learner's initial parameters for c_0: "
                                 "pass theta0=learner.init_params() (or learner=learner)")
            theta0 = learner.init_params(generator)
        if theta0.shape != (n_params,):
            raise ValueError(f"theta0 must be a flat vector of n_params={n_params} values, "
                             f"got shape {tuple(theta0.shape)}")
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ValueError(f"hidden (layer 1's size) must be a whole number >= 1, got {hidden!r}")
        if not 0 < p < float("inf"):
            raise ValueError(f"p (the preprocessing's scale, paper notes 4) must be a finite number > 0, got {p!r}")
        if prev_gate not in ("value", "logit"):
            raise ValueError(f"prev_gate must be 'value' (paper) or 'logit' (authors' code), got {prev_gate!r}")
        self.n_params, self.hidden, self.p, self.prev_gate = n_params, hidden, p, prev_gate
        self.path = path

        def uniform(shape, low, high):
            return nn.Parameter(torch.empty(shape).uniform_(low, high, generator=generator))

        r = weight_range
        # layer 1, laid out like nn.LSTMCell: rows = the gates i, f, g, o (hidden rows each),
        # columns = the input [x (4), h (hidden)]; ONE bias
        self.lstm_weight = uniform((4 * hidden, 4 + hidden), -r, r)
        self.lstm_bias = uniform((4 * hidden,), -r, r)
        # layer 2: W_F and W_I read [h_t (hidden), theta_{t-1} (1), previous gate (1)]
        self.W_F = uniform((hidden + 2,), -r, r)
        self.W_I = uniform((hidden + 2,), -r, r)
        self.b_F = uniform((), *forget_bias)
        self.b_I = uniform((), *input_bias)
        self.c0 = nn.Parameter(theta0.detach().clone().float())

    @property
    def path(self) -> str:
        """Which implementation runs `step`: "reference", "fused" or "native" (settable)."""
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        check_path(value)
        self._path = value

    def rule_parameters(self) -> list[nn.Parameter]:
        """The update rule's own parameters: everything but c0 (2,046 numbers for hidden 20)."""
        return [param for name, param in self.named_parameters() if name != "c0"]

    def weights(self) -> StepWeights:
        """The rule's weights under their names in the equations (W1 is `lstm_weight`, b1 `lstm_bias`)."""
        return StepWeights(W1=self.lstm_weight, b1=self.lstm_bias, W_F=self.W_F, W_I=self.W_I,
                           b_F=self.b_F, b_I=self.b_I)

    def initial_state(self) -> MetaLearnerState:
        """Zero layer-1 state and zero previous gates, one column per coordinate."""
        zeros = self.c0.new_zeros
        return MetaLearnerState(h=zeros(self.hidden, self.n_params), c=zeros(self.hidden, self.n_params),
                                f=zeros(self.n_params), i=zeros(self.n_params))

    def step(self, loss: Tensor, grad: Tensor, theta: Tensor,
             state: MetaLearnerState) -> tuple[Tensor, MetaLearnerState, Gates]:
        """One update theta_{t-1} -> theta_t from the (detached) loss L_t and gradient grad_t.

        One ValueError, before anything is computed, for a grad_t of another shape than theta's
        and for a loss or gradient with NaN or infinity (theta_t would be NaN: paper notes 4's
        preprocessing passes a NaN on to every gate)."""
        check_step_inputs(loss, grad, theta)
        if self.path == "reference":
            return self.reference_step(loss, grad, theta, state)
        from metalstm.fast.fused import fused_step      # the fast paths, loaded on first use
        theta, h, c, f, i, a_f, a_i = fused_step(loss, grad, theta, h=state.h, c=state.c, f_prev=state.f,
                                                 i_prev=state.i, weights=self.weights(), p=self.p,
                                                 native=self.path == "native")
        fed_back = (f, i) if self.prev_gate == "value" else (a_f, a_i)
        return theta, MetaLearnerState(h, c, *fed_back), Gates(f, i)

    def reference_step(self, loss: Tensor, grad: Tensor, theta: Tensor,
                       state: MetaLearnerState) -> tuple[Tensor, MetaLearnerState, Gates]:
        """`step` as plain tensor operations, differentiated by autograd (paper notes 3, 4).

        loss L_t [], grad grad_t [n], theta theta_{t-1} [n]; state.h, state.c [H, n], state.f,
        state.i (f_prev, i_prev) [n]. Returns theta_t [n], the next state, and the gates f, i."""
        n, H = theta.shape[0], self.hidden
        W1, b1, W_F, W_I, b_F, b_I = self.weights()
        f_prev, i_prev = state.f, state.i
        # layer 1: a standard LSTM over all n coordinates at once. Each coordinate is one COLUMN,
        # so that every gate below is a contiguous [H, n] block (fast elementwise ops).
        x = torch.cat([preprocess(loss, self.p).reshape(2, 1).expand(2, n),   # the loss, the same for all
                       preprocess(grad, self.p).T])                            # [4, n]
        z = torch.addmm(b1[:, None], W1, torch.cat([x, state.h]))             # [4H, n]
        z_i, z_f, z_g, z_o = z.chunk(4)
        c = torch.sigmoid(z_f) * state.c + torch.sigmoid(z_i) * torch.tanh(z_g)
        h = torch.sigmoid(z_o) * torch.tanh(c)
        # layer 2: the meta-LSTM cell, whose cell state is theta itself;
        # W_F . [h, theta, f_prev] written out term by term (no [H + 2, n] copy)
        a_f = W_F[:H] @ h + W_F[H] * theta + W_F[H + 1] * f_prev + b_F
        a_i = W_I[:H] @ h + W_I[H] * theta + W_I[H + 1] * i_prev + b_I
        f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
        theta = f * theta + i * (-grad)
        fed_back = (f, i) if self.prev_gate == "value" else (a_f, a_i)
        return theta, MetaLearnerState(h, c, *fed_back), Gates(f, i)


def set_path(path: str, *parts) -> None:
    """Run a learner and a rule built already on `path` ("reference", "fused" or "native"): what
    `Config.path` gives a model built from it. Rules without a meta-LSTM step (SGDCell and the
    ladder's other rungs) have no path of their own and are left as they are."""
    check_path(path)
    for part in parts:
        if isinstance(part, (Learner, MetaLearner)):
            part.path = path


class NonFiniteStepError(ValueError):
    """The loss or gradient handed to a step has NaN or infinity: a bad input, or (inside
    `inner_loop`, whose images are checked) an inner loop that diverged."""


def check_step_inputs(loss: Tensor, grad: Tensor, theta: Tensor) -> None:
    """One ValueError unless grad has theta's shape and the loss and every gradient value are finite.

    Cheap enough for every step: one sum of grad and the loss (a NaN or an infinity makes it
    non-finite) and one number read back; the exact tests run only when that sum is not finite."""
    if grad.shape != theta.shape:
        raise ValueError(f"grad has {grad.numel()} values, theta {theta.numel()}: grad_t must have theta's "
                         f"shape {tuple(theta.shape)}, got {tuple(grad.shape)}")
    if math.isfinite((grad.detach().sum() + loss.detach().sum()).item()):
        return
    bad = [] if all_finite(loss) else [f"the loss L_t is {loss.tolist()}"]
    if not all_finite(grad):
        count = int((~torch.isfinite(grad)).sum())
        bad.append(f"grad_t holds {count} NaN or infinite values of {grad.numel()}")
    if bad:                                    # else finite values whose sum overflowed: they are fine
        raise NonFiniteStepError(f"{' and '.join(bad)}; the loss and gradient of a step must be finite "
                                 f"(NaN or infinity in theta_(t-1) or in the images gives them)")


class SGDCell(nn.Module):
    """Plain SGD written as the same cell with fixed gates f = 1, i = lr (paper notes 3).

    c0 is the starting theta; it is not trained unless train_c0=True.
    """

    def __init__(self, theta0: Tensor, lr: float, *, train_c0: bool = False) -> None:
        super().__init__()
        self.lr = float(lr)
        self.c0 = nn.Parameter(theta0.detach().clone().float(), requires_grad=train_c0)

    def rule_parameters(self) -> list[nn.Parameter]:
        """SGD has no parameters of its own."""
        return []

    def initial_state(self) -> None:
        return None

    def step(self, loss: Tensor, grad: Tensor, theta: Tensor, state: None) -> tuple[Tensor, None, Gates]:
        f, i = torch.ones_like(theta), torch.full_like(theta, self.lr)
        return f * theta + i * (-grad), state, Gates(f, i)


# -- the inner loop (paper notes 5) -------------------------------------------------------
def check_steps(steps) -> None:
    """One ValueError unless steps is a whole number >= 0 (a Python or NumPy integer, not a bool)."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")


def check_examples(x: Tensor, y: Tensor, n_way: int | None, which: str) -> None:
    """One ValueError unless the `which` ("support", "query") images x are finite and the labels y
    are class numbers, one per image, in 0..n_way-1 (when n_way is known). Once per episode:
    one sum of the images, one min and max of the labels."""
    if not all_finite(x):
        raise ValueError(f"the {which} images hold NaN or infinity; they must be finite")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"the {which} labels must be class numbers in an integer tensor, got {y.dtype} "
                         f"(e.g. y.long())")
    if y.dim() != 1 or (x.dim() >= 1 and y.shape[0] != x.shape[0]):
        images = x.shape[0] if x.dim() else "?"
        raise ValueError(f"the {which} labels must be one per image, shape ({images},), got shape {tuple(y.shape)}")
    if n_way is not None and y.numel():
        low, high = torch.stack(torch.aminmax(y)).tolist()
        if low < 0 or high >= n_way:
            raise ValueError(f"the {which} labels must lie in 0..{n_way - 1} (the learner is {n_way}-way), "
                             f"got {low if low < 0 else high}")


def loss_and_grad(learner: Learner, x: Tensor, y: Tensor, theta: Tensor, bn: str = "batch",
                  stats: BNStats | None = None) -> tuple[Tensor, Tensor]:
    """L_t and grad_t = dL_t/dtheta of f(.; theta) on (x, y), both DETACHED (paper notes 5)."""
    with torch.enable_grad():
        theta = theta.detach().requires_grad_(True)     # a leaf: nothing flows back past it
        loss = F.cross_entropy(learner(x, theta, bn, stats), y)
        (grad,) = torch.autograd.grad(loss, theta)
    return loss.detach(), grad


def support_batches(n: int, batch_size: int, steps: int,
                    generator: torch.Generator | None = None) -> list[Tensor]:
    """Indices of the `steps` mini-batches: passes over the n support examples in
    chunks of batch_size, each pass in a fresh random order drawn from `generator`
    (in the given order when generator is None, as in the authors' code)."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and the support set's size {n}, got {batch_size}")
    check_steps(steps)
    batches: list[Tensor] = []
    while len(batches) < steps:
        order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
        batches += order.split(batch_size)
    return batches[:steps]


@dataclass
class InnerStep:
    """What `inner_loop` hands its hook after update t (t = 1..T):

    t            the step number, 1..T
    theta        theta_t, after the update (in the graph when meta-training)
    theta_prev   theta_{t-1}, the point where loss and grad were taken
    loss, grad   L_t and grad_t, detached (paper notes 5), on this step's mini-batch
    gates        f_t, i_t of the update (as the rule returned them)
    state        the rule's state after the step
    batch        the indices of the support examples in this step's mini-batch
    """

    t: int
    theta: Tensor
    theta_prev: Tensor
    loss: Tensor
    grad: Tensor
    gates: Gates
    state: object
    batch: Tensor


def inner_loop(learner: Learner, rule: nn.Module, support_x: Tensor, support_y: Tensor, steps: int,
               batch_size: int, theta0: Tensor | None = None, bn: str = "batch",
               stats: BNStats | None = None, generator: torch.Generator | None = None,
               record: bool = False,
               hook: Callable[[InnerStep], None] | None = None) -> tuple[Tensor, list[float], list[Gates] | None]:
    """T update steps of `rule` on the support set (paper notes 5): (theta_T, support losses, gates).

    theta_0 = theta0 or rule.c0. Each step feeds the detached loss and gradient of
    f(.; theta_{t-1}) on one mini-batch to rule.step; theta_t stays in the graph.
    With stats given, the support passes also accumulate its running averages.
    gates: one detached `Gates` per step when record=True, else None.
    hook: called as hook(InnerStep(t, theta_t, ...)) after every update - the one place
    where the gate recorder (metalstm.viz.trace_episode), the baselines' accuracy curves
    and notebook 06 look inside the loop. When it runs, `stats` hold the running
    averages of the t support passes so far.

    steps that is not a whole number >= 0, support images with NaN or infinity, or labels
    outside 0..learner.n_way-1 are one ValueError before the first step.
    """
    check_steps(steps)
    check_examples(support_x, support_y, getattr(learner, "n_way", None), "support")
    theta = rule.c0 if theta0 is None else theta0
    state = rule.initial_state()
    losses, gates = [], ([] if record else None)
    for t, idx in enumerate(support_batches(support_x.shape[0], batch_size, steps, generator), start=1):
        idx = idx.to(support_x.device)
        loss, grad = loss_and_grad(learner, support_x[idx], support_y[idx], theta, bn, stats)
        theta_prev = theta
        theta, state, g = rule.step(loss, grad, theta, state)
        losses.append(loss)
        if record:
            gates.append(Gates(g.f.detach(), g.i.detach()))
        if hook is not None:
            hook(InnerStep(t, theta, theta_prev, loss, grad, g, state, idx))
    return theta, torch.stack(losses).tolist() if losses else [], gates


@dataclass
class EpisodeResult:
    """What one episode gives: the query loss (connected to the meta-parameters in
    mode="train"), accuracy, theta_T, the support losses, the gates (record=True)."""

    query_loss: Tensor
    query_acc: float
    theta: Tensor
    support_losses: list[float]
    gates: list[Gates] | None
    query_logits: Tensor


def run_episode(learner: Learner, rule: nn.Module, episode, steps: int, batch_size: int,
                mode: str = "train", generator: torch.Generator | None = None,
                record: bool = False) -> EpisodeResult:
    """One episode: T steps on the support set, then the query pass (paper notes 5, 7).

    mode="train": batch statistics in the support steps and in the query pass; the
        query loss keeps the graph back to c_0 and the rule's weights.
    mode="test": the support steps use batch statistics and accumulate running
        averages in a FRESH BNStats (nothing carries over from another episode);
        the query pass normalises with them. No meta-graph is built.

    A bad steps, images with NaN or infinity or labels outside 0..learner.n_way-1 (query here,
    support in `inner_loop`) are one ValueError before any work.
    """
    check_steps(steps)
    check_examples(episode.query_x, episode.query_y, getattr(learner, "n_way", None), "query")
    if mode == "train":
        theta, losses, gates = inner_loop(learner, rule, episode.support_x, episode.support_y, steps,
                                          batch_size, bn="batch", generator=generator, record=record)
        logits = learner(episode.query_x, theta, bn="batch")
        query_loss = F.cross_entropy(logits, episode.query_y)
    elif mode == "test":
        stats = learner.new_bn_stats(episode.support_x.device)
        with torch.no_grad():
            theta, losses, gates = inner_loop(learner, rule, episode.support_x, episode.support_y, steps,
                                              batch_size, bn="batch", stats=stats, generator=generator,
                                              record=record)
            logits = learner(episode.query_x, theta, bn="running", stats=stats)
            query_loss = F.cross_entropy(logits, episode.query_y)
    else:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    accuracy = (logits.argmax(dim=1) == episode.query_y).float().mean().item()
    return EpisodeResult(query_loss, accuracy, theta, losses, gates, logits)
