"""Matching Networks (Vinyals et al. 2016) on the learner's conv stack (paper notes 9).

An embedding f (the learner's features, paper notes 2) is trained episodically, like
the meta-learner: a query x^ is classified by attention over the support set,

    a(x^, x_j) = softmax_j( s * cos(f(x^), f(x_j)) )
    P(y = c | x^, S) = sum_j a(x^, x_j) * [y_j = c]

and the loss is the query set's negative log-likelihood. Cosine similarities
lie in [-1, 1] (in [0, 1] here: the features come after a ReLU), so a softmax
over them is almost flat; a temperature s (learned, starting at 10) lets the
attention sharpen. Full context embeddings (FCE: LSTMs that read the whole
support set) are NOT implemented: the paper's table (paper notes 8) lists both, and
FCE changes 1-shot accuracy little.

Batch norm follows paper notes 7. Training: batch statistics everywhere (one pass
for the support set, one for the queries). Testing: the support set's batch
statistics also normalise the queries, so a query's prediction depends only on
its own image and the support set (`embed_episode`). Training with the
test-time normalisation instead makes the queries' statistics constants to
autograd, and the embedding gets worse as it trains (docs/history.md has the
figures).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from metalstm.checkpoint import load_checkpoint, save_checkpoint
from metalstm.episodes import Episode, EpisodeSampler
from metalstm.learner import Learner
from metalstm.baselines.nearest import cosine_similarity, embed_episode


def matching_attention(query: Tensor, support: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """a [Q, S] = softmax over support j of scale * cos(query_q, support_j)."""
    return torch.softmax(scale * cosine_similarity(query, support), dim=1)


def matching_log_probs(query: Tensor, support: Tensor, support_y: Tensor, n_way: int,
                       scale: float | Tensor = 1.0) -> Tensor:
    """log P(y = c | query, S) [Q, n_way] = log sum_{j: y_j = c} a(query, x_j),
    computed as a difference of log-sum-exps (exact, and finite for any scale)."""
    logits = scale * cosine_similarity(query, support)                               # [Q, S]
    same = support_y[None, :] == torch.arange(n_way, device=support_y.device)[:, None]  # [N, S]
    per_class = logits[:, None, :].masked_fill(~same, -math.inf)                      # [Q, N, S]
    return per_class.logsumexp(dim=2) - logits.logsumexp(dim=1, keepdim=True)


class MatchingNetwork:
    """A trained Matching Network: predict() returns log P(y = c | query, support) [N*Q, N]."""

    def __init__(self, learner: Learner, theta: Tensor, log_scale: float = math.log(10.0),
                 name: str = "Matching Networks") -> None:
        self.learner, self.theta, self.name = learner, theta.detach(), name
        self.log_scale = float(log_scale)

    def log_probs(self, episode: Episode, theta: Tensor | None = None,
                  log_scale: Tensor | float | None = None, mode: str = "test") -> Tensor:
        """log P(y = c | query, S) [N*Q, N]; mode="train": batch statistics for the
        support and the query pass alike, "test": the support's for both (paper notes 7)."""
        theta = self.theta if theta is None else theta
        log_scale = self.log_scale if log_scale is None else log_scale
        if mode == "test":
            support, query = embed_episode(self.learner, theta, episode)
        elif mode == "train":
            support = self.learner.features(episode.support_x, theta, bn="batch")
            query = self.learner.features(episode.query_x, theta, bn="batch")
        else:
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        scale = torch.exp(torch.as_tensor(log_scale))
        return matching_log_probs(query, support, episode.support_y, episode.n_way, scale)

    @torch.no_grad()
    def predict(self, episode: Episode) -> Tensor:
        return self.log_probs(episode)


@dataclass
class MatchingTraining:
    """What `train_matching` returns: the method, its learning curve, and how long it took."""

    method: MatchingNetwork
    history: list[dict] = field(default_factory=list)   # {"episode", "loss", "acc"[, "val_acc"]}
    episodes: int = 0
    seconds: float = 0.0
    best_val: float | None = None


