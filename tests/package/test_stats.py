"""metalstm.stats: 95% intervals and paired differences; evaluate's paired table."""
import math

import pytest
import torch

from metalstm.baselines.common import Evaluation
from metalstm.evaluate import paired_rows, paired_table
from metalstm.stats import (T975, mean_ci95, paired_difference, seed_mean_ci95, seed_paired_common,
                            seed_paired_difference, significant, t975)


def test_mean_ci95_is_a_t_interval_over_the_episodes():
    """t_{0.975, n-1} * std / sqrt(n): 3.182 for 4 episodes; within 0.3% of the paper's 1.96 at 600."""
    values = [0.5, 0.7, 0.9, 0.6]
    mean, half = mean_ci95(values)
    t = torch.tensor(values, dtype=torch.float64)
    assert mean == pytest.approx(0.675)
    assert half == pytest.approx(3.182446305 * t.std().item() / 2)
    many = [0.5 + 0.1 * (i % 5) for i in range(600)]
    assert mean_ci95(many)[1] == pytest.approx(1.96 * torch.tensor(many).double().std().item() / math.sqrt(600), rel=3e-3)
    assert math.isnan(mean_ci95([0.3])[1])
    with pytest.raises(ValueError, match="no values"):
        mean_ci95([])


def test_paired_difference_sees_a_gap_that_the_separate_intervals_hide():
    g = torch.Generator().manual_seed(0)
    difficulty = torch.rand(600, generator=g) * 0.3           # shared by both methods
    a = (0.7 + difficulty).tolist()
    b = (0.69 + difficulty + 0.002 * torch.randn(600, generator=g)).tolist()
    (ma, ha), (mb, hb) = mean_ci95(a), mean_ci95(b)
    assert abs(ma - mb) < ha + hb                             # the two intervals overlap...
    d, hd = paired_difference(a, b)
    assert d == pytest.approx(0.01, abs=1e-3) and significant(d, hd)   # ...the paired one does not


def test_paired_difference_needs_the_same_episodes():
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1.0, 0.5], [1.0])


