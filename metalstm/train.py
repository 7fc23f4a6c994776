"""Meta-training of the Meta-Learner LSTM (SPEC 5).

    for each meta-train episode i:
        theta_0 = c_0 (fresh batch-norm statistics)
        T steps:  L_t, grad_t on a support batch (detached);  theta_t = metalearner(...)
        L_test = loss of f(.; theta_T) on the query set
        backpropagate L_test into c_0 and the LSTM; clip the norm to 0.25; Adam 1e-3
    every `val_every` episodes: mean accuracy on the same `val_episodes`
    meta-validation episodes (meta-test batch-norm protocol); keep the best.

    python -m metalstm.train --config glyphs-5shot --out runs/glyphs-5shot
    python -m metalstm.train --config glyphs-5shot --out runs/glyphs-5shot --resume

A run folder holds last.pt (everything needed to resume), best.pt (the best
meta-learner so far) and log.csv (the learning curves). Episode i and its
mini-batch order depend only on (seed, i), so a resumed run sees exactly what
an uninterrupted one would have and ends with the same numbers.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from metalstm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalstm.config import CONFIGS, Config, get_config
from metalstm.data import load_dataset
from metalstm.distributed import World, all_reduce_grads_, init_from_env, shutdown
from metalstm.episodes import EpisodeSampler, check_request
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner, run_episode
from metalstm.rules import RUNGS, make_rule

LOG_FIELDS = ["episode", "train_loss", "train_acc", "val_acc", "val_ci95", "seconds"]


class NonFiniteError(RuntimeError):
    """The meta-loss or meta-gradient stopped being a finite number."""


def episode_generator(seed: int, i: int, stream: int = 0) -> torch.Generator:
    """The generator of episode i's own random choices (mini-batch order), from (seed, i, stream) alone."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + i * 7_919 + stream * 104_729 + 12_345) % (2**63 - 1))
    return g


def build_model(cfg: Config, device: str | torch.device = "cpu") -> tuple[Learner, MetaLearner]:
    """The learner f(x; theta) and the update rule cfg.rule (paper notes 11), c_0 = a seeded
    initial theta: the same c_0 for every rung of the ladder."""
    learner = Learner(n_way=cfg.n_way, in_channels=cfg.in_channels, image_size=cfg.image_size,
                      bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum, fast=cfg.fast)
    g = torch.Generator().manual_seed(cfg.seed)
    theta0 = learner.init_params(generator=g)
    if cfg.rule != "lstm":
        return learner, make_rule(cfg.rule, learner, theta0, cfg.rule_lr, cfg.steps).to(device)
    meta = MetaLearner(learner.n_params, hidden=cfg.hidden, p=cfg.p, forget_bias=cfg.forget_bias,
                       input_bias=cfg.input_bias, theta0=theta0, generator=g, fused=cfg.fast)
    return learner, meta.to(device)


def load_split(cfg: Config, split: str):
    """One meta-split of the configuration's data set, checked against its episode shape."""
    data = load_dataset(cfg.dataset, split, root=cfg.data_root, image_size=cfg.image_size)
    if data.image_shape != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise ValueError(f"{cfg.name}: expects {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} "
                         f"images but {data.name} has {'x'.join(map(str, data.image_shape))}")
    check_request(data, cfg.n_way, cfg.k_shot, cfg.n_query)
    return data


def sampler_for(cfg: Config, split: str, data=None) -> EpisodeSampler:
    """The fixed episode stream of a split: seeds differ per split so val/test never reuse train's."""
    offset = {"train": 0, "val": 1, "test": 2}[split]
    data = data if data is not None else load_split(cfg, split)
    return EpisodeSampler(data, cfg.n_way, cfg.k_shot, cfg.n_query, seed=cfg.seed * 10 + offset)


