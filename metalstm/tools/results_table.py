"""The results tables of docs/results.md, made from the shipped evaluation files (so the two cannot drift).

    python -m metalstm.tools.results_table data/results/ladder-1shot.json data/results/ladder-5shot.json
    python -m metalstm.tools.results_table --check data/results/ladder-*.json    # are they in docs/results.md?

prints one markdown table per test set (glyphs, digits): every method's accuracy
with its 95% interval, and its paired difference (600 shared episodes) to the
Meta-Learner LSTM and, for a rung of the ladder, to the rung below it, 1-shot
beside 5-shot. tests/claims/test_readme_results.py checks that docs/results.md (DEFAULT_TARGET)
holds exactly these tables; --check (with --target FILE for another page) does the same from
the command line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# the page that shows these tables, relative to the repository root
DEFAULT_TARGET = "docs/results.md"


def _diff(d) -> str:
    if d is None:
        return ""
    mean, half = 100 * d[0], 100 * d[1]
    return f"{mean:+.2f} +- {half:.2f}" + ("" if abs(mean) > half else " (n.s.)")


def _read(path) -> dict:
    """One evaluate --json file, checked: a ValueError naming the file and what is wrong."""
    from metalstm.evaluate import read_results_object
    report, bad = read_results_object(path, str(path), "give a file written by evaluate --json")
    if not isinstance(report.get("config"), dict) or not isinstance(report["config"].get("k_shot"), int):
        raise bad("no \"config\" with a \"k_shot\"")
    if not isinstance(report.get("test_sets"), dict) or not report["test_sets"]:
        raise bad("no \"test_sets\" object")
    for t, block in report["test_sets"].items():
        rows = block.get("results") if isinstance(block, dict) else None
        if not isinstance(rows, list):
            raise bad(f"test set {t!r} has no list of \"results\"")
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                raise bad(f"a row of test set {t!r} has no \"name\"")
            for key in ("mean", "ci95"):
                if not isinstance(row.get(key), (int, float)) or isinstance(row.get(key), bool) \
                        or not 0 <= row[key] <= 1:
                    raise bad(f"{row['name']!r} on {t} has {key} {row.get(key)!r}, not a number from 0 to 1")
            for key in ("vs_reference", "vs_below"):
                d = row.get(key)
                if d is not None and not (isinstance(d, list) and len(d) == 2 and
                                          all(isinstance(v, (int, float)) for v in d)):
                    raise bad(f"{row['name']!r} on {t} has {key} {d!r}, not null or [mean, half-width]")
    return report


def tables(paths: list[str | Path]) -> dict[str, str]:
    """{test set: markdown table} from ladder JSON files of one data set, one file per shot."""
    if len({Path(p).resolve() for p in paths}) < len(paths):
        twice = next(p for i, p in enumerate(paths) if Path(p).resolve() in {Path(q).resolve() for q in paths[:i]})
        raise ValueError(f"{twice} is given twice; give each file once (one per shot)")
    reports = [_read(p) for p in paths]
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
    ap = argparse.ArgumentParser(description=f"Print the results tables of {DEFAULT_TARGET} from evaluation "
                                             "JSON files.")
    ap.add_argument("files", nargs="+", help="ladder-Kshot.json files written by `metalstm.evaluate --json`")
    ap.add_argument("--check", action="store_true", help="instead of printing, exit 1 unless the --target "
                    "page holds every table exactly")
    ap.add_argument("--target", default=str(Path(__file__).resolve().parents[2] / DEFAULT_TARGET), metavar="FILE",
                    help=f"the page that shows the tables, for --check (default: {DEFAULT_TARGET})")
    args = ap.parse_args(argv)
    try:
        made = tables(args.files)
        if args.check:
            page = Path(args.target).read_text(encoding="utf-8")
            stale = [t for t, table in made.items() if table not in page]
            for t in stale:
                print(f"{args.target}: the {t} table differs; it should read:\n\n{made[t]}\n", file=sys.stderr)
            return 1 if stale else 0
        for test_set, table in made.items():
            print(f"{test_set}:\n\n{table}\n")
    except OSError as exc:
        print(f"error: cannot read {exc.filename or 'a file'} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
