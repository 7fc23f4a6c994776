"""The learner: a small conv net written as a pure function f(x; theta) (paper notes 2, 7).

    4 x [conv 3x3 (32 filters, padding 1) -> batch norm -> ReLU -> 2x2 max-pool]
    -> flatten -> linear to n_way logits

All its parameters live in ONE flat vector theta, because theta is the
meta-learner's cell state (paper notes 3): the meta-learner produces theta_t, and the
learner is evaluated at theta_t by slicing views out of it. No module holds a
copy of the weights, so the query loss can backpropagate through theta_T,
theta_{T-1}, ... to c_0 and the meta-learner's weights.

Batch norm inside episodes (paper notes 7) is explicit, never a hidden module mode:
    bn="batch"    normalise with the batch's own statistics; if a `BNStats` is
                  given, also update its running averages (PyTorch convention:
                  running = (1 - momentum) * running + momentum * batch).
    bn="running"  normalise with the running averages of a `BNStats` - the
                  meta-test query pass, where each prediction then depends only
                  on its own image and the support set.
A `BNStats` belongs to one episode: make a fresh one per episode
(`Learner.new_bn_stats`), so statistics never leak from one episode to the next.

path (Config.path, `--path`): "fused" and "native" (the default is "fused") pool through a
channels-last kernel (`relu_max_pool`, exactly the same numbers); "reference" runs the plain
F.max_pool2d(F.relu(x), 2), the readable path.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalstm.config import check_path


class _PoolChannelsLast(torch.autograd.Function):
    """2x2 max-pool through PyTorch's channels-last CPU kernel (vectorised over channels;
    faster than the default-layout kernel: docs/speed.md), with the same indices and
    hence the same gradient as F.max_pool2d."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y, idx = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2, return_indices=True)
        ctx.save_for_backward(idx)
        ctx.in_shape = x.shape
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> Tensor:
        (idx,) = ctx.saved_tensors
        b, c, h, w = ctx.in_shape
        grad_x = grad_y.new_zeros(b * c, h * w)   # each output's gradient goes to its argmax
        grad_x.scatter_(1, idx.reshape(b * c, -1), grad_y.reshape(b * c, -1))
        return grad_x.view(b, c, h, w)


def relu_max_pool(x: Tensor) -> Tensor:
    """max_pool2d(relu(x), 2), computed as relu(max_pool2d(x, 2)) - the two commute, and
    the ReLU then touches 4x fewer values. On a CPU the pooling runs through the
    channels-last kernel (`_PoolChannelsLast`); values and gradients are exactly those
    of F.max_pool2d(F.relu(x), 2) (tested)."""
    if x.device.type != "cpu":
        return F.relu(F.max_pool2d(x, 2))
    if x.requires_grad and torch.is_grad_enabled():
        return F.relu(_PoolChannelsLast.apply(x))
    return F.relu(F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous())


