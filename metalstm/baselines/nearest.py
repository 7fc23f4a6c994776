"""Nearest-neighbour baseline (paper notes 9): the pre-trained network as an embedding.

Each query gets the label of its most similar support image, by cosine
similarity of the learner's features (the flattened conv output, before the
linear layer). The score of label c is the highest cosine similarity between
the query and a support image of label c.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from metalstm.episodes import Episode
from metalstm.learner import Learner


def embed_episode(learner: Learner, theta: Tensor, episode: Episode) -> tuple[Tensor, Tensor]:
    """(support features [N*K, d], query features [N*Q, d]), batch norm as in paper notes 7:
    the support set is embedded with its batch statistics, which also fill a
    fresh BNStats; the queries are embedded with those, so a query's features
    depend only on its own image and the support set. There are no update
    steps to average over, so the running averages take the support batch's
    statistics exactly (momentum 1): a query that is a copy of a support image
    gets (up to the unbiased variance's n/(n-1)) that image's features."""
    support_pass = copy.copy(learner)
    support_pass.bn_momentum = 1.0
    stats = learner.new_bn_stats(theta.device)
    support = support_pass.features(episode.support_x, theta, bn="batch", stats=stats)
    query = learner.features(episode.query_x, theta, bn="running", stats=stats)
    return support, query


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """[len(a), len(b)] cosine similarities of the rows of a and b."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def nearest_neighbour_scores(query: Tensor, support: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """[Q, n_way]: for each label, the best cosine similarity to a support example of it."""
    sim = cosine_similarity(query, support)                                    # [Q, S]
    scores = sim.new_full((len(query), n_way), -2.0)                           # below any cosine
    return scores.scatter_reduce(1, support_y.expand_as(sim), sim, reduce="amax")


class NearestNeighbour:
    """Pre-trained features + 1-nearest-neighbour by cosine (paper notes 9). Uses only theta's conv
    part, so the pre-training learner (any number of classes) can be passed as is."""

    def __init__(self, learner: Learner, theta: Tensor, name: str = "Nearest neighbour") -> None:
        self.learner, self.theta, self.name = learner, theta.detach(), name

    @torch.no_grad()
    def predict(self, episode: Episode) -> Tensor:
        support, query = embed_episode(self.learner, self.theta, episode)
        return nearest_neighbour_scores(query, support, episode.support_y, episode.n_way)
