"""The ladder over training seeds: every finished grid run on the same meta-test episodes, and
the ladder's table with the seed-to-seed noise of training in its intervals.

    python -m metalstm.tools.ladder_seeds --path native           # evaluate what is new, print the table
    python -m metalstm.tools.ladder_seeds --table-only --write seeds.md   # the page: seed_report
    python -m metalstm.tools.ladder_seeds --runs glyphs-1shot-sgd-seed0 --path native   # only these runs

Evaluation. For every finished run of a `python -m metalstm.tools.grid` folder (--grid, default
runs/grid; a run is finished where `metalstm.tools.grid.standing` says "done"), its best.pt is
run on --episodes (600) meta-test episodes of each --test-sets data set (glyphs, and digits, the
out-of-domain test), and every episode's accuracy goes to RESULTS/{run}.json (--results, default
data/results/grid). The episodes are the standard ones of `metalstm.evaluate` for the seed-0
configuration (`EPISODE_SEED`): the same support and query images and the same mini-batch
order for every rung and every training seed (a seed-s run would get another stream from
`python -m metalstm.evaluate`, whose episode seed follows the configuration's seed), so two runs
compare episode by episode; they are also the episodes of data/results/ladder-*.json. A run
whose JSON already holds those episodes (episode seed, the test set's images, their number) for
a checkpoint with the same SHA-256 is skipped, so the command continues where it stopped and
re-measures only a best.pt that changed. The JSON names the --path that measured it (the paths
agree to rounding; a different --path alone does not measure a run again).

The table is computed from the JSON files alone (a fresh clone, without checkpoints, prints it:
--table-only). Per test set, shot and rung, over the S seeds that have a JSON:

    accuracy    the mean over seeds of each seed's mean accuracy m_s, +- the half-width of a 95%
                Student t interval over the m_s: t_{0.975, S-1} * sd(m_s) / sqrt(S), df = S - 1
                (`metalstm.stats.seed_mean_ci95`). The seed-to-seed spread of training is in it;
                t_{0.975, 2} = 4.303 for 3 seeds.
    vs LSTM,    within each seed s that both rungs have, the mean per-episode difference on the
    vs below    same episodes, d_s; then the same t interval over the d_s
                (`metalstm.stats.seed_paired_common`). "below" is the nearest lower rung
                of the ladder that has results.
    verdict     "no measurable difference" unless the difference's interval excludes 0.

A rung (or a pair of rungs) with fewer than 2 seeds has no spread to estimate: its numbers are
shown with "n/a" for the interval and marked "1 seed". `plot_seed_spread`
(metalstm.viz.plots) draws the same numbers: each seed's mean as a dot, the mean and its
interval as a bar.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from metalstm.checkpoint import atomic_write, file_sha256
from metalstm.cli import (add_path_option, check_folder, check_output_file, check_path_runs, check_png,
                          positive_int, save_png, set_threads)
from metalstm.config import CONFIGS, RUNGS
from metalstm.stats import seed_mean_ci95, seed_paired_common, significant
from metalstm.tools import grid as grid_tool

TEST_SETS = ("glyphs", "digits")
EPISODE_SEED = 0            # every run is tested on the meta-test episodes of the seed-0 configuration
RESULTS = Path("data/results/grid")
NO_DIFFERENCE = "no measurable difference"
FORMAT = "metalstm-ladder-seeds-1"


# -- which runs: the grid's finished ones ----------------------------------------------------------
def parse_run_name(name: str, folder: Path) -> grid_tool.Spec | None:
    """The grid's Spec of a run folder named {config}-{rung}-seed{S} (as `grid_tool.make_plan`
    names them), or None for a name of another form."""
    for config in CONFIGS:
        for rung in RUNGS:
            head = f"{config}-{rung}-seed"
            if name.startswith(head) and name[len(head):].isdigit():
                return grid_tool.Spec(config, rung, CONFIGS[config].k_shot, int(name[len(head):]), folder)
    return None


def published_runs(published: Path, view: Path) -> list[grid_tool.Spec]:
    """The runs published by `grid --publish DIR` with a checkpoint (seed 0's NAME.pt beside a
    complete NAME.log.csv), laid out in `view` as grid run folders (NAME/best.pt, NAME/log.csv,
    links to the published files) and returned as `finished_runs(view)` finds them: a later
    session can evaluate them without the grid's own folders."""
    view.mkdir(parents=True, exist_ok=True)
    for ckpt in sorted(Path(published).glob("*.pt")):
        log = ckpt.with_suffix(".log.csv")
        if parse_run_name(ckpt.stem, ckpt) is None or not log.is_file():
            continue
        folder = view / ckpt.stem
        folder.mkdir(exist_ok=True)
        for name, target in (("best.pt", ckpt), ("log.csv", log)):
            if not (folder / name).exists():
                (folder / name).symlink_to(target.resolve())
    return finished_runs(view)


