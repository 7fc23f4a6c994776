"""Meta-test evaluation (paper notes 5, 7, 8): every method on the same episodes, paired differences.

    python -m metalstm.evaluate --checkpoint data/checkpoints/glyphs-5shot.pt
    python -m metalstm.evaluate --checkpoint P --episodes 600 --baselines all
    python -m metalstm.evaluate --checkpoint data/checkpoints/glyphs-5shot.pt \
        --rungs data/checkpoints/ladder/glyphs-5shot-*.pt --baselines all \
        --cache data/checkpoints/baselines --test-sets glyphs digits --json out.json

Accuracy is the mean over `episodes` meta-test episodes (600 in the paper) with
a 95% interval of t_{0.975, n-1} * std / sqrt(n) (1.96 for the paper's 600). Episode i is a function of the
configuration's seed and i alone, so every method sees exactly the same
support and query images, and the same command gives the same table. Because
the episodes are shared, two methods are compared by their per-episode
differences (`metalstm.stats.paired_difference`): the table gives each
method's paired difference to the Meta-Learner LSTM and, for a rung of the
ladder (paper notes 11), to the rung below it. "digits" as a test set is the
out-of-domain test: rules and baselines trained on glyphs, tested on
handwritten digits (data/README.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from metalstm.baselines.common import Evaluation
from metalstm.baselines.suite import METHODS, NAMES, baseline_keys, build_baselines, pick_cache
from metalstm.checkpoint import CheckpointError, refuse_other_kinds, stored_checksum
from metalstm.cli import (ROOTED, add_logging_options, add_path_option, add_run_options, check_device,
                          check_folder, check_output_file, check_path_runs, config_from_args, default_cache,
                          load_config, logging_to_stderr, parser as cli_parser, positive_int, set_threads,
                          write_json)
from metalstm.config import Config
from metalstm.paths import checkpoint_path
from metalstm.data import load_dataset
from metalstm.episodes import (Episode, EpisodeSampler, check_request, episode_generator, load_split,
                               sampler_for)
from metalstm.metalearner import run_episode, set_path
from metalstm.model import load_trained
from metalstm.rules import RUNG_NAMES, RUNGS
from metalstm.stats import paired_difference, significant


log = logging.getLogger("metalstm.evaluate")

# A method maps (episode, index) to the query accuracy in [0, 1].
EpisodeAccuracy = Callable[[Episode, int], float]


def rule_accuracy(learner, rule, cfg: Config, seed: int, device="cpu", query_bn: str = "running") -> EpisodeAccuracy:
    """An update rule (meta-learner or SGD cell) run with the meta-test protocol (paper notes 7):
    episode i's mini-batch order comes from episode_generator(seed, i).

    query_bn="batch" normalises the query pass with its own batch statistics instead
    (the meta-training protocol; for measuring what the protocol costs).
    """
    if query_bn not in ("running", "batch"):
        raise ValueError(f"query_bn must be 'running' or 'batch', got {query_bn!r}")

    def acc(episode: Episode, i: int) -> float:
        with torch.no_grad():      # mode="train" would otherwise keep the meta-graph
            res = run_episode(learner, rule, episode.to(device), cfg.steps, cfg.batch_size,
                              mode="test" if query_bn == "running" else "train",
                              generator=episode_generator(seed, i))
        return float(res.query_acc)
    return acc


def evaluate_rule(learner, rule, sampler: EpisodeSampler, episodes: int | range, cfg: Config,
                  device="cpu", desc: str | None = None, query_bn: str = "running") -> list[float]:
    """Query accuracy of each episode (the first n, or those in a range) under `rule_accuracy`;
    the meta-validation of `metalstm.train` and the notebooks use it too."""
    acc = rule_accuracy(learner, rule, cfg, sampler.seed, device, query_bn)
    indices = range(episodes) if isinstance(episodes, int) else episodes
    return [acc(sampler[i], i) for i in tqdm(indices, desc=desc, leave=False,
                                              disable=True if desc is None else None)]


def logits_accuracy(predict: Callable[[Episode], torch.Tensor]) -> EpisodeAccuracy:
    """A method that returns query scores [N*Q, N]: accuracy of their argmax."""
    def acc(episode: Episode, i: int) -> float:
        scores = predict(episode)
        return (scores.argmax(dim=1).cpu() == episode.query_y).float().mean().item()
    return acc


def evaluate_methods(methods: dict[str, EpisodeAccuracy], sampler: EpisodeSampler, n_episodes: int,
                     progress: bool = True, log_every: int = 100) -> list[Evaluation]:
    """Every method on episodes 0..n_episodes-1 of `sampler` (the same episodes for all).

    progress: a tqdm bar per method where stderr is a terminal, else a line on the `metalstm`
    logger every `log_every` episodes (0: none); each method's result is logged either way."""
    results = []
    for name, acc in methods.items():
        start, accs = time.perf_counter(), []
        with torch.random.fork_rng():  # no method can change the episodes another one sees
            torch.manual_seed(0)
            bar = tqdm(range(n_episodes), desc=name, leave=False, disable=not progress or None)
            every = log_every if progress and bar.disable else 0
            for i in bar:
                accs.append(acc(sampler[i], i))
                if every and (i + 1) % every == 0 and i + 1 < n_episodes:
                    log.info(f"{name}: {i + 1}/{n_episodes} episodes, mean accuracy so far "
                             f"{sum(accs) / len(accs):.4f}")
        results.append(Evaluation(name, accs, time.perf_counter() - start))
        log.info(f"{name}: {100 * results[-1].mean:.2f}% +- {100 * results[-1].ci95:.2f} on {n_episodes} "
                 f"episodes of {sampler.dataset.name} ({results[-1].seconds:.0f} s)")
    return results


