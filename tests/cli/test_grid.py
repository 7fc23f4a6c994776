"""metalstm.tools.grid trains rung x shot x seed as `metalstm.train` processes. On the smoke
configuration: two rungs of one seed finish, two at a time, into summary.json and published,
committed copies; a second call starts no process; a partial run resumes to the numbers of an
uninterrupted one; a failing run is reported while the others finish; SIGTERM stops the grid and
its runs resumably with exit code 130."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from metalstm.config import get_config
from metalstm.tools import grid as grid_tool
from metalstm.train import train

SMOKE = ["--config", "smoke", "--shots", "1", "--episodes", "6", "--val-every", "3", "--jobs", "2",
         "--report-every", "1"]


def grid(*args) -> tuple[int, str]:
    """Run the grid in this process: (exit code, what it printed)."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = grid_tool.main([str(a) for a in args])
    return code, out.getvalue()


def log_rows(folder: Path) -> list[dict]:
    """log.csv without its wall-clock column."""
    with open(folder / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["runs"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, int, str]:
    """Two rungs x seed 0 on smoke, published to and committed in a fresh git repository."""
    root = tmp_path_factory.mktemp("grid")
    pub = root / "pub"
    pub.mkdir()
    for cmd in (["init", "-q"], ["config", "user.name", "grid test"], ["config", "user.email", "grid@test"],
                ["config", "commit.gpgsign", "false"]):
        subprocess.run(["git", *cmd], cwd=pub, check=True)
    code, text = grid(*SMOKE, "--rungs", "sgd", "init", "--seeds", "0", "--out", root / "runs",
                      "--publish", pub, "--commit")
    return root, code, text


@pytest.mark.slow
def test_every_run_finishes_into_the_summary_and_is_published(finished):
    root, code, text = finished
    assert code == 0, text
    for name in ("smoke-sgd-seed0", "smoke-init-seed0"):
        assert f"grid: start {name} (new" in text and f"grid: end {name}: done" in text
    runs = summary(root / "runs")
    assert sorted(runs) == ["smoke-init-seed0", "smoke-sgd-seed0"]
    init, sgd = runs["smoke-init-seed0"], runs["smoke-sgd-seed0"]
    assert (init["status"], init["episodes"], sgd["status"], sgd["episodes"]) == ("done", 6, "done", 0)
    rows = log_rows(root / "runs" / "smoke-init-seed0")
    best = max(rows, key=lambda r: float(r["val_acc"]))
    assert init["best_val_acc"] == float(best["val_acc"]) and init["best_episode"] == int(best["episode"])
    assert init["cpu_seconds"] > 0 and init["wall_seconds"] > 0 and (init["rung"], init["seed"]) == ("init", 0)
    assert "CPU" in text.splitlines()[-2] and "per run" in text
    for name in ("smoke-sgd-seed0", "smoke-init-seed0"):
        run, pub = root / "runs" / name, root / "pub"
        assert (pub / f"{name}.log.csv").read_bytes() == (run / "log.csv").read_bytes()
        assert (pub / f"{name}.pt").read_bytes() == (run / "best.pt").read_bytes()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=root / "pub", capture_output=True, text=True).stdout
    assert "grid: smoke-init-seed0 finished (6 episodes, best val" in log and log.count("grid: ") == 2


@pytest.mark.slow
def test_a_second_call_skips_every_finished_run(finished, monkeypatch):
    root, _, _ = finished
    before = summary(root / "runs")

    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    code, plan = grid(*SMOKE, "--rungs", "sgd", "init", "--seeds", "0", "--out", root / "runs", "--dry-run")
    assert code == 0 and "smoke-init-seed0  done (6 episodes; best val" in plan and "2 runs: 2 done" in plan
    monkeypatch.setattr(grid_tool.subprocess, "Popen", no_process)     # git included: nothing to commit
    code, text = grid(*SMOKE, "--rungs", "sgd", "init", "--seeds", "0", "--out", root / "runs",
                      "--publish", root / "pub", "--commit")
    assert code == 0, text
    assert "grid: skip smoke-sgd-seed0: done" in text and "grid: start" not in text
    assert summary(root / "runs") == before                             # CPU times kept, not reset


