"""A meta-training run's machinery around the algorithm of `metalstm.train`: its folder, its
files, resuming, interrupts, messages, and the command line `python -m metalstm.train`.

    python -m metalstm.train --config glyphs-5shot --out runs/glyphs-5shot
    python -m metalstm.train --config glyphs-5shot --out runs/glyphs-5shot --resume

A run folder holds last.pt (everything needed to resume: the rule, Adam's state
and the `RunState`), best.pt (the best meta-learner so far) and log.csv (the
learning curves, one row of LOG_FIELDS per validation).

What can go wrong is refused or stopped with one line and nothing lost: a
configuration that cannot be trained is refused before any work
(`check_config`); a run folder is held by one run at a time (a killed run
frees it); a NaN or infinity stops training before anything is written
(`NonFiniteError`); Ctrl-C or SIGTERM saves the last finished meta-update (an
interrupted validation is repeated on `--resume`); last.pt of another
configuration, process count or meta-update grouping is refused with the
command that continues it (`resume_command`).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import logging
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from metalstm.checkpoint import (CheckpointError, atomic_write, hold_folder, load_checkpoint, refuse_other_kinds,
                                 remove_temporaries, save_checkpoint)
from metalstm.cli import (FLAGS, add_logging_options, add_path_option, add_run_options, check_device,
                          check_path_runs, config_from_args, logging_to_stderr, parser, positive_int,
                          set_threads)
from metalstm.config import CONFIGS, Config
from metalstm.distributed import World, init_from_env, shutdown
from metalstm.config import RUNGS
from metalstm.model import load_trained

if TYPE_CHECKING:
    from metalstm.episodes import EpisodeSampler
    from metalstm.learner import Learner

log = logging.getLogger("metalstm.train")

LOG_FIELDS = ["episode", "train_loss", "train_acc", "val_acc", "val_ci95", "seconds"]


class NonFiniteError(RuntimeError):
    """The meta-loss, the meta-gradient or a meta-parameter stopped being a finite number."""


# -- the settings a run can be trained with -------------------------------------------
def check_config(cfg: Config) -> None:
    """One ValueError for a configuration that cannot be meta-trained, before any work.

    Meaningless values are refused: no episodes, validation every 0 episodes, 0 inner
    steps (theta_T would be c_0 and the rule never used; `run_episode` itself accepts
    steps=0), clip <= 0 (it would zero every meta-gradient; inf turns clipping off), a
    negative or non-finite learning rate. lr = 0 is allowed: Adam then moves nothing
    (a frozen run, which the warm-start test uses).
    """
    for name in ("episodes", "val_every", "val_episodes", "test_episodes", "meta_batch", "steps",
                 "batch_size", "n_way", "k_shot", "n_query", "image_size", "in_channels", "hidden"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    for name in ("lr", "rule_lr"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not isinstance(cfg.clip, (int, float)) or math.isnan(cfg.clip) or cfg.clip <= 0:
        raise ValueError(f"clip (the meta-gradient's largest norm) must be > 0 (inf: no clipping), "
                         f"got {cfg.clip!r}")
    if cfg.rule not in RUNGS:
        raise ValueError(f"unknown update rule {cfg.rule!r}; the ladder is: {', '.join(RUNGS)}")


def resume_command(cfg: Config, out: Path, processes: int = 1) -> str:
    """The command line that continues the run of `cfg` in `out` on `processes` processes."""
    launch = ("python -m metalstm.train" if processes == 1 else
              f"torchrun --nproc_per_node={processes} -m metalstm.train")
    base = CONFIGS.get(cfg.name)
    words = [launch, "--config", cfg.name if base is not None else f"FILE (the configuration file of {cfg.name!r})"]
    for f in dataclasses.fields(Config):
        if base is None or not f.compare:
            continue
        value = getattr(cfg, f.name)
        if value == getattr(base, f.name):
            continue
        if f.name in FLAGS:
            words += [FLAGS[f.name], *(map(str, value) if isinstance(value, tuple) else [str(value)])]
        else:
            words.append(f"(and {f.name}={value!r}, which only the Python API sets)")
    if cfg.path != "fused":
        words += ["--path", cfg.path]
    return " ".join(words + ["--out", str(out), "--resume"])


# -- what a run does not change while it trains ----------------------------------------
@dataclass
class Run:
    """What a run does not change while it trains: the settings, the model and optimiser
    (their tensors change), the episode streams, the folder, the processes."""

    cfg: Config
    out: Path
    learner: Learner
    rule: torch.nn.Module
    opt: torch.optim.Optimizer | None          # None: a rule with nothing to learn (sgd)
    params: list[torch.nn.Parameter]
    train_episodes: EpisodeSampler
    val_episodes: EpisodeSampler
    device: str
    world: World
    started: float = field(default_factory=time.perf_counter)
    saved_episode: int | None = None            # the episode of the last.pt on disk

    @property
    def last(self) -> Path:
        """The run's last.pt."""
        return self.out / "last.pt"

    @property
    def group(self) -> int:
        """Episodes per meta-update, all processes together."""
        return self.cfg.meta_batch * self.world.size

    def last_good(self) -> str:
        """Where a person finds the last good state, for error messages."""
        if self.saved_episode is None:
            return "no checkpoint was written"
        return f"the last good checkpoint is {self.last} (episode {self.saved_episode})"


