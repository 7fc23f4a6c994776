"""metalstm.tools.ladder_seeds: the ladder over training seeds. The table from hand-made JSON files
(known means and t intervals, a rung with one seed, the verdict's wording); the evaluation of a
tiny grid trained on the smoke configuration, which skips what is already evaluated with the same
checkpoint and measures a replaced one again."""
from __future__ import annotations

import io
import json
import math
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from metalstm.stats import t975
from metalstm.tools import grid as grid_tool
from metalstm.tools import ladder_seeds

T2 = 4.302652730                  # t_{0.975, 2}: three seeds


def run(*args) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = ladder_seeds.main([str(a) for a in args])
    return code, out.getvalue()


def write_record(folder: Path, rung: str, seed: int, accs: list[float], shot: int = 1,
                 test_sets=("glyphs", "digits")) -> None:
    """A results file as the evaluation writes it, with the same episodes for every run."""
    name = f"glyphs-{shot}shot-{rung}-seed{seed}"
    record = {"run": name, "rung": rung, "shot": shot, "seed": seed, "episodes": len(accs),
              "checkpoint_sha256": "0" * 64,
              "test_sets": {t: {"seed": 2, "data_sha256": f"{t}-images", "accuracies": accs} for t in test_sets}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record))


@pytest.fixture
def hand_made(tmp_path) -> Path:
    """sgd and lstm with seeds 0, 1, 2 (seed means 0.60 0.62 0.64 and 0.80 0.82 0.84), init with
    seed 0 only, meta-sgd with three seeds whose differences to the LSTM are +1, -1, +1 points."""
    res = tmp_path / "results"
    for seed, (lo, hi) in enumerate([(0.50, 0.70), (0.52, 0.72), (0.54, 0.74)]):
        write_record(res, "sgd", seed, [lo, hi])
    for seed, (lo, hi) in enumerate([(0.70, 0.90), (0.72, 0.92), (0.74, 0.94)]):
        write_record(res, "lstm", seed, [lo, hi])
    for seed, (lo, hi) in enumerate([(0.72, 0.90), (0.72, 0.90), (0.74, 0.96)]):   # 0.81 0.81 0.85
        write_record(res, "meta-sgd", seed, [lo, hi])
    write_record(res, "init", 0, [0.75, 0.85])                                    # 0.80, one seed
    return res


def test_the_table_is_a_t_interval_over_seed_means_with_paired_differences(hand_made):
    rows = ladder_seeds.seed_rows(ladder_seeds.read_results(hand_made))
    by = {(r["test_set"], r["rung"]): r for r in rows}
    assert [r["rung"] for r in rows if r["test_set"] == "glyphs"] == ["sgd", "init", "meta-sgd", "lstm"]
    sgd, lstm = by["glyphs", "sgd"], by["glyphs", "lstm"]
    assert sgd["seeds"] == [0, 1, 2] and sgd["mean"] == pytest.approx(0.62)
    assert sgd["half"] == pytest.approx(T2 * 0.02 / math.sqrt(3))        # sd(0.60, 0.62, 0.64) = 0.02
    assert lstm["mean"] == pytest.approx(0.82) and lstm["half"] == pytest.approx(4.303 * 0.02 / 1.732, rel=1e-3)
    mean, half, per_seed = sgd["vs_lstm"]                                 # -0.20 in every seed
    assert per_seed == pytest.approx([-0.2] * 3) and mean == pytest.approx(-0.2) and half == pytest.approx(0)
    meta = by["glyphs", "meta-sgd"]
    mean, half, per_seed = meta["vs_lstm"]
    assert per_seed == pytest.approx([0.01, -0.01, 0.01]) and mean == pytest.approx(0.01 / 3)
    sd = math.sqrt(((2 / 3 * 0.01) ** 2 * 2 + (4 / 3 * 0.01) ** 2) / 2)   # sd of (+1, -1, +1) points
    assert half == pytest.approx(t975(2) * sd / math.sqrt(3))
    init = by["glyphs", "init"]
    assert init["seeds"] == [0] and math.isnan(init["half"]) and init["mean"] == pytest.approx(0.80)
    assert meta["below"] == "init" and meta["vs_below"][2] == pytest.approx([0.01])    # seed 0 only
    assert lstm["below"] == "meta-sgd" and lstm["vs_lstm"] is None


