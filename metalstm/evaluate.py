"""Meta-test evaluation (SPEC 5, 7, 8): every method on the same episodes.

    python -m metalstm.evaluate --checkpoint data/checkpoints/glyphs-5shot.pt
    python -m metalstm.evaluate --checkpoint P --episodes 600 --baselines all

Accuracy is the mean over `episodes` meta-test episodes (600 in the paper) with
a 95% interval of 1.96 * std / sqrt(n). Episode i is a function of the
configuration's seed and i alone, so every method sees exactly the same
support and query images, and the same command gives the same table.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from metalstm.baselines.common import Evaluation, report
from metalstm.baselines.suite import METHODS, build_baselines
from metalstm.checkpoint import CheckpointError
from metalstm.config import Config, get_config
from metalstm.episodes import Episode, EpisodeSampler
from metalstm.metalearner import run_episode
from metalstm.train import episode_generator, load_trained, sampler_for


# A method maps (episode, index) to the query accuracy in [0, 1].
EpisodeAccuracy = Callable[[Episode, int], float]


def rule_accuracy(learner, rule, cfg: Config, seed: int, device="cpu") -> EpisodeAccuracy:
    """An update rule (meta-learner or SGD cell) run with the meta-test protocol (SPEC 7)."""
    def acc(episode: Episode, i: int) -> float:
        res = run_episode(learner, rule, episode.to(device), cfg.steps, cfg.batch_size,
                          mode="test", generator=episode_generator(seed, i))
        return float(res.query_acc)
    return acc


def logits_accuracy(predict: Callable[[Episode], torch.Tensor]) -> EpisodeAccuracy:
    """A method that returns query scores [N*Q, N]: accuracy of their argmax."""
    def acc(episode: Episode, i: int) -> float:
        scores = predict(episode)
        return (scores.argmax(dim=1).cpu() == episode.query_y).float().mean().item()
    return acc


def evaluate_methods(methods: dict[str, EpisodeAccuracy], sampler: EpisodeSampler, n_episodes: int,
                     progress: bool = True) -> list[Evaluation]:
    """Every method on episodes 0..n_episodes-1 of `sampler` (the same episodes for all)."""
    results = []
    for name, acc in methods.items():
        start, accs = time.perf_counter(), []
        with torch.random.fork_rng():  # no method can change the episodes another one sees
            torch.manual_seed(0)
            for i in tqdm(range(n_episodes), desc=name, leave=False, disable=not progress or None):
                accs.append(acc(sampler[i], i))
        results.append(Evaluation(name, accs, time.perf_counter() - start))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Evaluate a trained meta-learner and the baselines on the "
                                             "same meta-test episodes.")
    ap.add_argument("--checkpoint", required=True, help="a best.pt or a shipped data/checkpoints/*.pt")
    ap.add_argument("--config", help="refuse the checkpoint unless it fits this configuration")
    ap.add_argument("--episodes", type=int, help="meta-test episodes (default: the config's, 600)")
    ap.add_argument("--baselines", nargs="*", default=[], metavar="NAME",
                    help=f"baselines to add: {' '.join(METHODS)} (or 'all')")
    ap.add_argument("--cache", default="runs/baselines",
                    help="where pre-trained / trained baselines are kept and reused")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--reference", action="store_true", help="the readable path: reference_step and "
                    "plain pooling instead of the fused step (the same numbers to rounding, slower)")
    args = ap.parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        expect = get_config(args.config) if args.config else None
        learner, meta, cfg, _ = load_trained(args.checkpoint, args.device, expect=expect)
        if args.reference:                 # Config.fast=False, as build_model would have made it
            cfg, learner.fast, meta.fused = cfg.replace(fast=False), False, False
        n = args.episodes or cfg.test_episodes
        sampler = sampler_for(cfg, "test")
        methods = {"Meta-Learner LSTM": rule_accuracy(learner, meta.eval(), cfg, sampler.seed, args.device)}
        notes = {"Meta-Learner LSTM": f"{args.checkpoint}"}
        wanted = list(METHODS) if args.baselines == ["all"] else args.baselines
        if wanted:
            built, more = build_baselines(cfg, wanted, c0=meta.c0.detach().cpu(), cache=args.cache)
            methods.update({m.name: logits_accuracy(m.predict) for m in built.values()})
            notes.update(more)
        results = evaluate_methods(methods, sampler, n)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    title = (f"{cfg.name}: {cfg.n_way}-way {cfg.k_shot}-shot, {n} meta-test episodes "
             f"of {cfg.dataset} (seed {sampler.seed})")
    print(report(title, results, notes, args.json, config=cfg.to_dict(), episodes=n,
                 checkpoint=str(args.checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
