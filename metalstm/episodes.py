"""Few-shot episodes (paper notes 1): D = (D_train, D_test) = (support set, query set).

An N-way K-shot episode draws N classes of one meta-split, K support and Q
query images of each, and labels the N classes 0..N-1 in a fresh random order,
so that a learner cannot memorise which class is which across episodes.

`EpisodeSampler` gives random access: episode i depends only on (seed, i),
so the same seed gives the same episodes in any order, a resumed run sees
the episodes an uninterrupted one would have, and every method of a
comparison can be evaluated on exactly the same episodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from metalstm.data.base import ImageSet


@dataclass(frozen=True)
class Episode:
    """One few-shot task. Images are float32 in [0, 1], labels are 0..N-1.

    support_x [N*K, C, H, W], support_y [N*K]   (D_train)
    query_x   [N*Q, C, H, W], query_y   [N*Q]   (D_test)
    classes   [N]: the data set's class index behind label 0..N-1.
    Support and query are grouped by label: label 0's images first.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor

    @property
    def n_way(self) -> int:
        """N: the number of classes (ways)."""
        return self.classes.numel()

    @property
    def k_shot(self) -> int:
        """K: support images per class."""
        return self.support_y.numel() // self.n_way

    @property
    def n_query(self) -> int:
        """Q: query images per class."""
        return self.query_y.numel() // self.n_way

    def to(self, device: torch.device | str) -> "Episode":
        """The same episode on another device."""
        return Episode(*(t.to(device) for t in
                         (self.support_x, self.support_y, self.query_x, self.query_y, self.classes)))


def check_request(dataset: ImageSet, n_way: int, k_shot: int, n_query: int) -> None:
    """Raise one clear ValueError when an N-way K-shot Q-query episode cannot be drawn."""
    for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if n_way > dataset.num_classes:
        raise ValueError(
            f"cannot draw a {n_way}-way episode from {dataset.name or 'this data set'}: "
            f"it has only {dataset.num_classes} classes")
    sizes = dataset.class_sizes()
    enough = int((sizes >= k_shot + n_query).sum())
    if enough < n_way:
        raise ValueError(
            f"cannot draw {k_shot} support + {n_query} query = {k_shot + n_query} images per class "
            f"for {n_way} classes from {dataset.name or 'this data set'}: only {enough} classes have "
            f"that many images (the smallest class has {int(sizes.min())}, the largest {int(sizes.max())})")


