"""Has a meta-training run stopped improving? The trend of its validation curve at the end.

    python -m metalstm.tools.plateau                          # every run of data/checkpoints/grid/
    python -m metalstm.tools.plateau runs/x/log.csv --window 2000

A run's log.csv holds its validation accuracy every `val_every` episodes, always on the same
100 meta-validation episodes. Over the validations of the last --window episodes (1,000 by
default: the last five points of a curve validated every 250), the least-squares slope of
accuracy against episode and its 95% t interval (`metalstm.stats.slope_ci95`, df = points - 2)
give the verdict:

    rising     the interval lies above 0: more episodes would still help
    flat       the interval includes 0: no measurable trend (the plateau, or too few points)
    falling    the interval lies below 0

The slope is in accuracy points per 1,000 episodes. A run's CPU minutes come from its record
(NAME.run.json, written by `metalstm.tools.grid --publish`) where there is one.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from metalstm.stats import slope_ci95

GRID = Path("data/checkpoints/grid")


def read_curve(path: Path) -> list[tuple[int, float]]:
    """(episode, validation accuracy) of every row of a log.csv (ValueError naming the file)."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if (r.get("episode") or "").isdigit()]
        if not rows:
            raise ValueError("no row with an episode number")
        return [(int(r["episode"]), float(r["val_acc"])) for r in rows]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a training log with episode and val_acc columns ({exc})") from None


def trend(curve: list[tuple[int, float]], window: int = 1000) -> dict:
    """The end of a curve: its last episode, best validation (and its episode), and over the
    points of the last `window` episodes the slope in points per 1,000 episodes, its 95%
    half-width, the number of points and the verdict (rising / flat / falling; "too short"
    with fewer than 3 points)."""
    if not curve:
        raise ValueError("an empty curve has no trend")
    last = curve[-1][0]
    best_episode, best = max(curve, key=lambda p: p[1])
    points = [(e, a) for e, a in curve if e >= last - window]
    out = {"last_episode": last, "best_val_acc": best, "best_episode": best_episode, "points": len(points),
           "slope": None, "half": None, "verdict": "too short"}
    if len(points) >= 3:
        b, h = slope_ci95([e for e, _ in points], [a for _, a in points])
        out.update(slope=b * 1000 * 100, half=h * 1000 * 100,
                   verdict="rising" if b - h > 0 else "falling" if b + h < 0 else "flat")
    return out


def cpu_minutes(log: Path) -> float | None:
    """The run's CPU minutes from the grid's record beside its log (NAME.run.json), else None."""
    record = log.with_name(log.name.replace(".log.csv", ".run.json"))
    try:
        seconds = json.loads(record.read_text()).get("cpu_seconds")
    except (OSError, ValueError):
        return None
    return None if seconds is None else seconds / 60


def table(logs: list[Path], window: int = 1000) -> str:
    """Markdown: one line per log with its trend over the last `window` episodes."""
    lines = [f"| run | episodes | best val (episode) | slope, last {window:,} episodes (points / 1,000) "
             "| verdict | CPU min |", "|---|---|---|---|---|---|"]
    for log in logs:
        name = log.name.removesuffix(".log.csv") if log.name != "log.csv" else log.parent.name
        t = trend(read_curve(log), window)
        slope = "" if t["slope"] is None else f"{t['slope']:+.2f} +- {t['half']:.2f} ({t['points']} points)"
        cpu = cpu_minutes(log)
        lines.append(f"| {name} | {t['last_episode']:,} | {100 * t['best_val_acc']:.2f} ({t['best_episode']:,}) | "
                     f"{slope} | {t['verdict']} | {'' if cpu is None else f'{cpu:.0f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metalstm.tools.plateau", description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="*", help=f"log.csv files (default every {GRID}/*.log.csv of a run that "
                    "meta-trains)")
    ap.add_argument("--window", type=int, default=1000, help="the last episodes the trend is taken over "
                    "(default 1000)")
    args = ap.parse_args(argv)
    if args.window < 1:
        ap.error(f"--window must be a positive number of episodes, got {args.window}")
    logs = [Path(p) for p in args.logs] or sorted(GRID.glob("*.log.csv"))
    try:
        logs = [p for p in logs if read_curve(p)[-1][0] > 0 or args.logs]   # sgd: one validation, no curve
        if not logs:
            raise ValueError(f"no training logs in {GRID}: pass log.csv files")
        print(table(logs, args.window))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
