"""Crash safety: kill -9 at seeded random moments of a smoke training run, then --resume.

A run is killed (SIGKILL: no handler, no clean-up, as a power cut or the OOM
killer would) at KILLS seeded random moments spread over the whole run,
checkpoint writes, validations and fsyncs included; after every kill each
checkpoint in the folder must load (0 corrupt), and the folder must be free
again (the kernel drops the flock). Resumed to the end, the run must hold the
tensors, optimiser state, history and best.pt of an uninterrupted run, and no
temporary file of a killed save may be left.

Both tests are marked slow: each run is a fork of the test process (torch is
imported once), and the first test still takes about 10 s of one core (a smoke
run of 6 episodes, 4 kills, the resumes); the second does the same through the
real command line, each kill paying a fresh `python -m metalstm.train` start
(about 30 s). Run them with

    pytest -m slow tests/cli/test_crash_safety.py
"""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metalstm.checkpoint import load_checkpoint
from metalstm.config import get_config
from metalstm.train import train

CFG = get_config("smoke", val_every=2)                   # 6 episodes, a checkpoint write every 2
KILLS = 4
ROOT = Path(__file__).resolve().parents[2]


def same_run(a: Path, b: Path) -> None:
    """The same last.pt (meta-learner, Adam, place in the run), best.pt and log.csv (but wall times)."""
    sa, _, ma = load_checkpoint(a / "last.pt")
    sb, _, mb = load_checkpoint(b / "last.pt")
    assert sa["metalearner"].keys() == sb["metalearner"].keys()
    for k in sa["metalearner"]:
        assert torch.equal(sa["metalearner"][k], sb["metalearner"][k]), k
    assert str(sa["optimizer"]) == str(sb["optimizer"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(ma.pop("history")) == strip(mb.pop("history")) and ma == mb
    ba, _, bma = load_checkpoint(a / "best.pt")
    bb, _, bmb = load_checkpoint(b / "best.pt")
    assert bma == bmb and all(torch.equal(ba["metalearner"][k], bb["metalearner"][k]) for k in ba["metalearner"])
    log = lambda p: strip(csv.DictReader(open(p / "log.csv")))
    assert log(a) == log(b)


def no_corrupt_checkpoint(out: Path) -> int:
    """Load every checkpoint in `out` (a damaged one raises); how many there are."""
    found = sorted(out.glob("*.pt"))
    for p in found:
        load_checkpoint(p)
    return len(found)


def forked_run(out: Path) -> int:
    """Start the run (or its --resume) in a forked child; its pid."""
    pid = os.fork()
    if pid == 0:                                      # the child: train, then leave without clean-up
        code = 0
        try:
            train(CFG, out, resume=(out / "last.pt").exists(), progress=False)
        except BaseException:
            code = 1
        os._exit(code)
    return pid


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_at_random_moments_never_corrupts_and_resume_gives_the_uninterrupted_run(tmp_path):
    start = time.perf_counter()
    train(CFG, tmp_path / "straight", progress=False)
    duration = time.perf_counter() - start
    rng = random.Random(20240531)
    out, kills = tmp_path / "killed", 0
    while kills < KILLS:
        pid = forked_run(out)
        time.sleep(rng.uniform(0.0, duration))
        done, status = os.waitpid(pid, os.WNOHANG)
        finished = done == pid
        if finished:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the run failed"
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            # the run may have ended between the look and the kill: then it finished, as above
            finished = os.WIFEXITED(status)
            if finished:
                assert os.WEXITSTATUS(status) == 0, "the run failed"
            else:
                assert os.WIFSIGNALED(status)
                kills += 1
        no_corrupt_checkpoint(out)
        if finished:
            break
    while True:                                       # resume to the end, without kills
        pid = forked_run(out)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        if load_checkpoint(out / "last.pt")[2]["episode"] == CFG.episodes:
            break
    assert no_corrupt_checkpoint(out) == 2
    same_run(tmp_path / "straight", out)
    assert not list(out.glob(".*.tmp")), "a killed save's temporary file was left"


@pytest.mark.slow
def test_kill_9_through_the_command_line(tmp_path):
    """kill -9 of real `python -m metalstm.train` processes at seeded moments after they start."""
    common = [sys.executable, "-m", "metalstm.train", "--config", "smoke", "--threads", "1",
              "--episodes", str(CFG.episodes), "--val-every", str(CFG.val_every)]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    train(CFG, tmp_path / "straight", progress=False)
    duration = time.perf_counter() - start
    rng, out = random.Random(7), tmp_path / "killed"
    for _ in range(4):
        resume = ["--resume"] if (out / "last.pt").exists() else []
        proc = subprocess.Popen(common + ["--out", str(out)] + resume, cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc.stderr.readline()                        # its first log line: training begins
        time.sleep(rng.uniform(0.0, duration))
        proc.kill()
        proc.wait()
        proc.stderr.close()
        no_corrupt_checkpoint(out)
    resume = ["--resume"] if (out / "last.pt").exists() else []
    done = subprocess.run(common + ["--out", str(out)] + resume, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    same_run(tmp_path / "straight", out)
    assert not list(out.glob(".*.tmp"))
