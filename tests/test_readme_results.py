"""The README's results tables are exactly what the shipped evaluation files give."""
from pathlib import Path

import pytest

from metalstm.tools.results_table import main, tables

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "data" / "results" / f"ladder-{k}shot.json" for k in (1, 5)]


def test_every_results_table_of_the_readme_comes_from_the_shipped_json():
    readme = (ROOT / "README.md").read_text()
    made = tables(FILES)
    assert set(made) == {"glyphs", "digits"}
    for test_set, table in made.items():
        assert table in readme, f"README's {test_set} table differs from `python -m metalstm.tools.results_table`"


def test_a_changed_number_would_be_caught(tmp_path):
    import json
    report = json.loads(FILES[0].read_text())
    report["test_sets"]["glyphs"]["results"][0]["mean"] += 0.001
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(report))
    assert tables([changed, FILES[1]])["glyphs"] != tables(FILES)["glyphs"]


def test_the_command_refuses_a_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json")]) == 2
    assert "error:" in capsys.readouterr().err
