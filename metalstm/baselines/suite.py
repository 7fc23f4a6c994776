"""Every baseline, built and tuned the same way, measured on the same meta-test episodes.

    python -m metalstm.baselines --shot 5 --episodes 600
    python -m metalstm.baselines --shot 1 --episodes 600 --checkpoint runs/glyphs-1shot/best.pt
    python -m metalstm.baselines --config smoke --episodes 20 --methods nearest finetune

`build_baselines(cfg, ...)` returns {name: method} (each with predict(episode));
hyper-parameters are chosen on meta-VALIDATION episodes only, and the test
episodes are `metalstm.episodes.sampler_for(cfg, "test")`: the very episodes
`python -m metalstm.evaluate` gives the meta-learner.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from metalstm.baselines.common import cache_target, evaluate, find_cached, report
from metalstm.baselines.finetune import finetune, tune_finetune
from metalstm.baselines.matching import load_matching, save_matching, train_matching
from metalstm.baselines.nearest import NearestNeighbour
from metalstm.baselines.pretrain import load_or_pretrain
from metalstm.baselines.sgd import learned_init, random_init, tune_lr
from metalstm.checkpoint import refuse_other_kinds
from metalstm.cli import (add_logging_options, add_run_options, check_folder, check_output_file, config_from_args,
                          default_cache, load_config, non_negative_int, parser as cli_parser, positive_float,
                          positive_int, set_threads, logging_to_stderr, shipped_cache)
from metalstm.config import Config, get_config
from metalstm.episodes import load_split, sampler_for
from metalstm.learner import Learner
from metalstm.model import load_trained

METHODS = ("finetune", "nearest", "matching", "sgd", "adam", "learned")
NAMES = {"finetune": "Fine-tune", "nearest": "Nearest neighbour", "matching": "Matching Networks",
         "sgd": "SGD from random init", "adam": "Adam from random init", "learned": "SGD from learned c_0"}
FINETUNE_STEPS = (5, 10, 20, 40)
FINETUNE_LRS = (1e-3, 1e-2, 1e-1)
ADAM_LRS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SGD_LRS = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def pretrained_for(cfg: Config, train_data, cache: str | Path | None = None, epochs: int = 10,
                   progress: bool = True, train: bool = True):
    """The classifier pre-trained on all meta-train classes (paper notes 9) for `cfg`, from
    cache/pretrained-DATASET-SIZE.pt (or its variant) when it holds one made with these
    settings from the same images (`pretrain_settings`)."""
    path = Path(cache) / f"pretrained-{cfg.dataset}-{cfg.image_size}.pt" if cache else None
    return load_or_pretrain(path, train_data, progress=progress, train=train, epochs=epochs,
                            seed=cfg.seed, bn_eps=cfg.bn_eps)


def matching_settings(cfg: Config, data: dict, matching_episodes: int = 4_000,
                      matching_seconds: float | None = None, val_episodes: int = 50) -> dict:
    """What a cached Matching Network must have been made with to stand in for a new one:
    the episodes it trained and was chosen on (their data's contents, shape and seed), the
    learner it embeds with, and its training budget."""
    return {"config": cfg.name, "max_episodes": matching_episodes, "max_seconds": matching_seconds,
            "train_sha256": data["train"].fingerprint(), "val_sha256": data["val"].fingerprint(),
            "val_episodes": val_episodes, "n_way": cfg.n_way, "k_shot": cfg.k_shot,
            "n_query": cfg.n_query, "seed": cfg.seed, "in_channels": cfg.in_channels,
            "image_size": cfg.image_size, "bn_eps": cfg.bn_eps, "bn_momentum": cfg.bn_momentum}


def find_matching(cache: Path | None, cfg: Config, wanted: dict, train: bool = True):
    """(net, meta) of the cached Matching Network made with every one of `wanted`, or None.
    train=False (only reading a cache, as the notebooks do with val_episodes=1) does not ask
    for the count of meta-val episodes, which chose the kept network while it trained."""
    path = cache / f"matching-{cfg.name}.pt" if cache else None
    asked = {k: v for k, v in wanted.items() if train or k != "val_episodes"}
    return find_cached(path, wanted, load_matching,     # every wanted setting, recorded and equal
                       lambda found: all(k in found[1] and found[1][k] == v for k, v in asked.items()))


def baseline_keys(cfg: Config, methods, data: dict, c0: torch.Tensor | None = None, val_episodes: int = 50,
                  pretrain_epochs: int = 10, matching_episodes: int = 4_000,
                  matching_seconds: float | None = None, finetune_steps=FINETUNE_STEPS,
                  finetune_lrs=FINETUNE_LRS, sgd_lrs=SGD_LRS, adam_lrs=ADAM_LRS) -> dict[str, str]:
    """{method name: SHA-256 of everything its predictions depend on}: the settings of
    `build_baselines` that it uses and the contents of the data it learns and is tuned on (and
    c_0 for 'learned'). Two runs with one key make the same method (every baseline is
    deterministic), so `evaluate --reuse` takes a saved row only under the same key."""
    common = {"n_way": cfg.n_way, "k_shot": cfg.k_shot, "n_query": cfg.n_query, "seed": cfg.seed,
              "steps": cfg.steps, "batch_size": cfg.batch_size, "in_channels": cfg.in_channels,
              "image_size": cfg.image_size, "bn_eps": cfg.bn_eps, "bn_momentum": cfg.bn_momentum,
              "val_sha256": data["val"].fingerprint(), "val_episodes": val_episodes}
    pre = {"train_sha256": data["train"].fingerprint(), "pretrain_epochs": pretrain_epochs}
    own = {"finetune": {**pre, "steps": list(finetune_steps), "lrs": list(finetune_lrs)},
           "nearest": pre,
           "matching": matching_settings(cfg, data, matching_episodes, matching_seconds, val_episodes),
           "sgd": {"lrs": list(sgd_lrs)}, "adam": {"lrs": list(adam_lrs)},
           "learned": {"lrs": list(sgd_lrs), "c0_sha256": None if c0 is None else hashlib.sha256(
               c0.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()}}
    return {NAMES[m]: hashlib.sha256(json.dumps({"method": m, **common, **own[m]}, sort_keys=True,
                                                default=str).encode()).hexdigest()
            for m in methods}


def build_baselines(cfg: Config, methods=METHODS, c0: torch.Tensor | None = None, val_episodes: int = 50,
                    pretrain_epochs: int = 10, matching_episodes: int = 4_000,
                    matching_seconds: float | None = None, cache: str | Path | None = None,
                    data: dict | None = None, finetune_steps=FINETUNE_STEPS, finetune_lrs=FINETUNE_LRS,
                    sgd_lrs=SGD_LRS, adam_lrs=ADAM_LRS,
                    progress: bool = True, train: bool = True) -> tuple[dict, dict[str, str]]:
    """({name: method}, {name: how it was chosen}) for the configuration's N-way K-shot task.

    finetune  pre-train on all meta-train classes (cached under `cache`), then
              (steps, lr) by grid search on `val_episodes` meta-val episodes
    nearest   the same pre-trained network, cosine 1-NN
    matching  Matching Networks trained on meta-train episodes for
              matching_episodes (or what fits in matching_seconds, if given: not
              reproducible, the count then depends on the machine), best on meta-val kept
    sgd/adam  T = cfg.steps steps of batch cfg.batch_size from a random init, lr tuned
    learned   SGD from the meta-learner's c_0 (needs c0), lr tuned
    `data` may hold the already loaded {"train": ..., "val": ...} splits; the
    grids are (finetune_steps x finetune_lrs), sgd_lrs and adam_lrs.
    A cached baseline is used only when made with the same settings from the same images
    (`pretrain_settings`, `matching_settings`: the data's contents, not its name); a new one
    is cached beside it, never over it, and a cache folder it cannot be written to is refused
    before any training. train=False: a missing one is a FileNotFoundError
    (for notebooks, which should not start minutes of training unasked).
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(METHODS)}")
    if "learned" in methods and c0 is None:
        raise ValueError("the 'learned' baseline needs a trained meta-learner: pass --checkpoint")
    data = dict(data or {})
    for split in ("train", "val"):
        if split not in data:
            data[split] = load_split(cfg, split)
    val = sampler_for(cfg, "val", data["val"]).take(val_episodes)
    cache = Path(cache) if cache else None
    learner = Learner(cfg.n_way, cfg.in_channels, cfg.image_size, bn_eps=cfg.bn_eps,
                      bn_momentum=cfg.bn_momentum)
    wanted = matching_settings(cfg, data, matching_episodes, matching_seconds, val_episodes)
    pre, cached_net = _cached(cfg, methods, data, cache, wanted, pretrain_epochs, progress, train)
    built, notes = {}, {}
    if "finetune" in methods or "nearest" in methods:
        pre = pre or pretrained_for(cfg, data["train"], cache, pretrain_epochs, progress, train)
        _add_pretrained(built, notes, cfg, methods, pre, val, finetune_steps, finetune_lrs, progress)
    if "matching" in methods:
        _add_matching(built, notes, cfg, cached_net, learner, data, val, cache, wanted, progress, train)
    _add_ablations(built, notes, cfg, methods, learner, val, c0, sgd_lrs, adam_lrs, progress)
    return built, notes


def _cached(cfg: Config, methods, data: dict, cache: Path | None, wanted: dict, pretrain_epochs: int,
            progress: bool, train: bool):
    """(the pre-trained network, the Matching Network (net, meta)) that the cache holds for
    `methods`, None where it holds none; a cache folder that cannot take what must be made is
    refused here, before minutes of training, not after them."""
    pre = cached_net = None
    if "finetune" in methods or "nearest" in methods:
        try:
            pre = pretrained_for(cfg, data["train"], cache, pretrain_epochs, progress, train=False)
        except FileNotFoundError:
            if not train:
                raise
    if "matching" in methods:
        cached_net = find_matching(cache, cfg, wanted, train)
    missing = (pre is None and ("finetune" in methods or "nearest" in methods)) or \
              (cached_net is None and "matching" in methods)
    if missing and train and cache is not None:
        check_folder(cache, "--cache", writable=True)
    return pre, cached_net


def _add_pretrained(built: dict, notes: dict, cfg: Config, methods, pre, val, finetune_steps, finetune_lrs,
                    progress: bool) -> None:
    """Fine-tune ((steps, lr) by grid search on the meta-val episodes `val`) and nearest
    neighbour, both on the pre-trained network `pre`."""
    last = pre.meta["history"][-1] if pre.meta["history"] else {"loss": float("nan"), "acc": 0.0}
    pre_note = (f"pre-trained {pre.meta['epochs']} epochs on {pre.meta['num_classes']} classes "
                f"(train loss {last['loss']:.2f}, acc {100 * last['acc']:.0f}%, "
                f"{pre.meta['seconds']:.0f} s)")
    if "finetune" in methods:
        start = time.perf_counter()
        (steps, lr), table = tune_finetune(pre, val, finetune_steps, finetune_lrs, progress=progress,
                                           bn_momentum=cfg.bn_momentum)
        built["Fine-tune"] = finetune(pre, cfg.n_way, steps, lr, bn_momentum=cfg.bn_momentum)
        built["Fine-tune"].name = "Fine-tune"
        notes["Fine-tune"] = (f"SGD {steps} steps, lr {lr:g} (meta-val {100 * table[(steps, lr)]:.1f}%, "
                              f"grid {len(table)} points, {time.perf_counter() - start:.0f} s); {pre_note}")
    if "nearest" in methods:
        built["Nearest neighbour"] = NearestNeighbour(pre.learner, pre.theta)
        notes["Nearest neighbour"] = f"cosine on pre-trained features; {pre_note}"


def _add_matching(built: dict, notes: dict, cfg: Config, cached_net, learner: Learner, data: dict, val,
                  cache: Path | None, wanted: dict, progress: bool, train: bool) -> None:
    """Matching Networks: the cached one (net, meta) if any, else trained on meta-train episodes
    for wanted["max_episodes"] (or wanted["max_seconds"]), the best on `val` kept and cached."""
    path = cache / f"matching-{cfg.name}.pt" if cache else None
    net, meta = cached_net or (None, None)
    if net is None:
        if not train:
            raise FileNotFoundError(f"no Matching Network for {cfg.name} with {wanted['max_episodes']} "
                                    f"training episodes in {cache}; make it with `python -m "
                                    f"metalstm.evaluate ... --baselines all --cache {cache}`")
        train_sampler = sampler_for(cfg, "train", data["train"])
        out = train_matching(train_sampler, learner, wanted["max_episodes"], seed=cfg.seed,
                             max_seconds=wanted["max_seconds"], val_episodes=val, val_every=250,
                             progress=progress)
        net = out.method
        meta = {**wanted, "episodes": out.episodes, "seconds": out.seconds, "best_val": out.best_val}
        if path is not None:
            save_matching(cache_target(path, wanted), net, meta)
    net.name = "Matching Networks"
    built[net.name] = net
    notes[net.name] = (f"no FCE; {meta['episodes']} training episodes ({meta['seconds']:.0f} s), "
                       f"scale {torch.tensor(net.log_scale).exp().item():.1f}, "
                       f"meta-val {100 * (meta['best_val'] or 0):.1f}%")


def _add_ablations(built: dict, notes: dict, cfg: Config, methods, learner: Learner, val, c0,
                   sgd_lrs, adam_lrs, progress: bool) -> None:
    """SGD and Adam from a random init, SGD from the learned c_0: cfg.steps steps of batch
    cfg.batch_size, the learning rate tuned on `val`."""
    ablations = [("sgd", "SGD from random init", "sgd", sgd_lrs, None),
                 ("adam", "Adam from random init", "adam", adam_lrs, None),
                 ("learned", "SGD from learned c_0", "sgd", sgd_lrs, c0)]
    for key, name, opt, lrs, theta0 in ablations:
        if key not in methods:
            continue
        start = time.perf_counter()

        def make(lr, opt=opt, theta0=theta0):
            if theta0 is None:
                return random_init(learner, cfg.steps, lr, opt, seed=cfg.seed, batch_size=cfg.batch_size)
            return learned_init(learner, theta0, cfg.steps, lr, opt, batch_size=cfg.batch_size)

        lr, table = tune_lr(make, lrs, val, progress=progress)
        built[name] = make(lr)
        built[name].name = name
        notes[name] = (f"{cfg.steps} steps of batch {cfg.batch_size}, lr {lr:g} "
                       f"(meta-val {100 * table[lr]:.1f}%, {time.perf_counter() - start:.0f} s)")


def measure_baselines(cfg: Config, methods, n: int, c0: torch.Tensor | None = None, **settings):
    """Build `methods` (`build_baselines(cfg, methods, c0, **settings)`) and measure each on the
    first n meta-test episodes: (their `Evaluation`s, how each was chosen, the seconds building
    took, the meta-test sampler)."""
    start = time.perf_counter()
    built, notes = build_baselines(cfg, methods, c0=c0, **settings)
    setup = time.perf_counter() - start
    sampler = sampler_for(cfg, "test")
    episodes = sampler.take(n)
    return [evaluate(m, episodes) for m in built.values()], notes, setup, sampler


def cached_in(cache: Path, cfg: Config, wanted: list[str], data: dict) -> bool:
    """True when `cache` holds every baseline of `wanted` that is trained once and kept (the
    pre-trained network, the Matching Network), made for `cfg` from the same images with the
    settings evaluate asks for (`build_baselines`' defaults)."""
    if {"finetune", "nearest"} & set(wanted):
        try:
            pretrained_for(cfg, data["train"], cache, progress=False, train=False)
        except FileNotFoundError:
            return False
    if "matching" in wanted and find_matching(cache, cfg, matching_settings(cfg, data)) is None:
        return False
    return True


def pick_cache(args: argparse.Namespace, cfg: Config, wanted: list[str], c0, data: dict) -> Path:
    """--cache, or by default the shipped baselines (data/checkpoints/baselines) when they hold
    every wanted one made for this configuration, else the user's cache folder (`default_cache`)."""
    if args.cache is not None:
        return Path(args.cache)
    shipped = shipped_cache()
    if shipped is not None and shipped.is_dir() and cached_in(shipped, cfg, wanted, data):
        return shipped
    return default_cache()


def parser() -> argparse.ArgumentParser:
    """The flags of `python -m metalstm.baselines`."""
    ap = cli_parser("python -m metalstm.baselines",
                    "Measure the baselines (paper notes 9) on meta-test episodes of a configuration "
                    "(built-in, a .toml / .json file, or changed by the run options below).")
    ap.add_argument("--shot", type=int, choices=(1, 5), default=None,
                    help="picks glyphs-1shot / glyphs-5shot (default 5; with --config, it must agree)")
    ap.add_argument("--episodes", type=positive_int, help="meta-test episodes (default: the configuration's "
                    "test_episodes, 600)")
    ap.add_argument("--val-episodes", dest="tune_episodes", type=positive_int, default=50,
                    help="meta-val episodes for tuning")
    ap.add_argument("--methods", nargs="*", default=None, choices=METHODS,
                    help=f"the baselines to measure (default: all of {', '.join(METHODS)}; learned "
                         f"with --checkpoint)")
    ap.add_argument("--pretrain-epochs", type=non_negative_int, default=10,
                    help="epochs of pre-training on all meta-train classes")
    ap.add_argument("--matching-episodes", type=non_negative_int, default=4_000,
                    help="training episodes of Matching Networks")
    ap.add_argument("--matching-minutes", type=positive_float, default=None,
                    help="optional wall-time budget of Matching Networks (makes the result machine-dependent; "
                         "default: none)")
    ap.add_argument("--checkpoint", help="a trained meta-learner (a best.pt, or a shipped run's name): adds "
                    "'SGD from learned c_0' (default: none)")
    ap.add_argument("--cache", help="folder for the pre-trained / trained baselines (default: the shipped "
                    "data/checkpoints/baselines when it holds them for this configuration, else the user cache)")
    ap.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results as JSON here (default: none)")
    add_run_options(ap, training=False, config_help="a built-in configuration or a .toml / .json file of "
                    "Config fields (docs/command-line.md) (default: glyphs-5shot, or glyphs-1shot with --shot 1)")
    add_logging_options(ap, every=False)
    return ap


def requested(args: argparse.Namespace) -> tuple[Config, list[str], torch.Tensor | None]:
    """(configuration, methods, c_0 of --checkpoint or None) that the flags ask for; one
    ValueError for flags that disagree."""
    base = load_config(args.config) if args.config else get_config(f"glyphs-{args.shot or 5}shot")
    cfg = config_from_args(argparse.Namespace(**{**vars(args), "config": None}), base=base)
    if args.shot is not None and cfg.k_shot != args.shot:
        raise ValueError(f"--shot {args.shot} but --config {cfg.name} is {cfg.k_shot}-shot; pass "
                         f"--config alone, or a {args.shot}-shot configuration")
    methods = args.methods or [m for m in METHODS if m != "learned" or args.checkpoint]
    c0 = None
    if args.checkpoint:
        c0 = load_trained(args.checkpoint, expect=cfg)[1].c0.detach()
        if "learned" not in methods:
            methods.append("learned")
    return cfg, methods, c0


def main(argv: list[str] | None = None) -> int:
    """`python -m metalstm.baselines`: build the baselines (`build_baselines`), measure them on
    the first --episodes meta-test episodes, print the table (and write --json); 0, or 2 with
    one line of error."""
    args = parser().parse_args(argv)
    with logging_to_stderr(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """main's work once the flags are parsed (the `metalstm` logger sends its lines to stderr)."""
    set_threads(args.threads)
    try:
        check_output_file(args.json, "--json")             # before the work, not after it
        check_folder(args.cache, "--cache")
        if args.checkpoint:
            from metalstm.paths import checkpoint_path
            args.checkpoint = checkpoint_path(args.checkpoint)
            refuse_other_kinds(args.checkpoint, "a trained meta-learner (a best.pt or data/checkpoints/*.pt)")
        cfg, methods, c0 = requested(args)
        n = args.episodes or cfg.test_episodes
        cache = args.cache
        if cache is None:                                # the shipped baselines where they fit, else the user's
            shipped_settings = (args.tune_episodes, args.pretrain_epochs, args.matching_episodes,
                                args.matching_minutes) == (50, 10, 4_000, None)
            cache = (pick_cache(args, cfg, methods, None, {s: load_split(cfg, s) for s in ("train", "val")})
                     if shipped_settings else default_cache())
        results, notes, setup, sampler = measure_baselines(
            cfg, methods, n, c0=c0, val_episodes=args.tune_episodes, pretrain_epochs=args.pretrain_epochs,
            matching_episodes=args.matching_episodes,
            matching_seconds=args.matching_minutes and 60 * args.matching_minutes, cache=cache,
            progress=not args.quiet)
    except (ValueError, OSError) as exc:                  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    title = (f"{cfg.name}: {cfg.n_way}-way {cfg.k_shot}-shot, {n} meta-test episodes of {cfg.dataset} "
             f"(seed {sampler.seed}); training and tuning took {setup:.0f} s")
    extra = dict(config=cfg.to_dict(), episodes=n, setup_seconds=setup)
    print(report(title, results, notes, None, **extra), flush=True)     # the results first, then the file
    if args.json:
        try:
            report(title, results, notes, args.json, **extra)
        except OSError as exc:
            print(f"error: could not write --json {args.json} ({exc.strerror or exc}); "
                  f"the table above is complete", file=sys.stderr)
            return 2
    return 0
