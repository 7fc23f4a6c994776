"""metalstm.tools.plateau: the trend of a validation curve's last episodes, on curves whose
slope is known (a straight line, a level line with noise, a falling line), and the table the
command prints from log.csv files (with the grid record's CPU minutes)."""
import json

import pytest

from metalstm.stats import slope_ci95, t975
from metalstm.tools import plateau


def test_the_slope_and_its_interval_on_known_points():
    assert slope_ci95([0, 1, 2, 3], [1.0, 1.5, 2.0, 2.5]) == pytest.approx((0.5, 0.0))
    b, h = slope_ci95([0, 1, 2], [0.0, 1.0, 0.0])        # residuals -1/3, 2/3, -1/3: rss 2/3, sxx 2
    assert b == pytest.approx(0.0) and h == pytest.approx(t975(1) * (2 / 3 / 1 / 2) ** 0.5)
    with pytest.raises(ValueError, match="n >= 3"):
        slope_ci95([0, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="two distinct x"):
        slope_ci95([1, 1, 1], [0.0, 1.0, 2.0])


def test_rising_flat_and_falling_curves_over_the_last_window():
    rising = [(e, 0.5 + e * 1e-5) for e in range(0, 5001, 250)]           # +1 point per 1,000 episodes
    t = plateau.trend(rising)
    assert t["verdict"] == "rising" and t["slope"] == pytest.approx(1.0) and t["points"] == 5
    level = [(e, 0.9 + (0.01 if (e // 250) % 2 else -0.01)) for e in range(0, 5001, 250)]
    assert plateau.trend(level)["verdict"] == "flat"
    falling = [(e, 0.9 - e * 1e-5) for e in range(0, 5001, 250)]
    assert plateau.trend(falling)["verdict"] == "falling"
    assert plateau.trend([(0, 0.5), (250, 0.6)])["verdict"] == "too short"
    assert plateau.trend(rising, window=2000)["points"] == 9
    assert plateau.trend(level)["best_episode"] == 250                     # the first of the best


def test_the_command_reads_logs_and_the_grid_record(tmp_path, capsys):
    log = tmp_path / "glyphs-1shot-init-seed0.log.csv"
    log.write_text("episode,train_loss,train_acc,val_acc,val_ci95,seconds\n" +
                   "".join(f"{e},,,{0.5 + e * 1e-5},0.02,1\n" for e in range(0, 2001, 250)))
    (tmp_path / "glyphs-1shot-init-seed0.run.json").write_text(json.dumps({"cpu_seconds": 600.0}))
    assert plateau.main([str(log)]) == 0
    line = capsys.readouterr().out.splitlines()[2]
    assert line == "| glyphs-1shot-init-seed0 | 2,000 | 52.00 (2,000) | +1.00 +- 0.00 (5 points) | rising | 10 |"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert plateau.main([str(bad)]) == 2 and "not a training log" in capsys.readouterr().err