def train_matching(sampler: EpisodeSampler, learner: Learner, episodes: int = 2000, lr: float = 1e-3,
                   seed: int = 0, scale: float = 10.0, learn_scale: bool = True,
                   max_seconds: float | None = None, val_episodes: Sequence[Episode] = (),
                   val_every: int = 500, log_every: int = 50, progress: bool = True) -> MatchingTraining:
    """Train the embedding (and temperature) with Adam on meta-train episodes sampler[0..episodes-1].

    Stops early after `max_seconds` of wall time if given (the number of
    episodes done is returned). With `val_episodes`, the embedding is scored
    every `val_every` episodes and at the end, and the best one is kept.
    Batch norm: paper notes 7's meta-training protocol (batch statistics in the
    support pass and in the query pass); validation uses the test protocol.
    Deterministic given `seed` and the number of episodes done.
    """
    if episodes < 0 or val_every <= 0:
        raise ValueError(f"need episodes >= 0 and val_every > 0, got {episodes} and {val_every}")
    g = torch.Generator().manual_seed(seed)
    theta = learner.init_params(g).requires_grad_()
    log_scale = torch.tensor(math.log(scale), requires_grad=learn_scale)
    opt = torch.optim.Adam([theta, log_scale] if learn_scale else [theta], lr=lr)
    net = MatchingNetwork(learner, theta, log_scale.item())
    result = MatchingTraining(net)

    def validate() -> float:
        candidate = MatchingNetwork(learner, theta, log_scale.item())
        acc = sum((candidate.predict(ep).argmax(1) == ep.query_y).float().mean().item()
                  for ep in val_episodes) / len(val_episodes)
        if result.best_val is None or acc > result.best_val:
            result.best_val, result.method = acc, candidate
        return acc

    start = time.perf_counter()
    loss_sum = acc_sum = 0.0
    bar = tqdm(range(episodes), desc="Matching Networks", disable=not progress or None, leave=False)
    for i in bar:
        ep = sampler[i]
        log_p = net.log_probs(ep, theta, log_scale, mode="train")
        loss = F.nll_loss(log_p, ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        result.episodes = i + 1
        loss_sum += loss.item()
        acc_sum += (log_p.argmax(1) == ep.query_y).float().mean().item()
        done = i + 1
        out_of_time = max_seconds is not None and time.perf_counter() - start > max_seconds
        if done % log_every == 0 or done == episodes or out_of_time:
            n = (done - 1) % log_every + 1
            row = {"episode": done, "loss": loss_sum / n, "acc": acc_sum / n}
            loss_sum = acc_sum = 0.0
            if val_episodes and (done % val_every == 0 or done == episodes or out_of_time):
                row["val_acc"] = validate()
            result.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}")
        if out_of_time:
            break
    if not val_episodes:
        result.method = MatchingNetwork(learner, theta, log_scale.item())
    result.seconds = time.perf_counter() - start
    return result


def save_matching(path: str | Path, net: MatchingNetwork, meta: dict | None = None) -> Path:
    """Write a trained Matching Network as a metalstm checkpoint."""
    lr = net.learner
    config = {"n_way": lr.n_way, "in_channels": lr.in_channels, "image_size": lr.image_size,
              "bn_eps": lr.bn_eps, "bn_momentum": lr.bn_momentum, **(meta or {})}
    return save_checkpoint(path, {"theta": net.theta, "log_scale": torch.tensor([net.log_scale])},
                           config=config, metrics={"kind": "matching"})


def load_matching(path: str | Path) -> tuple[MatchingNetwork, dict]:
    """Read what `save_matching` wrote: (the method, its meta dict)."""
    state, config, metrics = load_checkpoint(path)
    if metrics.get("kind") != "matching":
        raise ValueError(f"{path} is a checkpoint, but not of a Matching Network")
    learner = Learner(n_way=config["n_way"], in_channels=config["in_channels"], image_size=config["image_size"],
                      bn_eps=config["bn_eps"], bn_momentum=config["bn_momentum"])
    return MatchingNetwork(learner, state["theta"], state["log_scale"].item()), config
