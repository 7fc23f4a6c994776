"""Meta-training: runs end to end, resumes exactly, stops cleanly on bad numbers."""
import csv

import pytest
import torch

from metalstm import evaluate, train as train_mod
from metalstm.checkpoint import CheckpointError, load_checkpoint
from metalstm.config import get_config
from metalstm.train import NonFiniteError, load_trained, train

SMOKE = get_config("smoke")


def params(path):
    return load_checkpoint(path)[0]["metalearner"]


def test_smoke_run_writes_checkpoints_and_learning_curves(tmp_path):
    res = train(SMOKE, tmp_path, progress=False)
    assert res.episodes_done == SMOKE.episodes
    assert {"best.pt", "last.pt", "log.csv"} <= {p.name for p in tmp_path.iterdir()}
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["episode"]) for r in rows] == [3, 6]
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 for r in rows)
    assert res.best_val_acc == max(float(r["val_acc"]) for r in rows)


def test_training_changes_the_meta_parameters(tmp_path):
    learner, meta0 = train_mod.build_model(SMOKE)
    train(SMOKE, tmp_path, progress=False)
    after = params(tmp_path / "last.pt")
    changed = [k for k, v in meta0.state_dict().items() if not torch.equal(v, after[k])]
    assert "c0" in changed and len(changed) >= 3  # c_0 and LSTM weights were all updated


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


def test_existing_run_is_never_overwritten_without_resume(tmp_path):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    before = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(SMOKE, tmp_path, progress=False)
    assert (tmp_path / "best.pt").read_bytes() == before


def test_resume_with_another_configuration_is_refused(tmp_path):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="smoke"):
        train(SMOKE.replace(steps=5), tmp_path, resume=True, progress=False)


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


def test_evaluate_cli_prints_a_table_with_an_interval(tmp_path, capsys):
    train(SMOKE.replace(episodes=3), tmp_path, progress=False)
    assert evaluate.main(["--checkpoint", str(tmp_path / "best.pt"), "--episodes", "5"]) == 0
    out = capsys.readouterr().out
    assert "| Meta-Learner LSTM |" in out and "+-" in out and "5 meta-test episodes" in out


def test_a_warm_start_begins_from_the_given_meta_learner(tmp_path):
    train(SMOKE, tmp_path / "first", progress=False)
    start = params(tmp_path / "first" / "last.pt")
    frozen = SMOKE.replace(lr=0.0, episodes=2, val_every=2)     # Adam at lr 0 moves nothing
    train(frozen, tmp_path / "warm", init_state=start, progress=False)
    warm = params(tmp_path / "warm" / "last.pt")
    assert all(torch.equal(start[k], warm[k]) for k in start)
    train(frozen, tmp_path / "cold", progress=False)
    assert not torch.equal(params(tmp_path / "cold" / "last.pt")["c0"], start["c0"])


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
