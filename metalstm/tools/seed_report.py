"""The grid's report: docs/ladder-seeds.md and the README's seed table, written from the shipped files.

    python -m metalstm.tools.seed_report            # write docs/ladder-seeds.md, docs/ladder-seeds.png, README blocks
    python -m metalstm.tools.seed_report --check    # exit 1 where the page or the README differ from the files

Everything on the page is computed here from what the grid committed, so the page can be made again
by anyone with a clone:

    data/results/grid/NAME.json          each run's per-episode meta-test accuracies (ladder_seeds)
    data/checkpoints/grid/NAME.log.csv   each run's validation curve; NAME.run.json its CPU seconds
    data/checkpoints/plateau/NAME.log.csv   a run meta-trained past the grid's budget (listed once past it)

The tables and the stated differences are `ladder_seeds.seed_table` / `measured_differences` (a
difference is stated in words only where its seed-level 95% interval excludes 0); the trends are
`plateau.trend`. The page names the runs it was made from (`ladder_seeds.runs_line`), so a test can
check it against exactly those runs while the grid goes on committing new ones.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from metalstm.checkpoint import atomic_write
from metalstm.tools import ladder_seeds, plateau

RESULTS = Path("data/results/grid")
GRID = Path("data/checkpoints/grid")
PLATEAU = Path("data/checkpoints/plateau")
PAGE = Path("docs/ladder-seeds.md")
BUDGET = 5000                   # the grid's episodes per run (metalstm.tools.grid --episodes)
PLOT = Path("docs/ladder-seeds.png")
README = Path("README.md")
COMMANDS = """nice -n 19 python -m metalstm.tools.grid --jobs 2 --publish data/checkpoints/grid \\
    --park data/grid-parked --evaluate data/results/grid --commit
python -m metalstm.tools.seed_report"""


def cpu_records(names: list[str], grid: Path = GRID) -> list[dict]:
    """The grid's record (NAME.run.json) of each named run that meta-trained and has CPU seconds."""
    out = []
    for name in names:
        path = grid / f"{name}.run.json"
        if path.is_file():
            record = json.loads(path.read_text())
            if record.get("cpu_seconds") and record.get("episodes", 0) > 0:
                out.append({"name": name, **record})
    return out


def cpu_table(records: list[dict]) -> str:
    """Markdown: CPU minutes per run, by shot and rung (mean over the runs with a record)."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault((r["shot"], r["rung"]), []).append(r["cpu_seconds"] / 60)
    lines = ["| shot | rung | runs | CPU min per run |", "|---|---|---|---|"]
    for (shot, rung), minutes in sorted(groups.items(), key=lambda kv: (kv[0][0], ladder_seeds.RUNGS.index(kv[0][1]))):
        lines.append(f"| {shot}-shot | {rung} | {len(minutes)} | {sum(minutes) / len(minutes):.0f} |")
    return "\n".join(lines)


def time_sentence(records: list[dict]) -> str:
    """The README's sentence on the grid's time, from the runs' records."""
    if not records:
        return "no meta-training run has a CPU record yet"
    minutes = sorted(r["cpu_seconds"] / 60 for r in records)
    lstm = [r["cpu_seconds"] / 60 for r in records if r["rung"] == "lstm" and r["shot"] == 1]
    lstm_part = f" (the 1-shot LSTM {sum(lstm) / len(lstm):.0f})" if lstm else ""
    return (f"the {len(records)} meta-training runs with a CPU record took {minutes[0]:.0f}-{minutes[-1]:.0f} CPU "
            f"minutes each{lstm_part} on the course's 2-core machine, two at a time; the grid prints its total "
            "CPU time when it ends")


