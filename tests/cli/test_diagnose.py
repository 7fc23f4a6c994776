"""metalstm.tools.diagnose: the measurements of where the meta-learner loses, on the smoke configuration."""
import json

import pytest
import torch

from metalstm.tools import diagnose as dg
from metalstm.baselines.pretrain import pretrain
from metalstm.config import get_config
from metalstm.learner import Learner
from metalstm.evaluate import evaluate_rule
from metalstm.episodes import load_split, sampler_for
from metalstm.train import train

SMOKE = get_config("smoke")


@pytest.fixture(scope="module")
def pre():
    """A pre-trained baseline network; 0 epochs (its random init) is enough to test the plumbing."""
    return pretrain(load_split(SMOKE, "train"), epochs=0, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    train(SMOKE, out, progress=False)
    return out / "best.pt"


def test_meta_train_rows_use_episodes_the_training_never_drew():
    assert dg.split_episodes(SMOKE, "train", 4) == range(SMOKE.episodes, SMOKE.episodes + 4)
    assert dg.split_episodes(SMOKE, "val", 4) == range(4) == dg.split_episodes(SMOKE, "test", 4)


def test_c0_from_pretrained_keeps_the_conv_stack_and_zeroes_the_head(pre):
    c0 = dg.c0_from_pretrained(pre, SMOKE.n_way)
    parts = Learner(n_way=SMOKE.n_way).unflatten(c0)
    old = pre.learner.unflatten(pre.theta)
    assert all(torch.equal(p, old[k]) for k, p in parts.items() if not k.startswith("fc."))
    assert all(not p.any() for k, p in parts.items() if k.startswith("fc."))
    learner, meta = dg.rule_with_c0(SMOKE, c0)
    assert torch.equal(meta.c0.detach(), c0)


@pytest.mark.slow
def test_query_batch_norm_protocol_is_checked(checkpoint):
    from metalstm.model import load_trained
    learner, meta, cfg, _ = load_trained(checkpoint)
    with pytest.raises(ValueError, match="query_bn"):
        evaluate_rule(learner, meta, sampler_for(cfg, "val"), 1, cfg, query_bn="train")


@pytest.mark.slow
def test_diagnose_measures_every_row(checkpoint, pre, tmp_path):
    rows = dg.diagnose(checkpoint, episodes=3, pre=pre, train_episodes=2, pretrained_lr_factor=0.5,
                       out=tmp_path, progress=False)
    assert [r.split for r in rows[:3]] == ["train", "val", "test"]
    assert [r.group for r in rows] == (["generalisation"] * 3 + ["batch norm"] + ["features"] * 2
                                       + ["meta-training"] * 6)
    assert all(0.0 <= r.mean <= 1.0 and r.n == 3 for r in rows)
    assert "lr 0.0001:" in rows[6].name and "lr 0.0005:" in rows[9].name    # SMOKE.lr x 0.1 and x 0.5
    assert (tmp_path / "lower-lr" / "last.pt").is_file() and (tmp_path / "from-pretrained" / "last.pt").is_file()
    with pytest.raises(FileExistsError, match="another --out"):     # never over an earlier run
        dg.diagnose(checkpoint, episodes=2, pre=pre, train_episodes=2, out=tmp_path, progress=False)
    text = dg.table(rows)
    assert text.count("\n") == len(rows) + 1 and "meta-train" in text


@pytest.mark.slow
def test_diagnose_cli_writes_json_and_refuses_bad_input(checkpoint, tmp_path, capsys, monkeypatch, pre):
    monkeypatch.setattr(dg, "pretrained_for", lambda *a, **k: pre)
    out = tmp_path / "d.json"
    assert dg.main(["--checkpoint", str(checkpoint), "--episodes", "2", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 6 and saved["episodes"] == 2
    assert "| generalisation |" in capsys.readouterr().out
    assert dg.main(["--checkpoint", str(checkpoint), "--episodes", "1"]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert dg.main(["--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error:") for line in err)