def finished_runs(grid: Path) -> list[grid_tool.Spec]:
    """The runs of a grid folder that `grid_tool.standing` calls done, in name order. The episode
    count of a finished run is summary.json's "episodes" (what the grid was asked for); without a
    summary.json, the one in the run's own best.pt."""
    grid = Path(grid)
    try:
        episodes = json.loads((grid / "summary.json").read_text())["episodes"]
    except (OSError, ValueError, KeyError, TypeError):
        episodes = None
    done = []
    for folder in sorted(p for p in grid.iterdir() if p.is_dir()) if grid.is_dir() else []:
        spec = parse_run_name(folder.name, folder)
        if spec is None or not (folder / "best.pt").is_file():
            continue
        n = episodes
        if n is None:
            from metalstm.checkpoint import CheckpointError, load_checkpoint
            try:
                n = load_checkpoint(folder / "best.pt")[1]["episodes"]
            except (CheckpointError, KeyError, TypeError):
                continue
        if grid_tool.standing(spec, grid_tool.final_episode(spec, n)).status == "done":
            done.append(spec)
    return done


# -- the evaluation of one run ---------------------------------------------------------------------
_SAMPLERS: dict = {}


def standard_samplers(cfg, test_sets) -> dict:
    """{test set: the meta-test sampler of `cfg` with the seed-0 configuration's episodes}; built
    once per setting (every rung and seed of one shot shares them)."""
    from metalstm.evaluate import meta_test_sampler
    ecfg = cfg.replace(seed=EPISODE_SEED)
    out = {}
    for t in test_sets:
        key = (t, ecfg.dataset, ecfg.data_root, ecfg.image_size, ecfg.n_way, ecfg.k_shot, ecfg.n_query)
        if key not in _SAMPLERS:
            _SAMPLERS[key] = meta_test_sampler(ecfg, t)
        out[t] = _SAMPLERS[key]
    return out


def up_to_date(json_path: Path, sha: str, episodes: int, samplers: dict) -> bool:
    """Whether json_path already holds this checkpoint's accuracies on these episodes: the same
    checkpoint SHA-256 and episode count, and for every test set the same episode seed, images
    (data_sha256) and one accuracy per episode."""
    try:
        old = json.loads(Path(json_path).read_text())
        if old.get("checkpoint_sha256") != sha or old.get("episodes") != episodes:
            return False
        return all(old["test_sets"][t]["seed"] == s.seed and
                   old["test_sets"][t]["data_sha256"] == s.dataset.fingerprint() and
                   len(old["test_sets"][t]["accuracies"]) == episodes for t, s in samplers.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def checkpoint_config(ckpt: Path):
    """The Config that a checkpoint was trained with (one CheckpointError if it cannot be read)."""
    from metalstm.checkpoint import CheckpointError, load_checkpoint
    from metalstm.config import Config
    config = load_checkpoint(ckpt)[1]
    try:
        return Config.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt} holds no usable configuration: {exc}") from None


