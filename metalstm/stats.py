"""95% intervals and paired differences: the one place they are computed (paper notes 5).

    >>> mean_ci95([0.8, 0.9, 1.0])[0]
    0.9
    >>> paired_difference([0.9, 0.8, 1.0], [0.8, 0.8, 0.9])[0]   # doctest: +ELLIPSIS
    0.0666...

A mean accuracy over n episodes is reported as mean +- t_{0.975, n-1} * std / sqrt(n),
a 95% Student t interval: the paper's 1.96 * std / sqrt(n) for its 600 episodes
(t = 1.964 there), and honest for the few episodes a quick run affords (t = 2.776
for 5 episodes, where 1.96 would be 30% too narrow). Two methods run on the SAME episodes are compared
by their per-episode differences d_i = a_i - b_i, whose interval is much
narrower than either method's own when the episodes' difficulty is shared:
that is what lets a 0.5-point gap between two 98% methods be seen.

Those intervals hold one trained rule fixed: they say nothing about another
training seed. Over S seeds, each evaluated on its own episodes, the seed is
the unit: `seed_mean_ci95` and `seed_paired_difference` reduce each seed to
one number and put a Student t interval over the S numbers,
mean +- t_{0.975, S-1} * std / sqrt(S) (t = 4.303 for 3 seeds):

    >>> seed_paired_difference([[1.0, 0.5], [0.75, 0.75]], [[0.5, 0.5], [0.5, 0.75]])[2]   # per seed
    [0.25, 0.125]
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width t_{0.975, n-1} * std / sqrt(n) of a 95% interval over n episodes
    (`t_ci95`); nan for one value."""
    return t_ci95(values)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean per-episode difference a_i - b_i and its 95% half-width (the same episodes in both)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs the same episodes: got {len(a)} and {len(b)} values")
    return mean_ci95([x - y for x, y in zip(a, b)])


def significant(mean: float, half: float) -> bool:
    """True when the 95% interval mean +- half excludes zero."""
    return abs(mean) > half


