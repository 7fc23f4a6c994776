"""Where a trained Meta-Learner LSTM loses to the pre-trained baselines: measurements.

    python -m metalstm.tools.diagnose --checkpoint data/checkpoints/glyphs-5shot.pt \\
        --cache data/checkpoints/baselines --threads 1
    python -m metalstm.tools.diagnose ... --train-episodes 500     # adds two short meta-training runs

Each row is a mean accuracy with its 95% interval over the same `--episodes`
episodes of one split (default 100; the meta-validation ones are those the
training chose its checkpoint on), with the meta-test batch-norm protocol
(paper notes 7) unless the row says otherwise:

  generalisation  the checkpoint on meta-train classes (episodes the training never
                  drew), on meta-val and on meta-test classes
  batch norm      meta-val with the query pass normalised by its own batch statistics
                  (paper notes 7's meta-training protocol) instead of the support's running averages
  features        nearest neighbour on the pre-trained network (paper notes 9); the untrained
                  update rule (paper notes 6: about SGD with a small step) from c_0 = the
                  pre-trained conv stack with a zero head
  --train-episodes E (minutes each): the checkpoint meta-trained E more episodes at
                  Adam lr x `--lr-factor` (0.1); and E episodes from the pre-trained c_0 at
                  Adam lr x `--pretrained-lr-factor` (1: paper notes 5's 1e-3)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from metalstm.baselines.common import accuracy
from metalstm.baselines.finetune import with_new_head
from metalstm.baselines.nearest import NearestNeighbour
from metalstm.baselines.pretrain import Pretrained
from metalstm.baselines.suite import pick_cache, pretrained_for
from metalstm.checkpoint import CheckpointError, load_checkpoint, refuse_other_kinds
from metalstm.cli import (add_logging_options, add_run_options, check_folder, check_output_file,
                          config_from_args, logging_to_stderr, non_negative_float, non_negative_int, parser,
                          positive_int, set_threads, write_json)
from metalstm.config import Config
from metalstm.model import build_model, load_trained
from metalstm.rules import RUNG_NAMES
from metalstm.evaluate import FIXED, evaluate_rule
from metalstm.paths import checkpoint_path
from metalstm.episodes import load_split
from metalstm.episodes import sampler_for
from metalstm.stats import mean_ci95
from metalstm.train import train


@dataclass
class Row:
    """One measurement: what, on which split, mean accuracy and 95% half-width over n episodes."""

    group: str
    name: str
    split: str
    mean: float
    ci95: float
    n: int

    @classmethod
    def of(cls, group: str, name: str, split: str, accuracies: list[float]) -> "Row":
        return cls(group, name, split, *mean_ci95(accuracies), len(accuracies))


RUN_FOLDERS = ("lower-lr", "from-pretrained")     # the two short runs, inside --out


def split_episodes(cfg: Config, split: str, n: int) -> range:
    """Indices of the n episodes of `split` to measure on: the first n of meta-val and
    meta-test (the training's validation and evaluate's test episodes), and for
    meta-train the n after the cfg.episodes that a full training run draws."""
    return range(cfg.episodes, cfg.episodes + n) if split == "train" else range(n)


def c0_from_pretrained(pre: Pretrained, n_way: int) -> torch.Tensor:
    """A c_0 (flat theta) holding the pre-trained conv and batch-norm weights and a zero N-way head."""
    return with_new_head(pre, n_way, head="zero")[1]


def rule_with_c0(cfg: Config, c0: torch.Tensor):
    """(learner, a fresh meta-learner of cfg with its paper notes 6 initialisation but c_0 = c0)."""
    learner, meta = build_model(cfg)
    with torch.no_grad():
        meta.c0.copy_(c0)
    return learner, meta


def short_run(cfg: Config, init_state: dict, episodes: int, lr: float, out: Path,
              val_episodes: int = 100, progress: bool = True) -> tuple[list[dict], dict]:
    """Meta-train `episodes` episodes from `init_state` at Adam `lr`, validating on the first
    `val_episodes` meta-val episodes halfway and at the end: (the validation history, the
    final meta-learner state)."""
    run_cfg = cfg.replace(episodes=episodes, lr=lr, val_every=max(1, episodes // 2), val_episodes=val_episodes)
    res = train(run_cfg, out, init_state=init_state, progress=progress)
    return res.history, load_checkpoint(out / "last.pt")[0]["metalearner"]


def diagnose(checkpoint: str | Path, episodes: int = 100, cache: str | Path | None = None,
             train_episodes: int = 0, lr_factor: float = 0.1, pretrained_lr_factor: float = 1.0,
             out: str | Path | None = None,
             pre: Pretrained | None = None, progress: bool = True, config: Config | None = None) -> list[Row]:
    """Every measurement of the module docstring for one checkpoint; `config`: the configuration
    whose episodes are measured (default: the checkpoint's; the model's shape must be its)."""
    learner, meta, cfg, _ = load_trained(checkpoint, expect=config)
    cfg = config or cfg
    meta.eval()
    label = RUNG_NAMES[cfg.rule]             # what the checkpoint holds: a rung of the ladder
    if train_episodes > 0 and not any(p.requires_grad for p in meta.parameters()):
        raise ValueError(f"--train-episodes {train_episodes}: {checkpoint} holds the {cfg.rule!r} rule, "
                         f"which has nothing to meta-train; leave --train-episodes out")
    taken = [str(Path(out) / sub) for sub in RUN_FOLDERS if out and (Path(out) / sub / "last.pt").exists()]
    if train_episodes > 0 and taken:       # checked before minutes of measuring, not after
        raise FileExistsError(f"{', '.join(taken)} already hold(s) a run; choose another --out")
    samplers = {s: sampler_for(cfg, s) for s in ("train", "val", "test")}
    if pre is None:
        pre = pretrained_for(cfg, load_split(cfg, "train"), cache, progress=progress)

    def rule_row(group, name, split, rule, query_bn="running"):
        accs = evaluate_rule(learner, rule, samplers[split], split_episodes(cfg, split, episodes), cfg,
                             desc=name if progress else None, query_bn=query_bn)
        return Row.of(group, name, split, accs)

    rows = [rule_row("generalisation", label, s, meta) for s in ("train", "val", "test")]
    rows.append(rule_row("batch norm", f"{label}, query on its own batch statistics", "val",
                         meta, query_bn="batch"))
    nn = NearestNeighbour(pre.learner, pre.theta)
    rows.append(Row.of("features", "Nearest neighbour on the pre-trained network", "val",
                       [accuracy(nn, samplers["val"][i]) for i in split_episodes(cfg, "val", episodes)]))
    c0 = c0_from_pretrained(pre, cfg.n_way)
    _, fresh = rule_with_c0(cfg, c0)
    rows.append(rule_row("features", "untrained rule (paper notes 6 init) from the pre-trained c_0", "val", fresh))

    if train_episodes > 0:
        folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="metalstm-diagnose-"))
        runs = [(f"checkpoint + {train_episodes} episodes at Adam lr {cfg.lr * lr_factor:g}",
                 meta.state_dict(), cfg.lr * lr_factor, folder / RUN_FOLDERS[0]),
                (f"pre-trained c_0 + {train_episodes} episodes at Adam lr {cfg.lr * pretrained_lr_factor:g}",
                 fresh.state_dict(), cfg.lr * pretrained_lr_factor, folder / RUN_FOLDERS[1])]
        for name, state, lr, run_out in runs:
            history, final = short_run(cfg, state, train_episodes, lr, run_out, episodes, progress)
            # (train's curve starts at episode 0, the rule before training: rows above measure it)
            rows += [Row("meta-training", f"{name}: after {h['episode']}", "val", h["val_acc"],
                         h["val_ci95"], episodes) for h in history if h["episode"] > 0]
            _, trained = build_model(cfg)
            trained.load_state_dict(final)
            rows.append(rule_row("meta-training", f"{name}: at the end", "test", trained.eval()))
    return rows


SPLIT_NAMES = {"train": "meta-train", "val": "meta-val", "test": "meta-test"}


def table(rows: list[Row]) -> str:
    """A markdown table: group | measurement | split | accuracy % (+- 95%) | episodes."""
    lines = ["| group | measurement | split | accuracy % | episodes |", "|---|---|---|---|---|"]
    lines += [f"| {r.group} | {r.name} | {SPLIT_NAMES[r.split]} | {100 * r.mean:.2f} +- {100 * r.ci95:.2f} "
              f"| {r.n} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m metalstm.tools.diagnose`: the rows of the module docstring as a table (and --json);
    0, or 2 with one line of error."""
    ap = parser("python -m metalstm.tools.diagnose",
                "Measure where a trained meta-learner loses to the pre-trained baselines (generalisation, "
                "batch norm, features), on the episodes of the checkpoint's configuration with the run "
                "options below in place of its fields.")
    ap.add_argument("--checkpoint", required=True, help="a best.pt, or a shipped run's name (glyphs-5shot)")
    ap.add_argument("--episodes", type=int, default=100, help="episodes per row, at least 2")
    ap.add_argument("--cache", help="where the pre-trained baseline is kept (default: the shipped "
                    "data/checkpoints/baselines when it holds it for this configuration, else the user cache)")
    ap.add_argument("--train-episodes", type=non_negative_int, default=0,
                    help="also run two short meta-trainings of this many episodes (minutes)")
    ap.add_argument("--lr-factor", type=non_negative_float, default=0.1, help="Adam lr factor of the continued run")
    ap.add_argument("--pretrained-lr-factor", type=non_negative_float, default=1.0,
                    help="Adam lr factor of the run from the pre-trained c_0 (1: paper notes 5's lr)")
    ap.add_argument("--out", help="folder for the short runs (default: a temporary folder)")
    ap.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the rows as JSON here (default: none)")
    add_run_options(ap, training=False, config_help="refuse the checkpoint unless it fits this configuration "
                    "(a built-in name or a .toml / .json file; default: no check)")
    add_logging_options(ap)
    args = ap.parse_args(argv)
    with logging_to_stderr(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """main's work once the flags are parsed (the `metalstm` logger sends its lines to stderr)."""
    if args.episodes < 2:
        print("error: --episodes must be at least 2 (an interval needs two values)", file=sys.stderr)
        return 2
    set_threads(args.threads)
    start = time.perf_counter()
    try:
        check_output_file(args.json, "--json")             # before the work, not after it
        check_folder(args.cache, "--cache")
        if args.train_episodes:
            check_folder(args.out, "--out", writable=True)
        args.checkpoint = checkpoint_path(args.checkpoint)
        refuse_other_kinds(args.checkpoint, "a trained meta-learner (a best.pt or data/checkpoints/*.pt)")
        from metalstm.cli import load_config
        expect = load_config(args.config) if args.config else None
        saved = load_trained(args.checkpoint, expect=expect)[2]
        cfg = config_from_args(argparse.Namespace(**{**vars(args), "config": None}), base=saved, fixed=FIXED)
        cache = pick_cache(args, cfg, ["nearest"], None, {"train": load_split(cfg, "train")})
        rows = diagnose(args.checkpoint, args.episodes, cache, args.train_episodes, args.lr_factor,
                        args.pretrained_lr_factor, args.out, progress=not args.quiet, config=cfg)
    except (ValueError, OSError) as exc:                  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"**{args.checkpoint}: {args.episodes} episodes per row, {seconds:.0f} s, "
          f"{torch.get_num_threads()} thread(s)**\n")
    print(table(rows))
    return write_json(args.json, {"checkpoint": str(args.checkpoint), "episodes": args.episodes,
                                  "seconds": seconds, "rows": [dataclasses.asdict(r) for r in rows]})


if __name__ == "__main__":
    sys.exit(main())
