"""What the nn.Module wrapper costs: one meta-training episode with the built-in `Learner` against
the same architecture as layers through `ModuleLearner` (Config.learner="metalstm.networks:conv4").

    python -m metalstm.tools.learner_ab --config glyphs-1shot --episodes 20 --threads 1

Each episode is the meta-training step's work: T inner steps, the query pass and the backward
pass of the query loss (`run_episode(mode="train")` + backward). The two learners run the same
episodes in turns (A, B, A, B, ...), so that a machine busy with other work slows both alike;
the median CPU time per episode of each and their ratio are printed, with the CPU's name.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from metalstm.config import get_config
from metalstm.episodes import episode_generator, sampler_for
from metalstm.metalearner import run_episode
from metalstm.model import build_model


def episode_seconds(learner, rule, episode, cfg, generator) -> float:
    """CPU seconds of this thread for one meta-training episode: inner loop, query pass, backward of
    the query loss (CPU time, not wall clock: with one torch thread all the work is this thread's,
    and time spent waiting for a busy machine's cores is not counted)."""
    rule.zero_grad(set_to_none=True)
    start = time.thread_time()
    res = run_episode(learner, rule, episode, cfg.steps, cfg.batch_size, mode="train", generator=generator)
    res.query_loss.backward()
    return time.thread_time() - start


def cpu_name() -> str:
    """The CPU's model name as Linux reports it (lscpu's "Model name"), or platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metalstm.tools.learner_ab", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="glyphs-1shot", help="a built-in configuration (default: %(default)s)")
    ap.add_argument("--episodes", type=int, default=20, help="timed episodes per learner (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_config(args.config)
    models = {"Learner": build_model(cfg), "ModuleLearner": build_model(cfg.replace(learner="metalstm.networks:conv4"))}
    sampler = sampler_for(cfg, "train")
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.episodes + 2):               # the first two episodes warm up, untimed
        episode = sampler[i]
        for name, (learner, rule) in models.items():
            seconds = episode_seconds(learner, rule, episode, cfg, episode_generator(sampler.seed, i))
            if i >= 2:
                times[name].append(seconds)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), {args.config}, "
          f"median of {args.episodes} episodes, CPU time")
    for name, m in med.items():
        print(f"{name:14s} {1000 * m:7.1f} ms per meta-training episode")
    ratios = sorted(b / a for a, b in zip(times["Learner"], times["ModuleLearner"]))
    print(f"ratio ModuleLearner / Learner: {med['ModuleLearner'] / med['Learner']:.3f} (per episode: "
          f"{ratios[0]:.3f} to {ratios[-1]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