def test_paired_rows_compare_with_the_reference_and_the_rung_below():
    res = [Evaluation("SGD (random init)", [0.5, 0.6, 0.7], 1.0),
           Evaluation("Meta-SGD", [0.8, 0.8, 0.9], 1.0),
           Evaluation("Meta-Learner LSTM", [0.9, 0.9, 0.9], 1.0),
           Evaluation("Nearest neighbour", [1.0, 0.9, 1.0], 1.0)]
    rung_of = {"SGD (random init)": "sgd", "Meta-SGD": "meta-sgd", "Meta-Learner LSTM": "lstm"}
    rows = {r["name"]: r for r in paired_rows(res, rung_of)}
    assert rows["Meta-SGD"]["below"] == "SGD (random init)"           # init and schedule are missing
    assert rows["Meta-SGD"]["vs_below"][0] == pytest.approx((0.3 + 0.2 + 0.2) / 3)
    assert rows["Meta-Learner LSTM"]["below"] == "Meta-SGD"
    assert rows["Meta-Learner LSTM"]["vs_reference"] is None
    assert rows["Nearest neighbour"]["vs_reference"][0] == pytest.approx(0.2 / 3)
    assert rows["Nearest neighbour"]["vs_below"] is None and rows["SGD (random init)"]["vs_below"] is None
    table = paired_table(list(rows.values()))
    assert "| Meta-SGD | 83.33 +- " in table and "(vs SGD (random init))" in table
    short = paired_table(list(rows.values()), name_below=False)    # rows: SGD, Meta-SGD, LSTM, NN
    assert "(vs SGD (random init))" not in short and "(vs Meta-SGD)" not in short          # the row above
    ordered = [rows[n] for n in ("Meta-SGD", "SGD (random init)", "Meta-Learner LSTM", "Nearest neighbour")]
    assert "(vs SGD (random init))" in paired_table(ordered, name_below=False)    # not the row above: named


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for t >= 0: Simpson's rule on Student's t density from 0 to t."""
    n = 20001
    x = torch.linspace(0, t, n, dtype=torch.float64)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = torch.exp(log_c - (df + 1) / 2 * torch.log1p(x * x / df))
    return 0.5 + (t / (n - 1) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())).item()


def test_t975_is_the_0_975_quantile_of_students_t():
    assert t975(2) == pytest.approx(4.303, abs=5e-4) and t975(1) == pytest.approx(12.706, abs=5e-4)
    for df in [*range(1, len(T975) + 1), 31, 45, 100]:
        assert _t_cdf(t975(df), df) == pytest.approx(0.975, abs=1e-7), df
    assert t975(10 ** 6) == pytest.approx(1.95996, abs=1e-5)
    with pytest.raises(ValueError, match="df >= 1"):
        t975(0)


def test_seed_mean_is_a_t_interval_over_the_seed_means():
    per_seed = [[0.6, 0.8], [0.7, 0.9, 0.8], [0.9, 0.9]]          # seed means 0.7, 0.8, 0.9
    mean, half, means = seed_mean_ci95(per_seed)
    assert means == pytest.approx([0.7, 0.8, 0.9])
    assert mean == pytest.approx(0.8)
    assert half == pytest.approx(4.302652730 * 0.1 / math.sqrt(3))  # std of (0.7, 0.8, 0.9) is 0.1
    assert half == pytest.approx(0.24841, abs=1e-5)


def test_seed_paired_difference_pairs_within_seeds_and_t_intervals_over_them():
    a = [[0.8, 0.6], [0.9, 0.9], [0.7, 1.0]]
    b = [[0.7, 0.6], [0.8, 0.8], [0.6, 0.8]]                      # d_s = 0.05, 0.10, 0.15
    mean, half, diffs = seed_paired_difference(a, b)
    assert diffs == pytest.approx([0.05, 0.10, 0.15])
    assert mean == pytest.approx(0.10)
    assert half == pytest.approx(4.302652730 * 0.05 / math.sqrt(3))  # 0.12421: the gap is not
    assert not significant(mean, half)                                # shown across three seeds
    mean, half, _ = seed_paired_difference([[0.4], [0.6]], [[0.3], [0.3]])   # d = 0.1, 0.3; df 1
    assert mean == pytest.approx(0.2) and half == pytest.approx(12.706204736 * 0.1)


def test_one_seed_gives_its_numbers_and_a_nan_interval():
    mean, half, diffs = seed_paired_difference([[0.9, 0.7]], [[0.8, 0.6]])
    assert mean == pytest.approx(0.1) and diffs == pytest.approx([0.1])
    assert math.isnan(half) and not significant(mean, half)
    mean, half, _ = seed_mean_ci95([[0.5, 1.0]])
    assert mean == pytest.approx(0.75) and math.isnan(half)


def test_seed_level_statistics_refuse_unpaired_input():
    with pytest.raises(ValueError, match="2 and 3 seeds"):
        seed_paired_difference([[1.0], [1.0]], [[1.0], [1.0], [1.0]])
    with pytest.raises(ValueError, match="seed 1: a paired difference needs the same episodes"):
        seed_paired_difference([[1.0], [1.0, 0.5]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="no seeds"):
        seed_mean_ci95([])
    with pytest.raises(ValueError, match="seed.s. 0 hold no accuracies"):
        seed_mean_ci95([[], [0.5]])


def test_three_seeds_0_80_0_82_0_84_by_hand():
    per_seed = [[0.78, 0.82], [0.82, 0.80, 0.84], [0.84]]             # seed means 0.80, 0.82, 0.84
    mean, half, means = seed_mean_ci95(per_seed)
    assert means == pytest.approx([0.80, 0.82, 0.84]) and mean == pytest.approx(0.82)
    assert half == pytest.approx(4.303 * 0.02 / 1.732, rel=2e-4)         # t975(2) * sd / sqrt(3)
    assert half == pytest.approx(0.049683, abs=1e-6)
    assert mean_ci95(means)[1] == pytest.approx(half)                     # the same t interval
    assert 1.96 * 0.02 / 3 ** 0.5 < half                                  # 1.96 would claim too much


def test_a_difference_paired_within_seeds_outlives_the_seed_spread_that_hides_it():
    """Rung A beats rung B by one point in every seed, while the seeds themselves spread by two
    points (both rungs of seed s share its initialisation and training episodes): the separate
    seed intervals overlap, the interval over the per-seed paired differences excludes 0."""
    g = torch.Generator().manual_seed(1)
    difficulty = (torch.rand(600, generator=g) * 0.2).tolist()              # shared by every run
    seed_effect = [0.0, 0.02, 0.04]
    a = [[0.75 + s + d for d in difficulty] for s in seed_effect]
    b = [[0.74 + s + d + e for d, e in zip(difficulty, (0.001 * torch.randn(600, generator=g)).tolist())]
         for s in seed_effect]
    (ma, ha, _), (mb, hb, _) = seed_mean_ci95(a), seed_mean_ci95(b)
    assert abs(ma - mb) < ha + hb                                          # overlapping intervals
    d, hd, per_seed = seed_paired_difference(a, b)
    assert per_seed == pytest.approx([0.01] * 3, abs=2e-4) and d == pytest.approx(0.01, abs=2e-4)
    assert significant(d, hd)
    # within a seed, the paired mean difference is the difference of the two seed means
    assert per_seed[0] == pytest.approx(sum(a[0]) / 600 - sum(b[0]) / 600)


def test_seed_paired_common_pairs_the_seeds_both_methods_have():
    a = {0: [0.9, 0.7], 1: [0.8, 0.8], 2: [0.6, 0.6]}
    b = {2: [0.5, 0.5], 0: [0.8, 0.6], 7: [0.1, 0.1]}                     # seeds 0 and 2 in common
    mean, half, per_seed = seed_paired_common(a, b)
    assert per_seed == pytest.approx([0.1, 0.1]) and mean == pytest.approx(0.1) and half == pytest.approx(0)
    mean, half, per_seed = seed_paired_common({3: [1.0]}, {3: [0.5], 4: [0.0]})
    assert mean == pytest.approx(0.5) and math.isnan(half)                # one seed: no interval
    assert seed_paired_common({0: [1.0]}, {1: [1.0]}) is None
