"""Pre-training for the fine-tune and nearest-neighbour baselines (paper notes 9).

The learner network (paper notes 2) is trained as an ordinary classifier over ALL
meta-train classes at once: Learner(n_way=num_train_classes), cross-entropy,
Adam, mini-batches with batch statistics. Its conv stack then serves as the
starting point of fine-tuning and as the nearest-neighbour embedding.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from metalstm.baselines.common import cache_target, find_cached
from metalstm.checkpoint import load_checkpoint, save_checkpoint
from metalstm.data.base import ImageSet
from metalstm.learner import Learner


@dataclass
class Pretrained:
    """A pre-trained learner: its architecture, flat theta, and how it was made.

    meta: JSON-able (the data's name and fingerprint, learner shape, epochs, lr, seed,
    per-epoch loss and accuracy).
    """

    learner: Learner
    theta: Tensor
    meta: dict = field(default_factory=dict)


def pretrain(dataset: ImageSet, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
             seed: int = 0, bn_eps: float = 1e-3, bn_momentum: float = 0.95,
             progress: bool = True) -> Pretrained:
    """Train Learner(n_way=dataset.num_classes) on every image of `dataset` (paper notes 9).

    Deterministic given `seed` (the init and the order of the mini-batches).
    """
    if epochs < 0 or batch_size <= 0:
        raise ValueError(f"need epochs >= 0 and batch_size > 0, got {epochs} and {batch_size}")
    c, h, w = dataset.image_shape
    if h != w:
        raise ValueError(f"the learner needs square images, {dataset.name} has {h}x{w}")
    learner = Learner(n_way=dataset.num_classes, in_channels=c, image_size=h,
                      bn_eps=bn_eps, bn_momentum=bn_momentum)
    g = torch.Generator().manual_seed(seed)
    theta = learner.init_params(g).requires_grad_()
    opt = torch.optim.Adam([theta], lr=lr)
    history = []
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(dataset), generator=g)
        batches = order.split(batch_size)
        loss_sum, correct = 0.0, 0
        bar = tqdm(batches, desc=f"pretrain epoch {epoch + 1}/{epochs}", disable=not progress or None, leave=False)
        for idx in bar:
            x, y = dataset.float_images(idx), dataset.targets[idx]
            logits = learner(x, theta, bn="batch")
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(dataset), "acc": correct / len(dataset)})
    meta = {"dataset": dataset.name, "data_sha256": dataset.fingerprint(),
            "num_classes": dataset.num_classes, "in_channels": c,
            "image_size": h, "bn_eps": bn_eps, "bn_momentum": bn_momentum, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "seed": seed, "history": history,
            "seconds": time.perf_counter() - start}
    return Pretrained(learner, theta.detach(), meta)


def save_pretrained(path: str | Path, pre: Pretrained) -> Path:
    """Write a pre-trained learner as a metalstm checkpoint (atomic, checksummed)."""
    return save_checkpoint(path, {"theta": pre.theta}, config=pre.meta, metrics={"kind": "pretrained"})


def load_pretrained(path: str | Path) -> Pretrained:
    """Read what `save_pretrained` wrote (torch.load(weights_only=True) inside)."""
    state, meta, metrics = load_checkpoint(path)
    if metrics.get("kind") != "pretrained" or "theta" not in state:
        raise ValueError(f"{path} is a checkpoint, but not of a pre-trained baseline learner")
    learner = Learner(n_way=meta["num_classes"], in_channels=meta["in_channels"],
                      image_size=meta["image_size"], bn_eps=meta["bn_eps"], bn_momentum=meta["bn_momentum"])
    if state["theta"].shape != (learner.n_params,):
        raise ValueError(f"{path}: theta has {state['theta'].numel()} values, the learner it "
                         f"describes needs {learner.n_params}")
    return Pretrained(learner, state["theta"], meta)


def pretrain_settings(dataset: ImageSet, **kwargs) -> dict:
    """What a cached pre-trained learner must have been made with to stand in for
    `pretrain(dataset, **kwargs)`: every keyword argument that changes the result (defaults
    included) and the data's contents (`ImageSet.fingerprint`: class names and image bytes),
    not just its name."""
    bound = inspect.signature(pretrain).bind(dataset, **kwargs)
    bound.apply_defaults()
    settings = {k: v for k, v in bound.arguments.items() if k not in ("dataset", "progress")}
    settings.update(dataset=dataset.name, num_classes=dataset.num_classes,
                    data_sha256=dataset.fingerprint())
    return settings


def load_or_pretrain(path: str | Path | None, dataset: ImageSet, progress: bool = True,
                     train: bool = True, **kwargs) -> Pretrained:
    """The cached pre-trained learner at `path` (or at its variant for these settings, see
    `cache_candidates`) when it was made with the same settings and the same data
    (`pretrain_settings`: a file that does not record one of them is not used); otherwise
    pre-train now and cache it - never over a cached file of other settings. train=False
    raises FileNotFoundError instead."""
    settings = pretrain_settings(dataset, **kwargs)
    pre = find_cached(path, settings, load_pretrained,   # every setting, recorded and equal
                      lambda found: all(k in found.meta and found.meta[k] == v for k, v in settings.items()))
    if pre is not None:
        return pre
    if not train:
        raise FileNotFoundError(f"no pre-trained baseline with these settings in {path}; make it with "
                                f"`python -m metalstm.evaluate ... --baselines all --cache "
                                f"{Path(path).parent if path else 'FOLDER'}`")
    pre = pretrain(dataset, progress=progress, **kwargs)
    if path is not None:
        save_pretrained(cache_target(path, settings), pre)
    return pre