# -- where a run stands: what last.pt holds besides the weights -------------------------
@dataclass
class RunState:
    """The place of a run, as last.pt records it (its metrics): `--resume` continues here.

    episode: episodes done (always the end of a meta-update); history: one row of
    LOG_FIELDS per validation; window_loss/acc: the training loss and accuracy of
    each meta-update since the last validation; processes: how many processes
    trained it (None in checkpoints written before it was recorded).
    """

    episode: int = 0
    best_val_acc: float = -1.0
    best_episode: int = -1
    history: list[dict] = field(default_factory=list)
    window_loss: list[float] = field(default_factory=list)
    window_acc: list[float] = field(default_factory=list)
    processes: int | None = 1

    KEYS = ("episode", "best_val_acc", "best_episode", "history", "window_loss", "window_acc")

    def to_metrics(self) -> dict:
        """The state as last.pt's metrics (a deep copy: later updates do not change it)."""
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_metrics(cls, metrics: dict, path: Path) -> "RunState":
        """The state last.pt recorded; a CheckpointError for a file that is no run's last.pt."""
        if not all(k in metrics for k in cls.KEYS):
            raise CheckpointError(
                f"{path} cannot be resumed: it holds a trained rule but no place in a run (no "
                f"episode counter, no optimiser state), like a best.pt or a shipped checkpoint; "
                f"start a new run from it with --init-from {path} and another --out")
        return cls(**copy.deepcopy({k: metrics[k] for k in cls.KEYS}), processes=metrics.get("processes"))

    def after_update(self, n: int, loss: float, acc: float) -> None:
        """Record one finished meta-update of n episodes."""
        self.episode += n
        self.window_loss.append(loss)
        self.window_acc.append(acc)

    def after_validation(self, val_acc: float, val_ci: float, seconds: float) -> "RunState":
        """A new state with this validation's row, the best so far, and an empty window."""
        mean = (lambda xs: sum(xs) / len(xs) if xs else None)
        row = {"episode": self.episode, "train_loss": mean(self.window_loss),
               "train_acc": mean(self.window_acc), "val_acc": val_acc, "val_ci95": val_ci,
               "seconds": round(seconds, 2)}
        best = val_acc > self.best_val_acc
        return dataclasses.replace(
            self, history=self.history + [row], window_loss=[], window_acc=[],
            best_val_acc=val_acc if best else self.best_val_acc,
            best_episode=self.episode if best else self.best_episode)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) and SIGTERM while the block runs, then deliver them: an
    optimiser step and the counter that records it happen together or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)                 # now its own handler runs (Ctrl-C: KeyboardInterrupt)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: `saved` is the last.pt that holds the run's place (None if none was written)."""

    def __init__(self, saved: Path | None, episode: int | None) -> None:
        super().__init__()
        self.saved, self.episode = saved, episode


# -- the run's files -----------------------------------------------------------------
def warm_start(rule: torch.nn.Module, init_state: dict, cfg: Config) -> None:
    """Load a trained meta-learner's state_dict into `rule` (train's init_state); one
    CheckpointError for a state of another rule or shape."""
    try:
        rule.load_state_dict(init_state)
    except RuntimeError as exc:
        raise CheckpointError(f"the starting state does not fit a {cfg.rule} rule of this shape "
                              f"({cfg.steps} steps, hidden {cfg.hidden}): "
                              f"{str(exc).splitlines()[0][:160]}") from None


@contextmanager
def held(run: Run) -> Iterator[None]:
    """Hold the run folder for the block (the main process; a second run into it is refused, a
    killed run frees it), after removing the temporaries a killed save left there."""
    if not run.world.is_main:
        yield
        return
    with hold_folder(run.out):
        remove_temporaries(run.out, ("last.pt", "best.pt", "log.csv"))
        yield


