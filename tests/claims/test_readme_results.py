"""The README's results tables are exactly what the shipped evaluation files give."""
from pathlib import Path

import pytest

from metalstm.tools.results_table import main, tables

ROOT = Path(__file__).resolve().parents[2]
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


SUBSTITUTION = [ROOT / "data" / "results" / f"substitution-{k}shot.json" for k in (1, 5)]
OOD = [ROOT / "data" / "results" / f"ood-{k}shot.json" for k in (1, 5)]


def test_the_substitution_tables_of_the_readme_come_from_the_shipped_json():
    from metalstm.tools.substitute import meta_sgd_table, table
    readme = (ROOT / "README.md").read_text()
    assert table(SUBSTITUTION) in readme, "README's substitution table differs from `metalstm.tools.substitute --table`"
    assert meta_sgd_table(SUBSTITUTION) in readme, "README's Meta-SGD table differs from the shipped JSON"


def test_the_out_of_domain_table_of_the_readme_comes_from_the_shipped_json():
    from metalstm.tools.ood import table
    assert table(OOD) in (ROOT / "README.md").read_text(), "README's out-of-domain table differs from the JSON"


def test_a_changed_substitution_number_would_be_caught(tmp_path):
    import json
    from metalstm.tools.substitute import table
    report = json.loads(SUBSTITUTION[0].read_text())
    accs = report["test_sets"]["glyphs"]["accuracies"]["magnitude"]
    accs[0] = 1.0 - accs[0]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(report))
    assert table([changed, SUBSTITUTION[1]]) != table(SUBSTITUTION)