def evaluate_run(spec: grid_tool.Spec, episodes: int, test_sets=TEST_SETS, path: str = "fused",
                 progress: bool = True) -> dict:
    """Run spec's best.pt on `episodes` standard meta-test episodes of each test set
    (`standard_samplers`), as `metalstm.evaluate` runs a rule: the JSON record of the run, with
    every episode's accuracy per test set."""
    from metalstm.evaluate import evaluate_methods, rule_accuracy
    from metalstm.model import load_trained
    ckpt = spec.folder / "best.pt"
    sha = file_sha256(ckpt)
    learner, rule, cfg, metrics = load_trained(ckpt, expect=checkpoint_config(ckpt).replace(path=path))
    rule.eval()
    samplers = standard_samplers(cfg, test_sets)
    metrics = metrics if isinstance(metrics, dict) else {}
    record = {"format": FORMAT, "run": spec.name, "rung": spec.rung, "shot": spec.shot, "seed": spec.seed,
              "config": cfg.to_dict(), "checkpoint": str(ckpt), "checkpoint_sha256": sha,
              "best_episode": metrics.get("episode"), "best_val_acc": metrics.get("val_acc"),
              "episodes": episodes, "episode_seed": EPISODE_SEED, "path": path, "test_sets": {}}
    for t, sampler in samplers.items():
        acc = rule_accuracy(learner, rule, cfg, sampler.seed)
        [res] = evaluate_methods({f"{spec.name} on {t}": acc}, sampler, episodes, progress=progress)
        record["test_sets"][t] = {"seed": sampler.seed, "data_sha256": sampler.dataset.fingerprint(),
                                  "mean": res.mean, "ci95": res.ci95, "seconds": res.seconds,
                                  "accuracies": res.accuracies}
    return record


def write_record(path: Path, record: dict) -> Path:
    """A run's record as JSON, atomically; each accuracy (k/75 in float32 for 5-way 15-query
    episodes) to 6 decimals, which keeps every k apart, and each list on one line: about 7 KB
    for 2 x 600 episodes instead of 30."""
    record = {**record, "test_sets": {t: {**b, "accuracies": [round(float(a), 6) for a in b["accuracies"]]}
                                      for t, b in record["test_sets"].items()}}
    lists = {t: json.dumps(b["accuracies"], separators=(",", ":")) for t, b in record["test_sets"].items()}
    text = json.dumps({**record, "test_sets": {t: {**b, "accuracies": f"@{t}@"} for t, b in
                                               record["test_sets"].items()}}, indent=1)
    for t, line in lists.items():
        text = text.replace(json.dumps(f"@{t}@"), line)
    return atomic_write(path, text + "\n")


def evaluate_grid(specs, results: Path, episodes: int, test_sets=TEST_SETS, path: str = "fused",
                  progress: bool = True, say=print) -> list[Path]:
    """Evaluate every run of `specs` whose RESULTS/{run}.json is not up to date (`up_to_date`);
    a line per run, evaluated or skipped. Returns the JSON files written."""
    written = []
    for spec in specs:
        out = Path(results) / f"{spec.name}.json"
        ckpt = spec.folder / "best.pt"
        samplers = standard_samplers(checkpoint_config(ckpt), test_sets)
        if up_to_date(out, file_sha256(ckpt), episodes, samplers):
            say(f"ladder_seeds: skip {spec.name}: {out} holds this best.pt's {episodes} episodes "
                f"of {', '.join(test_sets)}")
            continue
        start = time.perf_counter()
        record = evaluate_run(spec, episodes, test_sets, path, progress)
        write_record(out, record)
        written.append(out)
        means = ", ".join(f"{t} {100 * b['mean']:.2f}%" for t, b in record["test_sets"].items())
        say(f"ladder_seeds: evaluated {spec.name} ({means}; {time.perf_counter() - start:.0f} s) -> {out}")
        sys.stdout.flush()
    return written


