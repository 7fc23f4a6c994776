"""Is a change to metalstm/fast/native.c faster? Times copies of it side by side.

    python -m metalstm.tools.native_ab metalstm/fast/native.c /tmp/variant.c --rounds 25 --threads 1

Each C file is compiled as native.c is (metalstm.fast.native.load_copy: the same compiler
and flags) and, in interleaved rounds, runs in place of native.c's library
(metalstm.fast.native.use) for one meta-test step and one meta-training step (forward and
backward) of `bench --steps`: n = 28,485 coordinates (the 28x28 learner) unless --n
says otherwise, hidden 20, random inputs from a non-zero state. A copy must keep
native.c's functions and their signatures; what it computes is not checked (a copy
that drops work, to see what that work costs, is one use).

Printed per file: the median CPU time of each step, and the median of the per-round
ratios first file / this file (> 1: this file is faster) with their range over the
middle 80% of the rounds. The rounds are seconds apart and take turns, so on a
machine whose speed drifts these paired ratios are the figures to read.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from metalstm.fast import native
from metalstm.cli import positive_int, set_threads
from metalstm.tools.bench import step_fns

KINDS = {"test": "meta-test step", "train": "meta-training step (fwd + bwd)"}


def time_copies(libs: dict, n: int, rounds: int, progress: bool = True) -> dict:
    """(name, kind) -> CPU seconds of each round, for each library of `libs` (name -> CDLL) and
    each kind of step (KINDS), in interleaved rounds; each timing follows one untimed call."""
    fns = step_fns(n, 20, torch.device("cpu"))
    times = {(name, kind): [] for name in libs for kind in KINDS}
    for _ in tqdm(range(rounds), desc="rounds", leave=False, disable=not progress or None):
        for name, lib in libs.items():
            with native.use(lib):
                for kind in KINDS:
                    fns[kind + "_C"]()
                    start = time.process_time()
                    fns[kind + "_C"]()
                    times[(name, kind)].append(time.process_time() - start)
    return times


def report(times: dict, names: list[str]) -> None:
    base = names[0]
    for kind, title in KINDS.items():
        print(f"\n{title}   (CPU ms; ratio = {base} / this file, per round: median [10%-90%])")
        for name in names:
            ts = times[(name, kind)]
            ratios = sorted(b / t for b, t in zip(times[(base, kind)], ts))
            lo, hi = ratios[len(ratios) // 10], ratios[-1 - len(ratios) // 10]
            print(f"  {name:<40} median {1e3 * statistics.median(ts):7.2f}   "
                  f"ratio {statistics.median(ratios):.3f} [{lo:.2f}-{hi:.2f}]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metalstm.tools.native_ab", description=__doc__.split("\n")[0])
    ap.add_argument("sources", nargs="+", type=Path, help="C files: native.c and changed copies of it")
    ap.add_argument("--rounds", type=positive_int, default=25, help="interleaved rounds (default 25)")
    ap.add_argument("--n", type=positive_int, default=28485, help="coordinates (default 28485: the 28x28 learner)")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1, as the C loops)")
    args = ap.parse_args(argv)
    for source in args.sources:
        if not source.is_file():
            ap.error(f"{source}: no such file")
    set_threads(args.threads)
    names = [f"{i}: {source}" for i, source in enumerate(args.sources)]
    with tempfile.TemporaryDirectory(prefix="native_ab-") as tmp:
        try:
            native.library()
            libs = {name: native.load_copy(source, Path(tmp) / f"copy{i}.so")
                    for i, (name, source) in enumerate(zip(names, args.sources))}
        except (native.NativeUnavailable, AttributeError) as exc:   # AttributeError: a function missing
            print(f"native_ab: {exc}", file=sys.stderr)
            return 2
        print(f"torch {torch.__version__}, {args.threads} threads, n = {args.n}, {args.rounds} rounds; "
              f"compiled as `{native.describe()}`")
        report(time_copies(libs, args.n, args.rounds), names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