def meta_test_sampler(cfg: Config, test_set: str | None = None, root=None) -> EpisodeSampler:
    """The meta-test episodes of `cfg` on its own data set, or on another data set's test split
    (e.g. "digits": the out-of-domain test of a glyph-trained rule), with the same seed. A data set
    that lives in a folder (omniglot, mini-imagenet, folder) is read from `root` (--data-root),
    its images as the model takes them (an image folder is converted to cfg.in_channels)."""
    if test_set is None or test_set == cfg.dataset:
        return sampler_for(cfg, "test")
    if test_set in ROOTED:
        if root is None:
            raise ValueError(f"--test-sets {test_set} needs --data-root, the folder that holds it")
        return sampler_for(cfg.replace(dataset=test_set, data_root=str(root), val_alphabets=None), "test")
    data = load_dataset(test_set, "test", image_size=cfg.image_size)
    if data.image_shape != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise ValueError(f"{test_set} has {'x'.join(map(str, data.image_shape))} images; {cfg.name} "
                         f"needs {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}")
    check_request(data, cfg.n_way, cfg.k_shot, cfg.n_query)
    smallest = int(data.class_sizes().min())
    if cfg.k_shot + cfg.n_query > smallest:   # a domain test draws from every class, never from a subset
        raise ValueError(f"{test_set}: {cfg.k_shot} support + {cfg.n_query} query = {cfg.k_shot + cfg.n_query} "
                         f"images per class, but its smallest class has {smallest}: an out-of-domain test "
                         f"uses every class, so K + Q must be at most {smallest}")
    return sampler_for(cfg, "test", data)


def rule_key(path, native: bool = False, reference: bool = False) -> str:
    """What a rule's saved per-episode accuracies are keyed by: the checkpoint's own checksum
    (not its path: a file replaced at the same path is another rule) and the path that computed
    them (--path native and --path reference round differently; the keys of the fused path are
    those of runs before --path existed)."""
    return hashlib.sha256(json.dumps({"checkpoint_sha256": stored_checksum(path), "native": bool(native),
                                      "reference": bool(reference)}, sort_keys=True).encode()).hexdigest()


