"""The results tables of docs/results.md, and the README's headline table, are exactly what the
shipped evaluation files give.

docs/results.md holds every results table (the ladder and the baselines, the substitution tests,
the out-of-domain measurements); each must equal what its tool prints from the JSON in
data/results/. The README shows one headline table, a few rows of the ladder files, and it is
checked against the same files.
"""
import json
from pathlib import Path

import pytest

from metalstm.tools.results_table import DEFAULT_TARGET, main, tables

ROOT = Path(__file__).resolve().parents[2]
RESULTS_PAGE = ROOT / "docs" / "results.md"
FILES = [ROOT / "data" / "results" / f"ladder-{k}shot.json" for k in (1, 5)]
SUBSTITUTION = [ROOT / "data" / "results" / f"substitution-{k}shot.json" for k in (1, 5)]
OOD = [ROOT / "data" / "results" / f"ood-{k}shot.json" for k in (1, 5)]

# the README's headline: the shipped Meta-Learner LSTM among the main baselines and rungs
HEADLINE_ROWS = ["SGD (random init)", "Learned init (FO-MAML)", "Meta-SGD", "Meta-Learner LSTM",
                 "Fine-tune", "Nearest neighbour", "Matching Networks"]


def headline(paths=FILES, rows=HEADLINE_ROWS) -> str:
    """The README's headline table from the ladder files: accuracy +- 95% interval per test set and shot."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    columns = [(t, r) for t in ("glyphs", "digits") for r in reports]
    head = "| method | " + " | ".join(f"{t} {r['config']['k_shot']}-shot" for t, r in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for name in rows:
        cells = []
        for t, r in columns:
            row = next(x for x in r["test_sets"][t]["results"] if x["name"] == name)
            cells.append(f"{100 * row['mean']:.2f} +- {100 * row['ci95']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_the_tool_names_the_results_page_as_its_target():
    assert DEFAULT_TARGET == "docs/results.md" and (ROOT / DEFAULT_TARGET).is_file()


def test_every_results_table_of_the_results_page_comes_from_the_shipped_json():
    page = RESULTS_PAGE.read_text()
    made = tables(FILES)
    assert set(made) == {"glyphs", "digits"}
    for test_set, table in made.items():
        assert table in page, (f"docs/results.md's {test_set} table differs from "
                               f"`python -m metalstm.tools.results_table`")


def test_the_readmes_headline_table_comes_from_the_shipped_json():
    table = headline()
    assert table in (ROOT / "README.md").read_text(), \
        "README's headline table differs from the shipped JSON; it should read:\n\n" + table


def test_the_headline_agrees_with_the_full_tables():
    """Every headline cell is the accuracy cell of the same row in the results page's tables."""
    full = tables(FILES)
    for line in headline().splitlines()[2:]:
        name, g1, g5, d1, d5 = [c.strip() for c in line.strip("|").split("|")]
        glyphs = next(x for x in full["glyphs"].splitlines() if x.startswith(f"| {name} |"))
        digits = next(x for x in full["digits"].splitlines() if x.startswith(f"| {name} |"))
        assert [c.strip() for c in glyphs.strip("|").split("|")][1::3][:2] == [g1, g5]
        assert [c.strip() for c in digits.strip("|").split("|")][1::3][:2] == [d1, d5]


def test_a_changed_number_would_be_caught(tmp_path):
    report = json.loads(FILES[0].read_text())
    report["test_sets"]["glyphs"]["results"][0]["mean"] += 0.001
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(report))
    assert tables([changed, FILES[1]])["glyphs"] != tables(FILES)["glyphs"]
    assert headline([changed, FILES[1]]) != headline()


def test_the_command_refuses_a_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json")]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_substitution_tables_of_the_results_page_come_from_the_shipped_json():
    from metalstm.tools.substitute import meta_sgd_table, table
    page = RESULTS_PAGE.read_text()
    assert table(SUBSTITUTION) in page, "docs/results.md's substitution table differs from `metalstm.tools.substitute --table`"
    assert meta_sgd_table(SUBSTITUTION) in page, "docs/results.md's Meta-SGD table differs from the shipped JSON"


def test_the_out_of_domain_table_of_the_results_page_comes_from_the_shipped_json():
    from metalstm.tools.ood import table
    assert table(OOD) in RESULTS_PAGE.read_text(), "docs/results.md's out-of-domain table differs from the JSON"


def test_a_changed_substitution_number_would_be_caught(tmp_path):
    from metalstm.tools.substitute import table
    report = json.loads(SUBSTITUTION[0].read_text())
    accs = report["test_sets"]["glyphs"]["accuracies"]["magnitude"]
    accs[0] = 1.0 - accs[0]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(report))
    assert table([changed, SUBSTITUTION[1]]) != table(SUBSTITUTION)


def test_the_results_tables_are_not_copied_into_the_readme():
    """The README keeps one headline table; the full tables live in docs/results.md only."""
    readme = (ROOT / "README.md").read_text()
    assert not any(table in readme for table in tables(FILES).values())


