"""Adapt a trained update rule to a few labelled images of your own, then predict (paper notes 5, 7).

Three lines from a shipped (or your own) checkpoint to predictions:

    model = metalstm.adapt.load("data/checkpoints/glyphs-5shot.pt")
    fitted = model.adapt(support_x, support_y)         # T steps of the learnt rule, no meta-gradient
    fitted.predict(query_x)                            # class indices 0..n_way-1

What `adapt` runs is the meta-test protocol of `metalstm.metalearner.run_episode(mode="test")`,
split in two so that the query images need no labels:

    adapt:   theta_0 = c_0;  for t = 1..T, on the support mini-batch B_t:
                 L_t, grad_t = loss and gradient of f(x_B_t; theta_{t-1}), batch statistics
                 theta_t = f_t * theta_{t-1} + i_t * (-grad_t)            (the rule's step)
                 mu_k <- (1 - m) mu_k + m mean_B_t,  s2_k <- (1 - m) s2_k + m var_B_t (unbiased)
                 (every batch-norm layer k; mu = 0, s2 = 1 to start; m = the learner's bn_momentum)
    predict: logits = f(x; theta_T) normalised with (mu, s2), never with the query batch's own
             statistics, so each query image's prediction depends on it alone (paper notes 7).

An episode's query accuracy through `adapt(...).accuracy(query_x, query_y)` is exactly
`run_episode(..., mode="test").query_acc` with the same mini-batch order (tested).
Everything here is inference: no meta-graph is built, and it works under torch.no_grad().
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from metalstm.config import Config
from metalstm.learner import BNStats, Learner
from metalstm.metalearner import check_examples, check_steps, inner_loop
from metalstm.model import load_trained
from metalstm.module_learner import ModuleLearner
from metalstm.paths import checkpoint_path

__all__ = ["Adapted", "Trained", "adapt", "load"]


# -- the checks (one clear ValueError each, before any step) -------------------------------------
def _as_images(x, learner: Learner, which: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    """x as float images [b, C, H, W] on `device`: uint8 pixels are scaled to [0, 1] as the data
    sets do (ImageSet.float_images); one image [C, H, W] becomes a batch of one."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"the {which} images must be a tensor [b, C, H, W], got {type(x).__name__}") from None
    expected = (learner.in_channels, learner.image_size, learner.image_size)
    if x.dim() == 3 and tuple(x.shape) == expected:
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        c, h, w = expected
        raise ValueError(f"the {which} images must be [b, {c}, {h}, {w}] ({'gray' if c == 1 else f'{c} channels'}, "
                         f"{h}x{w}: what this {learner.n_way}-way learner was trained on), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif not x.is_floating_point():
        raise ValueError(f"the {which} images must be floats in [0, 1] or uint8 pixels, got {x.dtype}")
    if x.is_inference():                # made under torch.inference_mode(): the steps need autograd
        with torch.inference_mode(False):
            x = x.clone()
    return x.to(device=device, dtype=dtype)


def _as_labels(y, x: Tensor, n_way: int, device: torch.device) -> Tensor:
    """y as int64 class indices on `device`, checked: one per image, in 0..n_way-1, every class present."""
    if not isinstance(y, Tensor):
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"the support labels must be class numbers, got {type(y).__name__}") from None
    check_examples(x, y, n_way, "support")     # finite images; integer labels, one per image, in range
    y = y.to(device=device, dtype=torch.long)
    missing = (torch.bincount(y, minlength=n_way) == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"the support set has no example of class{'es' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing))}: a {n_way}-way learner needs at least one "
                         f"labelled image of each class 0..{n_way - 1}")
    if y.is_inference():
        with torch.inference_mode(False):
            y = y.clone()
    return y


