"""Add the episode-0 row (the untrained rule) to a training log written before train() measured it.

    python -m metalstm.tools.untrained_row --checkpoint data/checkpoints/glyphs-5shot.pt \\
        --log data/checkpoints/glyphs-5shot.log.csv

`metalstm.train` now validates the untrained rule first, so every new log.csv
starts at episode 0. For a log from before that, this measures the same row
the same way: the configuration stored in the checkpoint, the seeded untrained
rule that `build_model` makes from it (the very start of that run), and the
same meta-validation episodes (`evaluate_rule` on the first val_episodes).
The log is rewritten with the row first; a log that has it already is left alone.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import torch

from metalstm.checkpoint import atomic_write, refuse_other_kinds
from metalstm.cli import check_output_file, positive_int
from metalstm.episodes import sampler_for
from metalstm.evaluate import evaluate_rule
from metalstm.model import build_model, load_trained
from metalstm.stats import mean_ci95
from metalstm.runs import LOG_FIELDS


def untrained_row(cfg) -> dict:
    """The log.csv row of episode 0: validation accuracy of the untrained rule of `cfg`."""
    start = time.perf_counter()
    learner, rule = build_model(cfg)
    val_acc, val_ci = mean_ci95(evaluate_rule(learner, rule, sampler_for(cfg, "val"), cfg.val_episodes, cfg))
    return {"episode": 0, "train_loss": "", "train_acc": "", "val_acc": val_acc, "val_ci95": val_ci,
            "seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Prepend the untrained rule's validation row to an old log.csv.")
    ap.add_argument("--checkpoint", required=True, help="the run's best.pt (for its configuration)")
    ap.add_argument("--log", required=True, help="the run's log.csv")
    ap.add_argument("--threads", type=positive_int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = Path(args.log)
    try:
        refuse_other_kinds(args.checkpoint, "a trained meta-learner (the run's best.pt)")
        cfg = load_trained(args.checkpoint)[2]
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)
        if not fields or "episode" not in fields:
            raise ValueError(f"{path} is not a training log: it has no header with an 'episode' column "
                             f"(a log.csv of metalstm.train starts with {','.join(LOG_FIELDS)})")
        for i, row in enumerate(rows, start=2):
            try:
                int(row["episode"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {i}: episode {row['episode']!r} is not a whole number") from None
        check_output_file(path, "--log")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rows and int(rows[0]["episode"]) == 0:
        print(f"{path} already starts at episode 0")
        return 0
    row = untrained_row(cfg)
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows([row, *rows])
    try:
        atomic_write(path, text.getvalue())
    except OSError as exc:
        print(f"error: could not write {path} ({exc.strerror or exc}); it is unchanged", file=sys.stderr)
        return 2
    print(f"{path}: episode 0, validation accuracy {row['val_acc']:.4f} +- {row['val_ci95']:.4f} "
          f"({cfg.val_episodes} episodes, {row['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