@pytest.mark.slow
def test_a_partial_run_resumes_to_the_numbers_of_an_uninterrupted_one(finished, tmp_path):
    root, _, _ = finished
    cfg = get_config("smoke", rule="init", seed=0, episodes=6, val_every=3)
    train(cfg, tmp_path / "smoke-init-seed0", stop_after=3, progress=False)      # as if interrupted
    (tmp_path / "summary.json").write_text(json.dumps(                          # ... in a grid's session
        {"runs": {"smoke-init-seed0": {"status": "interrupted", "cpu_seconds": 100.0, "wall_seconds": 200.0}}}))
    code, plan = grid(*SMOKE, "--rungs", "init", "--seeds", "0", "--out", tmp_path, "--dry-run")
    assert "smoke-init-seed0  partial (3 of 6 episodes logged" in plan
    code, text = grid(*SMOKE, "--rungs", "init", "--seeds", "0", "--out", tmp_path)
    assert code == 0, text
    assert "grid: start smoke-init-seed0 (resumed at episode 3" in text
    assert "--resume" in (tmp_path / "smoke-init-seed0" / "train.out").read_text()
    assert log_rows(tmp_path / "smoke-init-seed0") == log_rows(root / "runs" / "smoke-init-seed0")
    record = summary(tmp_path)["smoke-init-seed0"]
    assert record["status"] == "done" and record["cpu_seconds"] > 100 and record["wall_seconds"] > 200


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    broken = tmp_path / "smoke-sgd-seed0"
    broken.mkdir()
    (broken / "last.pt").write_bytes(b"not a checkpoint")                  # partial, and cannot resume
    monkeypatch.setattr(grid_tool, "native_available", lambda: (False, "no C compiler"))
    code, text = grid(*SMOKE, "--rungs", "sgd", "--seeds", "0", "1", "--out", tmp_path, "--path", "native")
    assert code == 1, text
    assert text.count("the C loops are not available here (no C compiler)") == 1
    assert "grid: end smoke-sgd-seed0: failed" in text and "exited with code 2" in text
    assert "    error: " in text                                           # the end of its train.out
    assert "grid: end smoke-sgd-seed1: done" in text and "1 run(s) failed: smoke-sgd-seed0" in text
    runs = summary(tmp_path)
    assert runs["smoke-sgd-seed0"]["status"] == "failed" and runs["smoke-sgd-seed1"]["status"] == "done"
    assert "--path" not in (tmp_path / "smoke-sgd-seed1" / "train.out").read_text()