def test_the_markdown_says_n_a_for_one_seed_and_no_measurable_difference(hand_made, tmp_path):
    out = tmp_path / "table.md"
    code, text = run("--table-only", "--results", hand_made, "--grid", tmp_path / "no-grid", "--write", out)
    assert code == 0, text
    written = out.read_text()
    assert written.startswith(text.rstrip("\n") + "\n\n")       # the table, then the runs it read
    names = ladder_seeds.runs_of(written)
    assert len(names) == 10 and names[0] == "glyphs-1shot-init-seed0" and "glyphs-1shot-sgd-seed2" in names
    assert "**1-shot, meta-test on glyphs**" in text and "**1-shot, meta-test on digits**" in text
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 3 (0, 1, 2) | 62.00 +- 4.97 | 60.00, 62.00, 64.00 | -20.00 +- 0.00 |" in lines["SGD (random init)"]
    assert "vs LSTM: lower" in lines["SGD (random init)"]
    assert "| 1 (0) | 80.00 +- n/a (1 seed) |" in lines["Learned init (FO-MAML)"]
    assert "+20.00 +- n/a (1 seed) (vs SGD (random init))" in lines["Learned init (FO-MAML)"]
    assert "vs the rung below: n/a (1 seed)" in lines["Learned init (FO-MAML)"]
    assert "+0.33 +- 2.87 |" in lines["Meta-SGD"] and "vs LSTM: no measurable difference" in lines["Meta-SGD"]
    assert "t(0.975, S-1) * sd / sqrt(S) with df = S - 1" in text and "n/a: fewer than 2 seeds" in text


def test_runs_on_other_episodes_are_refused(hand_made):
    write_record(hand_made, "schedule", 0, [0.9, 0.9, 0.9])               # 3 episodes, the others 2
    with pytest.raises(ValueError, match="different episodes"):
        ladder_seeds.seed_rows(ladder_seeds.read_results(hand_made))
    (hand_made / "bad.json").write_text("[1, 2]")
    code, text = run("--table-only", "--results", hand_made)
    assert code == 2


def test_plot_seed_spread_draws_a_panel_per_shot_and_test_set(hand_made):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from metalstm.viz.plots import plot_seed_spread
    fig = plot_seed_spread(ladder_seeds.seed_rows(ladder_seeds.read_results(hand_made)))
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == \
        ["1-shot, meta-test on glyphs", "1-shot, meta-test on digits"]
    plt.close(fig)


# -- the evaluation of a tiny grid ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory) -> Path:
    """sgd with seeds 0 and 1, init with seed 0: 3 episodes each on the smoke configuration."""
    root = tmp_path_factory.mktemp("seeds")
    common = ["--config", "smoke", "--shots", "1", "--episodes", "3", "--val-every", "3", "--jobs", "2",
              "--out", str(root / "grid")]
    with redirect_stdout(io.StringIO()):
        assert grid_tool.main([*common, "--rungs", "sgd", "init", "--seeds", "0"]) == 0
        assert grid_tool.main([*common, "--rungs", "sgd", "--seeds", "1"]) == 0
    return root