@torch.no_grad()
def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width 1.96 * std / sqrt(n) of a 95% interval (SPEC 5); nan for one value."""
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError("no values to average")
    half = 1.96 * t.std().item() / math.sqrt(t.numel()) if t.numel() > 1 else float("nan")
    return t.mean().item(), half


def evaluate_rule(learner, rule, sampler: EpisodeSampler, episodes: int | range, cfg: Config,
                  device="cpu", desc: str | None = None, query_bn: str = "running") -> list[float]:
    """Query accuracy of each episode (the first n, or those in a range), meta-test protocol (SPEC 7).

    query_bn="batch" normalises the query pass with its own batch statistics instead
    (SPEC 7's meta-training protocol; for measuring what the protocol costs).
    """
    if query_bn not in ("running", "batch"):
        raise ValueError(f"query_bn must be 'running' or 'batch', got {query_bn!r}")
    accs = []
    indices = range(episodes) if isinstance(episodes, int) else episodes
    for i in tqdm(indices, desc=desc, leave=False, disable=True if desc is None else None):
        ep = sampler[i].to(device)
        with torch.no_grad():      # mode="train" would otherwise keep the meta-graph
            res = run_episode(learner, rule, ep, cfg.steps, cfg.batch_size,
                              mode="test" if query_bn == "running" else "train",
                              generator=episode_generator(sampler.seed, i))
        accs.append(float(res.query_acc))
    return accs


@dataclass
class TrainResult:
    out_dir: Path
    episodes_done: int
    best_val_acc: float
    best_episode: int
    history: list[dict]


def _state(meta, opt) -> dict:
    return {"metalearner": meta.state_dict(), "optimizer": opt.state_dict() if opt is not None else {}}


def _write_log(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)


def train(cfg: Config, out_dir: str | Path, device: str = "cpu", resume: bool = False,
          stop_after: int | None = None, progress: bool = True,
          world: World | None = None, init_state: dict | None = None) -> TrainResult:
    """Meta-train `cfg` into out_dir (SPEC 5); `stop_after` ends early as an interruption would.

    init_state: a meta-learner state_dict to start from instead of the seeded
    initialisation (a warm start, with a fresh Adam); ignored by `resume`, which
    continues from last.pt.

    A meta-update averages the meta-gradients of G = cfg.meta_batch * world.size
    episodes: update u uses episodes u*G .. u*G+G-1, and rank r runs its
    cfg.meta_batch of them. G = 1 is the paper's one episode per update.
    """
    out = Path(out_dir)
    world = world or World.single()
    torch.manual_seed(cfg.seed)
    learner, meta = build_model(cfg, device)
    if init_state is not None and not resume:
        meta.load_state_dict(init_state)
    trainable = [p for p in meta.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr) if trainable else None   # sgd: nothing to learn
    start, best_acc, best_ep, history = 0, -1.0, -1, []
    window_loss, window_acc = [], []  # training loss/accuracy since the last validation
    last = out / "last.pt"
    if resume:
        state, saved_cfg, metrics = load_checkpoint(last)
        if Config.from_dict(saved_cfg).replace(episodes=cfg.episodes) != cfg:
            raise CheckpointError(f"{last} was trained with configuration {saved_cfg['name']!r} "
                                  f"and other settings; resume it with that configuration")
        meta.load_state_dict(state["metalearner"])
        if opt is not None:
            opt.load_state_dict(state["optimizer"])
        start, best_acc, best_ep = metrics["episode"], metrics["best_val_acc"], metrics["best_episode"]
        history = metrics["history"]
        window_loss, window_acc = metrics["window_loss"], metrics["window_acc"]
    elif last.exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, "
                              f"or choose another --out")

    train_s = sampler_for(cfg, "train")
    val_s = sampler_for(cfg, "val")
    end = cfg.episodes if stop_after is None else min(cfg.episodes, stop_after)
    if opt is None:
        end = 0                                   # a rule without parameters is its own best
    group = cfg.meta_batch * world.size           # episodes per meta-update, all ranks together
    params = trainable
    t0 = time.perf_counter()

    def save_last(done: int) -> None:
        if world.is_main:
            save_checkpoint(last, _state(meta, opt), cfg.to_dict(),
                            {"episode": done, "best_val_acc": best_acc, "best_episode": best_ep,
                             "history": history, "window_loss": window_loss,
                             "window_acc": window_acc})

    def validate(done: int) -> None:
        """Meta-validation after `done` episodes (0: the untrained rule); keeps the best."""
        nonlocal best_acc, best_ep, window_loss, window_acc
        mine_val = range(world.rank, cfg.val_episodes, world.size)
        accs = world.all_gather(evaluate_rule(learner, meta, val_s, mine_val, cfg, device))
        val_acc, val_ci = mean_ci95(accs)
        mean = (lambda xs: sum(xs) / len(xs) if xs else None)
        history.append({"episode": done, "train_loss": mean(window_loss), "train_acc": mean(window_acc),
                        "val_acc": val_acc, "val_ci95": val_ci,
                        "seconds": round(time.perf_counter() - t0, 2)})
        window_loss, window_acc = [], []
        if val_acc > best_acc:
            best_acc, best_ep = val_acc, done
            if world.is_main:
                save_checkpoint(out / "best.pt", {"metalearner": meta.state_dict()},
                                cfg.to_dict(), {"episode": done, "val_acc": val_acc,
                                                "val_ci95": val_ci})
        save_last(done)
        if world.is_main:
            _write_log(out / "log.csv", history)

    if start == 0 and not history:
        validate(0)                               # the curve starts at the untrained rule
    bar = tqdm(total=cfg.episodes, initial=start, desc=cfg.name, dynamic_ncols=True,
               disable=not (progress and world.is_main) or None)
    done = start
    try:
        while done < end:
            first = done + world.rank * cfg.meta_batch
            mine = range(first, min(first + cfg.meta_batch, end))
            opt.zero_grad(set_to_none=True)
            totals = torch.zeros(2)                     # this rank's summed query loss and accuracy
            for i in mine:
                ep = train_s[i].to(device)
                res = run_episode(learner, meta, ep, cfg.steps, cfg.batch_size, mode="train",
                                  generator=episode_generator(train_s.seed, i))
                (res.query_loss / group).backward()      # the meta-gradient of the mean query loss
                totals += torch.tensor([res.query_loss.item(), res.query_acc])
            all_reduce_grads_(params, world)
            world.all_reduce_(totals)
            n = min(group, end - done)
            loss, acc = (totals / n).tolist()
            if not math.isfinite(loss):
                raise NonFiniteError(f"episode {done}: the query loss is {loss}; training stopped, "
                                     f"the last good checkpoint is {last}")
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            if not torch.isfinite(norm):
                raise NonFiniteError(f"episode {done}: the meta-gradient norm is {norm.item()}; "
                                     f"training stopped, the last good checkpoint is {last}")
            opt.step()
            window_loss.append(loss)
            window_acc.append(acc)
            previous, done = done, done + n
            bar.update(n)
            if done // cfg.val_every > previous // cfg.val_every or done == cfg.episodes:
                validate(done)
                bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}",
                                acc=f"{history[-1]['train_acc']:.3f}", val=f"{history[-1]['val_acc']:.3f}")
    except KeyboardInterrupt:
        save_last(done)  # between updates the state is consistent: resume continues exactly here
        raise
    bar.close()
    if done < cfg.episodes and (not history or history[-1]["episode"] != done):
        save_last(done)  # stopped between validations: keep the place, resume continues from it
    world.barrier()
    return TrainResult(out, done, best_acc, best_ep, history)


def load_trained(path: str | Path, device: str = "cpu",
                 expect: Config | None = None) -> tuple[Learner, MetaLearner, Config, dict]:
    """A trained meta-learner from a checkpoint: (learner, metalearner, config, metrics)."""
    state, cfg_dict, metrics = load_checkpoint(path)
    cfg = Config.from_dict(cfg_dict)
    if expect is not None and not expect.same_model(cfg):
        raise CheckpointError(
            f"{path} holds a {cfg.name!r} model ({cfg.n_way}-way, {cfg.in_channels}x{cfg.image_size}"
            f"x{cfg.image_size}, hidden {cfg.hidden}), which does not fit configuration "
            f"{expect.name!r} ({expect.n_way}-way, {expect.in_channels}x{expect.image_size}"
            f"x{expect.image_size}, hidden {expect.hidden})")
    learner, meta = build_model(cfg, device)
    try:
        meta.load_state_dict(state["metalearner"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not hold a meta-learner of this shape: {exc}") from None
    return learner, meta, cfg, metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Meta-train the Meta-Learner LSTM (SPEC 5). Under torchrun, every process "
                    "trains on its own episodes and the meta-gradients are all-reduced.")
    ap.add_argument("--config", required=True, help=f"one of: {', '.join(CONFIGS)}")
    ap.add_argument("--out", help="run folder (default runs/CONFIG)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--rule", choices=RUNGS, help="the update rule to meta-train (default lstm, the "
                    "paper's; the ladder: paper notes 11)")
    ap.add_argument("--episodes", type=int, help="override the number of training episodes")
    ap.add_argument("--lr", type=float, help="override Adam's learning rate (SPEC 5: 1e-3)")
    ap.add_argument("--init-from", metavar="CHECKPOINT",
                    help="start from this trained meta-learner (c_0 and the LSTM) instead of a fresh one")
    ap.add_argument("--meta-batch", type=int, help="episodes per meta-update and process (default 1)")
    ap.add_argument("--val-every", type=int, help="override: validate every this many episodes")
    ap.add_argument("--val-episodes", type=int, help="override: meta-validation episodes")
    ap.add_argument("--seed", type=int, help="override the seed")
    ap.add_argument("--data-root", help="where a real data set lives")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--reference", action="store_true", help="the readable path: reference_step and "
                    "plain pooling instead of the fused step (the same numbers to rounding, slower)")
    args = ap.parse_args(argv)
    world = World.single()
    try:
        overrides = {k: v for k, v in (("episodes", args.episodes), ("seed", args.seed), ("rule", args.rule),
                                       ("data_root", args.data_root), ("lr", args.lr),
                                       ("meta_batch", args.meta_batch), ("val_every", args.val_every),
                                       ("val_episodes", args.val_episodes),
                                       ("fast", False if args.reference else None)) if v is not None}
        cfg = get_config(args.config, **overrides)
        if cfg.meta_batch < 1:
            raise ValueError(f"--meta-batch must be at least 1, got {cfg.meta_batch}")
        if args.threads:
            torch.set_num_threads(args.threads)
        init_state = None
        if args.init_from:
            init_state = load_trained(args.init_from, expect=cfg)[1].state_dict()
        world = init_from_env(args.device)
        out = Path(args.out or f"runs/{cfg.name}")
        if world.is_main:
            print(f"{cfg.name}: {cfg.description}; {cfg.episodes} episodes on {args.device}, "
                  f"{world.size} process(es) x meta-batch {cfg.meta_batch}, "
                  f"{torch.get_num_threads()} threads each -> {out}")
        started = time.perf_counter()
        res = train(cfg, out, device=args.device, resume=args.resume, world=world, init_state=init_state)
        seconds = time.perf_counter() - started
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteError) as exc:
        print(f"error{f' (rank {world.rank})' if world.size > 1 else ''}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; `--resume` continues from the last finished meta-update", file=sys.stderr)
        return 130
    finally:
        shutdown()
    if world.is_main:
        print(f"best meta-validation accuracy {res.best_val_acc:.4f} at episode {res.best_episode}; "
              f"best.pt, last.pt and log.csv in {res.out_dir}; {seconds:.1f} s "
              f"(validation included) on {world.size} process(es)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