@pytest.mark.slow
def test_sigterm_stops_the_grid_and_its_runs_resumably(tmp_path):
    run = tmp_path / "smoke-init-seed0"
    cmd = [sys.executable, "-m", "metalstm.tools.grid", "--config", "smoke", "--shots", "1", "--rungs", "init",
           "--seeds", "0", "--episodes", "5000", "--val-every", "3", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TQDM_DISABLE="1"))
    try:
        deadline = time.monotonic() + 90
        while not (run / "log.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run / "log.csv").exists(), "the run logged nothing"
        proc.send_signal(signal.SIGTERM)
        text, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text
    assert "grid: stopped by SIGTERM" in text and "grid: end smoke-init-seed0: interrupted" in text
    assert (run / "last.pt").is_file() and "stopped by SIGTERM at episode" in (run / "train.out").read_text()
    assert summary(tmp_path)["smoke-init-seed0"]["status"] == "interrupted"
    code, plan = grid("--config", "smoke", "--shots", "1", "--rungs", "init", "--seeds", "0",
                      "--episodes", "5000", "--out", tmp_path, "--dry-run")
    assert "smoke-init-seed0  partial (" in plan


def test_a_configuration_of_another_shot_is_refused(capsys):
    assert grid_tool.main(["--config", "smoke", "--shots", "5", "--dry-run"]) == 2
    assert "smoke, which is 1-shot, not 5-shot" in capsys.readouterr().err


def test_the_plan_is_seed_major_and_reads_the_ladder_at_run_time(tmp_path, monkeypatch):
    plan = grid_tool.make_plan("glyphs-{k}shot", ["sgd", "lstm"], [1, 5], [0, 1], tmp_path)
    assert [s.name for s in plan[:5]] == ["glyphs-1shot-sgd-seed0", "glyphs-1shot-lstm-seed0",
                                          "glyphs-5shot-sgd-seed0", "glyphs-5shot-lstm-seed0",
                                          "glyphs-1shot-sgd-seed1"]
    by_rung = grid_tool.make_plan("glyphs-{k}shot", ["sgd", "lstm"], [1, 5], [0, 1], tmp_path, order="rung")
    assert [s.name for s in by_rung[:3]] == ["glyphs-1shot-sgd-seed0", "glyphs-1shot-sgd-seed1",
                                             "glyphs-5shot-sgd-seed0"]
    assert grid_tool.final_episode(plan[0], 5000) == 0 and grid_tool.final_episode(plan[1], 5000) == 5000
    code, text = grid("--shots", "1", "--seeds", "0", "--out", tmp_path, "--dry-run")
    from metalstm.rules import RUNGS
    assert code == 0 and f"{len(RUNGS)} runs: {len(RUNGS)} new" in text


@pytest.mark.slow
def test_a_run_published_in_an_earlier_session_is_skipped_with_its_record(finished, tmp_path, monkeypatch):
    """A fresh --out (another machine, a new session): the published copies say the run is done."""
    root, _, _ = finished
    pub = root / "pub"
    assert json.loads((pub / "smoke-init-seed0.run.json").read_text())["cpu_seconds"] > 0
    monkeypatch.setattr(grid_tool.subprocess, "Popen", lambda *a, **k: pytest.fail(f"a process was started: {a}"))
    code, plan = grid(*SMOKE, "--rungs", "sgd", "init", "--seeds", "0", "--out", tmp_path, "--publish", pub,
                      "--dry-run")
    assert code == 0 and "smoke-init-seed0  published (6 episodes; best val" in plan and "2 runs: 2 published" in plan
    code, text = grid(*SMOKE, "--rungs", "sgd", "init", "--seeds", "0", "--out", tmp_path, "--publish", pub)
    assert code == 0, text
    assert "grid: skip smoke-init-seed0: published" in text and "grid: start" not in text
    record = summary(tmp_path)["smoke-init-seed0"]
    assert record["status"] == "published" and record["cpu_seconds"] == summary(root / "runs")["smoke-init-seed0"]["cpu_seconds"]


@pytest.mark.slow
def test_a_parked_run_resumes_in_a_new_session_to_the_numbers_of_an_uninterrupted_one(finished, tmp_path):
    """A run stopped part-way is parked (last.pt, best.pt, log.csv, its record) and committed; a
    later session with an empty --out restores it, resumes it, and removes the parked copy."""
    root, _, _ = finished
    parked_dir, first, second = tmp_path / "parked", tmp_path / "session1", tmp_path / "session2"
    parked_dir.mkdir()
    for cmd in (["init", "-q"], ["config", "user.name", "grid test"], ["config", "user.email", "grid@test"],
                ["config", "commit.gpgsign", "false"]):
        subprocess.run(["git", *cmd], cwd=parked_dir, check=True)
    spec = grid_tool.make_plan("smoke", ["init"], [1], [0], first, park=parked_dir)[0]
    cfg = get_config("smoke", rule="init", seed=0, episodes=6, val_every=3)
    train(cfg, spec.folder, stop_after=3, progress=False)                   # stopped at episode 3
    g = grid_tool.Grid([spec], grid_tool.argparse.Namespace(episodes=6, out=str(first), commit=True), "fused")
    g.park(spec, g.record(spec, "interrupted", cpu=50.0, wall=60.0))
    assert sorted(p.name for p in (parked_dir / spec.name).iterdir()) == ["best.pt", "last.pt", "log.csv", "run.json"]
    log = subprocess.run(["git", "log", "--format=%s"], cwd=parked_dir, capture_output=True, text=True).stdout
    assert "grid: smoke-init-seed0 parked at episode 3" in log

    code, plan = grid(*SMOKE, "--rungs", "init", "--seeds", "0", "--out", second, "--park", parked_dir, "--dry-run")
    assert "smoke-init-seed0  parked at episode 3 of 6" in plan
    code, text = grid(*SMOKE, "--rungs", "init", "--seeds", "0", "--out", second, "--park", parked_dir,
                      "--publish", parked_dir, "--commit")
    assert code == 0, text
    assert "grid: start smoke-init-seed0 (resumed at episode 3" in text
    assert log_rows(second / "smoke-init-seed0") == log_rows(root / "runs" / "smoke-init-seed0")
    assert summary(second)["smoke-init-seed0"]["cpu_seconds"] > 50.0          # the parked CPU time carried on
    assert not (parked_dir / spec.name).exists()                             # the parked copy is gone ...
    tracked = subprocess.run(["git", "ls-files"], cwd=parked_dir, capture_output=True, text=True).stdout.split()
    assert not any(t.startswith(spec.name + "/") for t in tracked)           # ... from git too
    assert "smoke-init-seed0.log.csv" in tracked and "smoke-init-seed0.run.json" in tracked


@pytest.mark.slow
def test_finished_runs_are_evaluated_and_a_seed_1_checkpoint_waits_parked_until_then(tmp_path, monkeypatch):
    """--evaluate: each finished run is evaluated by ladder_seeds into DIR/NAME.json, committed. Seed
    1 ships no checkpoint, so its best.pt waits in --park until its evaluation has ended: a session
    whose evaluation fails (or stops) leaves it there, committed, and the next session, with an empty
    --out, restores it and evaluates it without training again; then the parked copy goes."""
    store = tmp_path / "store"
    for sub in ("pub", "park", "res"):
        (store / sub).mkdir(parents=True)
    for cmd in (["init", "-q"], ["config", "user.name", "grid test"], ["config", "user.email", "grid@test"],
                ["config", "commit.gpgsign", "false"]):
        subprocess.run(["git", *cmd], cwd=store, check=True)
    common = [*SMOKE, "--rungs", "init", "--seeds", "0", "1", "--publish", store / "pub", "--park", store / "park",
              "--evaluate", store / "res", "--eval-episodes", "3", "--commit"]

    def tracked() -> list[str]:
        return subprocess.run(["git", "ls-files"], cwd=store, capture_output=True, text=True).stdout.split()

    with monkeypatch.context() as m:          # session 1: every evaluation fails
        m.setattr(grid_tool.Grid, "evaluate_command",
                  lambda self, spec: [sys.executable, "-c", "raise SystemExit(3)"])
        code, text = grid(*common, "--out", tmp_path / "s1")
    assert code == 1 and text.count("grid: evaluate ") == 2 and "failed (exit code 3)" in text, text
    assert sorted(p.name for p in (store / "park" / "smoke-init-seed1").iterdir()) == ["best.pt", "log.csv", "run.json"]
    assert not (store / "park" / "smoke-init-seed0").exists()               # seed 0's best.pt is published
    assert "park/smoke-init-seed1/best.pt" in tracked() and not list((store / "res").iterdir())
    sha1 = grid_tool.file_sha256(tmp_path / "s1" / "smoke-init-seed1" / "best.pt")

    code, text = grid(*common, "--out", tmp_path / "s2")                     # session 2: a new machine
    assert code == 0, text
    assert "grid: start" not in text and text.count("grid: evaluated smoke-init-seed") == 2, text
    for seed, sha in ((0, grid_tool.file_sha256(store / "pub" / "smoke-init-seed0.pt")), (1, sha1)):
        record = json.loads((store / "res" / f"smoke-init-seed{seed}.json").read_text())
        assert record["checkpoint_sha256"] == sha and len(record["test_sets"]["glyphs"]["accuracies"]) == 3
        assert f"res/smoke-init-seed{seed}.json" in tracked()
    assert not (store / "park" / "smoke-init-seed1").exists()
    assert not any(t.startswith("park/") for t in tracked())
    code, text = grid(*common, "--out", tmp_path / "s2")                     # nothing left to do
    assert code == 0 and "grid: evaluate" not in text and "grid: start" not in text, text
