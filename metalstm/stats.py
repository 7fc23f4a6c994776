"""95% intervals and paired differences: the one place they are computed (paper notes 5).

    >>> mean_ci95([0.8, 0.9, 1.0])[0]
    0.9
    >>> paired_difference([0.9, 0.8, 1.0], [0.8, 0.8, 0.9])[0]   # doctest: +ELLIPSIS
    0.0666...

A mean accuracy over n episodes is reported as mean +- 1.96 * std / sqrt(n)
(the paper's 95% interval). Two methods run on the SAME episodes are compared
by their per-episode differences d_i = a_i - b_i, whose interval is much
narrower than either method's own when the episodes' difficulty is shared:
that is what lets a 0.5-point gap between two 98% methods be seen.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


@torch.no_grad()
def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width 1.96 * std / sqrt(n) of a 95% interval; nan for one value."""
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError("no values to average")
    half = 1.96 * t.std().item() / math.sqrt(t.numel()) if t.numel() > 1 else float("nan")
    return t.mean().item(), half


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean per-episode difference a_i - b_i and its 95% half-width (the same episodes in both)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs the same episodes: got {len(a)} and {len(b)} values")
    return mean_ci95([x - y for x, y in zip(a, b)])


def significant(mean: float, half: float) -> bool:
    """True when the 95% interval mean +- half excludes zero."""
    return abs(mean) > half