def start_state(run: Run, resume: bool) -> RunState:
    """Where the run begins: last.pt's place on `resume` (its log.csv's seconds go on from where
    it stopped), else a fresh state; a folder that already holds a run is refused without it."""
    if resume:
        state = resume_state(run)
        if state.history:                  # log.csv's seconds go on from where the run stopped
            run.started -= float(state.history[-1].get("seconds") or 0.0)
        log_start(run, state)
        return state
    if run.last.exists():
        raise FileExistsError(f"{run.out} already holds a run; pass --resume to continue it, "
                              f"or choose another --out")
    state = RunState(processes=run.world.size)
    log_start(run, state)
    return state


def log_start(run: Run, state: RunState) -> None:
    """The run's first line (the main process; after every check, so a refused run logs nothing)."""
    if not run.world.is_main:
        return
    cfg = run.cfg
    log.info(f"{cfg.name}: {cfg.description or cfg.dataset}; {'resuming at episode ' + str(state.episode) + ' of ' if state.episode else ''}"
             f"{cfg.episodes} episodes on {run.device}, {run.world.size} process(es) x meta-batch "
             f"{cfg.meta_batch}, {torch.get_num_threads()} threads each"
             f"{'' if cfg.path == 'fused' else ', --path ' + cfg.path} -> {run.out}")


class Progress:
    """How a run shows its progress on the main process: a tqdm bar where stderr is a terminal
    (or a notebook), else a line on the `metalstm` logger every `every` episodes (0: none)."""

    def __init__(self, cfg: Config, start: int, show: bool, every: int = 100) -> None:
        from tqdm.auto import tqdm
        self.bar = tqdm(total=cfg.episodes, initial=start, desc=cfg.name, dynamic_ncols=True,
                        disable=not show or None)
        self.every = every if show and self.bar.disable else 0
        self.total, self.seen = cfg.episodes, start

    def update(self, n: int, state: RunState) -> None:
        """n more episodes are done (state: the run's place after them)."""
        self.bar.update(n)
        if self.every and state.episode // self.every > self.seen // self.every:
            mean = (lambda xs: sum(xs) / len(xs) if xs else math.nan)
            log.info(f"episode {state.episode}/{self.total}: train loss {mean(state.window_loss):.4f}, "
                     f"acc {mean(state.window_acc):.4f} (mean since the last validation)")
        self.seen = state.episode

    def validated(self, row: dict) -> None:
        """The bar's figures after a validation (its log line is `save_validation`'s)."""
        if row["train_loss"] is not None:
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                                 val=f"{row['val_acc']:.3f}")

    def close(self) -> None:
        self.bar.close()

def save_last(run: Run, state: RunState) -> None:
    """last.pt: the rule, the optimiser and the run's place (the main process writes it)."""
    if run.world.is_main:
        save_checkpoint(run.last, _state(run.rule, run.opt), run.cfg.to_dict(),
                        {**state.to_metrics(), "processes": run.world.size})
    run.saved_episode = state.episode


def save_validation(run: Run, state: RunState, val_acc: float, val_ci: float) -> RunState:
    """Record the validation after state.episode episodes: best.pt (when it is the best so far),
    last.pt and log.csv. Returns the new state; until it returns, the old one is the run's place
    (an interrupt in here repeats the validation on resume)."""
    cfg, world = run.cfg, run.world
    new = state.after_validation(val_acc, val_ci, time.perf_counter() - run.started)
    if world.is_main and val_acc > state.best_val_acc:
        save_checkpoint(run.out / "best.pt", {"metalearner": run.rule.state_dict()}, cfg.to_dict(),
                        {"episode": state.episode, "val_acc": val_acc, "val_ci95": val_ci})
    save_last(run, new)
    if world.is_main:
        _write_log(run.out / "log.csv", new.history)
        row = new.history[-1]
        train_part = ("untrained" if row["train_loss"] is None else
                      f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}")
        log.info(f"validation at episode {state.episode}/{cfg.episodes}: {train_part}, val acc "
                 f"{val_acc:.4f} +- {val_ci:.4f} on {cfg.val_episodes} episodes"
                 f"{' (best so far)' if val_acc > state.best_val_acc else ''}; {row['seconds']:.0f} s")
    return new


