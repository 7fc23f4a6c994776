"""Meta-train the ladder over seeds: every rung x shot x seed, a few runs at a time, resumable.

    python -m metalstm.tools.grid --jobs 2 --publish data/checkpoints/grid --park data/grid-parked \
        --evaluate data/results/grid --commit
    python -m metalstm.tools.grid --dry-run          # the plan: which runs are done, partial, new

Each run is one `python -m metalstm.train --config glyphs-{K}shot --rule R --seed S
--episodes E --val-every V --threads 1 --out OUT/glyphs-{K}shot-R-seedS` (plus --path, native
only where the C loops can run, and --resume for a partial run) in a process of its own, its
output in the run folder's train.out; --jobs of them run at a time, seed-major by
default (every rung and shot of seed 0, then seed 1, ...; the ladder's cheap rungs
first). The grid computes nothing itself: each run folder holds exactly what that
command trains (paper notes 5, 11), and a run stopped anywhere and resumed ends with
the files of an uninterrupted one.

Where a run stands is read from its folder, as train leaves it: done (log.csv's last
row is the run's last episode, and best.pt is there; a rung with nothing to learn,
sgd, is validated once at episode 0 and ends there), partial (last.pt: started again
with --resume), or new. So the same command continues an interrupted grid and skips
what is done. Run folders are scratch (runs/ is not kept in git), so two more places
carry a grid from one machine or session to the next: with --publish DIR a run whose
published copies in DIR are complete is published (skipped, its record read from
DIR/NAME.run.json), and with --park DIR a run stopped part-way leaves its last.pt,
best.pt and log.csv in DIR/NAME/, from which a later session restores it and resumes. A run that fails is reported with the end of its train.out and the
others go on (exit code 1). Ctrl-C or SIGTERM stops the running runs, each saving its
place in last.pt, and exits with 130.

Printed: a line when a run starts and when it ends (episodes, best validation
accuracy, the CPU seconds of its process, wall seconds), every 60 s the episode each
running run has logged, and at the end the grid's CPU time summed over every session.
OUT/summary.json, rewritten after every run ends, holds each run's rung, shot, seed,
status, episodes, best validation accuracy and its episode, CPU and wall seconds (over
all sessions) and folder. --publish DIR copies a finished run's log.csv, and seed 0's
best.pt, to DIR (NAME.log.csv, NAME.pt), with its record (NAME.run.json); --commit
commits those copies (and the parked files), and only them, with git.

With --evaluate DIR a finished run is also evaluated: `python -m metalstm.tools.ladder_seeds
--runs NAME --results DIR` in a slot of its own (evaluations start before new training runs),
its output in the run folder's eval.out, DIR/NAME.json committed when it ends. A run of seed 1
or more ships no checkpoint, so until its evaluation has ended its best.pt and log.csv wait in
--park DIR/NAME/ (committed): a session that ends first leaves them to the next one, which
restores and evaluates them. At the start, every finished or published run of the plan whose
DIR/NAME.json is missing or was measured on another checkpoint (SHA-256) is queued, where a
checkpoint is at hand (the folder's best.pt, a parked one, or seed 0's published NAME.pt).
"""
from __future__ import annotations

import argparse
import csv
import filecmp
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from metalstm.checkpoint import atomic_write, file_sha256, hold_folder
from metalstm.cli import check_folder, positive_float, positive_int
from metalstm.config import CONFIGS, PATHS
from metalstm import rules

ORDERS = ("seed", "rung")
STOP_WAIT_S = 120          # how long a stopped run may take to save its place before it is killed


# -- the plan: which runs, and where each one stands ---------------------------------------
@dataclass(frozen=True)
class Spec:
    """One run of the grid: the configuration, rung, shot and seed it trains, and its folder."""

    config: str
    rung: str
    shot: int
    seed: int
    folder: Path
    publish: Path | None = None        # --publish DIR: where a finished run's copies go
    park: Path | None = None           # --park DIR: where a stopped run's files wait for the next session

    @property
    def name(self) -> str:
        return self.folder.name


