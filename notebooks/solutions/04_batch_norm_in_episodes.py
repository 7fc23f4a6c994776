"""Solutions to the exercises of notebook 04_batch_norm_in_episodes (checked by tests/notebooks/test_notebook04_agrees.py).

All three use the package's explicit batch-norm handling (paper notes 7):
``learner(x, theta, bn="batch", stats=s)`` updates the running averages of a
`BNStats` s, ``bn="running"`` normalises with them, `inner_loop` runs the
support steps of any update rule (`SGDCell`, `MetaLearner`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalstm.learner import BNStats, Learner
from metalstm.metalearner import inner_loop


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(dim=1) == y).float().mean().item()


def adapt_with_stats(learner: Learner, rule, support_x: Tensor, support_y: Tensor, steps: int,
                     batch_size: int) -> tuple[Tensor, BNStats]:
    """The support steps of the meta-test protocol: (theta_T, the episode's fresh running averages)."""
    stats = learner.new_bn_stats(support_x.device)
    with torch.no_grad():
        theta, _, _ = inner_loop(learner, rule, support_x, support_y, steps, batch_size, stats=stats)
    return theta, stats


def meta_test_logits(learner: Learner, rule, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                     steps: int, batch_size: int) -> Tensor:
    """Query logits of the paper's meta-test protocol for this support set and these queries."""
    theta, stats = adapt_with_stats(learner, rule, support_x, support_y, steps, batch_size)
    with torch.no_grad():
        return learner(query_x, theta, bn="running", stats=stats)


# Exercise 1 -------------------------------------------------------------------
def query_dependence(learner: Learner, rule, episode, other, steps: int, batch_size: int) -> tuple[float, float]:
    """How much the test-mode logits of `episode`'s queries change (max absolute difference)

    (a) when the support set is replaced by `other`'s support set, and
    (b) when the queries are evaluated together with `other`'s queries (one batch of both).

    (a) is large: theta_T and the running averages are made from the support
    set. (b) is zero up to float rounding (a different batch size may pick a
    different convolution kernel, ~1e-6): with running averages every query is
    normalised on its own, so the other queries cannot reach its prediction.
    """
    n = episode.query_x.shape[0]
    base = meta_test_logits(learner, rule, episode.support_x, episode.support_y, episode.query_x, steps, batch_size)
    new_support = meta_test_logits(learner, rule, other.support_x, other.support_y, episode.query_x, steps,
                                   batch_size)
    together = meta_test_logits(learner, rule, episode.support_x, episode.support_y,
                                torch.cat([episode.query_x, other.query_x]), steps, batch_size)[:n]
    return (new_support - base).abs().max().item(), (together - base).abs().max().item()


# Exercise 2 -------------------------------------------------------------------
def refreshed_stats(learner: Learner, theta: Tensor, support_x: Tensor) -> BNStats:
    """Batch-norm statistics of the support set at theta (one batch-statistics pass, no update).

    A fresh BNStats updated once with momentum 1.0 holds exactly the pass's mean
    and unbiased variance. With bn_momentum=1.0 the protocol's running averages
    are this at theta_{T-1} (the parameters of the last support step); here it
    is computed at theta_T, the parameters the query pass uses.
    """
    one = Learner(learner.n_way, learner.in_channels, learner.image_size, learner.n_filters, learner.n_blocks,
                  bn_eps=learner.bn_eps, bn_momentum=1.0)
    stats = learner.new_bn_stats(support_x.device)   # overwritten completely by the momentum-1 update
    with torch.no_grad():
        one(support_x, theta, bn="batch", stats=stats)
    return stats


def refreshed_logits(learner: Learner, rule, episode, steps: int, batch_size: int) -> Tensor:
    """Query logits with refreshed statistics: theta_T from the support steps, then the
    support set's statistics at theta_T. Still a per-query prediction: the statistics
    come from the support set only, and each query is normalised on its own."""
    theta, _ = adapt_with_stats(learner, rule, episode.support_x, episode.support_y, steps, batch_size)
    stats = refreshed_stats(learner, theta, episode.support_x)
    with torch.no_grad():
        return learner(episode.query_x, theta, bn="running", stats=stats)


def refresh_accuracies(learner: Learner, rule, episodes, steps: int, batch_size: int) -> dict[str, float]:
    """Mean query accuracy over `episodes`: the protocol's running averages vs refreshed statistics."""
    out = {"running averages": 0.0, "refreshed": 0.0}
    for e in episodes:
        out["running averages"] += accuracy(meta_test_logits(learner, rule, e.support_x, e.support_y, e.query_x,
                                                             steps, batch_size), e.query_y) / len(episodes)
        out["refreshed"] += accuracy(refreshed_logits(learner, rule, e, steps, batch_size), e.query_y) / len(episodes)
    return out


# Exercise 3 -------------------------------------------------------------------
def transductive_logits(learner: Learner, theta: Tensor, query_x: Tensor) -> Tensor:
    """Transductive batch norm: the query batch's own statistics at test time.
    Every query's logits then depend on all the other queries in the batch."""
    with torch.no_grad():
        return learner(query_x, theta, bn="batch")


def transductive_accuracies(learner: Learner, rule, episodes, steps: int, batch_size: int,
                            per_class: int = 5) -> dict[str, float]:
    """Mean query accuracy over `episodes` of

    "running averages":        the paper's protocol, all queries;
    "transductive":            query batch statistics, all queries in one batch;
    "transductive, one class at a time": one batch per class;
    "transductive, first 5 per class":   only the first `per_class` queries of each class, one batch;
    "running averages, first 5 per class": the protocol on the same queries.
    """
    out: dict[str, float] = {}

    def add(name, value):
        out[name] = out.get(name, 0.0) + value / len(episodes)

    for e in episodes:
        theta, stats = adapt_with_stats(learner, rule, e.support_x, e.support_y, steps, batch_size)
        y = e.query_y
        with torch.no_grad():
            running = learner(e.query_x, theta, bn="running", stats=stats)
        add("running averages", accuracy(running, y))
        add("transductive", accuracy(transductive_logits(learner, theta, e.query_x), y))
        by_class = torch.empty_like(running)
        for c in y.unique():
            by_class[y == c] = transductive_logits(learner, theta, e.query_x[y == c])
        add("transductive, one class at a time", accuracy(by_class, y))
        first = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in y.unique()])
        add(f"transductive, first {per_class} per class",
            accuracy(transductive_logits(learner, theta, e.query_x[first]), y[first]))
        add(f"running averages, first {per_class} per class", accuracy(running[first], y[first]))
    return out