@pytest.mark.slow
def test_every_finished_run_is_evaluated_once_on_the_same_episodes(tiny_grid, monkeypatch):
    grid, res = tiny_grid / "grid", tiny_grid / "results"
    names = ["smoke-init-seed0", "smoke-sgd-seed0", "smoke-sgd-seed1"]
    assert [s.name for s in ladder_seeds.finished_runs(grid)] == names
    code, text = run("--grid", grid, "--results", res, "--episodes", 3)
    assert code == 0, text
    for name in names:
        assert f"ladder_seeds: evaluated {name} (glyphs " in text
        record = json.loads((res / f"{name}.json").read_text())
        assert record["checkpoint_sha256"] == ladder_seeds.file_sha256(grid / name / "best.pt")
        assert sorted(record["test_sets"]) == ["digits", "glyphs"]
        assert all(len(b["accuracies"]) == 3 for b in record["test_sets"].values())
    one = json.loads((res / "smoke-sgd-seed0.json").read_text())["test_sets"]
    other = json.loads((res / "smoke-sgd-seed1.json").read_text())["test_sets"]
    assert one["glyphs"]["seed"] == other["glyphs"]["seed"] == 2           # seed 0's episodes for both
    assert "| SGD (random init) | 2 (0, 1) |" in text and "| Learned init (FO-MAML) | 1 (0) |" in text
    assert "**1-shot, meta-test on digits**" in text

    def no_evaluation(*args, **kwargs):
        raise AssertionError("an evaluated run was evaluated again")
    monkeypatch.setattr(ladder_seeds, "evaluate_run", no_evaluation)
    code, again = run("--grid", grid, "--results", res, "--episodes", 3)
    assert code == 0 and again.count("ladder_seeds: skip ") == 3 and "evaluated" not in again
    assert again.split("**", 1)[1] == text.split("**", 1)[1]                 # the same table
    monkeypatch.undo()
    shutil.copy(grid / "smoke-sgd-seed1" / "best.pt", grid / "smoke-sgd-seed0" / "best.pt")   # replaced
    code, third = run("--grid", grid, "--results", res, "--episodes", 3)
    assert code == 0 and "ladder_seeds: evaluated smoke-sgd-seed0" in third and third.count("skip") == 2
    code, text = run("--grid", grid, "--results", res, "--runs", "smoke-lstm-seed0")
    assert code == 2


@pytest.mark.slow
def test_published_runs_are_evaluated_from_their_shipped_checkpoints(tiny_grid, tmp_path):
    """A later session has no grid folders, only what `grid --publish` shipped: seed 0's NAME.pt
    beside NAME.log.csv; --published evaluates those (the same numbers as from the run folder)."""
    pub = tmp_path / "pub"
    pub.mkdir()
    for name in ("smoke-init-seed0", "smoke-sgd-seed1"):
        grid_tool.publish(grid_tool.make_plan("smoke", [name.split("-")[1]], [1], [int(name[-1])],
                                              tiny_grid / "grid")[0], pub)
    assert sorted(p.name for p in pub.iterdir()) == ["smoke-init-seed0.log.csv", "smoke-init-seed0.pt",
                                                     "smoke-sgd-seed1.log.csv"]
    res = tmp_path / "results"
    code, text = run("--grid", tmp_path / "no-grid", "--published", pub, "--results", res, "--episodes", 3)
    assert code == 0, text
    assert "ladder_seeds: evaluated smoke-init-seed0 (glyphs " in text and "smoke-sgd-seed1" not in text
    record = json.loads((res / "smoke-init-seed0.json").read_text())
    assert record["checkpoint_sha256"] == ladder_seeds.file_sha256(pub / "smoke-init-seed0.pt")
    code, _ = run("--grid", tiny_grid / "grid", "--runs", "smoke-init-seed0", "--results", tmp_path / "direct",
                  "--episodes", 3)
    direct = json.loads((tmp_path / "direct" / "smoke-init-seed0.json").read_text())
    assert code == 0 and all(record["test_sets"][t]["accuracies"] == direct["test_sets"][t]["accuracies"]
                             for t in ("glyphs", "digits"))                  # the same numbers either way


def test_the_compact_table_and_the_measured_differences_come_from_the_same_rows(hand_made):
    rows = ladder_seeds.seed_rows(ladder_seeds.read_results(hand_made))
    table = ladder_seeds.compact_table(rows).splitlines()
    assert table[0] == "| rung | glyphs 1-shot | digits 1-shot |"
    assert table[2] == "| SGD (random init) | 62.00 +- 4.97 (3 seeds) | 62.00 +- 4.97 (3 seeds) |"
    assert table[3] == "| Learned init (FO-MAML) | 80.00 (1 seed) | 80.00 (1 seed) |"
    said = ladder_seeds.measured_differences(rows)
    # SGD is 20 points below the LSTM in every seed (interval 0): stated; Meta-SGD's +0.33 +- 2.87 to
    # the LSTM (and the LSTM's -0.33 to Meta-SGD, its rung below) and every one-seed difference: not
    assert said == [f"{t} 1-shot: SGD (random init) is lower than Meta-Learner LSTM by -20.00 +- 0.00 points "
                    f"(3 seeds)" for t in ("glyphs", "digits")]