def save_on_interrupt(run: Run, state: RunState) -> TrainingInterrupted:
    """Ctrl-C or SIGTERM between meta-updates: save last.pt (a second Ctrl-C does not cut the save
    short) and return the TrainingInterrupted to raise; `--resume` continues from it."""
    with uninterrupted():
        save_last(run, state)      # between updates the state is consistent: resume continues here
    return TrainingInterrupted(run.last if run.world.is_main else None, state.episode)

def resume_state(run: Run) -> RunState:
    """Load last.pt into the rule and optimiser and return its place; one CheckpointError
    naming the difference for a file this run cannot continue exactly."""
    last, cfg = run.last, run.cfg
    if not last.is_file():
        raise CheckpointError(f"nothing to resume: {last} does not exist (start the run "
                              f"without --resume)")
    tensors, saved_cfg, metrics = load_checkpoint(last)
    state = RunState.from_metrics(metrics, last)
    best = run.out / "best.pt"
    if best.exists() and state.best_episode >= 0:   # the run's best so far must still be readable
        try:
            load_checkpoint(best)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; it is the run's best so far (episode {state.best_episode}), "
                                  f"which resuming would list as written: restore it, or move it away "
                                  f"and resume (a later validation that beats it writes best.pt again)") from None
    try:
        saved = Config.from_dict(saved_cfg)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{last} holds no configuration of this package: {exc}") from None
    if saved.replace(episodes=cfg.episodes) != cfg:
        diffs = ", ".join(f"{f.name} {getattr(saved, f.name)!r} (this run: {getattr(cfg, f.name)!r})"
                          for f in dataclasses.fields(Config) if f.compare and f.name != "episodes"
                          and getattr(saved, f.name) != getattr(cfg, f.name))
        raise CheckpointError(f"{last} was trained with configuration {saved.name!r} and other "
                              f"settings: {diffs}; resume it with `{resume_command(saved, run.out)}`, "
                              f"or start a new run from it with these settings: --init-from {last} "
                              f"and another --out")
    if state.processes is not None and state.processes != run.world.size:
        raise CheckpointError(
            f"{last} was trained by {state.processes} process(es), this run has {run.world.size}: "
            f"the meta-updates would group other episodes and give other numbers; resume it with "
            f"`{resume_command(cfg, run.out, state.processes)}`")
    if state.episode % run.group and state.episode < cfg.episodes:
        g = state.episode // run.group * run.group
        raise CheckpointError(
            f"{last} stopped at episode {state.episode}, inside the meta-update of episodes "
            f"{g}-{g + run.group - 1} ({run.group} per update): continued, it would not equal a run "
            f"trained straight to {cfg.episodes}; resume it only up to --episodes {state.episode}, "
            f"or start a new run from it with --init-from {last}")
    try:
        run.rule.load_state_dict(tensors["metalearner"])
        if run.opt is not None:
            run.opt.load_state_dict(tensors["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{last} does not hold this run's rule and optimiser: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    run.saved_episode = state.episode
    return state


def _state(meta, opt) -> dict:
    """The tensors last.pt holds: the rule's state_dict and Adam's ({} for a rule with nothing to learn)."""
    return {"metalearner": meta.state_dict(), "optimizer": opt.state_dict() if opt is not None else {}}


def _write_log(path: Path, history: list[dict]) -> None:
    """log.csv: a header of LOG_FIELDS and one row per validation, written atomically."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=LOG_FIELDS)
    w.writeheader()
    w.writerows(history)
    atomic_write(path, text.getvalue())


# -- the command line ----------------------------------------------------------------
def main(train: Callable, argv: list[str] | None = None) -> int:
    """`python -m metalstm.train` (metalstm.train.main) around `train` (metalstm.train.train,
    passed in: the algorithm imports this module, not the other way round): parse the flags, meta-train,
    print one line of result or one line of error; returns the exit code (0, 2, 130 Ctrl-C,
    143 SIGTERM)."""
    ap = parser("python -m metalstm.train",
                "Meta-train the Meta-Learner LSTM (paper notes 5) on a built-in configuration or your own "
                "(a .toml / .json file, or the options below; docs/command-line.md). Under torchrun, every "
                "process trains on its own episodes and the meta-gradients are all-reduced.")
    add_run_options(ap, training=True, config_required=True)
    ap.add_argument("--out", help="run folder (default runs/NAME, NAME the configuration's)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--init-from", metavar="CHECKPOINT",
                    help="start from this trained meta-learner (c_0 and the LSTM) instead of a fresh one "
                         "(default: a fresh one)")
    ap.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's choice)")
    add_path_option(ap)
    add_logging_options(ap)
    args = ap.parse_args(argv)
    with logging_to_stderr(args):
        return _run(train, args)


def _run(train: Callable, args) -> int:
    """main's work once the flags are parsed (the `metalstm` logger sends its lines to stderr)."""
    world, out, cfg = World.single(), None, None
    terminated = []                   # SIGTERM (torchrun stopping the survivors, a scheduler): as Ctrl-C
    previous = _on_sigterm(lambda signum, frame: (terminated.append(signum), _raise_interrupt()))
    try:
        cfg = config_from_args(args).replace(path=args.path)
        check_config(cfg)
        check_device(args.device)
        check_path_runs(args.path, args.device)
        set_threads(args.threads)
        init_state = None
        if args.init_from:
            refuse_other_kinds(args.init_from, "a trained update rule to start from (a best.pt or "
                                                "data/checkpoints/*.pt)")
            _, init_rule, init_cfg, _ = load_trained(args.init_from, expect=cfg)
            if init_cfg.rule != cfg.rule:
                raise CheckpointError(f"--init-from {args.init_from} holds a {init_cfg.rule!r} rule and "
                                      f"this run trains {cfg.rule!r}: pass --rule {init_cfg.rule}, or "
                                      f"start from a checkpoint of a {cfg.rule!r} rule")
            init_state = init_rule.state_dict()
        world = init_from_env(args.device)
        out = Path(args.out or f"runs/{cfg.name}")
        started = time.perf_counter()
        res = train(cfg, out, device=args.device, resume=args.resume, world=world, init_state=init_state,
                    progress=not args.quiet, log_every=args.log_every)
        seconds = time.perf_counter() - started
    except (ValueError, OSError, NonFiniteError) as exc:
        print(f"error{f' (rank {world.rank})' if world.size > 1 else ''}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        why = "interrupted"
        if terminated:
            why = "stopped by SIGTERM" + (" (torchrun stops every process when one of them fails)"
                                          if world.size > 1 else "")
        if world.is_main or terminated:
            print(f"\n{why} at episode {exc.episode}; {out / 'last.pt'} holds the run: continue it with "
                  f"`{resume_command(cfg, out, world.size)}`", file=sys.stderr)
        return 143 if terminated else 130
    except KeyboardInterrupt:
        print(f"\n{'stopped by SIGTERM' if terminated else 'interrupted'} before training began; "
              f"nothing was saved", file=sys.stderr)
        return 143 if terminated else 130
    except RuntimeError as exc:       # under torchrun: another process died (gloo / nccl errors)
        if world.size == 1:
            raise
        print(f"error (rank {world.rank}): {_peer_failure(exc, world, cfg, out)}", file=sys.stderr)
        return 2
    finally:
        shutdown()
        _on_sigterm(previous)
    if world.is_main:
        files = ", ".join(n for n in ("best.pt", "last.pt", "log.csv") if (res.out_dir / n).exists())
        print(f"best meta-validation accuracy {res.best_val_acc:.4f} at episode {res.best_episode}; "
              f"{files} in {res.out_dir}; {seconds:.1f} s "
              f"(validation included) on {world.size} process(es)")
    return 0


def _raise_interrupt() -> None:
    """SIGTERM handled as Ctrl-C: train saves the run's place as for an interrupt."""
    raise KeyboardInterrupt


def _on_sigterm(handler):
    """Install a SIGTERM handler (main thread only); returns the previous one (or None)."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler) or signal.SIG_DFL


def _one_line(exc: BaseException) -> str:
    """An exception's message as one line (torch's own messages can run to several)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines) if len(" ".join(lines)) <= 400 else lines[0][:400]


def _peer_failure(exc: BaseException, world: World, cfg: Config | None, out: Path | None) -> str:
    """What a surviving process says when a collective fails because another process stopped."""
    who = f"rank {1 - world.rank}" if world.size == 2 else "another process"
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    text = f"{who} of this {world.size}-process run stopped, so this one stopped too ({reason})"
    last = out / "last.pt" if out is not None else None
    if last is not None and last.is_file():
        try:
            episode = load_checkpoint(last)[2].get("episode")
            text += (f"; {last} (episode {episode}) is intact: resume with "
                     f"`{resume_command(cfg, out, world.size)}`")
        except CheckpointError as bad:
            text += f"; {bad}"
    else:
        text += "; no checkpoint was written yet"
    return text