# The 0.975 quantile of Student's t with df = 1 .. 30 degrees of freedom (tests/package/test_stats.py checks
# each against the numerically integrated density); beyond 30, `t975` expands around 1.96.
T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
        2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
        2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
        2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
        2.045229642, 2.042272456)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom (torch's StudentT has
    no icdf): the table T975 up to 30, then the Cornish-Fisher expansion around z = 1.95996 to
    1/df^4 (off by less than 1e-7 from df = 31 on)."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"Student's t needs df >= 1 degrees of freedom, got {df!r}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959963984540054
    terms = ((z ** 3 + z) / 4,
             (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(g / df ** (k + 1) for k, g in enumerate(terms))


@torch.no_grad()
def t_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width t_{0.975, n-1} * std / sqrt(n) of a 95% Student t interval over
    n values (seeds, not episodes); nan for one value, as `mean_ci95`."""
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError("no values to average")
    n = t.numel()
    half = t975(n - 1) * t.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return t.mean().item(), half


def _per_seed(per_seed: Sequence[Sequence[float]], what: str) -> list[list[float]]:
    lists = [list(x) for x in per_seed]
    if not lists:
        raise ValueError(f"no seeds: {what} needs at least one seed's accuracies")
    empty = [s for s, x in enumerate(lists) if not x]
    if empty:
        raise ValueError(f"seed(s) {', '.join(map(str, empty))} hold no accuracies")
    return lists


def seed_mean_ci95(per_seed: Sequence[Sequence[float]]) -> tuple[float, float, list[float]]:
    """One method trained with S seeds: (mean, half-width, per-seed means).

    per_seed[s] holds the per-episode accuracies of the rule trained with seed s. Each
    seed is reduced to its mean accuracy m_s; the result is the mean of the m_s with the
    Student t interval over them, t_{0.975, S-1} * std(m_s) / sqrt(S) (`t_ci95`).
    The interval includes the seed-to-seed noise of training (another seed trains
    another rule) as well as the episodes' noise inside each m_s; with 3 seeds
    t_{0.975, 2} = 4.303, 2.2 times the normal 1.96, the price of estimating the
    spread from three numbers. One seed: the mean and nan (no spread to estimate).
    """
    means = [sum(x) / len(x) for x in _per_seed(per_seed, "a seed-level mean")]
    mean, half = t_ci95(means)
    return mean, half, means


def seed_paired_difference(a: Sequence[Sequence[float]],
                           b: Sequence[Sequence[float]]) -> tuple[float, float, list[float]]:
    """Method A minus method B over S seeds: (mean difference, half-width, per-seed differences).

    a[s] and b[s] are the per-episode accuracies of the two rules trained with seed s,
    evaluated on the SAME episodes (episode i of seed s is one task for both). Within
    seed s the difference is paired, d_s = mean_i (a[s][i] - b[s][i]), which removes the
    episodes' shared difficulty; the seeds are then combined as independent repeats,
    mean(d_s) +- t_{0.975, S-1} * std(d_s) / sqrt(S) (`t_ci95`). So the interval includes
    the seed-to-seed training noise of both methods, which a per-episode interval
    over one seed (`paired_difference`) leaves out; with 3 seeds t_{0.975, 2} = 4.303.
    `significant(mean, half)` then asks whether the gap outlives a change of seed.

    One seed: its d_1 and a nan half-width (one difference has no spread to estimate,
    and `significant` is False for it), the convention of `mean_ci95` for one value.
    ValueError for unequal numbers of seeds or of episodes within a seed.
    """
    a, b = _per_seed(a, "a seed-level difference"), _per_seed(b, "a seed-level difference")
    if len(a) != len(b):
        raise ValueError(f"a seed-level difference pairs seed s of one method with seed s of the "
                         f"other: got {len(a)} and {len(b)} seeds")
    diffs = []
    for s, (x, y) in enumerate(zip(a, b)):
        if len(x) != len(y):
            raise ValueError(f"seed {s}: a paired difference needs the same episodes: got {len(x)} "
                             f"and {len(y)} values")
        diffs.append(sum(p - q for p, q in zip(x, y)) / len(x))
    mean, half = t_ci95(diffs)
    return mean, half, diffs


def seed_paired_common(a: Mapping[int, Sequence[float]],
                        b: Mapping[int, Sequence[float]]) -> tuple[float, float, list[float]] | None:
    """`seed_paired_difference` over the seeds that both methods have, paired by seed number:
    a[s] and b[s] are the per-episode accuracies of the rules trained with seed s (a grid may
    have finished seeds 0, 1, 2 of one rung and only seed 0 of another: then only seed 0 is
    compared). The seeds are taken in sorted order; None when the two share no seed.

        >>> seed_paired_common({0: [1.0], 2: [0.5]}, {2: [0.25], 5: [1.0]})
        (0.25, nan, [0.25])
    """
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return seed_paired_difference([a[s] for s in common], [b[s] for s in common])


def slope_ci95(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """The least-squares slope b of y = a + b x and the half-width of its 95% t interval,
    t_{0.975, n-2} * sqrt(sum r_i^2 / (n - 2) / sum (x_i - mean x)^2) over the residuals r_i;
    n >= 3 points with at least two distinct x (ValueError otherwise).

    >>> slope_ci95([0, 1, 2], [1.0, 3.0, 5.0])
    (2.0, 0.0)
    """
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"a slope with an interval needs n >= 3 (x, y) pairs, got {len(x)} x and {len(y)} y")
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    if sxx == 0:
        raise ValueError("a slope needs at least two distinct x")
    b = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y)) / sxx
    rss = sum((yi - my - b * (xi - mx)) ** 2 for xi, yi in zip(x, y))
    return b, t975(n - 2) * math.sqrt(rss / (n - 2) / sxx)
