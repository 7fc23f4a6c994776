"""How many episodes per second the sampler draws (`metalstm.episodes.EpisodeSampler`).

    python -m metalstm.tools.episode_rate --n-way 5 --k-shot 5 --n-query 15 --episodes 2000 --threads 1

Draws episodes 0 .. --episodes - 1 of one meta-split and prints the rate; a request the data set
cannot serve (too many ways, too few images per class) is one line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm.auto import tqdm

from metalstm.cli import positive_int, seed_int
from metalstm.data import load_dataset
from metalstm.episodes import EpisodeSampler


def main(argv: list[str] | None = None) -> float:
    """`python -m metalstm.tools.episode_rate`: how many episodes per second the sampler draws."""
    p = argparse.ArgumentParser(prog="python -m metalstm.tools.episode_rate", description=main.__doc__)
    p.add_argument("--dataset", default="glyphs")
    p.add_argument("--root", default=None, help="folder of a real data set (not for glyphs)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--n-way", type=positive_int, default=5)
    p.add_argument("--k-shot", type=positive_int, default=5)
    p.add_argument("--n-query", type=positive_int, default=15)
    p.add_argument("--episodes", type=positive_int, default=2000)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        data = load_dataset(args.dataset, args.split, root=args.root)
        sampler = EpisodeSampler(data, args.n_way, args.k_shot, args.n_query, seed=args.seed)
    except (ValueError, OSError) as exc:         # a request the data set cannot serve: one line
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    start = time.perf_counter()
    for i in tqdm(range(args.episodes), desc="episodes"):
        sampler[i]
    rate = args.episodes / (time.perf_counter() - start)
    print(f"{sampler}: {rate:,.0f} episodes/s ({args.episodes} episodes, {torch.get_num_threads()} threads)")
    return rate


if __name__ == "__main__":
    main()