def config_name(pattern: str, shot: int) -> str:
    """The configuration that trains `shot`-shot runs: `pattern` with {k} replaced by the shot
    (glyphs-{k}shot -> glyphs-5shot); ValueError for no configuration or one of another shot."""
    name = pattern.replace("{k}", str(shot))
    if name not in CONFIGS:
        raise ValueError(f"--config {pattern}: no configuration {name!r}; known: {', '.join(CONFIGS)}")
    if CONFIGS[name].k_shot != shot:
        raise ValueError(f"--config {pattern} gives {name}, which is {CONFIGS[name].k_shot}-shot, not "
                         f"{shot}-shot: pass --shots {CONFIGS[name].k_shot}, or a pattern with {{k}}")
    return name


def make_plan(pattern: str, rungs: list[str], shots: list[int], seeds: list[int], out: Path,
              order: str = "seed", publish: Path | None = None, park: Path | None = None) -> list[Spec]:
    """The runs in the order they start: seed-major (every shot and rung of one seed, then the
    next seed) or rung-major (every shot and seed of one rung, then the next rung)."""
    def spec(rung: str, shot: int, seed: int) -> Spec:
        config = config_name(pattern, shot)
        return Spec(config, rung, shot, seed, Path(out) / f"{config}-{rung}-seed{seed}", publish, park)
    if order == "seed":
        return [spec(r, k, s) for s in seeds for k in shots for r in rungs]
    return [spec(r, k, s) for r in rungs for k in shots for s in seeds]


@functools.lru_cache(maxsize=None)
def learns(config: str, rung: str) -> bool:
    """Whether the rung has parameters to meta-train; train runs one without (sgd) to episode 0."""
    from metalstm.config import get_config
    from metalstm.model import build_model
    _, rule = build_model(get_config(config, rule=rung))
    return any(p.requires_grad for p in rule.parameters())


def final_episode(spec: Spec, episodes: int) -> int:
    """The last row of a finished run's log.csv: --episodes, or 0 for a rung with nothing to learn."""
    return episodes if learns(spec.config, spec.rung) else 0


def read_log(folder: Path, name: str = "log.csv") -> list[dict]:
    """The rows of folder/log.csv (train replaces it whole, so it is never half written); [] if none."""
    try:
        with open(folder / name, newline="") as f:
            return [row for row in csv.DictReader(f) if row.get("episode", "").isdigit()]
    except FileNotFoundError:
        return []


@dataclass
class Standing:
    """Where a run stands on disk: status done | partial | new | over (more episodes than asked
    for: not touched) | published (no folder, but complete copies in --publish DIR), the last
    logged episode, and the best validation accuracy so far."""

    status: str
    episodes: int = 0
    best_val_acc: float | None = None
    best_episode: int | None = None


def standing(spec: Spec, final: int) -> Standing:
    rows = read_log(spec.folder)
    s = Standing("new")
    if not rows and spec.publish is not None and not (spec.folder / "last.pt").is_file():
        rows = read_log(spec.publish, f"{spec.name}.log.csv")
        if not (rows and int(rows[-1]["episode"]) == final and
                (spec.seed != 0 or (spec.publish / f"{spec.name}.pt").is_file())):
            return s
        s.status = "published"
    if rows:
        s.episodes = int(rows[-1]["episode"])
        best = max(rows, key=lambda r: float(r["val_acc"]))     # the first of equals, as train keeps
        s.best_val_acc, s.best_episode = float(best["val_acc"]), int(best["episode"])
    if s.status == "published":
        pass
    elif rows and s.episodes == final and (spec.folder / "best.pt").is_file():
        s.status = "done"
    elif rows and s.episodes > final:
        s.status = "over"
    elif (spec.folder / "last.pt").is_file():
        s.status = "partial"
    return s


def describe(s: Standing, final: int) -> str:
    best = "" if s.best_val_acc is None else f"; best val {s.best_val_acc:.4f} at {s.best_episode}"
    return {"done": f"done ({s.episodes} episodes{best})",
            "partial": f"partial ({s.episodes} of {final} episodes logged{best}): resumes",
            "new": "new",
            "parked": f"parked at episode {s.episodes} of {final}: restored and resumed",
            "published": f"published ({s.episodes} episodes{best}): no folder here, nothing to train",
            "over": f"holds {s.episodes} episodes, more than the {final} asked for: left alone"}[s.status]