def plateau_sentence(logs: list[Path], records: list[dict]) -> str:
    """The README's words on each run trained past the grid's budget: how far, its best validation,
    its trend over the last 2,000 episodes, and its CPU minutes at the rate of its grid run (the
    record of the same name; the extension itself has no CPU record)."""
    said = []
    for log in logs:
        name = log.name.removesuffix(".log.csv")
        t = plateau.trend(plateau.read_curve(log), 2000)
        grid_run = next((r for r in records if r["name"] == name), None)
        minutes = "" if grid_run is None else (
            f", about {t['last_episode'] * grid_run['cpu_seconds'] / grid_run['final_episode'] / 60:.0f} CPU "
            f"minutes at its first {grid_run['final_episode']:,} episodes' rate")
        trend = "still rising" if t["verdict"] == "rising" else "no longer rising" if t["verdict"] != "too short" \
            else "too few validations to tell"
        slope = "" if t["slope"] is None else f" ({t['slope']:+.2f} +- {t['half']:.2f} points per 1,000)"
        said.append(f"{name} went on to {t['last_episode']:,} episodes{minutes}: best validation "
                    f"{100 * t['best_val_acc']:.2f}% at {t['best_episode']:,}, {trend} over its last 2,000 "
                    f"episodes{slope}")
    return "; ".join(said)


def past_budget(logs: list[Path], budget: int = BUDGET) -> str:
    """Markdown: each run trained past the grid's budget - its best validation at the budget and at
    its end, and its trend over the last 1,000 and 2,000 episodes."""
    if not logs:
        return "No run has been meta-trained past the grid's budget yet."
    lines = ["| run | episodes | best val at 5,000 (episode) | best val now (episode) | slope, last 1,000 | "
             "slope, last 2,000 |", "|---|---|---|---|---|---|"]
    for log in logs:
        curve = plateau.read_curve(log)
        early = max(((e, a) for e, a in curve if e <= budget), key=lambda p: p[1])
        t1, t2 = plateau.trend(curve, 1000), plateau.trend(curve, 2000)
        slope = lambda t: "" if t["slope"] is None else f"{t['slope']:+.2f} +- {t['half']:.2f}: {t['verdict']}"
        lines.append(f"| {log.name.removesuffix('.log.csv')} | {t1['last_episode']:,} | {100 * early[1]:.2f} "
                     f"({early[0]:,}) | {100 * t1['best_val_acc']:.2f} ({t1['best_episode']:,}) | {slope(t1)} | "
                     f"{slope(t2)} |")
    return "\n".join(lines)


