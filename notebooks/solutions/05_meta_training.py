"""Solutions to the exercises of notebook 05_meta_training (checked by tests/notebooks/test_notebook05_agrees.py)."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from metalstm.metalearner import run_episode
from metalstm.episodes import episode_generator, sampler_for
from metalstm.model import build_model


# Exercise 1 -------------------------------------------------------------------
def best_from_log(path: str | Path) -> tuple[int, float]:
    """(episode, val_acc) of the log.csv row that `train` kept as best.pt.

    `train` replaces best.pt only when a validation is STRICTLY better than the
    best so far, so on a tie the earlier row stays the best: the first maximum.
    """
    with open(path) as f:
        rows = [(int(r["episode"]), float(r["val_acc"])) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path} has no validation rows yet")
    best = rows[0]
    for row in rows[1:]:
        if row[1] > best[1]:
            best = row
    return best


# Exercise 2 -------------------------------------------------------------------
def meta_train_step_batch(learner, meta, opt, episodes, generators, cfg) -> float:
    """One meta-update on several episodes (paper notes 5 with meta_batch = len(episodes)): the mean query loss.

    The meta-gradient is the gradient of the MEAN query loss, accumulated one
    episode at a time (each episode's graph is freed after its backward), then
    clipped as a whole and applied by one Adam step.
    """
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for episode, generator in zip(episodes, generators):
        res = run_episode(learner, meta, episode, cfg.steps, cfg.batch_size, mode="train", generator=generator)
        (res.query_loss / len(episodes)).backward()
        total += res.query_loss.item()
    torch.nn.utils.clip_grad_norm_(meta.parameters(), cfg.clip)
    opt.step()
    return total / len(episodes)


# Exercise 3 -------------------------------------------------------------------
def train_c0_only(cfg, episodes: int):
    """Meta-train only c_0 for `episodes` meta-updates; the LSTM keeps its initialisation (paper notes 6).

    The update rule stays what it is at the start: gradient descent with forget
    gates near 1 and input gates near 0.01. Only c_0 is given to Adam, and only
    its gradient is clipped. Comparing its meta-validation accuracy with the full
    meta-learner's after the same number of episodes shows how much of the gain
    needs a learned rule (`meta_validate` in the notebook): the difference is
    what meta-training the update rule adds to meta-training the initialisation.
    """
    learner, meta = build_model(cfg)
    for p in meta.rule_parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([meta.c0], lr=cfg.lr)
    train_episodes = sampler_for(cfg, "train")
    for i in range(episodes):
        opt.zero_grad(set_to_none=True)
        res = run_episode(learner, meta, train_episodes[i], cfg.steps, cfg.batch_size, mode="train",
                          generator=episode_generator(train_episodes.seed, i))
        res.query_loss.backward()
        torch.nn.utils.clip_grad_norm_([meta.c0], cfg.clip)
        opt.step()
    return learner, meta
