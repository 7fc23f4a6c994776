"""The device check, prepared for a session that gets a GPU: `python -m metalstm.tools.gpu_check`

    python -m metalstm.tools.gpu_check --device cuda --minutes 6 --out runs/gpu-check

runs, in this order, and writes everything under --out:
  1. the episode benchmark (`metalstm.tools.bench`) on the device: bench.txt;
  2. a time-boxed meta-training of glyphs at the paper's 5-shot budget: the
     glyphs-5shot configuration with 50,000 episodes (--episodes), stopped after
     --minutes the way Ctrl-C stops a run (the last finished meta-update is saved
     in last.pt, and `python -m metalstm.train --config glyphs-5shot --episodes
     50000 --out OUT/train --device cuda --resume` continues it);
  3. with --eval-episodes K > 0, the meta-test accuracy of the run's best.pt on K
     episodes (`metalstm.evaluate`);
and prints, and writes to summary.json: the device's name, torch's version, the
episodes trained, episodes per second (meta-validation included), the time that
all 50,000 would take at that rate, the best meta-validation accuracy.

The steps are timed by wall clock; a GPU run is asynchronous, so the training's
rate is measured over whole meta-updates (each ends with .item() calls that wait
for the device). CUDA graphs are not tried: an episode runs T meta-learner steps
whose saved activations a captured graph would overwrite step after step; that
needs a device to develop against.

Dry run on a CPU (what tests/cli/test_bench.py runs, seconds):

    python -m metalstm.tools.gpu_check --device cpu --config smoke --minutes 0.05 \\
        --bench-shapes 28 --bench-shots 1 --bench-repeats 1 --bench-warmup 0 --out /tmp/gpu-check
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from metalstm.checkpoint import atomic_write
from metalstm.cli import check_device, check_folder, non_negative_int, positive_float, positive_int, set_threads
from metalstm.config import get_config
from metalstm.tools import bench

PAPER_5SHOT_EPISODES = 50_000


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    import platform
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def run_bench(args, out: Path) -> str:
    """The benchmark's output, also written to out (and printed as it comes)."""
    argv = ["--device", args.device, "--repeats", str(args.bench_repeats), "--warmup", str(args.bench_warmup),
            "--shapes", *map(str, args.bench_shapes), "--shots", *map(str, args.bench_shots)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    buffer = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text):
            buffer.write(text)
            sys.__stdout__.write(text)
            return len(text)

        def flush(self):
            sys.__stdout__.flush()

    with contextlib.redirect_stdout(Tee()):
        code = bench.main(argv)
    if code != 0:
        raise RuntimeError(f"the benchmark stopped with exit code {code}")
    atomic_write(out, buffer.getvalue())
    return buffer.getvalue()


def timed_training(cfg, out: Path, device: str, seconds: float) -> dict:
    """Meta-train cfg into out until it is done or `seconds` have passed; then stop it as
    Ctrl-C would (SIGINT: train saves the last finished meta-update and stops)."""
    from metalstm.train import train

    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    # Ctrl-C's Python action even where SIGINT came in ignored (a shell's background job), or the
    # time limit would never stop the run
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    timer.start()
    try:
        result = train(cfg, out, device=device, progress=False)
        episodes, best, best_episode, stopped = (result.episodes_done, result.best_val_acc,
                                                 result.best_episode, False)
    except KeyboardInterrupt as exc:          # TrainingInterrupted, or the limit hit before training began
        episodes, stopped = getattr(exc, "episode", None) or 0, True
        best, best_episode = best_validation(out / "log.csv")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    seconds_used = time.perf_counter() - started
    rate = episodes / seconds_used if seconds_used > 0 else 0.0
    return {"config": cfg.name, "episodes_budget": cfg.episodes, "episodes_done": episodes,
            "stopped_by_time_limit": stopped, "seconds": round(seconds_used, 1),
            "episodes_per_second": round(rate, 3),
            "hours_for_the_budget": round(cfg.episodes / rate / 3600, 2) if rate else None,
            "val_every": cfg.val_every, "val_episodes": cfg.val_episodes,
            "best_val_acc": best, "best_episode": best_episode}