def compose(names: list[str], results: Path = RESULTS, grid: Path = GRID, extended: Path = PLATEAU) -> dict:
    """{"page": docs/ladder-seeds.md's text, "seeds": the README's table, "time": its sentence, "rows":
    ladder_seeds.seed_rows} made from the named runs' files (ValueError naming a missing one)."""
    records = [r for r in ladder_seeds.read_results(results) if Path(r["file"]).stem in names]
    missing = sorted(set(names) - {Path(r["file"]).stem for r in records})
    if missing:
        raise ValueError(f"no result in {results} for {', '.join(missing)}")
    rows = ladder_seeds.seed_rows(records)
    said = ladder_seeds.measured_differences(rows)
    logs = [grid / f"{n}.log.csv" for n in names if (grid / f"{n}.log.csv").is_file()]
    logs = [p for p in logs if plateau.read_curve(p)[-1][0] > 0]          # sgd: one validation, no curve
    cpu = cpu_records(names, grid)
    past = [p for p in (sorted(extended.glob("*.log.csv")) if extended.is_dir() else [])
            if plateau.read_curve(p)[-1][0] > BUDGET]                        # a run still below the budget: not yet
    longer = plateau_sentence(past, cpu_records([p.name.removesuffix(".log.csv") for p in past], grid))
    page = f"""# The ladder over training seeds

Every rung of the ladder (docs/results.md, notebook 05 section 5) meta-trained
with seeds 0, 1 and 2 for 5,000 episodes each, validated every 250 episodes on
the same 100 meta-validation episodes, and each run's `best.pt` tested on the
same 600 meta-test episodes of glyphs and of digits. The tables use the
{len(records)} runs listed under them (the grid commits each run as it ends); a
rung with one seed has no interval yet. Made by

```
{COMMANDS}
```

(docs/reproducing.md explains the grid's options; `seed_report` writes this
page, its picture and the README's table from the committed files.)

![Each seed's mean accuracy (dots) and the mean over seeds with its 95% t interval (bars), per rung, shot and test set](ladder-seeds.png)

## Differences measured over seeds

{chr(10).join("- " + s for s in said) if said else "None yet: no difference between rungs has a seed-level 95% interval that excludes 0 (with one seed there is no interval)."}

## The tables

{ladder_seeds.seed_table(rows)}

{ladder_seeds.runs_line(records)}

## Are the curves still rising at 5,000 episodes?

The trend of each run's validation curve over its last 1,000 episodes
(`python -m metalstm.tools.plateau`: least-squares slope in points per 1,000
episodes with its 95% t interval over the last five validations; "rising"
when the interval lies above 0):

{plateau.table(logs) if logs else "No run with a curve yet."}

## Runs trained past 5,000 episodes

A run still rising at 5,000 episodes, meta-trained on with a larger
`--episodes`: resumed from its `last.pt`, or run again from episode 0 with the
same seed where the grid kept none (its log in `data/checkpoints/plateau/`,
listed here once past 5,000 episodes; its resumable state in
`data/grid-parked/plateau/`; docs/reproducing.md has the commands):

{past_budget(past)}

## CPU time

On the course's 2-core machine (Linux names it "AMD EPYC", no AVX-512), one
torch thread a run, two runs at a time (beside other work, at nice 19), CPU
minutes per finished run from each run's record
(`data/checkpoints/grid/NAME.run.json`):

{cpu_table(cpu)}
"""
    return {"page": page, "seeds": ladder_seeds.compact_table(rows),
            "time": time_sentence(cpu) + (f". Past the budget, {longer}." if longer else "."),
            "rows": rows}


def readme_with(text: str, seeds: str, time: str) -> str:
    """The README with its <!-- seeds --> and <!-- grid-time --> blocks replaced."""
    for tag, body in (("seeds", f"\n{seeds}\n"), ("grid-time", time)):
        if f"<!-- {tag} -->" not in text:
            raise ValueError(f"{README} has no <!-- {tag} --> ... <!-- /{tag} --> block")
        text = re.sub(rf"<!-- {tag} -->.*?<!-- /{tag} -->", lambda m: f"<!-- {tag} -->{body}<!-- /{tag} -->",
                      text, flags=re.S)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metalstm.tools.seed_report", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing: exit 1 if the page or the README "
                    "differ from what the page's own runs give")
    args = ap.parse_args(argv)
    try:
        if args.check:
            names = ladder_seeds.runs_of(PAGE.read_text())
        else:
            names = sorted(Path(r["file"]).stem for r in ladder_seeds.read_results(RESULTS))
        made = compose(names)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    readme = readme_with(README.read_text(), made["seeds"], made["time"])
    if args.check:
        stale = [str(p) for p, text in ((PAGE, made["page"]), (README, readme)) if p.read_text() != text]
        print(f"seed_report: {', '.join(stale)} differ from the files of their {len(names)} runs: run "
              "`python -m metalstm.tools.seed_report`" if stale else f"seed_report: up to date ({len(names)} runs)")
        return 1 if stale else 0
    import matplotlib
    matplotlib.use("Agg")
    from metalstm.cli import save_png
    from metalstm.viz.plots import plot_seed_spread
    atomic_write(PAGE, made["page"])
    atomic_write(README, readme)
    save_png(plot_seed_spread(made["rows"]), str(PLOT), dpi=120)
    print(f"seed_report: {PAGE}, {PLOT} and the README's seed table from {len(names)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