# -- the adapted learner ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Adapted:
    """Description
    -----------
    A learner adapted to one support set: theta_T and the batch-norm running averages of its
    T support passes, used as the meta-test protocol uses them (paper notes 7). Made by `adapt`.

    Arguments (fields)
    ------------------
    learner: the `Learner` f(x; theta).
    theta: theta_T, float [learner.n_params], detached.
    stats: the `BNStats` (mean and var [n_filters] per block) averaged over the T support passes.
    support_losses: L_1..L_T, the support mini-batches' losses before each step.

    Returns (methods)
    -----------------
    logits(x) -> float [b, n_way];  predict(x) -> int64 [b];  accuracy(x, y) -> float in [0, 1].
    x: images [b, C, H, W] (float in [0, 1] or uint8 pixels; one image [C, H, W] is a batch of one).

    Example
    -------
    >>> import torch
    >>> from metalstm.learner import Learner
    >>> from metalstm.metalearner import SGDCell
    >>> learner = Learner(n_way=2, in_channels=1, image_size=16)
    >>> rule = SGDCell(learner.init_params(torch.Generator().manual_seed(0)), lr=0.5)
    >>> x = torch.zeros(4, 1, 16, 16); x[2:, :, 4:12, 4:12] = 1.0   # class 1: a bright square
    >>> y = torch.tensor([0, 0, 1, 1])
    >>> fitted = adapt(learner, rule, x, y, steps=5)
    >>> fitted.logits(x).shape
    torch.Size([4, 2])
    >>> fitted.predict(x).tolist(), fitted.accuracy(x, y)
    ([0, 0, 1, 1], 1.0)
    """

    learner: Learner
    theta: Tensor
    stats: BNStats = field(repr=False)
    support_losses: tuple[float, ...] = ()

    @property
    def n_way(self) -> int:
        return self.learner.n_way

    def logits(self, x) -> Tensor:
        """f(x; theta_T) with batch norm on the support passes' running averages: float [b, n_way].
        Each image's logits depend on that image alone (no statistics of the batch x)."""
        x = _as_images(x, self.learner, "query", self.theta.device, self.theta.dtype)
        with torch.no_grad():
            return self.learner(x, self.theta, bn="running", stats=self.stats)

    def predict(self, x) -> Tensor:
        """The predicted class of each image, argmax of `logits`: int64 [b] in 0..n_way-1."""
        return self.logits(x).argmax(dim=1)

    def accuracy(self, x, y) -> float:
        """The fraction of images whose predicted class is y (int [b] in 0..n_way-1): a float in [0, 1]."""
        x = _as_images(x, self.learner, "query", self.theta.device, self.theta.dtype)
        y = torch.as_tensor(y)
        check_examples(x, y, self.n_way, "query")
        return (self.predict(x) == y.to(self.theta.device)).float().mean().item()

    def __repr__(self) -> str:
        return (f"Adapted({self.learner!r}, {len(self.support_losses)} steps, support loss "
                + (f"{self.support_losses[0]:.3f} -> {self.support_losses[-1]:.3f})"
                   if self.support_losses else "- (no step))"))


def _device_of(rule: nn.Module) -> tuple[torch.device, torch.dtype]:
    c0 = getattr(rule, "c0", None)
    if c0 is None:
        c0 = next(rule.parameters())
    return c0.device, c0.dtype


def adapt(learner: Learner, rule: nn.Module, support_x, support_y, steps: int | None = None,
          batch_size: int | None = None, generator: torch.Generator | None = None,
          config: Config | None = None) -> Adapted:
    """Description
    -----------
    T steps of the update rule on a labelled support set, from theta_0 = c_0 (paper notes 5):

        theta_t = f_t * theta_{t-1} + i_t * (-grad_t),   grad_t = dL(f(x_B_t; theta_{t-1}), y_B_t)/dtheta

    each step on one mini-batch B_t with batch statistics, accumulating the batch-norm running
    averages the predictions then use (paper notes 7). The same steps as
    `run_episode(mode="test")`; no meta-graph is built (inference only, fine under torch.no_grad()).

    Arguments
    ---------
    learner: the `Learner` f(x; theta) the rule was trained with.
    rule: the update rule (a `MetaLearner`, `SGDCell` or a rung of `metalstm.rules`).
    support_x: images [n, C, H, W] of the learner's shape, float in [0, 1] (uint8 pixels are scaled).
    support_y: int labels [n] in 0..n_way-1, every class at least once.
    steps: T, the number of updates; default config.steps (required without a config).
    batch_size: B, support images per step; default min(config.batch_size, n), else n.
    generator: draws each pass's order over the support set (None: the given order, as the
        authors' code; the meta-test evaluation uses episode_generator(seed, i)).
    config: the checkpoint's `Config`, for the defaults (`Trained.adapt` passes it).

    Returns
    -------
    An `Adapted`: theta_T, the running averages, the support losses; its logits, predict and
    accuracy apply the meta-test protocol.

    Example
    -------
    >>> import torch
    >>> from metalstm.learner import Learner
    >>> from metalstm.metalearner import SGDCell
    >>> learner = Learner(n_way=3, in_channels=1, image_size=16)
    >>> rule = SGDCell(learner.init_params(torch.Generator().manual_seed(0)), lr=0.1)
    >>> x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    >>> fitted = adapt(learner, rule, x, torch.tensor([0, 1, 2, 0, 1, 2]), steps=3, batch_size=3)
    >>> fitted.theta.shape == (learner.n_params,), len(fitted.support_losses)
    (True, 3)
    >>> fitted.predict(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2])
    """
    if not isinstance(learner, (Learner, ModuleLearner)):
        raise ValueError(f"learner must be a metalstm.learner.Learner or a metalstm.module_learner."
                         f"ModuleLearner, got {type(learner).__name__}")
    if not isinstance(rule, nn.Module) or not hasattr(rule, "step") or not hasattr(rule, "initial_state"):
        raise ValueError(f"rule must be an update rule (MetaLearner, SGDCell, a metalstm.rules rung), "
                         f"got {type(rule).__name__}")
    if steps is None:
        if config is None:
            raise ValueError("steps= is needed (the number of updates T) when no config= gives it")
        steps = config.steps
    check_steps(steps)
    device, dtype = _device_of(rule)
    x = _as_images(support_x, learner, "support", device, dtype)
    y = _as_labels(support_y, x, learner.n_way, device)
    n = x.shape[0]
    if batch_size is None:
        batch_size = min(config.batch_size, n) if config is not None else n
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be a whole number between 1 and the support set's size {n}, "
                         f"got {batch_size!r}")
    with torch.inference_mode(False), torch.no_grad():    # the loss gradients enable autograd themselves
        stats = learner.new_bn_stats(device)
        theta, losses, _ = inner_loop(learner, rule, x, y, steps, batch_size, bn="batch", stats=stats,
                                      generator=generator)
    return Adapted(learner, theta.detach(), stats, tuple(losses))