def best_validation(log: Path) -> tuple[float | None, int | None]:
    """(best meta-validation accuracy, its episode) from a run's log.csv."""
    import csv
    if not log.exists():
        return None, None
    rows = [r for r in csv.DictReader(log.open()) if r.get("val_acc") not in (None, "")]
    if not rows:
        return None, None
    best = max(rows, key=lambda r: float(r["val_acc"]))
    return float(best["val_acc"]), int(best["episode"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalstm.tools.gpu_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    parser.add_argument("--minutes", type=positive_float, default=6.0,
                        help="wall-clock budget of the training (default 6)")
    parser.add_argument("--config", default="glyphs-5shot", help="the configuration to train (default glyphs-5shot)")
    parser.add_argument("--episodes", type=positive_int, default=PAPER_5SHOT_EPISODES,
                        help="the episode budget (default 50,000: the paper's 5-shot budget)")
    parser.add_argument("--val-every", type=positive_int, help="override: validate every this many episodes")
    parser.add_argument("--val-episodes", type=positive_int, help="override: meta-validation episodes")
    parser.add_argument("--eval-episodes", type=non_negative_int, default=0,
                        help="meta-test the run's best.pt on this many episodes afterwards (default 0: no)")
    parser.add_argument("--bench-repeats", type=positive_int, default=5)
    parser.add_argument("--bench-warmup", type=non_negative_int, default=2)
    parser.add_argument("--bench-shapes", type=int, nargs="+", default=[28, 84], choices=[28, 84])
    parser.add_argument("--bench-shots", type=int, nargs="+", default=[5, 1], choices=[5, 1])
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    parser.add_argument("--threads", type=positive_int, help="torch.set_num_threads")
    parser.add_argument("--out", default="runs/gpu-check", help="where the outputs go (default runs/gpu-check)")
    args = parser.parse_args(argv)
    try:
        check_device(args.device)
        overrides = {k: v for k, v in (("episodes", args.episodes), ("val_every", args.val_every),
                                       ("val_episodes", args.val_episodes)) if v is not None}
        cfg = get_config(args.config, **overrides)
        check_folder(args.out, "--out", writable=True)       # before the work, not after it
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    out = Path(args.out)
    if (out / "train" / "last.pt").exists():
        print(f"error: {out / 'train'} already holds a run; choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    summary = {"device": args.device, "device_name": device_name(args.device), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
               "command": "python -m metalstm.tools.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"{summary['device_name']}, torch {summary['torch']}")
    if not args.no_bench:
        started = time.perf_counter()
        run_bench(args, out / "bench.txt")
        summary["bench_seconds"] = round(time.perf_counter() - started, 1)
    summary["training"] = timed_training(cfg, out / "train", args.device, 60 * args.minutes)
    t = summary["training"]
    print(f"\n{cfg.name}: {t['episodes_done']:,} of {t['episodes_budget']:,} episodes in {t['seconds']:.0f} s "
          f"({t['episodes_per_second']:.2f} episodes/s with meta-validation every {t['val_every']} episodes "
          f"on {t['val_episodes']}; the whole budget: {t['hours_for_the_budget']} h); best meta-validation "
          f"accuracy {t['best_val_acc']} at episode {t['best_episode']}")
    if args.eval_episodes and (out / "train" / "best.pt").exists():
        from metalstm import evaluate
        json_path = out / "eval.json"
        code = evaluate.main(["--checkpoint", str(out / "train" / "best.pt"), "--episodes", str(args.eval_episodes),
                              "--device", args.device, "--json", str(json_path)])
        summary["evaluation"] = str(json_path) if code == 0 else f"evaluate stopped with exit code {code}"
    atomic_write(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