# -- what the grid writes besides the runs: summary.json, published copies, commits ---------
def copy_changed(pairs: list[tuple[Path, Path]]) -> list[Path]:
    """Copy each (src, dst) whose dst differs; returns the copies that changed. Each copy is
    written atomically (`metalstm.checkpoint.atomic_write`): whole, or the old file as it was."""
    changed = []
    for src, dst in pairs:
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            continue
        with open(src, "rb") as f:
            atomic_write(dst, lambda out: shutil.copyfileobj(f, out))
        changed.append(dst)
    return changed


def write_record(path: Path, entry: dict) -> bool:
    """Write a run's summary entry (without its machine-local folder) as JSON; True if it changed."""
    text = json.dumps({k: v for k, v in entry.items() if k != "folder"}, indent=2) + "\n"
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write(path, text)
    return True


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def publish(spec: Spec, dest: Path, entry: dict | None = None) -> list[Path]:
    """Copy a finished run's log.csv (and, for seed 0, best.pt) into `dest` as NAME.log.csv and
    NAME.pt, and its summary entry as NAME.run.json; returns the files that changed (an
    identical copy is not rewritten)."""
    pairs = [(spec.folder / "log.csv", dest / f"{spec.name}.log.csv")]
    if spec.seed == 0:
        pairs.append((spec.folder / "best.pt", dest / f"{spec.name}.pt"))
    changed = copy_changed(pairs)
    record = dest / f"{spec.name}.run.json"
    if entry is not None and write_record(record, entry):
        changed.append(record)
    return changed


PARKED = ("last.pt", "best.pt", "log.csv")


def park(spec: Spec, entry: dict) -> list[Path]:
    """Copy a stopped run's last.pt, best.pt and log.csv (those it has) and its summary entry
    into spec.park/NAME/; returns the files that changed."""
    dest = spec.park / spec.name
    changed = copy_changed([(spec.folder / n, dest / n) for n in PARKED if (spec.folder / n).is_file()])
    if write_record(dest / "run.json", entry):
        changed.append(dest / "run.json")
    return changed


def unpark(spec: Spec) -> dict | None:
    """A new run with parked files: copy them into its folder (it is then partial and resumes,
    or, parked with best.pt alone while it waited for its evaluation, done) and return the
    parked summary entry; None when nothing is parked."""
    src = spec.park / spec.name if spec.park is not None else None
    if src is None or not any((src / n).is_file() for n in ("last.pt", "best.pt")):
        return None
    spec.folder.mkdir(parents=True, exist_ok=True)
    copy_changed([(src / n, spec.folder / n) for n in PARKED if (src / n).is_file()])
    return read_record(src / "run.json")


AWAITING = ("best.pt", "log.csv")


def park_for_evaluation(spec: Spec, entry: dict) -> list[Path]:
    """Keep a finished run's best.pt and log.csv (and its entry) in spec.park/NAME/ until its
    evaluation has ended, and nothing else there; returns the files that changed or went."""
    dest = spec.park / spec.name
    gone = [p for p in parked_files(spec) if p.name not in AWAITING + ("run.json",)]
    for p in gone:
        p.unlink()
    changed = copy_changed([(spec.folder / n, dest / n) for n in AWAITING])
    if write_record(dest / "run.json", entry):
        changed.append(dest / "run.json")
    return changed + gone


def drop_parked(spec: Spec) -> list[Path]:
    """Remove a run's parked copy (files and folder); returns the files that went."""
    gone = parked_files(spec)
    for path in gone:
        path.unlink()
    if gone:
        gone[0].parent.rmdir()
    return gone


def parked_files(spec: Spec) -> list[Path]:
    """The files parked for a run (to remove once it is done)."""
    folder = spec.park / spec.name if spec.park is not None else None
    return sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []


def commit(files: list[Path], message: str, attempts: int = 10, wait: float = 3.0) -> str | None:
    """`git add` and `git commit` exactly `files` (`git commit -- FILES`: whatever else is staged
    stays out), a file that is gone committed as removed, retrying while another git holds
    index.lock; None, or what went wrong in one line."""
    cwd = files[0].parent if files[0].parent.is_dir() else files[0].parent.parent
    names = [str(f.resolve()) for f in files if f.exists() or subprocess.run(
        ["git", "ls-files", "--error-unmatch", "--", str(f.resolve())], cwd=cwd, capture_output=True).returncode == 0]
    if not names:
        return None
    for attempt in range(attempts):
        for cmd in (["git", "add", "-A", "--", *names], ["git", "commit", "-q", "-m", message, "--", *names]):
            done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
            if done.returncode:
                break
        else:
            return None
        why = " ".join((done.stderr or done.stdout).split())[:300] or f"exit code {done.returncode}"
        if "index.lock" not in why or attempt == attempts - 1:
            return f"{' '.join(cmd[:2])} in {cwd}: {why}"
        time.sleep(wait)
    return None


