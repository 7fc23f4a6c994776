"""The README's results tables, made from the shipped evaluation files (so the two cannot drift).

    python -m metalstm.tools.results_table data/results/ladder-1shot.json data/results/ladder-5shot.json

prints one markdown table per test set (glyphs, digits): every method's accuracy
with its 95% interval, and its paired difference (600 shared episodes) to the
Meta-Learner LSTM and, for a rung of the ladder, to the rung below it, 1-shot
beside 5-shot. tests/test_readme_results.py checks that README.md holds exactly
these tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _diff(d) -> str:
    if d is None:
        return ""
    mean, half = 100 * d[0], 100 * d[1]
    return f"{mean:+.2f} +- {half:.2f}" + ("" if abs(mean) > half else " (n.s.)")


def tables(paths: list[str | Path]) -> dict[str, str]:
    """{test set: markdown table} from ladder JSON files of one data set, one file per shot."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    shots = [r["config"]["k_shot"] for r in reports]
    out = {}
    for test_set in reports[0]["test_sets"]:
        names = [row["name"] for row in reports[0]["test_sets"][test_set]["results"]]
        head = "| method | " + " | ".join(f"{k}-shot | vs LSTM | vs rung below" for k in shots) + " |"
        lines = [head, "|---|" + "---|---|---|" * len(shots)]
        for name in names:
            cells = []
            for r in reports:
                row = next((x for x in r["test_sets"][test_set]["results"] if x["name"] == name), None)
                if row is None:
                    cells += ["", "", ""]
                    continue
                cells += [f"{100 * row['mean']:.2f} +- {100 * row['ci95']:.2f}", _diff(row["vs_reference"]),
                          _diff(row["vs_below"])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        out[test_set] = "\n".join(lines)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the README's results tables from evaluation JSON files.")
    ap.add_argument("files", nargs="+", help="ladder-Kshot.json files written by `metalstm.evaluate --json`")
    args = ap.parse_args(argv)
    try:
        for test_set, table in tables(args.files).items():
            print(f"{test_set}:\n\n{table}\n")
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