# -- the table, from the JSON files alone ----------------------------------------------------------
def read_results(folder: Path) -> list[dict]:
    """Every run record (RESULTS/*.json) of `folder`, checked: ValueError naming a bad file."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            r = json.loads(path.read_text())
            ok = (isinstance(r, dict) and r.get("rung") in RUNGS and isinstance(r.get("shot"), int)
                  and isinstance(r.get("seed"), int) and isinstance(r.get("test_sets"), dict)
                  and all(isinstance(b, dict) and isinstance(b.get("accuracies"), list) and b["accuracies"]
                          for b in r["test_sets"].values()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable results file of ladder_seeds ({exc})") from None
        if not ok:
            raise ValueError(f"{path}: not a results file of ladder_seeds (a rung, shot, seed and every "
                             f"test set's list of accuracies)")
        records.append({**r, "file": str(path)})
    return records


def _interval(mean: float, half: float, n: int) -> str:
    if n < 2 or math.isnan(half):
        return f"{100 * mean:.2f} +- n/a ({n} seed)"
    return f"{100 * mean:.2f} +- {100 * half:.2f}"


def _difference(d) -> str:
    if d is None:
        return ""
    mean, half, per_seed = d
    if len(per_seed) < 2 or math.isnan(half):
        return f"{100 * mean:+.2f} +- n/a ({len(per_seed)} seed)"
    return f"{100 * mean:+.2f} +- {100 * half:.2f}"


def verdict(d) -> str:
    """The wording of one seed-level difference: "no measurable difference" unless its 95%
    interval excludes 0 ("higher" / "lower" then); "n/a (1 seed)" without an interval."""
    if d is None:
        return ""
    mean, half, per_seed = d
    if len(per_seed) < 2 or math.isnan(half):
        return f"n/a ({len(per_seed)} seed)"
    if not significant(mean, half):
        return NO_DIFFERENCE
    return "higher" if mean > 0 else "lower"


def seed_rows(records: list[dict], test_sets=TEST_SETS) -> list[dict]:
    """The table's rows: per test set, shot and rung (ladder order), the seeds, their means, the
    seed-level mean and t interval, and the seed-paired differences to the LSTM and to the rung
    below (nearest lower rung with results). ValueError where two runs of one test set and shot
    were measured on other episodes (then they are not paired)."""
    rows = []
    for t in test_sets:
        shots = sorted({r["shot"] for r in records if t in r["test_sets"]})
        for shot in shots:
            runs = [r for r in records if r["shot"] == shot and t in r["test_sets"]]
            episodes = {(r["test_sets"][t].get("seed"), r["test_sets"][t].get("data_sha256"),
                         len(r["test_sets"][t]["accuracies"])) for r in runs}
            if len(episodes) > 1:
                raise ValueError(f"{t}, {shot}-shot: the runs were measured on different episodes "
                                 f"(episode seed, images, count: {sorted(episodes, key=str)}); evaluate "
                                 f"them again with the same --episodes")
            by_rung: dict[str, dict[int, list[float]]] = {}
            for r in runs:
                seeds = by_rung.setdefault(r["rung"], {})
                if r["seed"] in seeds:
                    raise ValueError(f"two results of {shot}-shot {r['rung']} seed {r['seed']}: {r['file']}")
                seeds[r["seed"]] = r["test_sets"][t]["accuracies"]

            diff = seed_paired_common
            present = [rung for rung in RUNGS if rung in by_rung]
            for i, rung in enumerate(present):
                seeds = by_rung[rung]
                mean, half, means = seed_mean_ci95([seeds[s] for s in sorted(seeds)])
                below = present[i - 1] if i > 0 else None
                vs_lstm = diff(seeds, by_rung["lstm"]) if rung != "lstm" and "lstm" in by_rung else None
                vs_below = diff(seeds, by_rung[below]) if below else None
                rows.append({"test_set": t, "shot": shot, "rung": rung, "seeds": sorted(seeds),
                             "seed_means": dict(zip(sorted(seeds), means)), "mean": mean, "half": half,
                             "episodes": len(next(iter(seeds.values()))),
                             "vs_lstm": vs_lstm, "below": below, "vs_below": vs_below})
    return rows


CAPTION = ("Each rung's best.pt of every training seed, on the same {episodes} meta-test episodes. "
           "accuracy (%): the mean over seeds of each seed's mean accuracy, +- the half-width of a 95% "
           "Student t interval over the per-seed means, t(0.975, S-1) * sd / sqrt(S) with df = S - 1 "
           "(S seeds), so the seed-to-seed spread of training is in it. Differences (points): within "
           "each seed both rungs have, the mean per-episode difference on the same episodes; then the "
           "same t interval over those per-seed differences. Verdict: \"no measurable difference\" "
           "unless the interval excludes 0. n/a: fewer than 2 seeds, so no interval (marked with the "
           "number of seeds).")


def seed_table(rows: list[dict]) -> str:
    """Markdown: one table per test set and shot, with the caption that states the construction."""
    from metalstm.rules import RUNG_NAMES
    parts = []
    for key in dict.fromkeys((r["test_set"], r["shot"]) for r in rows):
        block = [r for r in rows if (r["test_set"], r["shot"]) == key]
        lines = [f"**{key[1]}-shot, meta-test on {key[0]}** ({block[0]['episodes']} episodes per seed)", "",
                 "| rung | seeds | accuracy (%) | seed means (%) | vs LSTM (points) | vs the rung below (points) "
                 "| verdict |", "|---|---|---|---|---|---|---|"]
        for r in block:
            name = RUNG_NAMES[r["rung"]]
            means = ", ".join(f"{100 * m:.2f}" for m in r["seed_means"].values())
            below = f"{_difference(r['vs_below'])} (vs {RUNG_NAMES[r['below']]})" if r["vs_below"] else ""
            said = [f"vs the rung below: {verdict(r['vs_below'])}" if r["vs_below"] else "",
                    f"vs LSTM: {verdict(r['vs_lstm'])}" if r["vs_lstm"] else ""]
            lines.append(f"| {name} | {len(r['seeds'])} ({', '.join(map(str, r['seeds']))}) | "
                         f"{_interval(r['mean'], r['half'], len(r['seeds']))} | {means} | "
                         f"{_difference(r['vs_lstm'])} | {below} | {'; '.join(s for s in said if s)} |")
        parts.append("\n".join(lines))
    episodes = sorted({r["episodes"] for r in rows})
    caption = CAPTION.format(episodes=" / ".join(map(str, episodes)) if episodes else "?")
    return "\n\n".join(parts + [caption])


RUNS_LINE = "Runs in this table"


def runs_line(records: list[dict]) -> str:
    """The line that ends a written table: which runs' files it was made from (the grid commits
    new ones as it goes, so a page names its runs and `runs_of` reads them back)."""
    names = sorted(Path(r["file"]).stem for r in records)
    return f"{RUNS_LINE} ({len(names)}): " + ", ".join(names) + "."


def runs_of(text: str) -> list[str]:
    """The run names of a page's `runs_line` (ValueError if it has none)."""
    for line in text.splitlines():
        if line.startswith(RUNS_LINE):
            return [n.strip() for n in line.split(": ", 1)[1].rstrip(".").split(",") if n.strip()]
    raise ValueError(f"no line starting {RUNS_LINE!r}: not a page written by ladder_seeds --write")


