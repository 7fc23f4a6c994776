"""The command line that the measurement tools share (`substitute`, `ood`): one shipped setting per
run, written as JSON, and a --table mode that prints the tables of docs/results.md from such files.

    ap = parser("python -m metalstm.tools.ood", __doc__)
    ap.add_argument("--episodes", ...)                    # the tool's own options
    return run(ap, argv, measure=lambda args: ..., tables=table, summary=lambda report: ...)
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from metalstm.cli import check_output_file, positive_int, set_threads, write_json
from metalstm.stats import paired_difference, significant


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """--shot, --threads, --json and --table; the tool adds its own options."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shot", type=int, choices=(1, 5), help="which shipped setting (glyphs-1shot or glyphs-5shot)")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    ap.add_argument("--json", help="write the measurement here (checked before the work starts)")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print the tables of these files")
    return ap


def run(ap: argparse.ArgumentParser, argv: list[str] | None, measure: Callable[[argparse.Namespace], dict],
        tables: Callable[[list], str], summary: Callable[[dict], str]) -> int:
    """Parse argv; --table prints tables(files); else measure(args), print summary(report), write --json.
    Exit codes: 0, 2 (bad input or an unwritable --json), 130 (Ctrl-C: nothing written)."""
    args = ap.parse_args(argv)
    if args.table:
        try:
            print(tables(args.table))
        except (OSError, KeyError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.shot is None:
        ap.error("give --shot 1 or --shot 5 (or --table FILES)")
    try:
        check_output_file(args.json)
    except ValueError as exc:
        ap.error(str(exc))
    set_threads(args.threads)
    try:
        report = measure(args)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    report["command"] = f"{ap.prog} " + " ".join(argv if argv is not None else sys.argv[1:])
    print(summary(report))
    return write_json(args.json, report, printed="the lines above")


def difference(a, b) -> str:
    """'mean +- half' in points of the paired difference a - b, '(n.s.)' when the interval holds 0."""
    mean, half = paired_difference(a, b)
    return f"{100 * mean:+.2f} +- {100 * half:.2f}" + ("" if significant(mean, half) else " (n.s.)")