def read_results_object(path, label: str, hint: str) -> tuple[dict, Callable[[str], ValueError]]:
    """An evaluate --json file as a dict, and `bad(what)` for the caller's own checks: one ValueError
    naming the file (as `label`) when it cannot be read, is not JSON or holds no object."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{label}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{label} is not a JSON file (damaged or cut short?): "
                         f"{str(exc).splitlines()[0][:100]}; {hint}") from None

    def bad(what):
        return ValueError(f"{label} is not a results file of evaluate --json: {what}")
    if not isinstance(report, dict):
        raise bad(f"it holds {type(report).__name__ if report is not None else 'null'}, not an object")
    return report, bad


def _read_results(path, n: int) -> dict:
    """An earlier --json, checked: one ValueError naming the file and what is wrong with it."""
    old, bad = read_results_object(path, f"--reuse {path}", "give a --json written by evaluate")
    if not isinstance(old.get("config"), dict) or not isinstance(old.get("test_sets"), dict):
        raise bad("no \"config\" object or no \"test_sets\" object")
    for t, block in old["test_sets"].items():
        if not isinstance(block, dict) or not isinstance(block.get("results"), list):
            raise bad(f"test set {t!r} has no list of \"results\"")
        for row in block["results"]:
            if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                raise bad(f"a row of test set {t!r} has no \"name\"")
            accs = row.get("accuracies")
            if not isinstance(accs, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                     and 0 <= a <= 1 for a in accs):
                raise bad(f"{row['name']!r} on {t} has no list of \"accuracies\" (numbers from 0 to 1)")
            if len(accs) != n and old.get("episodes") == n:   # another count: reusable() says so
                raise ValueError(f"--reuse {path}: {row['name']!r} on {t} holds {len(accs)} accuracies, "
                                 f"this run measures {n} episodes; it cannot stand in for this run")
            if not isinstance(row.get("seconds", 0.0), (int, float)) or not isinstance(row.get("note", ""), str):
                raise bad(f"{row['name']!r} on {t} has a \"seconds\" that is not a number or a "
                          f"\"note\" that is not text")
    return old


def reusable(paths, cfg: Config, n: int, samplers: dict, keys: dict[str, str] | None = None) -> dict:
    """{(test set, method name): saved row} of earlier --json runs of the same setting (the
    configuration but for the rule and its training budget), episode count and test episodes:
    the test set's images (`data_sha256`) and seed; a later file wins; {} without paths.
    A row is reused only under its method's key (`keys`: a rule's `rule_key`, a baseline's
    `baseline_keys`), so a checkpoint or a cache replaced since is measured again."""
    found, keys = {}, keys or {}
    defaults = Config("").to_dict()          # a field added since a file was written has its default
    same = lambda c: {k: v for k, v in {**defaults, **c}.items()
                      if k not in ("rule", "rule_lr", "episodes", "description", "path", "fast")}
    for path in paths:       # the rule, its budget and path (in its key) do not change the episodes or baselines
        old = _read_results(path, n)
        if same(old.get("config", {})) != same(cfg.to_dict()) or old.get("episodes") != n:
            raise ValueError(f"--reuse {path} was made with another checkpoint configuration or episode "
                             f"count ({old.get('episodes')}); it cannot stand in for this run")
        for t, block in old["test_sets"].items():
            if t not in samplers or block.get("seed") != samplers[t].seed or \
                    block.get("data_sha256") != samplers[t].dataset.fingerprint():
                continue                     # other episodes (older files have no data_sha256)
            found.update({(t, r["name"]): r for r in block["results"]
                          if r.get("key") is not None and r.get("key") == keys.get(r["name"])})
    return found


def paired_rows(results: list[Evaluation], rung_of: dict[str, str],
                reference: str = RUNG_NAMES["lstm"]) -> list[dict]:
    """Each result with its paired difference (mean of per-episode differences, 95% interval)
    to the `reference` method and, for a rung of the ladder, to the rung below it."""
    by_rung = {rung_of[r.name]: r for r in results if r.name in rung_of}
    ref = next((r for r in results if r.name == reference), None)
    rows = []
    for r in results:
        row = {"name": r.name, "mean": r.mean, "ci95": r.ci95, "seconds": r.seconds,
               "rung": rung_of.get(r.name), "vs_reference": None, "vs_below": None, "below": None}
        if ref is not None and r is not ref:
            row["vs_reference"] = paired_difference(r.accuracies, ref.accuracies)
        if r.name in rung_of:
            lower = [by_rung[k] for k in RUNGS[:RUNGS.index(rung_of[r.name])] if k in by_rung]
            if lower:
                row["below"] = lower[-1].name
                row["vs_below"] = paired_difference(r.accuracies, lower[-1].accuracies)
        rows.append(row)
    return rows


def paired_table(rows: list[dict], reference: str = RUNG_NAMES["lstm"], name_below: bool = True) -> str:
    """Markdown: method | accuracy | paired difference to the reference | to the rung below | seconds.
    name_below=False names the rung below ("(vs Meta-SGD)") only where it is not the row just above
    (a narrower table, for a slide)."""
    def diff(d):
        if d is None:
            return ""
        mark = "" if significant(*d) else " (n.s.)"
        return f"{100 * d[0]:+.2f} +- {100 * d[1]:.2f}{mark}"
    lines = [f"| method | accuracy (%) | vs {reference} | vs the rung below | seconds |",
             "|---|---|---|---|---|"]
    for above, r in zip([None] + [x["name"] for x in rows], rows):
        named = name_below or r["below"] != above
        below = "" if r["vs_below"] is None else diff(r["vs_below"]) + (f" (vs {r['below']})" if named else "")
        lines.append(f"| {r['name']} | {100 * r['mean']:.2f} +- {100 * r['ci95']:.2f} | "
                     f"{diff(r['vs_reference'])} | {below} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def load_rule(checkpoint, device: str, path: str, expect: Config | None):
    """(learner, rule, config) of --checkpoint on `path` (reference, fused, native); with --config
    (`expect`), one of another data set or shot is refused."""
    learner, meta, cfg, _ = load_trained(checkpoint, device, expect=expect)
    if expect is not None and (cfg.dataset, cfg.k_shot) != (expect.dataset, expect.k_shot):
        raise CheckpointError(f"{checkpoint} holds a {cfg.k_shot}-shot {cfg.dataset} rule "
                              f"({cfg.name!r}); --config {expect.name} is {expect.k_shot}-shot "
                              f"{expect.dataset}: pass --config {cfg.name}, or no --config")
    cfg = cfg.replace(path=path)           # --path, as build_model would have made it
    set_path(path, learner, meta)
    return learner, meta, cfg


def check_distinct(paths) -> None:
    """Each checkpoint a trained rule, and none given twice (the same contents under two names)."""
    seen = {}
    for path in paths:
        refuse_other_kinds(path, "a trained update rule (a best.pt or data/checkpoints/*.pt)")
        sha = stored_checksum(path)
        if sha in seen:
            raise ValueError(f"--rungs {path} holds the same rule as {seen[sha]} (the same checkpoint "
                             f"contents); give each checkpoint once, --checkpoint not again in --rungs")
        seen[sha] = path


def add_rungs(rules: dict, rungs, cfg: Config, checkpoint, device: str, path: str) -> None:
    """Load the --rungs checkpoints into rules {name: (learner, rule, config, checkpoint)}: each of
    the setting (shot, steps, batch) of --checkpoint, named by its rung (and its episodes when two
    checkpoints of one rung differ in them)."""
    for rung_path in rungs:
        r_learner, rule, r_cfg, _ = load_trained(rung_path, device, expect=cfg)
        if (r_cfg.k_shot, r_cfg.steps, r_cfg.batch_size) != (cfg.k_shot, cfg.steps, cfg.batch_size):
            raise ValueError(f"{rung_path} is a {r_cfg.k_shot}-shot rule of {r_cfg.steps} steps of batch "
                             f"{r_cfg.batch_size}; {checkpoint} is {cfg.k_shot}-shot, "
                             f"{cfg.steps} x {cfg.batch_size}: compare rules of one setting")
        set_path(path, r_learner, rule)
        name = RUNG_NAMES[r_cfg.rule]
        if name in rules:                      # e.g. the same rule trained for fewer episodes
            name = f"{name} ({r_cfg.episodes:,} episodes)"
        if name in rules:
            raise ValueError(f"two checkpoints of the rung {r_cfg.rule!r} with {r_cfg.episodes} "
                             f"episodes: {rules[name][3]} and {rung_path}")
        rules[name] = (r_learner, rule, r_cfg, rung_path)


def wanted_baselines(asked: list[str], cfg: Config, meta, checkpoint) -> tuple[list[str], torch.Tensor | None]:
    """(the --baselines to measure, in METHODS order for 'all', c_0 for 'learned' or None): 'learned'
    needs an lstm rule's c_0, and 'all' leaves it out for another rule."""
    wanted = list(dict.fromkeys(METHODS if asked == ["all"] else asked))
    c0 = meta.c0.detach().cpu() if cfg.rule == "lstm" else None
    if c0 is None and "learned" in wanted:
        if asked != ["all"]:
            raise ValueError(f"--baselines learned is SGD from the c_0 of a Meta-Learner LSTM, and "
                             f"{checkpoint} is a {cfg.rule!r} rule: leave 'learned' out, or pass "
                             f"an lstm checkpoint as --checkpoint")
        wanted = [m for m in wanted if m != "learned"]   # 'all': every baseline this rule allows
    return wanted, c0


