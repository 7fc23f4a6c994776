"""metalstm.stats: 95% intervals and paired differences; evaluate's paired table."""
import math

import pytest
import torch

from metalstm.baselines.common import Evaluation
from metalstm.evaluate import paired_rows, paired_table
from metalstm.stats import mean_ci95, paired_difference, significant


def test_mean_ci95_is_1_96_std_over_sqrt_n():
    values = [0.5, 0.7, 0.9, 0.6]
    mean, half = mean_ci95(values)
    t = torch.tensor(values, dtype=torch.float64)
    assert mean == pytest.approx(0.675)
    assert half == pytest.approx(1.96 * t.std().item() / 2)
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
