"""Meta-training: runs end to end, resumes exactly, stops cleanly on bad numbers."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metalstm import evaluate, runs, train as train_mod
from metalstm.checkpoint import CheckpointError, load_checkpoint
from metalstm.config import get_config
from metalstm.train import NonFiniteError, train
from metalstm.model import load_trained

SMOKE = get_config("smoke")


def params(path):
    return load_checkpoint(path)[0]["metalearner"]


@pytest.mark.slow
def test_smoke_run_writes_checkpoints_and_learning_curves(tmp_path):
    res = train(SMOKE, tmp_path, progress=False)
    assert res.episodes_done == SMOKE.episodes
    assert {"best.pt", "last.pt", "log.csv"} <= {p.name for p in tmp_path.iterdir()}
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["episode"]) for r in rows] == [0, 3, 6]          # 0: the untrained rule
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 for r in rows)
    assert res.best_val_acc == max(float(r["val_acc"]) for r in rows)


@pytest.mark.slow
def test_training_changes_the_meta_parameters(tmp_path):
    learner, meta0 = train_mod.build_model(SMOKE)
    train(SMOKE, tmp_path, progress=False)
    after = params(tmp_path / "last.pt")
    changed = [k for k, v in meta0.state_dict().items() if not torch.equal(v, after[k])]
    assert "c0" in changed and len(changed) >= 3  # c_0 and LSTM weights were all updated


@pytest.mark.slow
def test_interrupt_and_resume_gives_the_same_numbers(tmp_path):
    train(SMOKE, tmp_path / "straight", progress=False)
    train(SMOKE, tmp_path / "resumed", stop_after=4, progress=False)   # stopped between validations
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")[2]["episode"] == 4
    train(SMOKE, tmp_path / "resumed", resume=True, progress=False)
    a, b = params(tmp_path / "straight" / "last.pt"), params(tmp_path / "resumed" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = load_checkpoint(tmp_path / "straight" / "last.pt")[2]["history"]
    hb = load_checkpoint(tmp_path / "resumed" / "last.pt")[2]["history"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(ha) == strip(hb)


@pytest.mark.slow
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    good = (tmp_path / "last.pt").read_bytes()
    real = train_mod.run_episode

    def poisoned(*args, **kwargs):
        res = real(*args, **kwargs)
        res.query_loss = res.query_loss * float("nan")
        return res

    monkeypatch.setattr(train_mod, "run_episode", poisoned)
    with pytest.raises(NonFiniteError, match="episode 3.*last good checkpoint"):
        train(SMOKE, tmp_path, resume=True, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == good


@pytest.mark.slow
def test_existing_run_is_never_overwritten_without_resume(tmp_path):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    before = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(SMOKE, tmp_path, progress=False)
    assert (tmp_path / "best.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_with_another_configuration_is_refused(tmp_path):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="smoke"):
        train(SMOKE.replace(steps=5), tmp_path, resume=True, progress=False)


@pytest.mark.slow
def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="does not fit configuration 'paper-5shot'"):
        load_trained(tmp_path / "best.pt", expect=get_config("paper-5shot"))


def test_cli_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert train_mod.main(["--config", "paper-3shot", "--out", str(tmp_path)]) == 2
    assert "unknown configuration 'paper-3shot'" in capsys.readouterr().err
    assert train_mod.main(["--config", "paper-5shot", "--out", str(tmp_path),
                           "--data-root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_impossible_episode_shape_for_the_data_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="21 images per class"):
        train(SMOKE.replace(k_shot=6, n_query=15), tmp_path, progress=False)


@pytest.mark.slow
def test_evaluate_cli_prints_a_table_with_an_interval(tmp_path, capsys):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    assert evaluate.main(["--checkpoint", str(tmp_path / "best.pt"), "--episodes", "5"]) == 0
    out = capsys.readouterr().out
    assert "| Meta-Learner LSTM |" in out and "+-" in out and "5 meta-test episodes" in out


@pytest.mark.slow
def test_a_warm_start_begins_from_the_given_meta_learner(tmp_path):
    train(SMOKE, tmp_path / "first", progress=False)
    start = params(tmp_path / "first" / "last.pt")
    frozen = SMOKE.replace(lr=0.0, episodes=2, val_every=2)     # Adam at lr 0 moves nothing
    train(frozen, tmp_path / "warm", init_state=start, progress=False)
    warm = params(tmp_path / "warm" / "last.pt")
    assert all(torch.equal(start[k], warm[k]) for k in start)
    train(frozen, tmp_path / "cold", progress=False)
    assert not torch.equal(params(tmp_path / "cold" / "last.pt")["c0"], start["c0"])


@pytest.mark.slow
def test_train_cli_warm_start_and_learning_rate(tmp_path, capsys):
    train(SMOKE, tmp_path / "first", progress=False)
    args = ["--config", "smoke", "--episodes", "2", "--val-every", "2", "--lr", "0"]
    assert train_mod.main(args + ["--out", str(tmp_path / "warm"),
                                  "--init-from", str(tmp_path / "first" / "best.pt")]) == 0
    best = load_checkpoint(tmp_path / "first" / "best.pt")[0]["metalearner"]
    warm = params(tmp_path / "warm" / "last.pt")
    assert torch.equal(best["c0"], warm["c0"])
    assert load_checkpoint(tmp_path / "warm" / "last.pt")[1]["lr"] == 0.0
    capsys.readouterr()
    assert train_mod.main(args + ["--out", str(tmp_path / "bad"),
                                  "--init-from", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


# -- the meta-update groups -------------------------------------------
def grads_at_each_step(monkeypatch):
    """The gradients Adam is given at every step, in order (clipping off: clip=inf)."""
    seen = []
    real = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        seen.append([p.grad.clone() for group in self.param_groups for p in group["params"]])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return seen


@pytest.mark.slow
def test_a_partial_meta_batch_is_averaged_over_its_own_episodes(tmp_path, monkeypatch):
    """One episode in a meta-batch of 2 gives the meta-gradient of that episode, not half of it."""
    seen = grads_at_each_step(monkeypatch)
    cfg = SMOKE.replace(episodes=1, val_every=1, clip=float("inf"))
    train(cfg.replace(meta_batch=2), tmp_path / "partial", progress=False)
    train(cfg, tmp_path / "single", progress=False)
    assert len(seen) == 2
    for a, b in zip(*seen):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def same_files(a, b):
    """Two run folders hold the same last.pt (tensors, optimiser, place), best.pt and log.csv."""
    sa, _, ma = load_checkpoint(a / "last.pt")
    sb, _, mb = load_checkpoint(b / "last.pt")
    for k in sa["metalearner"]:
        assert torch.equal(sa["metalearner"][k], sb["metalearner"][k]), k
    assert str(sa["optimizer"]) == str(sb["optimizer"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(ma.pop("history")) == strip(mb.pop("history"))
    assert ma == mb
    ba, _, bma = load_checkpoint(a / "best.pt")
    bb, _, bmb = load_checkpoint(b / "best.pt")
    assert bma == bmb and all(torch.equal(ba["metalearner"][k], bb["metalearner"][k]) for k in ba["metalearner"])
    rows = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(p / "log.csv"))]
    assert rows(a) == rows(b)


@pytest.mark.slow
def test_a_stop_inside_a_meta_batch_resumes_to_the_uninterrupted_run(tmp_path):
    cfg = SMOKE.replace(meta_batch=2)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", stop_after=3, progress=False)    # 3: inside the update of 2-3
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    same_files(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_a_run_that_ended_inside_a_meta_batch_is_not_extended(tmp_path):
    train(SMOKE.replace(meta_batch=2, episodes=3), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="inside the meta-update of episodes 2-3.*--init-from"):
        train(SMOKE.replace(meta_batch=2), tmp_path, resume=True, progress=False)


# -- nothing is ever lost ------------------------------------------
def finite(path):
    payload = torch.load(path, weights_only=True)
    tensors = [t for part in payload["state"].values() if isinstance(part, dict)
               for t in part.values() if torch.is_tensor(t)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def test_a_non_finite_update_writes_no_checkpoint_and_names_an_existing_one(tmp_path, monkeypatch):
    real = torch.optim.Adam.step

    def diverging(self, *args, **kwargs):           # as `--lr inf` did: the step leaves NaN behind
        out = real(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", diverging)
    with pytest.raises(NonFiniteError) as info:
        train(SMOKE.replace(val_every=1), tmp_path, progress=False)
    assert "episode 0" in str(info.value)
    checkpoints = sorted(tmp_path.glob("*.pt"))
    assert [p.name for p in checkpoints] == ["best.pt", "last.pt"]     # of episode 0, the untrained rule
    assert all(finite(p) for p in checkpoints)
    named = str(info.value).split("last good checkpoint is ")[1].split(" ")[0]
    assert Path(named).is_file() and load_checkpoint(named)[2]["episode"] == 0


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_with_nan(tmp_path, capsys):
    from metalstm.checkpoint import checksum

    train(SMOKE.replace(episodes=1, val_every=1), tmp_path, progress=False)
    payload = torch.load(tmp_path / "best.pt", weights_only=True)
    payload["state"]["metalearner"]["c0"][5] = float("nan")
    meta = json.loads(payload["meta_json"])
    payload["sha256"] = checksum(payload["state"], meta)      # a consistent file, as a diverged run wrote it
    torch.save(payload, tmp_path / "nan.pt")
    assert evaluate.main(["--checkpoint", str(tmp_path / "nan.pt"), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and len(err.strip().splitlines()) == 1


def interrupt_on_call(monkeypatch, module, name, when):
    """Make module.<name> raise KeyboardInterrupt (once) at the first call n (1-based) with
    when(n, args) true, as a Ctrl-C inside it would."""
    real, calls, fired = getattr(module, name), [], []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if not fired and when(len(calls), args):
            fired.append(True)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.slow
def test_ctrl_c_during_validation_then_resume_gives_the_uninterrupted_files(tmp_path, monkeypatch):
    train(SMOKE, tmp_path / "straight", progress=False)
    with monkeypatch.context() as m:
        interrupt_on_call(m, train_mod, "evaluate_rule", lambda n, args: n == 2)       # the validation at episode 3
        with pytest.raises(KeyboardInterrupt):
            train(SMOKE, tmp_path / "resumed", progress=False)
    train(SMOKE, tmp_path / "resumed", resume=True, progress=False)
    same_files(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_ctrl_c_while_best_pt_is_written_then_resume_gives_the_uninterrupted_files(tmp_path, monkeypatch):
    train(SMOKE, tmp_path / "straight", progress=False)
    with monkeypatch.context() as m:
        interrupt_on_call(m, runs, "save_checkpoint", lambda n, args: Path(args[0]).name == "best.pt")
        with pytest.raises(KeyboardInterrupt):
            train(SMOKE, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "best.pt").exists()
    train(SMOKE, tmp_path / "resumed", resume=True, progress=False)
    same_files(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_ctrl_c_right_after_an_optimiser_step_then_resume_gives_the_uninterrupted_files(tmp_path, monkeypatch):
    train(SMOKE, tmp_path / "straight", progress=False)
    real, steps = torch.optim.Adam.step, []

    def step(self, *args, **kwargs):                # SIGINT arrives just after the 2nd step
        out = real(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    with monkeypatch.context() as m:
        m.setattr(torch.optim.Adam, "step", step)
        with pytest.raises(KeyboardInterrupt):
            train(SMOKE, tmp_path / "resumed", progress=False)
    train(SMOKE, tmp_path / "resumed", resume=True, progress=False)
    same_files(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_two_runs_cannot_share_a_folder_and_a_killed_run_frees_it(tmp_path):
    out, same = tmp_path / "run", SMOKE.replace(episodes=100000, val_every=2)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "metalstm.train", "--config", "smoke", "--threads", "1",
                              "--episodes", "100000", "--val-every", "2", "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / "last.pt").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        with pytest.raises(OSError, match=f"in use by another run \\(pid {child.pid}\\)"):
            train(same, out, resume=True, stop_after=2, progress=False)
    finally:
        child.kill()
        child.wait()
    train(same, out, resume=True, stop_after=2, progress=False)        # the killed run left it free


def test_an_unwritable_out_is_found_before_any_episode(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")

    def no_episodes(*args, **kwargs):
        raise AssertionError("an episode ran before the folder was checked")

    monkeypatch.setattr(train_mod, "run_episode", no_episodes)
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(OSError):
            train(SMOKE, out, progress=False)
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real(obj, open("/dev/full", "wb")))   # ENOSPC
    assert train_mod.main(["--config", "smoke", "--threads", "1", "--out", str(tmp_path), "--resume", "-q"]) == 2
    err = capsys.readouterr().err                   # -q: no progress lines, only the error
    assert len(err.strip().splitlines()) == 1 and "could not write" in err and "unchanged" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.slow
def test_stale_temporary_files_of_a_killed_save_are_removed(tmp_path):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    stale = [tmp_path / ".last.pt.k1ll3d.tmp", tmp_path / ".best.pt.x8y2.tmp"]
    for p in stale:
        p.write_bytes(b"PK\x03\x04 half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")
    train(SMOKE, tmp_path, resume=True, progress=False)
    assert not any(p.exists() for p in stale)
    assert (tmp_path / "notes.tmp").read_text() == "not ours"


@pytest.mark.slow
def test_resuming_a_two_process_run_with_one_process_is_refused_with_the_command(tmp_path):
    from metalstm.checkpoint import save_checkpoint

    train(SMOKE.replace(episodes=4), tmp_path, progress=False)
    state, cfg, metrics = load_checkpoint(tmp_path / "last.pt")
    save_checkpoint(tmp_path / "last.pt", state, cfg, {**metrics, "processes": 2})   # as torchrun wrote it
    with pytest.raises(CheckpointError, match=f"2 process.*`torchrun --nproc_per_node=2 -m metalstm.train "
                                              f"--config smoke --out {tmp_path} --resume`"):
        train(SMOKE, tmp_path, resume=True, progress=False)


@pytest.mark.slow
def test_sigterm_saves_the_place_like_ctrl_c_and_resume_gives_the_uninterrupted_files(tmp_path, monkeypatch, capsys):
    train(SMOKE, tmp_path / "straight", progress=False)
    real, calls = train_mod.run_episode, []

    def terminated(*args, **kwargs):               # SIGTERM (a scheduler, torchrun) during episode 4
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    class Killed(Exception):
        pass

    def unhandled(signum, frame):                   # what the default action (death) would be here
        raise Killed

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with monkeypatch.context() as m:
            m.setattr(train_mod, "run_episode", terminated)
            code = train_mod.main(["--config", "smoke", "--threads", "1", "--out", str(tmp_path / "resumed"), "-q"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143
    err = capsys.readouterr().err.strip()
    assert "stopped by SIGTERM" in err and "--resume`" in err and len(err.splitlines()) == 1
    train(SMOKE, tmp_path / "resumed", resume=True, progress=False)
    same_files(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_a_torchrun_survivor_says_which_rank_failed_and_that_last_pt_is_intact(tmp_path, monkeypatch, capsys):
    from metalstm.checkpoint import save_checkpoint
    from metalstm.distributed import World

    train(SMOKE.replace(episodes=4), tmp_path, progress=False)
    state, cfg, metrics = load_checkpoint(tmp_path / "last.pt")
    save_checkpoint(tmp_path / "last.pt", state, cfg, {**metrics, "processes": 2})
    before = (tmp_path / "last.pt").read_bytes()

    class PeerDied(World):                          # rank 0 of 2, whose peer is gone (gloo's error)
        def all_reduce_(self, t):
            raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                               "[127.0.0.1]:29500")

    monkeypatch.setattr(runs, "init_from_env", lambda device: PeerDied(0, 2))
    code = train_mod.main(["--config", "smoke", "--threads", "1", "--out", str(tmp_path), "--resume", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("error (rank 0): rank 1 of this 2-process run stopped")
    assert f"{tmp_path / 'last.pt'} (episode 4) is intact" in err
    assert "`torchrun --nproc_per_node=2 -m metalstm.train --config smoke --out" in err
    assert (tmp_path / "last.pt").read_bytes() == before


def test_train_py_is_the_algorithm_and_the_run_machinery_lives_beside_it():
    """metalstm/train.py reads top to bottom as the algorithm (notebook 05): the loop, the
    meta-gradient, the meta-step, the validation; signals, locks, files and the command line
    are metalstm.runs."""
    import ast
    import inspect

    source = inspect.getsource(train_mod)
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"signal", "threading", "argparse", "csv", "io", "copy", "contextlib"}
    assert "hold_folder" not in source and "save_checkpoint" not in source and "print(" not in source
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert {"meta_gradient", "meta_step", "validate", "train"} <= set(defined)
    assert len(source.splitlines()) < 250
    assert train_mod.main.__module__ == "metalstm.train" and callable(runs.main)
