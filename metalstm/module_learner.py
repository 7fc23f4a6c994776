"""Bring your own network: any `torch.nn.Module` as the learner f(x; theta) (paper notes 2, 7).

The meta-learner needs the learner as a pure function of ONE flat parameter vector theta (its
cell state, paper notes 3). `ModuleLearner` makes that function out of an ordinary module,
through `torch.func.functional_call`:

    theta [n_params]  --split, in module.named_parameters() order-->  {name: view in its shape}
    logits = functional_call(module, {params from theta, the episode's batch-norm buffers}, x)

No parameter of the module is read: every call runs at the theta it is given, so the query loss
backpropagates through theta_T ... theta_1 to c_0, as with `metalstm.learner.Learner`.

Batch norm inside episodes (paper notes 7) is applied to every BatchNorm (and any norm layer
that tracks running statistics) of the module, exactly as `Learner` applies it to its own:
    bn="batch"    the module in training mode: each such layer normalises with the batch's own
                  statistics; with a `ModuleBNStats` given, its running averages (and counts)
                  are updated in place, with the layer's own momentum and eps (PyTorch's rule:
                  running = (1 - momentum) * running + momentum * batch); without one, nothing
                  is updated.
    bn="running"  the module in evaluation mode, normalising with the running averages of the
                  `ModuleBNStats` - the meta-test query pass.
The module's own buffers are never read or written for these layers: the averages live in a
`ModuleBNStats` that belongs to ONE episode (`new_bn_stats`). Other modules that behave
differently in training and evaluation mode (dropout) follow the same switch: training mode in
"batch" passes, evaluation mode in "running" ones. Layers that track no running statistics
(GroupNorm, LayerNorm, BatchNorm with track_running_stats=False) normalise per call in both.

Example (learn2learn style: wrap, then call at any theta):

    >>> import torch
    >>> from torch import nn
    >>> from metalstm.module_learner import ModuleLearner
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    >>> learner = ModuleLearner(net, n_way=5, in_channels=1, image_size=28)
    >>> theta = learner.init_params(torch.Generator().manual_seed(0))
    >>> theta.shape, learner.n_params
    (torch.Size([141]), 141)
    >>> stats = learner.new_bn_stats()
    >>> x = torch.rand(10, 1, 28, 28)
    >>> learner(x, theta, bn="batch", stats=stats).shape        # a support pass: averages updated
    torch.Size([10, 5])
    >>> learner(x[:1], theta, bn="running", stats=stats).shape  # a query image, on its own
    torch.Size([1, 5])
"""
from __future__ import annotations

import copy
import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _NormBase

from metalstm.learner import BNStats, FlatParameters, check_call

__all__ = ["ModuleBNStats", "ModuleLearner", "load_factory", "FACTORY_PATTERN"]

# norm layers: their affine parameters count as part of the layer before them (layer_index)
_NORMS = (_NormBase, nn.GroupNorm, nn.LayerNorm)

# "package.module:function", the form of Config.learner for a network of one's own
FACTORY_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


@dataclass
class ModuleBNStats(BNStats):
    """Running averages of every tracking norm layer of a wrapped module, for ONE episode.

    mean[k], var[k]: float tensors [num_features] of the k-th such layer in module order
    (start at 0 and 1, as `BNStats`); counts[k]: its num_batches_tracked (int64 scalar, used by
    layers built with momentum=None, a cumulative average); updates: batches averaged so far.
    """

    counts: list[Tensor] = field(default_factory=list)