def compact_table(rows: list[dict]) -> str:
    """Markdown: one line per rung, one column per test set and shot: the mean over seeds +- its
    seed-level t interval, and the number of seeds (the README's summary of `seed_table`)."""
    from metalstm.rules import RUNG_NAMES
    columns = list(dict.fromkeys((r["test_set"], r["shot"]) for r in rows))
    cell = {(r["rung"], r["test_set"], r["shot"]): r for r in rows}
    lines = ["| rung | " + " | ".join(f"{t} {k}-shot" for t, k in columns) + " |", "|---|" + "---|" * len(columns)]
    for rung in dict.fromkeys(r["rung"] for r in sorted(rows, key=lambda r: RUNGS.index(r["rung"]))):
        cells = []
        for t, k in columns:
            r = cell.get((rung, t, k))
            n = len(r["seeds"]) if r else 0
            cells.append("" if r is None else f"{100 * r['mean']:.2f}" + (
                f" +- {100 * r['half']:.2f} ({n} seeds)" if n > 1 and not math.isnan(r["half"]) else f" ({n} seed)"))
        lines.append(f"| {RUNG_NAMES[rung]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measured_differences(rows: list[dict]) -> list[str]:
    """One sentence per seed-level difference (to the rung below, to the LSTM) whose 95% interval
    excludes 0, e.g. "glyphs 5-shot: Meta-SGD is higher than Learned init (FO-MAML) by +1.04
    +- 0.51 points (3 seeds)"; the only gains the course states in words. [] when none."""
    from metalstm.rules import RUNG_NAMES
    said = []
    for r in rows:
        for other, d in ((r["below"], r["vs_below"]), ("lstm", r["vs_lstm"])):
            if d is None or verdict(d) not in ("higher", "lower"):
                continue
            mean, half, per_seed = d
            said.append(f"{r['test_set']} {r['shot']}-shot: {RUNG_NAMES[r['rung']]} is {verdict(d)} than "
                        f"{RUNG_NAMES[other]} by {100 * mean:+.2f} +- {100 * half:.2f} points "
                        f"({len(per_seed)} seeds)")
    return said


# -- the command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metalstm.tools.ladder_seeds", description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="runs/grid", help="the grid's folder (default runs/grid)")
    ap.add_argument("--published", metavar="DIR", help="also evaluate the runs that `grid --publish DIR` "
                    "shipped with a checkpoint (seed 0's NAME.pt), e.g. data/checkpoints/grid")
    ap.add_argument("--results", default=str(RESULTS), help=f"one JSON per run is kept here (default {RESULTS})")
    ap.add_argument("--episodes", type=positive_int, default=600, help="meta-test episodes per test set (default 600)")
    ap.add_argument("--test-sets", nargs="+", choices=TEST_SETS, default=list(TEST_SETS),
                    help="meta-test on these data sets (default glyphs digits; digits is the out-of-domain test)")
    ap.add_argument("--runs", nargs="+", metavar="NAME", help="evaluate only these finished runs "
                    "(e.g. glyphs-1shot-sgd-seed0); the table still reads every JSON")
    ap.add_argument("--table-only", action="store_true", help="evaluate nothing: the table from the JSON files")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    add_path_option(ap)
    ap.add_argument("--write", metavar="FILE", help="also write the table as markdown here")
    ap.add_argument("--plot", metavar="FILE.png", help="also draw the table (plot_seed_spread) here")
    args = ap.parse_args(argv)
    try:
        check_output_file(args.write, "--write")
        check_png(args.plot, "--plot")
        check_folder(args.results, "--results", writable=not args.table_only)
        check_folder(args.grid, "--grid")
        check_folder(args.published, "--published")
        set_threads(args.threads)
        if not args.table_only:
            check_path_runs(args.path, "cpu")
            with tempfile.TemporaryDirectory(prefix="ladder-seeds-") as view:
                specs = finished_runs(Path(args.grid))
                if args.published:
                    known = {s.name for s in specs}
                    specs += [s for s in published_runs(Path(args.published), Path(view)) if s.name not in known]
                if args.runs:
                    unknown = sorted(set(args.runs) - {s.name for s in specs})
                    if unknown:
                        raise ValueError(f"--runs {' '.join(unknown)}: not a finished run of {args.grid} "
                                         f"(finished: {', '.join(s.name for s in specs) or 'none'})")
                    specs = [s for s in specs if s.name in args.runs]
                if not specs and not Path(args.grid).is_dir():
                    print(f"ladder_seeds: no grid folder {args.grid}: the table from {args.results} alone")
                evaluate_grid(specs, Path(args.results), args.episodes, args.test_sets, args.path)
        records = read_results(Path(args.results))
        rows = seed_rows(records, args.test_sets)
    except (ValueError, OSError) as exc:              # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"ladder_seeds: no results in {args.results} yet")
        return 0
    table = seed_table(rows)
    print(table)
    try:
        if args.write:
            atomic_write(args.write, table + "\n\n" + runs_line(records) + "\n")
        if args.plot:
            import matplotlib
            matplotlib.use("Agg")
            from metalstm.viz.plots import plot_seed_spread
            save_png(plot_seed_spread(rows), args.plot, dpi=120)
    except OSError as exc:
        print(f"error: could not write {exc.filename or ''} ({exc.strerror or exc}); the table above is complete",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