# -- a trained rule, ready to adapt ---------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Trained:
    """Description
    -----------
    A trained update rule with its learner and configuration, as a checkpoint holds it: what
    `load` returns. `adapt` runs the checkpoint's T steps of batch B (paper notes 5).

    Arguments (fields)
    ------------------
    learner: the `Learner` f(x; theta), e.g. 5-way on 1x28x28 images for the glyph checkpoints.
    rule: the trained update rule (its c_0 is theta_0).
    config: the checkpoint's `Config` (steps, batch_size, n_way, image shape, ...).
    metrics: what training recorded (e.g. the best validation accuracy).

    Returns (methods)
    -----------------
    adapt(support_x, support_y, steps=None, batch_size=None, generator=None) -> `Adapted`.

    Example
    -------
    >>> import torch
    >>> model = load("glyphs-5shot")                    # or a path: data/checkpoints/glyphs-5shot.pt
    >>> model.image_shape, model.n_way, model.config.steps
    ((1, 28, 28), 5, 8)
    >>> sx = torch.rand(25, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> sy = torch.arange(5).repeat(5)                  # 5 images of each of the 5 classes
    >>> fitted = model.adapt(sx, sy)
    >>> fitted.predict(sx[:3]).shape
    torch.Size([3])
    """

    learner: Learner
    rule: nn.Module
    config: Config
    metrics: dict = field(default_factory=dict, repr=False)

    @property
    def n_way(self) -> int:
        return self.learner.n_way

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the learner takes."""
        return (self.learner.in_channels, self.learner.image_size, self.learner.image_size)

    def adapt(self, support_x, support_y, steps: int | None = None, batch_size: int | None = None,
              generator: torch.Generator | None = None) -> Adapted:
        """`adapt` with this checkpoint's learner, rule and defaults (config.steps, config.batch_size)."""
        return adapt(self.learner, self.rule, support_x, support_y, steps, batch_size, generator,
                     config=self.config)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (f"Trained({self.config.name!r}: {self.config.rule} rule, {self.n_way}-way {c}x{h}x{w}, "
                f"T={self.config.steps}, B={self.config.batch_size})")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Trained:
    """Description
    -----------
    A trained rule from a checkpoint (shipped or your own, as `python -m metalstm.train` writes it),
    ready to `adapt` to a support set of yours.

    Arguments
    ---------
    path: the checkpoint file, or the name of a shipped one ("glyphs-1shot", "glyphs-5shot").
    device: where the rule and the adapted learners live ("cpu", "cuda").

    Returns
    -------
    A `Trained` (learner, rule, config, metrics). A missing, corrupt or foreign file is one
    clear error (metalstm.checkpoint's CheckpointError or FileNotFoundError).

    Example
    -------
    >>> model = load("glyphs-1shot")
    >>> model.config.k_shot, model.config.steps, model.config.batch_size
    (1, 12, 5)
    """
    learner, rule, cfg, metrics = load_trained(checkpoint_path(path), device=str(device))
    return Trained(learner, rule, cfg, dict(metrics or {}))