class ModuleLearner(FlatParameters):
    """Any nn.Module as f(x; theta), with `Learner`'s interface (see the module docstring).

    Arguments
    ---------
    module: the network, mapping images [b, in_channels, image_size, image_size] to logits
        [b, n_way]. It is deep-copied; the copy's parameters are never used (theta replaces
        them), the original is never touched.
    n_way, in_channels, image_size: the shapes it is used with (checked by one forward pass of
        two blank images at construction, so a network that does not fit is one ValueError).

    Attributes
    ----------
    n_params: the length of theta; layout: [(parameter name, shape)] in theta's order (that of
    module.named_parameters()); norm_layers: the names of the layers under the batch-norm protocol.
    """

    def __init__(self, module: nn.Module, n_way: int = 5, in_channels: int = 1, image_size: int = 28) -> None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"the learner must be a torch.nn.Module, got {type(module).__name__}")
        for name, value in (("n_way", n_way), ("in_channels", in_channels), ("image_size", image_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.n_way, self.in_channels, self.image_size = n_way, in_channels, image_size
        self.module = copy.deepcopy(module).cpu()
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in self.module.parameters()):
            with torch.no_grad():            # lazy layers (nn.LazyLinear ...) take their shapes from a pass
                try:
                    self.module(torch.zeros(2, in_channels, image_size, image_size))
                except (RuntimeError, ValueError, TypeError) as exc:
                    raise ValueError(f"the learner module fails on images [2, {in_channels}, {image_size}, "
                                     f"{image_size}]: {str(exc).strip().splitlines()[0]}") from None
        self.layout: list[tuple[str, tuple[int, ...]]] = [
            (name, tuple(p.shape)) for name, p in self.module.named_parameters()]
        if not self.layout:
            raise ValueError("the learner module has no parameters to adapt")
        self._sizes = [math.prod(shape) for _, shape in self.layout]
        self.n_params: int = sum(self._sizes)
        # the layers under the episode batch-norm protocol: norm layers that track running statistics
        self.norm_layers: list[str] = [name for name, m in self.module.named_modules()
                                       if isinstance(m, _NormBase) and m.track_running_stats]
        self._norm_widths = [self.module.get_submodule(n).num_features for n in self.norm_layers]
        norm_buffers = {f"{n}.{b}" for n in self.norm_layers
                        for b in ("running_mean", "running_var", "num_batches_tracked")}
        self._other_buffers = {name: b for name, b in self.module.named_buffers() if name not in norm_buffers}
        self._buffers_on: dict[torch.device, dict[str, Tensor]] = {}
        with torch.no_grad():                # one blank pass: does the network fit these shapes?
            x = torch.zeros(2, in_channels, image_size, image_size)
            try:
                out = self(x, self.init_params(torch.Generator().manual_seed(0)), bn="batch")
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ValueError(f"the learner module fails on images [2, {in_channels}, {image_size}, "
                                 f"{image_size}]: {str(exc).strip().splitlines()[0]}") from None
        if not isinstance(out, Tensor) or tuple(out.shape) != (2, n_way):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the learner module must map images [b, {in_channels}, {image_size}, "
                             f"{image_size}] to logits [b, {n_way}]; for b = 2 it gives {got}")

    # -- the flat parameter vector: slices() and unflatten() from FlatParameters --
    def flatten(self, module: nn.Module | None = None) -> Tensor:
        """theta [n_params] holding a module's parameters (of this architecture; default: the
        module as it was given), detached, float32."""
        params = dict((module if module is not None else self.module).named_parameters())
        return torch.cat([params[name].detach().reshape(-1).float().cpu() for name, _ in self.layout])

    def layer_index(self) -> tuple[Tensor, list[str]]:
        """(layer of every coordinate of theta [n_params], layer names), for the rungs with a step
        size per layer (metalstm.rules: schedule, magnitude): a layer is a module that owns
        parameters, and a norm layer's affine parameters belong to the layer before it (as the
        built-in learner's batch norm belongs to its conv block)."""
        index, names = torch.empty(self.n_params, dtype=torch.long), []
        for name, sl in self.slices().items():
            owner = name.rpartition(".")[0]
            is_norm = isinstance(self.module.get_submodule(owner), _NORMS)
            if not names or ((owner or "(top)") != names[-1] and not is_norm):
                names.append(owner or "(top)")
            index[sl] = len(names) - 1
        return index, names

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A fresh flat float32 theta: each submodule's own `reset_parameters()` (PyTorch's
        default init: for Conv2d and Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for norm layers
        weight 1 and bias 0), drawn from `generator` (deterministic given it, and advancing it
        as `Learner.init_params` does: on the built-in architecture both give the same theta).
        Parameters of modules without reset_parameters keep the values the module was given."""
        module = copy.deepcopy(self.module)
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.default_generator.set_state(generator.get_state())
            for m in module.modules():
                if hasattr(m, "reset_parameters") and m is not module:
                    m.reset_parameters()
            if generator is not None:
                generator.set_state(torch.default_generator.get_state())
        return self.flatten(module)

    def new_bn_stats(self, device: torch.device | str | None = None) -> ModuleBNStats:
        """Fresh running averages (mean 0, var 1, count 0) of every tracking norm layer, for one episode."""
        return ModuleBNStats(mean=[torch.zeros(w, device=device) for w in self._norm_widths],
                             var=[torch.ones(w, device=device) for w in self._norm_widths],
                             counts=[torch.zeros((), dtype=torch.long, device=device) for _ in self._norm_widths])

    # -- the function f(x; theta) ----------------------------------------------
    def _buffers(self, device: torch.device) -> dict[str, Tensor]:
        """The module's other buffers (not the norm layers' statistics) on `device`, copied once."""
        if device not in self._buffers_on:
            self._buffers_on[device] = {k: b.to(device) for k, b in self._other_buffers.items()}
        return self._buffers_on[device]

    def __call__(self, x: Tensor, theta: Tensor, bn: str = "batch", stats: BNStats | None = None) -> Tensor:
        """Logits [b, n_way] of f(x; theta) for images x [b, in_channels, image_size, image_size]."""
        check_call(self, x, theta, bn, stats, "ModuleBNStats")
        if stats is not None and len(stats.mean) != len(self.norm_layers):
            raise ValueError(f"stats hold {len(stats.mean)} layers' averages and this learner has "
                             f"{len(self.norm_layers)} norm layers: make them with its new_bn_stats()")
        tensors: dict[str, Tensor | None] = {**self.unflatten(theta), **self._buffers(x.device)}
        counts = getattr(stats, "counts", None)
        for k, name in enumerate(self.norm_layers):
            # no stats: None, so a training-mode layer uses the batch's statistics and updates nothing
            tensors[f"{name}.running_mean"] = None if stats is None else stats.mean[k]
            tensors[f"{name}.running_var"] = None if stats is None else stats.var[k]
            tensors[f"{name}.num_batches_tracked"] = None if counts is None else counts[k]
        training = bn == "batch"
        if self.module.training is not training:
            self.module.train(training)       # the private copy's mode: batch or running statistics
        logits = functional_call(self.module, tensors, (x,))
        if stats is not None and training:
            stats.updates += 1
        return logits

    # -- the same network as an ordinary module ----------------------------------
    def to_module(self, theta: Tensor) -> nn.Module:
        """A copy of the module holding theta's weights (detached), on theta's device."""
        module = copy.deepcopy(self.module).to(theta.device)
        with torch.no_grad():
            params = dict(module.named_parameters())
            for name, part in self.unflatten(theta.detach()).items():
                params[name].copy_(part)
        return module

    def __repr__(self) -> str:
        return (f"ModuleLearner({type(self.module).__name__}, {self.n_way}-way, {self.in_channels}x"
                f"{self.image_size}x{self.image_size}, {len(self.norm_layers)} batch-norm layers, "
                f"{self.n_params:,} parameters)")


def load_factory(spec: str) -> Callable:
    """The function named by "package.module:function" (Config.learner for a network of one's
    own), imported; one ValueError saying what is missing."""
    if not isinstance(spec, str) or not FACTORY_PATTERN.match(spec):
        raise ValueError(f"learner {spec!r} is neither the built-in network nor 'package.module:function'")
    module_name, function = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"learner {spec!r}: cannot import {module_name} ({exc}); it must be importable "
                         f"(installed, on PYTHONPATH, or in the current folder)") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ValueError(f"learner {spec!r}: {module_name} has no function {function}")
    return factory