def compare_on(test_set: str, sampler: EpisodeSampler, n: int, cfg: Config, rules: dict, order: list[str],
               baselines: dict, reused: dict, names: list[str], rung_of: dict, notes: dict, keys: dict,
               device: str, progress: bool = True, log_every: int = 100) -> tuple[str, dict]:
    """Every method on the first n episodes of one test set (a --reuse row where one is taken):
    (its markdown table with paired differences, its part of the JSON report)."""
    methods = {name: rule_accuracy(rules[name][0], rules[name][1].eval(), rules[name][2], sampler.seed,
                                   device) for name in order}
    methods.update({m.name: logits_accuracy(m.predict) for m in baselines.values()})
    old = {name: reused[test_set, name] for name in names if (test_set, name) in reused}
    fresh = {r.name: r for r in evaluate_methods({k: v for k, v in methods.items() if k not in old},
                                                  sampler, n, progress, log_every)}
    results = [fresh[name] if name in fresh else
               Evaluation(name, old[name]["accuracies"], old[name].get("seconds", 0.0)) for name in names]
    rows = paired_rows(results, rung_of)
    title = (f"{cfg.name}: {cfg.n_way}-way {cfg.k_shot}-shot, {n} meta-test episodes of "
             f"{test_set} (seed {sampler.seed})")
    part = {"title": title, "seed": sampler.seed, "data_sha256": sampler.dataset.fingerprint(),
            "results": [{**row, "note": notes.get(row["name"], ""), "key": keys.get(row["name"]),
                         "accuracies": r.accuracies}
                        for row, r in zip(rows, results)]}
    return f"**{title}**\n\n{paired_table(rows)}", part


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m metalstm.evaluate`."""
    ap = cli_parser("python -m metalstm.evaluate",
                    "Evaluate a trained meta-learner, the other rungs of the ladder and the baselines on the "
                    "same meta-test episodes, with paired differences. The episodes are those of the "
                    "checkpoint's configuration, with the run options below in place of its fields.")
    ap.add_argument("--checkpoint", required=True,
                    help="a best.pt, or a shipped run's name (glyphs-1shot, glyphs-5shot: data/checkpoints/NAME.pt)")
    ap.add_argument("--rungs", nargs="*", default=[], metavar="CHECKPOINT",
                    help="more trained rules of the same setting (e.g. data/checkpoints/ladder/glyphs-5shot-*.pt)")
    ap.add_argument("--episodes", type=positive_int, help="meta-test episodes (default: the configuration's "
                    "test_episodes, 600)")
    ap.add_argument("--test-sets", nargs="*", default=None, metavar="DATASET",
                    help="test on these data sets' test splits (default: the checkpoint's own; 'digits' is "
                         "the out-of-domain test; omniglot, mini-imagenet or folder read --data-root)")
    ap.add_argument("--baselines", nargs="*", default=[], metavar="NAME", choices=[*METHODS, "all"],
                    help=f"baselines to add: {' '.join(METHODS)} (or 'all') (default: none)")
    ap.add_argument("--cache", help="where pre-trained / trained baselines are kept and reused (default: the "
                    "shipped data/checkpoints/baselines when it holds them for this configuration, else "
                    f"{default_cache()})")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results (with every episode's accuracy) as JSON here "
                    "(default: none)")
    add_path_option(ap)
    ap.add_argument("--reuse", nargs="*", default=[], metavar="JSON", help="take the per-episode accuracies of methods that this "
                    "earlier --json of the same setting and episodes already holds (every method is "
                    "deterministic, so they are the numbers a new run would give); a row is taken only "
                    "under its key: a rule's checkpoint checksum, a baseline's settings and data, the "
                    "test set's images and seed; anything else is measured again (default: none)")
    add_run_options(ap, training=False, config_help="refuse the checkpoint unless it fits this configuration "
                    "(a built-in name or a .toml / .json file; default: no check)")
    add_logging_options(ap)
    return ap


FIXED = ("n_way", "image_size", "in_channels")       # the trained model's shape: not an option to change


def evaluation_config(args: argparse.Namespace, cfg: Config) -> tuple[Config, object]:
    """(the configuration the episodes are drawn from: the checkpoint's with the run options in
    place of its fields, --data-root of a --test-sets data set that lives in a folder or None)."""
    dataset = args.dataset or cfg.dataset
    foreign = [t for t in dict.fromkeys(args.test_sets or []) if t in ROOTED and t != dataset]
    if len(foreign) > 1:
        raise ValueError(f"--test-sets {' '.join(foreign)}: one --data-root reads one of them; evaluate "
                         f"them one at a time")
    root = None
    if foreign:
        if args.data_root is None:
            raise ValueError(f"--test-sets {foreign[0]} needs --data-root, the folder that holds it")
        root, args = args.data_root, argparse.Namespace(**{**vars(args), "data_root": None})
    return config_from_args(argparse.Namespace(**{**vars(args), "config": None}), base=cfg, fixed=FIXED), root


def main(argv: list[str] | None = None) -> int:
    """`python -m metalstm.evaluate`: the trained rule, the other --rungs and the --baselines on the
    same meta-test episodes of each test set; prints a table per test set as it is measured, then
    the notes (and writes --json); 0, or 2 with one line of error."""
    args = parser().parse_args(argv)
    with logging_to_stderr(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """main's work once the flags are parsed (the `metalstm` logger sends its lines to stderr)."""
    try:
        check_device(args.device)
        check_path_runs(args.path, args.device)
        check_output_file(args.json, "--json")             # before the work, not after it
        check_folder(args.cache, "--cache")
        set_threads(args.threads)
        expect = load_config(args.config) if args.config else None
        args.checkpoint = checkpoint_path(args.checkpoint)
        args.rungs = [checkpoint_path(p) for p in args.rungs]
        check_distinct([args.checkpoint, *args.rungs])
        learner, meta, cfg = load_rule(args.checkpoint, args.device, args.path, expect)
        cfg, root = evaluation_config(args, cfg)
        n = args.episodes or cfg.test_episodes
        samplers = {name: meta_test_sampler(cfg, name, root) for name in (args.test_sets or [cfg.dataset])}
        rules = {RUNG_NAMES[cfg.rule]: (learner, meta, cfg, args.checkpoint)}
        add_rungs(rules, args.rungs, cfg, args.checkpoint, args.device, args.path)
        order = sorted(rules, key=lambda name: (RUNGS.index(rules[name][2].rule), rules[name][2].episodes))
        rung_of = {name: rules[name][2].rule for name in order}
        # a rule's note names its checkpoint (and --path native, whose rounding differs); --reuse takes
        # a rule's saved accuracies only under the same key (checkpoint and path)
        notes = {name: str(rules[name][3]) + (" (--path native)" if args.path == "native" else "")
                 for name in order}
        keys = {name: rule_key(rules[name][3], args.path == "native", args.path == "reference") for name in order}
        baselines = {}
        wanted, c0 = wanted_baselines(args.baselines, cfg, meta, args.checkpoint)
        data = None
        if wanted:                           # a baseline's key is its settings and its data's contents
            data = {split: load_split(cfg, split) for split in ("train", "val")}
            keys.update(baseline_keys(cfg, wanted, data, c0))
        reused = reusable(args.reuse, cfg, n, samplers, keys)
        to_build = [m for m in wanted if any((t, NAMES[m]) not in reused for t in samplers)]
        if to_build:
            cache = pick_cache(args, cfg, to_build, c0, data)
            log.info(f"baselines: {', '.join(to_build)} (cache {cache})")
            baselines, more = build_baselines(cfg, to_build, c0=c0, cache=cache, data=data,
                                              progress=not args.quiet)
            notes.update(more)
        names = order + [NAMES[m] for m in wanted]
        for t, name in reused:
            if name in names and name not in notes:
                notes[name] = reused[t, name].get("note", "")
        report_json = {"config": cfg.to_dict(), "episodes": n, "checkpoint": str(args.checkpoint),
                       "rungs": [str(p) for p in args.rungs], "test_sets": {}}
        for test_set, sampler in samplers.items():
            table, report_json["test_sets"][test_set] = compare_on(
                test_set, sampler, n, cfg, rules, order, baselines, reused, names, rung_of, notes, keys,
                args.device, not args.quiet, args.log_every)
            print(table + "\n", flush=True)            # each table as soon as it is measured
    except (ValueError, OSError) as exc:               # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"- {name}: {note}" for name, note in notes.items()))
    print("\n(n.s.: the paired 95% interval includes 0)")
    return write_json(args.json, report_json, "the tables above", indent=1)


if __name__ == "__main__":
    sys.exit(main())