class EpisodeSampler:
    """Reproducible N-way K-shot episodes from one meta-split.

    `sampler[i]` is episode i, a function of (seed, i) alone; iterating yields
    episodes 0, 1, 2, ... without end; `sampler.take(n, start=0)` gives a list.
    """

    def __init__(self, dataset: ImageSet, n_way: int, k_shot: int, n_query: int = 15,
                 seed: int = 0) -> None:
        check_request(dataset, n_way, k_shot, n_query)
        self.dataset, self.n_way, self.k_shot, self.n_query = dataset, n_way, k_shot, n_query
        self.seed = int(seed)
        per_class = k_shot + n_query
        eligible = torch.nonzero(dataset.class_sizes() >= per_class).flatten()
        self._eligible = eligible
        # images of each eligible class as a padded index table [classes, max_size]
        sizes = dataset.class_sizes()[eligible]
        self._sizes = sizes
        table = torch.zeros(len(eligible), int(sizes.max()), dtype=torch.long)
        for row, c in enumerate(eligible.tolist()):
            idx = dataset.indices_of(c)
            table[row, : len(idx)] = idx
        self._table = table

    def generator(self, i: int) -> torch.Generator:
        """The random stream of episode i: a function of (seed, i) alone."""
        return _mixed(self.seed, i, (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 1))

    def __getitem__(self, i: int) -> Episode:
        """Episode i (paper notes 1), a function of `generator(i)` alone.

        N classes of the eligible ones (those with at least K+Q images), in a random order:
        the j-th gets label j. Of each, a random K+Q of its images: the first K are support
        images, the other Q queries. Returns an `Episode`: support_x [N*K, C, H, W],
        support_y [N*K], query_x [N*Q, C, H, W], query_y [N*Q] (grouped by label), classes [N].
        i is a whole number >= 0: anything else is a ValueError, a negative one an IndexError.
        """
        if isinstance(i, bool) or not hasattr(type(i), "__index__"):
            raise ValueError(f"an episode index is a whole number >= 0, got {i!r}")
        i = i.__index__()
        if i < 0:
            raise IndexError(f"episodes are numbered from 0, got {i}")
        g = self.generator(i)
        n, k, q = self.n_way, self.k_shot, self.n_query
        rows = torch.randperm(len(self._eligible), generator=g)[:n]       # label j -> rows[j]
        # a random subset of K+Q images of each chosen class
        keys = torch.rand(n, self._table.shape[1], generator=g)
        cols = torch.arange(self._table.shape[1]).expand(n, -1)
        keys = keys.masked_fill(cols >= self._sizes[rows, None], 2.0)     # padding sorts last
        pick = keys.argsort(dim=1)[:, : k + q]
        idx = self._table[rows[:, None], pick]                            # [n, k+q]
        images = self.dataset.float_images(idx.flatten()).view(n, k + q, *self.dataset.image_shape)
        labels = torch.arange(n)
        return Episode(
            support_x=images[:, :k].reshape(n * k, *self.dataset.image_shape),
            support_y=labels.repeat_interleave(k),
            query_x=images[:, k:].reshape(n * q, *self.dataset.image_shape),
            query_y=labels.repeat_interleave(q),
            classes=self._eligible[rows])

    def take(self, count: int, start: int = 0) -> list[Episode]:
        """Episodes start .. start+count-1."""
        return [self[i] for i in range(start, start + count)]

    def __iter__(self) -> Iterator[Episode]:
        i = 0
        while True:
            yield self[i]
            i += 1

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self.dataset.name!r}, {self.n_way}-way {self.k_shot}-shot, "
                f"{self.n_query} query, seed={self.seed})")


# -- seeds and the fixed episode streams of a configuration --------------------
def episode_generator(seed: int, i: int) -> torch.Generator:
    """The generator of episode i's own random choices in the inner loop (its mini-batch order),
    from (seed, i) alone; `EpisodeSampler.generator` draws the episode itself."""
    return _mixed(seed, i, (1_000_003, 7_919, 12_345))


def _mixed(seed: int, i: int, constants: tuple[int, int, int]) -> torch.Generator:
    """The ONE way (seed, i) becomes a generator: a * seed + b * i + c, modulo 2^63 - 1.
    Different (a, b, c) name different streams (the episode, its mini-batches)."""
    a, b, c = constants
    g = torch.Generator()
    g.manual_seed((seed * a + i * b + c) % (2**63 - 1))
    return g


def load_split(cfg, split: str):
    """One meta-split of the configuration's data set, checked against its episode shape."""
    from metalstm.data import load_dataset

    data = load_dataset(cfg.dataset, split, root=cfg.data_root, image_size=cfg.image_size,
                        channels=cfg.in_channels, val_alphabets=getattr(cfg, "val_alphabets", None))
    if data.image_shape != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise ValueError(f"{cfg.name}: expects {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} "
                         f"images but {data.name} has {'x'.join(map(str, data.image_shape))}")
    check_request(data, cfg.n_way, cfg.k_shot, cfg.n_query)
    return data


SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def sampler_for(cfg, split: str, data=None) -> "EpisodeSampler":
    """The fixed episode stream of a configuration's split: seeds differ per split so val/test
    never reuse train's. `data` may be another data set's split (e.g. the digits as "test")."""
    data = data if data is not None else load_split(cfg, split)
    return EpisodeSampler(data, cfg.n_way, cfg.k_shot, cfg.n_query, seed=cfg.seed * 10 + SPLIT_OFFSETS[split])

