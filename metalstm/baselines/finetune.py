"""Fine-tune baseline (paper notes 9): pre-trained conv stack, a new N-way head, a few
steps of SGD or Adam on the episode's support set.

Steps and learning rate are chosen on meta-VALIDATION episodes by a small grid
search (`tune_finetune`). The head starts at zero by default, so before any
step every query gets the same (uniform) prediction.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metalstm.episodes import Episode
from metalstm.learner import Learner
from metalstm.baselines.pretrain import Pretrained
from metalstm.baselines.sgd import SupportFit


def with_new_head(pre: Pretrained, n_way: int, head: str = "zero", seed: int = 0,
                  bn_momentum: float | None = None) -> tuple[Learner, Tensor]:
    """(an n_way Learner, its theta_0): the pre-trained conv and batch-norm weights,
    and a new linear layer fc (zeros, or PyTorch's default random init with head="random")."""
    if head not in ("zero", "random"):
        raise ValueError(f"head must be 'zero' or 'random', got {head!r}")
    old = pre.learner
    learner = Learner(n_way=n_way, in_channels=old.in_channels, image_size=old.image_size,
                      n_filters=old.n_filters, n_blocks=old.n_blocks, bn_eps=old.bn_eps,
                      bn_momentum=old.bn_momentum if bn_momentum is None else bn_momentum)
    theta0 = learner.init_params(torch.Generator().manual_seed(seed))
    old_parts, new_parts = old.unflatten(pre.theta), learner.unflatten(theta0)
    for name, part in new_parts.items():
        if name.startswith("fc."):
            if head == "zero":
                part.zero_()
        else:
            part.copy_(old_parts[name])
    return learner, theta0


def finetune(pre: Pretrained, n_way: int, steps: int, lr: float, optimizer: str = "sgd",
             head: str = "zero", seed: int = 0, bn_momentum: float | None = None,
             batch_size: int | None = None) -> SupportFit:
    """The fine-tune method: `steps` of `optimizer` at `lr` on the support set from
    the pre-trained network with a new head (all parameters are fine-tuned)."""
    learner, theta0 = with_new_head(pre, n_way, head, seed, bn_momentum)
    return SupportFit(learner, theta0, steps, lr, optimizer, batch_size=batch_size, seed=seed,
                      name=f"Fine-tune ({'SGD' if optimizer == 'sgd' else 'Adam'}, {steps} steps, lr {lr:g})")


def tune_finetune(pre: Pretrained, val_episodes: Sequence[Episode],
                  steps_grid: Sequence[int] = (5, 10, 20, 40),
                  lr_grid: Sequence[float] = (1e-3, 1e-2, 1e-1),
                  optimizer: str = "sgd", progress: bool = True, **kwargs) -> tuple[tuple[int, float], dict]:
    """Grid search of (steps, lr) on meta-validation episodes (paper notes 9).

    Returns ((best steps, best lr), {(steps, lr): mean accuracy}). Ties go to
    fewer steps, then to the smaller learning rate. One run of max(steps_grid)
    steps per learning rate and episode gives every number of steps
    (`SupportFit.accuracy_curve`).
    """
    if not val_episodes:
        raise ValueError("tune_finetune needs at least one meta-validation episode")
    n_way, steps_grid = val_episodes[0].n_way, sorted(set(steps_grid))
    table: dict[tuple[int, float], float] = {}
    for lr in tqdm(sorted(lr_grid), desc="tune fine-tune", disable=not progress or None, leave=False):
        method = finetune(pre, n_way, max(steps_grid), lr, optimizer, **kwargs)
        curves = [method.accuracy_curve(ep, steps_grid) for ep in val_episodes]
        for s in steps_grid:
            table[(s, lr)] = sum(c[s] for c in curves) / len(curves)
    order = [(s, lr) for s in steps_grid for lr in sorted(lr_grid)]      # tie-break order
    best = max(order, key=lambda p: (table[p], -order.index(p)))
    return best, {p: table[p] for p in order}