# -- the scheduler ----------------------------------------------------------------------------
@dataclass
class Child:
    """A running run: its process, its train.out, when it started."""

    spec: Spec
    proc: subprocess.Popen
    out: IO
    started: float
    kind: str = "train"               # or "evaluate": ladder_seeds on the finished run


def reap(child: Child) -> tuple[int, float | None] | None:
    """(exit code, CPU seconds of the process) once the child has ended, else None; the CPU
    time is the child's own user + system time (os.wait4), None where there is no wait4."""
    if not hasattr(os, "wait4"):
        code = child.proc.poll()
        return None if code is None else (code, None)
    try:
        pid, status, usage = os.wait4(child.proc.pid, os.WNOHANG)
    except ChildProcessError:                     # reaped by Popen after all: its code, no CPU time
        return child.proc.returncode, None
    if pid == 0:
        return None
    child.proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here: Popen must not wait again
    return child.proc.returncode, usage.ru_utime + usage.ru_stime


def signal_child(child: Child, sig: int) -> None:
    """os.kill, not Popen.send_signal, which may reap the child itself (and lose its CPU time);
    an unreaped child keeps its pid, so the signal cannot reach another process."""
    try:
        os.kill(child.proc.pid, sig)
    except ProcessLookupError:
        pass


def _fmt_s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.0f} s"