def all_finite(x: Tensor) -> bool:
    """Whether every value of x is finite (no NaN, no infinity); integer tensors' values always are.

    One sum, not an isfinite mask: a NaN or an infinity makes the sum NaN or infinite, so a
    finite sum proves every value finite (about 15x cheaper than torch.isfinite(x).all() on a CPU).
    Only when the sum is not finite, which finite values that overflow can also cause, does the
    exact test decide."""
    if not x.is_floating_point() or x.numel() == 0:
        return True
    x = x.detach()
    total = x.sum(dtype=torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x.sum()
    return math.isfinite(total.item()) or bool(torch.isfinite(x).all())


@dataclass
class BNStats:
    """Running averages of every batch-norm layer for ONE episode (paper notes 7).

    mean[k], var[k]: float tensors [n_filters] of block k+1; start at 0 and 1.
    updates: how many batches have been averaged in so far.
    """

    mean: list[Tensor]
    var: list[Tensor]
    updates: int = 0


def check_call(learner, x: Tensor, theta: Tensor, bn: str, stats: BNStats | None,
               stats_kind: str = "BNStats") -> None:
    """The checks of a learner's f(x; theta) call, one ValueError each: bn is "batch" or
    "running" (which needs stats, a `stats_kind` of the episode), x is [b, in_channels,
    image_size, image_size] of theta's dtype, and finite."""
    if bn not in ("batch", "running"):
        raise ValueError(f"bn must be 'batch' or 'running', got {bn!r}")
    if bn == "running" and stats is None:
        raise ValueError("bn='running' normalises with running averages: pass stats= "
                         f"(the episode's {stats_kind}, filled during the support steps)")
    expected = (learner.in_channels, learner.image_size, learner.image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"the learner expects images [b, {expected[0]}, {expected[1]}, {expected[2]}], "
                         f"got {tuple(x.shape)}")
    if x.dtype != theta.dtype:
        raise ValueError(f"the learner expects images of theta's dtype {theta.dtype}, got {x.dtype} "
                         f"(convert them, e.g. x.to(theta.dtype); uint8 pixels: x.float() / 255)")
    if not all_finite(x):                    # one sum per call: ~0.1% of the forward pass it guards
        raise ValueError("images hold NaN or infinity; they must be finite")


class FlatParameters:
    """theta, the learner's parameters as one flat vector: `layout` lists (name, shape) in order,
    `_sizes` their numbers of elements and `n_params` their sum (set by the learner)."""

    layout: list[tuple[str, tuple[int, ...]]]
    _sizes: list[int]
    n_params: int

    def slices(self) -> dict[str, slice]:
        """name -> slice of theta that holds that tensor."""
        out, start = {}, 0
        for (name, _), size in zip(self.layout, self._sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """name -> view of theta in that tensor's shape (keeps the autograd graph)."""
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must be a flat vector of {self.n_params} parameters, "
                             f"got shape {tuple(theta.shape)}")
        # one split (its backward is a single concatenation), then views
        return {name: part.view(shape)
                for (name, shape), part in zip(self.layout, theta.split(self._sizes))}


class Learner(FlatParameters):
    """4 x [conv3x3(32, pad 1) -> BN -> ReLU -> maxpool 2] -> linear to n_way logits, as f(x; theta) (paper notes 2).

    `Learner` holds only the architecture (shapes, BN eps and momentum), never
    parameters: call it as ``learner(x, theta)`` with a flat theta [n_params].
    84x84x3 gives 32*5*5 = 800 features and 32,901 parameters for 5 ways;
    28x28x1 gives 32*1*1 = 32 features.
    """

    def __init__(self, n_way: int = 5, in_channels: int = 1, image_size: int = 28,
                 n_filters: int = 32, n_blocks: int = 4, bn_eps: float = 1e-3,
                 bn_momentum: float = 0.95, path: str = "fused") -> None:
        for name, value in (("n_way", n_way), ("in_channels", in_channels), ("image_size", image_size),
                            ("n_filters", n_filters), ("n_blocks", n_blocks)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        side = image_size
        for _ in range(n_blocks):
            side //= 2                       # 3x3 conv with padding 1 keeps the size; the pool halves it
        if side == 0:
            raise ValueError(f"image_size {image_size} is too small for {n_blocks} blocks of 2x2 "
                             f"max-pooling (needs at least {2 ** n_blocks})")
        if not isinstance(bn_momentum, numbers.Real) or not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum!r}")
        if not isinstance(bn_eps, numbers.Real) or not 0.0 < bn_eps < float("inf"):
            raise ValueError(f"bn_eps must be a finite number > 0 (it keeps batch norm's division "
                             f"finite), got {bn_eps!r}")
        self.n_way, self.in_channels, self.image_size = n_way, in_channels, image_size
        self.n_filters, self.n_blocks = n_filters, n_blocks
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum
        check_path(path)
        self.path = path                     # "reference": plain pooling, the readable path
        self.n_features = n_filters * side * side

        self.layout: list[tuple[str, tuple[int, ...]]] = []
        c_in = in_channels
        for k in range(1, n_blocks + 1):
            self.layout += [(f"conv{k}.weight", (n_filters, c_in, 3, 3)), (f"conv{k}.bias", (n_filters,)),
                            (f"bn{k}.weight", (n_filters,)), (f"bn{k}.bias", (n_filters,))]
            c_in = n_filters
        self.layout += [("fc.weight", (n_way, self.n_features)), ("fc.bias", (n_way,))]
        self._sizes = [math.prod(shape) for _, shape in self.layout]
        self.n_params: int = sum(self._sizes)


    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A fresh flat float32 theta: PyTorch's default init for Conv2d/Linear
        (kaiming-uniform weights, a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
        biases likewise), batch-norm weight 1 and bias 0. Deterministic given `generator`."""
        theta = torch.empty(self.n_params)
        parts, shapes = self.unflatten(theta), dict(self.layout)
        for name in parts:
            layer, kind = name.split(".")
            if layer.startswith("bn"):
                parts[name].fill_(1.0 if kind == "weight" else 0.0)
            else:   # fan_in of a conv / linear layer: everything but its output dimension
                fan_in = math.prod(shapes[f"{layer}.weight"][1:])
                parts[name].uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
        return theta

    def new_bn_stats(self, device: torch.device | str | None = None) -> BNStats:
        """Fresh running averages (mean 0, var 1) for one episode."""
        return BNStats(mean=[torch.zeros(self.n_filters, device=device) for _ in range(self.n_blocks)],
                       var=[torch.ones(self.n_filters, device=device) for _ in range(self.n_blocks)])

    # -- the function f(x; theta) ----------------------------------------------
    def _forward(self, x: Tensor, theta: Tensor, bn: str, stats: BNStats | None) -> tuple[Tensor, dict]:
        """(flattened features, theta's views) - the conv blocks of f(x; theta)."""
        check_call(self, x, theta, bn, stats)
        p = self.unflatten(theta)
        training = bn == "batch"
        for k in range(1, self.n_blocks + 1):
            x = F.conv2d(x, p[f"conv{k}.weight"], p[f"conv{k}.bias"], padding=1)
            # training=True: batch statistics (and the running averages updated in place, when given);
            # training=False: the running averages
            x = F.batch_norm(x, None if stats is None else stats.mean[k - 1],
                             None if stats is None else stats.var[k - 1],
                             p[f"bn{k}.weight"], p[f"bn{k}.bias"], training=training,
                             momentum=self.bn_momentum, eps=self.bn_eps)
            # ReLU and 2x2 max-pool; the fast path computes the same numbers (tested)
            x = F.max_pool2d(F.relu(x), 2) if self.path == "reference" else relu_max_pool(x)
        if stats is not None and training:
            stats.updates += 1
        return x.flatten(1), p

    def features(self, x: Tensor, theta: Tensor, bn: str = "batch", stats: BNStats | None = None) -> Tensor:
        """The flattened conv features [b, n_features] before the linear layer."""
        return self._forward(x, theta, bn, stats)[0]

    def __call__(self, x: Tensor, theta: Tensor, bn: str = "batch", stats: BNStats | None = None) -> Tensor:
        """Logits [b, n_way] of f(x; theta)."""
        h, p = self._forward(x, theta, bn, stats)
        return F.linear(h, p["fc.weight"], p["fc.bias"])

    # -- the same network as an ordinary module ----------------------------------
    def to_module(self, theta: Tensor) -> nn.Module:
        """An ordinary nn.Module with theta's weights (a copy), for baselines and for
        checking f(x; theta) against PyTorch's own layers. Its parameters, in order,
        flatten back to theta; in train() mode its batch norm uses batch statistics
        (bn="batch"), in eval() mode its running averages (bn="running")."""
        module = LearnerModule(self).to(theta.device)
        with torch.no_grad():
            for param, part in zip(module.parameters(), theta.detach().split(self._sizes)):
                param.copy_(part.view_as(param))
        return module

    def __repr__(self) -> str:
        return (f"Learner({self.n_way}-way, {self.in_channels}x{self.image_size}x{self.image_size}, "
                f"{self.n_blocks} blocks of {self.n_filters} filters, {self.n_params:,} parameters)")


class LearnerModule(nn.Module):
    """The learner's architecture as nn layers (see `Learner.to_module`)."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        self.n_blocks, self.path = learner.n_blocks, learner.path
        c_in = learner.in_channels
        for k in range(1, learner.n_blocks + 1):   # registration order = Learner.layout order
            setattr(self, f"conv{k}", nn.Conv2d(c_in, learner.n_filters, 3, padding=1))
            setattr(self, f"bn{k}", nn.BatchNorm2d(learner.n_filters, eps=learner.bn_eps,
                                                   momentum=learner.bn_momentum))
            c_in = learner.n_filters
        self.fc = nn.Linear(learner.n_features, learner.n_way)

    def features(self, x: Tensor) -> Tensor:
        for k in range(1, self.n_blocks + 1):
            x = getattr(self, f"conv{k}")(x)
            x = getattr(self, f"bn{k}")(x)
            x = F.max_pool2d(F.relu(x), 2) if self.path == "reference" else relu_max_pool(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