def test_the_seed_page_and_the_readmes_seed_blocks_are_what_seed_report_writes_from_the_runs_they_name():
    """docs/ladder-seeds.md (tables, stated differences, trends, CPU time) and the README's seed table
    and grid-time sentence are exactly what `python -m metalstm.tools.seed_report` composes from the
    files of the runs the page names (the grid commits new runs as they finish; the page says which
    ones it was made from), so no number on them is typed by hand."""
    from metalstm.tools import seed_report
    from metalstm.tools.ladder_seeds import runs_of
    page = (ROOT / "docs" / "ladder-seeds.md").read_text()
    made = seed_report.compose(runs_of(page), ROOT / "data" / "results" / "grid", ROOT / "data" / "checkpoints" / "grid",
                               ROOT / "data" / "checkpoints" / "plateau")
    assert made["page"] == page, "docs/ladder-seeds.md differs from `python -m metalstm.tools.seed_report`"
    readme = (ROOT / "README.md").read_text()
    assert seed_report.readme_with(readme, made["seeds"], made["time"]) == readme, \
        "README's seed table or grid-time sentence differs; it should read:\n\n" + made["seeds"] + "\n\n" + made["time"]


def test_the_seed_report_states_trends_and_time_from_fixed_numbers(tmp_path):
    """past_budget and time_sentence on hand-made files: a curve rising by 1 point per 1,000 episodes
    reads +1.00 +- 0.00 (exact line) and "rising"; the best validation at the budget is the best of
    the first 5,000 episodes; CPU minutes are the records' seconds / 60."""
    from metalstm.tools import seed_report
    log = tmp_path / "glyphs-1shot-lstm-seed0.log.csv"
    rows = [(e, 0.80 + 0.01 * e / 1000) for e in range(0, 8001, 250)]
    log.write_text("episode,train_loss,train_acc,val_acc,val_ci95,seconds\n" +
                   "".join(f"{e},,,{a},0.01,{e}\n" for e, a in rows))
    table = seed_report.past_budget([log])
    assert "| glyphs-1shot-lstm-seed0 | 8,000 | 85.00 (5,000) | 88.00 (8,000) | +1.00 +- 0.00: rising | " \
           "+1.00 +- 0.00: rising |" in table, table
    grid_run = {"name": "glyphs-1shot-lstm-seed0", "final_episode": 5000, "cpu_seconds": 3000}
    assert seed_report.plateau_sentence([log], [grid_run]) == (
        "glyphs-1shot-lstm-seed0 went on to 8,000 episodes, about 80 CPU minutes at its first 5,000 episodes' rate: "
        "best validation 88.00% at 8,000, still rising over its last 2,000 episodes (+1.00 +- 0.00 points per 1,000)")
    records = [{"shot": 1, "rung": "lstm", "cpu_seconds": 2760}, {"shot": 5, "rung": "init", "cpu_seconds": 1020}]
    assert seed_report.time_sentence(records).startswith("the 2 meta-training runs with a CPU record took 17-46 "
                                                         "CPU minutes each (the 1-shot LSTM 46)")
    assert "| 1-shot | lstm | 1 | 46 |" in seed_report.cpu_table(records)


def test_the_seed_tables_come_from_the_grid_runs_they_name():
    """docs/ladder-seeds.md (the full seed-level tables) and the README's summary of them are what
    ladder_seeds computes from exactly the runs the page names (the grid commits new runs' files
    as they finish; the page says which ones it was made from)."""
    from metalstm.tools.ladder_seeds import compact_table, read_results, runs_of, seed_rows, seed_table
    page = (ROOT / "docs" / "ladder-seeds.md").read_text()
    names = runs_of(page)
    records = [r for r in read_results(ROOT / "data" / "results" / "grid") if Path(r["file"]).stem in names]
    assert sorted(Path(r["file"]).stem for r in records) == sorted(names), "a run the page names has no file"
    rows = seed_rows(records)
    assert seed_table(rows) in page, "docs/ladder-seeds.md differs from `python -m metalstm.tools.ladder_seeds`"
    assert compact_table(rows) in (ROOT / "README.md").read_text(), \
        "README's seed table differs from the runs docs/ladder-seeds.md names; it should read:\n\n" + compact_table(rows)


def test_seed_report_check_passes_on_the_shipped_files_and_fails_on_a_changed_number(tmp_path, monkeypatch, capsys):
    """`python -m metalstm.tools.seed_report --check` in a copy of the files it reads: exit 0, then 1
    once one number of the README's seed table is changed by hand."""
    import shutil

    from metalstm.tools import seed_report
    (tmp_path / "docs").mkdir()
    for rel in ("README.md", "docs/ladder-seeds.md"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "data" / "results" / "grid", tmp_path / "data" / "results" / "grid")
    shutil.copytree(ROOT / "data" / "checkpoints" / "grid", tmp_path / "data" / "checkpoints" / "grid",
                    ignore=shutil.ignore_patterns("*.pt"))
    if (ROOT / "data" / "checkpoints" / "plateau").is_dir():
        shutil.copytree(ROOT / "data" / "checkpoints" / "plateau", tmp_path / "data" / "checkpoints" / "plateau")
    monkeypatch.chdir(tmp_path)
    assert seed_report.main(["--check"]) == 0, capsys.readouterr().out
    readme = (tmp_path / "README.md").read_text()
    block = readme[readme.index("<!-- seeds -->"):readme.index("<!-- /seeds -->")]
    changed = block.replace(".", ",", 1)                                   # one number, typed by hand
    (tmp_path / "README.md").write_text(readme.replace(block, changed))
    assert seed_report.main(["--check"]) == 1
    assert "README.md" in capsys.readouterr().out