def _fmt_long(seconds: float) -> str:
    """A duration in the unit that reads best: 45 s, 12.5 min, 3.20 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


class Grid:
    """The runs of a plan, their records (summary.json) and the processes now running."""

    def __init__(self, specs: list[Spec], args: argparse.Namespace, path: str) -> None:
        self.specs, self.args, self.path = specs, args, path
        self.final = {s: final_episode(s, args.episodes) for s in specs}
        self.summary_path = Path(args.out) / "summary.json"
        try:
            self.records = json.loads(self.summary_path.read_text())["runs"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            self.records = {}
        self.running: dict[Spec, Child] = {}
        self.failed: list[str] = []
        self.session_cpu = self.eval_cpu = 0.0
        self.evaluations: list[Spec] = []           # finished runs waiting for their evaluation
        for spec in specs:
            status = standing(spec, self.final[spec]).status
            awaiting = spec.park is not None and (spec.park / spec.name / "best.pt").is_file()
            # parked in an earlier session: restored, and it resumes, or (finished, parked until
            # its evaluation ends) is evaluated
            if status == "new" or (status == "published" and awaiting):
                parked = unpark(spec)
                if parked:
                    self.records[spec.name] = {**parked, "folder": str(spec.folder)}
                else:                                # a run started afresh owes nothing to old records
                    self.records.pop(spec.name, None)
            elif status == "published":              # finished in an earlier session: its record
                self.records[spec.name] = {**read_record(spec.publish / f"{spec.name}.run.json"),
                                           "status": "published", "folder": str(spec.folder)}

    def command(self, spec: Spec, resume: bool) -> list[str]:
        a = self.args
        return [sys.executable, "-m", "metalstm.train", "--config", spec.config, "--rule", spec.rung,
                "--seed", str(spec.seed), "--episodes", str(a.episodes), "--val-every", str(a.val_every),
                "--threads", "1", "--out", str(spec.folder)] + \
            ([] if self.path == "fused" else ["--path", self.path]) + (["--resume"] if resume else [])

    def spawn(self, spec: Spec, cmd: list[str], kind: str) -> None:
        """Run `cmd` (one thread) as the spec's `kind` child, its output appended to the run
        folder's train.out or eval.out under a line naming the command."""
        spec.folder.mkdir(parents=True, exist_ok=True)
        out = open(spec.folder / ("train.out" if kind == "train" else "eval.out"), "a")
        out.write(f"--- grid, {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd[1:])}\n")
        out.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if kind == "evaluate":
            env["TQDM_DISABLE"] = "1"
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)   # a terminal's Ctrl-C reaches the grid only
        self.running[spec] = Child(spec, proc, out, time.monotonic(), kind)

    def start(self, spec: Spec) -> None:
        s = standing(spec, self.final[spec])
        self.spawn(spec, self.command(spec, resume=s.status == "partial"), "train")
        where = f"resumed at episode {s.episodes}" if s.status == "partial" else "new"
        length = f"{self.final[spec]} episodes" if self.final[spec] else "nothing to meta-train: validated once"
        print(f"grid: start {spec.name} ({where}; {length})", flush=True)

    def record(self, spec: Spec, status: str | None = None, cpu: float | None = None,
               wall: float | None = None) -> dict:
        """Update the run's summary entry from its folder; CPU and wall seconds add up over sessions."""
        s = standing(spec, self.final[spec])
        old = self.records.get(spec.name, {})

        def add(key: str, seconds: float | None) -> float | None:
            if seconds is None:
                return old.get(key)
            return (old.get(key) or 0.0) + seconds
        entry = {"rung": spec.rung, "shot": spec.shot, "seed": spec.seed, "config": spec.config,
                 "status": status or s.status, "episodes": s.episodes, "final_episode": self.final[spec],
                 "best_val_acc": s.best_val_acc, "best_episode": s.best_episode,
                 "cpu_seconds": add("cpu_seconds", cpu), "wall_seconds": add("wall_seconds", wall),
                 "folder": str(spec.folder)}
        self.records[spec.name] = entry
        return entry

    def write_summary(self) -> None:
        data = {"episodes": self.args.episodes, "val_every": self.args.val_every,
                "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": self.records}
        atomic_write(self.summary_path, json.dumps(data, indent=2))

    def finished(self, child: Child, code: int, cpu: float | None, stopping: bool) -> None:
        spec, wall = child.spec, time.monotonic() - child.started
        child.out.close()
        del self.running[spec]
        self.session_cpu += cpu or 0.0
        s = standing(spec, self.final[spec])
        status = s.status if code == 0 and s.status == "done" else ("interrupted" if stopping else "failed")
        entry = self.record(spec, status, cpu, wall)
        best = "" if s.best_val_acc is None else f", best val {s.best_val_acc:.4f} at {s.best_episode}"
        logged = "episodes" if status == "done" else "episodes logged"
        print(f"grid: end {spec.name}: {status}, {s.episodes} {logged}{best}; CPU {_fmt_s(cpu)}, "
              f"wall {wall:.0f} s", flush=True)
        if status == "failed":
            self.failed.append(spec.name)
            print(f"grid: {spec.name} exited with code {code}; the end of {spec.folder / 'train.out'}:")
            print("\n".join("    " + line for line in tail(spec.folder / "train.out", 6)), flush=True)
        self.write_summary()
        if status == "done":
            self.publish(spec, entry)
            self.queue_evaluation(spec)
        elif status == "interrupted":
            self.park(spec, entry)

    def ended(self, child: Child, code: int, cpu: float | None, stopping: bool) -> None:
        (self.finished if child.kind == "train" else self.evaluated)(child, code, cpu, stopping)

    # -- evaluation (--evaluate DIR): ladder_seeds on each finished run, DIR/NAME.json committed --
    def checkpoint_of(self, spec: Spec) -> Path | None:
        """The finished run's best.pt: in its folder, else seed 0's published copy; None if neither."""
        for path in (spec.folder / "best.pt", spec.publish / f"{spec.name}.pt" if spec.publish else None):
            if path is not None and path.is_file():
                return path
        return None

    def pending_evaluation(self, spec: Spec) -> bool:
        """--evaluate DIR is set and DIR/NAME.json is missing or measured another checkpoint."""
        if not self.args.evaluate:
            return False
        ckpt = self.checkpoint_of(spec)
        try:
            measured = json.loads((Path(self.args.evaluate) / f"{spec.name}.json").read_text())["checkpoint_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return True
        return ckpt is not None and measured != file_sha256(ckpt)

    def queue_evaluation(self, spec: Spec) -> None:
        if spec in self.evaluations or not self.pending_evaluation(spec):
            return
        if self.checkpoint_of(spec) is None:
            print(f"grid: cannot evaluate {spec.name}: no checkpoint here (a run of seed {spec.seed} ships "
                  f"none, and none is parked)", flush=True)
            return
        self.evaluations.append(spec)

    def evaluate_command(self, spec: Spec) -> list[str]:
        a = self.args
        cmd = [sys.executable, "-m", "metalstm.tools.ladder_seeds", "--grid", str(a.out), "--runs", spec.name,
               "--results", str(a.evaluate), "--episodes", str(a.eval_episodes), "--threads", "1"]
        if not (spec.folder / "best.pt").is_file():
            cmd += ["--published", str(spec.publish)]
        return cmd + ([] if self.path == "fused" else ["--path", self.path])

    def start_evaluation(self, spec: Spec) -> None:
        self.spawn(spec, self.evaluate_command(spec), "evaluate")
        print(f"grid: evaluate {spec.name} ({self.args.eval_episodes} meta-test episodes a test set)", flush=True)

    def evaluated(self, child: Child, code: int, cpu: float | None, stopping: bool) -> None:
        """An evaluation ended: commit DIR/NAME.json and drop the copies parked for it; a stopped or
        failed one is left to the next call (its checkpoint is still parked)."""
        spec, wall = child.spec, time.monotonic() - child.started
        child.out.close()
        del self.running[spec]
        self.eval_cpu += cpu or 0.0
        result = Path(self.args.evaluate) / f"{spec.name}.json"
        if code != 0 or self.pending_evaluation(spec):
            why = "stopped" if stopping else f"failed (exit code {code})"
            print(f"grid: evaluation of {spec.name} {why}; the same command evaluates it again", flush=True)
            if not stopping:
                self.failed.append(f"{spec.name} (evaluation)")
                print("\n".join("    " + line for line in tail(spec.folder / "eval.out", 6)), flush=True)
            return
        means = json.loads(result.read_text())["test_sets"]
        said = ", ".join(f"{t} {100 * b['mean']:.2f}%" for t, b in means.items())
        print(f"grid: evaluated {spec.name}: {said}; CPU {_fmt_s(cpu)}, wall {wall:.0f} s", flush=True)
        gone = drop_parked(spec)
        self.commit([result] + gone, f"grid: {spec.name} evaluated ({said})")

    def publish(self, spec: Spec, entry: dict) -> None:
        """Copy a finished run to --publish DIR and drop what it had parked, or, while its evaluation
        is pending and no published checkpoint outlives the session, park its best.pt; commit
        (--commit)."""
        shipped = spec.publish is not None and spec.seed == 0        # seed 0's best.pt is published
        hold = spec.park is not None and not shipped and self.pending_evaluation(spec)
        if spec.publish is None and not hold:
            return
        try:
            changed = publish(spec, spec.publish, entry) if spec.publish is not None else []
            if hold:
                gone = park_for_evaluation(spec, entry)      # its only checkpoint: kept until evaluated
            else:
                gone = drop_parked(spec)
        except OSError as exc:
            print(f"grid: could not publish {spec.name}: {exc}", flush=True)
            return
        if changed:
            print(f"grid: published {', '.join(str(p) for p in changed)}", flush=True)
        best = "" if entry["best_val_acc"] is None else \
            f", best val {entry['best_val_acc']:.4f} at episode {entry['best_episode']}"
        self.commit(changed + gone, f"grid: {spec.name} finished ({entry['episodes']} episodes{best})")

    def park(self, spec: Spec, entry: dict) -> None:
        """Copy a stopped run's place to --park DIR/NAME/ (and commit it) for a later session."""
        if spec.park is None or not (spec.folder / "last.pt").is_file():
            return
        try:
            changed = park(spec, entry)
        except OSError as exc:
            print(f"grid: could not park {spec.name}: {exc}", flush=True)
            return
        if changed:
            print(f"grid: parked {spec.name} at episode {entry['episodes']} in {spec.park / spec.name}", flush=True)
        self.commit(changed, f"grid: {spec.name} parked at episode {entry['episodes']} (resumes from here)")

    def commit(self, files: list[Path], message: str) -> None:
        if files and self.args.commit:
            why = commit(files, message)
            if why:
                print(f"grid: could not commit {', '.join(str(f) for f in files)}: {why}", flush=True)

    def progress_line(self) -> str:
        now = time.monotonic()
        return "grid: running " + ", ".join(
            f"{c.spec.name} {standing(c.spec, self.final[c.spec]).episodes}/{self.final[c.spec]} "
            f"({(now - c.started) / 60:.0f} min)" for c in self.running.values())

    def run(self, stop: list[int]) -> None:
        """Start every run that is not done, --jobs at a time, until all have ended or `stop`
        (filled by the signal handler) asks to stop; then stop the running ones."""
        todo = [s for s in self.specs if standing(s, self.final[s]).status in ("new", "partial")]
        last_report = time.monotonic()
        try:
            while (todo or self.evaluations or self.running) and not stop:
                while (todo or self.evaluations) and len(self.running) < self.args.jobs:
                    if self.evaluations:                 # short, and they secure a finished run's numbers
                        self.start_evaluation(self.evaluations.pop(0))
                    else:
                        self.start(todo.pop(0))
                for child in list(self.running.values()):
                    ended = reap(child)
                    if ended is not None:
                        self.ended(child, *ended, stopping=False)
                if self.running and time.monotonic() - last_report >= self.args.report_every:
                    print(self.progress_line(), flush=True)
                    last_report = time.monotonic()
                time.sleep(0.2)
        finally:
            if self.running:             # a stop, or an error of the grid itself: the runs save their place
                self.stop_children(stop)

    def stop_children(self, stop: list[int]) -> None:
        """SIGTERM to each running run (train saves last.pt and exits); SIGKILL after STOP_WAIT_S
        or at a second Ctrl-C (a killed run resumes from its last saved last.pt)."""
        for child in self.running.values():
            signal_child(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while self.running:
            for child in list(self.running.values()):
                if time.monotonic() > deadline or len(stop) > 1:
                    signal_child(child, signal.SIGKILL)
                ended = reap(child)
                if ended is not None:
                    self.ended(child, *ended, stopping=True)
            time.sleep(0.2)

    def totals(self) -> str:
        """The grid's CPU time over every session that summary.json records, and per run."""
        runs = [r for name, r in self.records.items() if name in {s.name for s in self.specs}]
        timed = [r for r in runs if r.get("cpu_seconds") is not None]
        cpu = sum(r["cpu_seconds"] for r in timed)
        counts = {st: sum(r["status"] == st for r in runs) for st in dict.fromkeys(r["status"] for r in runs)}
        per_rung = {}
        for r in timed:
            per_rung.setdefault(r["rung"], []).append(r["cpu_seconds"])
        lines = [f"grid: {len(self.specs)} runs ({', '.join(f'{n} {st}' for st, n in counts.items())}); "
                 f"CPU {_fmt_long(cpu)} over every session ({_fmt_long(self.session_cpu)} in this one)"
                 + (f", {_fmt_long(cpu / len(timed))} per run" if timed else "")
                 + (f"; {len(runs) - len(timed)} run(s) without a recorded CPU time" if len(timed) < len(runs)
                    else "")]
        if self.eval_cpu:
            lines.append(f"grid: evaluations took CPU {_fmt_long(self.eval_cpu)} in this session")
        if per_rung:
            lines.append("grid: CPU per run by rung: " + ", ".join(
                f"{rung} {_fmt_long(sum(v) / len(v))}" for rung, v in per_rung.items()))
        return "\n".join(lines)


def tail(path: Path, n: int) -> list[str]:
    """The last n non-empty lines of this session's part of a train.out (after the grid's last
    header line)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ["(no train.out)"]
    starts = [i for i, line in enumerate(lines) if line.startswith("--- grid, ")]
    lines = [line for line in lines[starts[-1] + 1 if starts else 0:] if line.strip()]
    return lines[-n:] or ["(train.out is empty)"]


def native_available() -> tuple[bool, str]:
    from metalstm.fast import native
    try:
        native.library()
        return True, ""
    except native.NativeUnavailable as exc:
        return False, str(exc)


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metalstm.tools.grid", description=__doc__.split("\n")[0])
    ap.add_argument("--rungs", nargs="+", choices=rules.RUNGS, default=list(rules.RUNGS),
                    help=f"the rungs to train (default the whole ladder: {' '.join(rules.RUNGS)})")
    ap.add_argument("--shots", nargs="+", type=positive_int, default=[1, 5], help="K of K-shot (default 1 5)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    ap.add_argument("--config", default="glyphs-{k}shot",
                    help="the configuration of a K-shot run, {k} standing for K (default glyphs-{k}shot; "
                         "smoke, with --shots 1, for tests)")
    ap.add_argument("--episodes", type=positive_int, default=5000, help="episodes per run (default 5000)")
    ap.add_argument("--val-every", type=positive_int, default=250, help="validate every (default 250)")
    ap.add_argument("--jobs", type=positive_int, default=2, help="runs at a time, one thread each (default 2)")
    ap.add_argument("--path", choices=PATHS, default="fused", help="pass --path to every run (native only "
                    "where the C loops can be built here; else the grid says so once and the runs go on fused)")
    ap.add_argument("--order", choices=ORDERS, default="seed",
                    help="seed: every rung and shot of seed 0 first (default); rung: every seed of a rung")
    ap.add_argument("--out", default="runs/grid", help="the grid's folder (default runs/grid)")
    ap.add_argument("--publish", metavar="DIR", help="copy a finished run's log.csv, and seed 0's best.pt, here")
    ap.add_argument("--park", metavar="DIR", help="where a run stopped part-way leaves last.pt, best.pt and "
                    "log.csv (DIR/NAME/) for a later session to restore and resume (default: nowhere)")
    ap.add_argument("--commit", action="store_true", help="git-commit the published and parked copies "
                    "(with --publish or --park)")
    ap.add_argument("--evaluate", metavar="DIR", help="evaluate each finished run with ladder_seeds into "
                    "DIR/NAME.json (e.g. data/results/grid; committed with --commit)")
    ap.add_argument("--eval-episodes", type=positive_int, default=600, metavar="N",
                    help="meta-test episodes a test set for --evaluate (default 600)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and where each run stands")
    ap.add_argument("--report-every", type=positive_float, default=60.0, metavar="SECONDS",
                    help="how often to print the running runs' episodes (default 60)")
    args = ap.parse_args(argv)
    if args.commit and not (args.publish or args.park):
        ap.error("--commit commits the published or parked copies: it needs --publish DIR or --park DIR")
    if args.evaluate and args.park is None and args.publish is None:
        ap.error("--evaluate needs --publish DIR or --park DIR: a finished run must outlive the session "
                 "until its evaluation has ended")
    try:
        specs = make_plan(args.config, _unique(args.rungs), _unique(args.shots), _unique(args.seeds),
                          Path(args.out), args.order, args.publish and Path(args.publish),
                          args.park and Path(args.park))
        for flag, folder in (("--out", args.out), ("--publish", args.publish), ("--park", args.park),
                             ("--evaluate", args.evaluate)):
            check_folder(folder, flag, writable=not args.dry_run)   # before any run starts
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        width = max(len(s.name) for s in specs)
        counts: dict[str, int] = {}
        for spec in specs:
            final = final_episode(spec, args.episodes)
            s = standing(spec, final)
            parked = read_log(spec.park / spec.name) if s.status == "new" and spec.park is not None else []
            if parked and (spec.park / spec.name / "last.pt").is_file():
                s = Standing("parked", int(parked[-1]["episode"]))
            counts[s.status] = counts.get(s.status, 0) + 1
            print(f"{spec.name:<{width}}  {describe(s, final)}")
        print(f"{len(specs)} runs: " + ", ".join(f"{n} {st}" for st, n in counts.items()))
        return 0
    path = args.path
    if path == "native":
        native, why = native_available()
        if not native:
            path = "fused"
            print(f"grid: --path native: the C loops are not available here ({why}); the runs go on fused")
    stop: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with hold_folder(args.out):
            grid = Grid(specs, args, path)
            for spec in specs:
                s = standing(spec, grid.final[spec])
                if s.status in ("done", "over", "published"):
                    print(f"grid: skip {spec.name}: {describe(s, grid.final[spec])}")
                    if s.status != "published":
                        entry = grid.record(spec)
                    if s.status == "done":
                        grid.publish(spec, entry)
                    if s.status in ("done", "published"):
                        grid.queue_evaluation(spec)
            grid.run(stop)
            for spec in specs:
                if spec.name not in grid.records:
                    grid.record(spec)
            grid.write_summary()
    except OSError as exc:                  # the folder held by another grid, or not writable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stop:
        name = signal.Signals(stop[0]).name
        print(f"grid: stopped by {name}; the runs that were running saved their place (last.pt): "
              f"the same command continues the grid")
        return 130
    print(grid.totals())
    if grid.failed:
        print(f"grid: {len(grid.failed)} run(s) failed: {', '.join(grid.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
