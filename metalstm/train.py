"""Meta-training of the Meta-Learner LSTM (paper notes 5): the algorithm that notebook 05 builds.

    for each meta-update u (episodes u*G .. u*G+G-1, G = meta_batch x processes):
        for each of its episodes:
            theta_0 = c_0 (fresh batch-norm statistics)
            T steps:  L_t, grad_t on a support batch (detached);  theta_t = rule(...)
            L_test = loss of f(.; theta_T) on the query set
        backpropagate the mean L_test into c_0 and the rule   (meta_gradient)
        clip the norm to cfg.clip (0.25); Adam, lr 1e-3        (meta_step)
    every `val_every` episodes: mean accuracy and 95% interval on the same
    `val_episodes` meta-validation episodes (meta-test batch-norm protocol);
    the best is kept                                           (validate)

Episode i and its mini-batch order depend only on (seed, i), and meta-update u
always takes the same episodes, so a resumed run sees exactly what an
uninterrupted one would have and ends with the same numbers. The run's folder,
files, resume, interrupts, messages and the command line
(`python -m metalstm.train`) are `metalstm.runs`.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from metalstm import runs
from metalstm.config import Config
from metalstm.distributed import World, all_reduce_grads_
from metalstm.episodes import episode_generator, sampler_for
from metalstm.evaluate import evaluate_rule
from metalstm.metalearner import NonFiniteStepError, run_episode
from metalstm.model import build_model
from metalstm.runs import (NonFiniteError, Progress, Run, RunState, check_config, held, save_last, save_on_interrupt,
                           save_validation, start_state, uninterrupted, warm_start)
from metalstm.stats import mean_ci95


@dataclass
class TrainResult:
    """What `train` returns: the run folder, the episodes done, the best meta-validation accuracy
    and its episode, log.csv's rows (runs.LOG_FIELDS), and the per-episode accuracies of each
    validation this call made ({episode: [accuracy on val episode 0, 1, ...]})."""

    out_dir: Path
    episodes_done: int
    best_val_acc: float
    best_episode: int
    history: list[dict]
    val_accuracies: dict[int, list[float]]


def update_groups(start: int, end: int, group: int) -> Iterator[range]:
    """The meta-updates from episode `start` to `end`: update u takes episodes u*G .. u*G+G-1
    (clipped to `end`), whatever the run stopped at before, so a resumed run meets the same
    groups as an uninterrupted one."""
    first = start
    while first < end:
        last = min((first // group + 1) * group, end)
        yield range(first, last)
        first = last


def validation_due(done: int, cfg: Config, group: int) -> bool:
    """True when the meta-update that ended at episode `done` is followed by a validation:
    the untrained rule (0), every val_every episodes (the first update that reaches a
    multiple), and the end of the run."""
    if done == 0 or done == cfg.episodes:
        return True
    previous = (done - 1) // group * group           # where that meta-update began
    return done // cfg.val_every > previous // cfg.val_every


def meta_gradient(run: Run, episodes: range) -> tuple[float, float]:
    """The meta-gradient of the mean query loss of one meta-update's episodes (paper notes 5), summed
    over processes into the parameters' .grad; returns the group's mean query loss and accuracy.

    This process runs its share (cfg.meta_batch of them); every loss is divided by the
    number of episodes in the group, n, so a last group shorter than the meta-batch is
    averaged over its own episodes.
    """
    cfg, world, n = run.cfg, run.world, len(episodes)
    first = episodes.start + world.rank * cfg.meta_batch
    mine = range(first, min(first + cfg.meta_batch, episodes.stop))
    run.opt.zero_grad(set_to_none=True)
    totals = torch.zeros(2)                          # this process's summed query loss and accuracy
    for i in mine:
        ep = run.train_episodes[i].to(run.device)
        try:
            res = run_episode(run.learner, run.rule, ep, cfg.steps, cfg.batch_size, mode="train",
                              generator=episode_generator(run.train_episodes.seed, i))
        except NonFiniteStepError:                   # the inner loop diverged: a NaN query loss, so that
            totals += torch.tensor([math.nan, 0.0])  # every process stops below, after the all-reduce
            continue
        (res.query_loss / n).backward()              # the meta-gradient of the mean query loss
        totals += torch.tensor([res.query_loss.item(), res.query_acc])
    all_reduce_grads_(run.params, world)
    world.all_reduce_(totals)
    loss, acc = (totals / n).tolist()
    if not math.isfinite(loss):
        raise NonFiniteError(f"{_span(episodes)}: the query loss is {loss}; training stopped, "
                             f"{run.last_good()}")
    return loss, acc


def _span(episodes: range) -> str:
    """'episode 3' or 'episodes 2-3', for messages."""
    if len(episodes) == 1:
        return f"episode {episodes.start}"
    return f"episodes {episodes.start}-{episodes.stop - 1}"


def meta_step(run: Run, episodes: range) -> None:
    """Clip the meta-gradient's norm to cfg.clip and take the Adam step; stop (NonFiniteError,
    nothing written) if the gradient or any meta-parameter after the step is not finite."""
    norm = torch.nn.utils.clip_grad_norm_(run.params, run.cfg.clip)
    where = _span(episodes)
    if not torch.isfinite(norm):
        raise NonFiniteError(f"{where}: the meta-gradient norm is {norm.item()}; training stopped, "
                             f"{run.last_good()}")
    run.opt.step()
    bad = [name for name, p in run.rule.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise NonFiniteError(f"{where}: the update made {', '.join(bad)} NaN or infinite (Adam lr "
                             f"{run.cfg.lr:g}); training stopped, nothing of it was saved, "
                             f"{run.last_good()}")


def validate(run: Run, state: RunState) -> tuple[RunState, list[float]]:
    """Meta-validation after state.episode episodes (0: the untrained rule): the accuracy of the
    rule on each of the same cfg.val_episodes episodes (shared out over the processes), their mean
    and 95% interval; then best.pt, last.pt and log.csv (`runs.save_validation`). Returns the new
    state and the per-episode accuracies."""
    cfg, world = run.cfg, run.world
    mine = range(world.rank, cfg.val_episodes, world.size)
    accs = world.all_gather(evaluate_rule(run.learner, run.rule, run.val_episodes, mine, cfg, run.device))
    val_acc, val_ci = mean_ci95(accs)
    return save_validation(run, state, val_acc, val_ci), accs


def train(cfg: Config, out_dir: str | Path, device: str = "cpu", resume: bool = False,
          stop_after: int | None = None, progress: bool = True,
          world: World | None = None, init_state: dict | None = None, log_every: int = 100) -> TrainResult:
    """Meta-train `cfg` into out_dir (paper notes 5); `stop_after` ends early as an interruption
    would: after the meta-update that reaches that many episodes.

    init_state: a meta-learner state_dict to start from instead of the seeded
    initialisation (a warm start, with a fresh Adam); ignored by `resume`, which
    continues from last.pt.

    A meta-update averages the meta-gradients of G = cfg.meta_batch * world.size
    episodes: update u uses episodes u*G .. u*G+G-1, and rank r runs its
    cfg.meta_batch of them. G = 1 is the paper's one episode per update.

    The folder is held for the run (a second run into it is refused); an interrupt
    (Ctrl-C) saves last.pt at the last finished meta-update, and `resume=True`
    then ends with the files of an uninterrupted run.

    progress: a tqdm bar where stderr is a terminal or a notebook, else (a log file) a line on the
    `metalstm` logger every `log_every` episodes; each validation logs a line either way.
    """
    check_config(cfg)
    out = Path(out_dir)
    world = world or World.single()
    torch.manual_seed(cfg.seed)
    learner, rule = build_model(cfg, device)
    if init_state is not None and not resume:
        warm_start(rule, init_state, cfg)
    params = [p for p in rule.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr) if params else None     # sgd: nothing to learn
    run = Run(cfg, out, learner, rule, opt, params, sampler_for(cfg, "train"), sampler_for(cfg, "val"),
              device, world)
    with held(run):                                   # one run at a time in the folder
        state = start_state(run, resume)              # resume: last.pt's place; else episode 0
        val_accs: dict[int, list[float]] = {}
        end = cfg.episodes if stop_after is None else min(cfg.episodes, -(-stop_after // run.group) * run.group)
        if opt is None:
            end = 0                                   # a rule without parameters is its own best
        bar = Progress(cfg, state.episode, progress and world.is_main, log_every)
        try:
            if validation_due(state.episode, cfg, run.group) and (
                    not state.history or state.history[-1]["episode"] != state.episode):
                state, val_accs[state.episode] = validate(run, state)   # the untrained rule, or one an
                                                                        # interrupt skipped
            for episodes in update_groups(state.episode, end, run.group):
                loss, acc = meta_gradient(run, episodes)
                with uninterrupted():                     # the step and its record: both or neither
                    meta_step(run, episodes)
                    state.after_update(len(episodes), loss, acc)
                bar.update(len(episodes), state)
                if validation_due(state.episode, cfg, run.group):
                    state, val_accs[state.episode] = validate(run, state)
                    bar.validated(state.history[-1])
            if run.saved_episode != state.episode:
                save_last(run, state)  # stopped between validations: keep the place, resume continues from it
        except KeyboardInterrupt:
            raise save_on_interrupt(run, state) from None     # last.pt at the last finished meta-update
        finally:
            bar.close()
    world.barrier()
    return TrainResult(out, state.episode, state.best_val_acc, state.best_episode, state.history, val_accs)


def main(argv: list[str] | None = None) -> int:
    """`python -m metalstm.train`: the command line (metalstm.runs.main) around `train`."""
    return runs.main(train, argv)


if __name__ == "__main__":
    sys.exit(main())
