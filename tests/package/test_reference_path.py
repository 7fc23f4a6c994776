"""The readable path is one switch away: Config.path="reference" (`--path reference` on train and
evaluate) runs MetaLearner.reference_step and plain pooling instead of the fused step and the
channels-last pooling, with the same numbers to rounding; old checkpoints (no field, or the older
`fast`) load as "fused" or "reference"."""
import json

import pytest
import torch

import metalstm.fast.fused as fused_mod
import metalstm.learner as learner_mod
import metalstm.metalearner as ml
from metalstm import evaluate, train as train_mod
from metalstm.checkpoint import load_checkpoint
from metalstm.config import Config, get_config
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner
from metalstm.train import train
from metalstm.paths import shipped_checkpoint

SMOKE = get_config("smoke")


@pytest.fixture
def calls(monkeypatch):
    """How often the fast path's two pieces ran: the fused step and the channels-last pooling."""
    count = {"fused_step": 0, "relu_max_pool": 0}
    for module, name in ((fused_mod, "fused_step"), (learner_mod, "relu_max_pool")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            count[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return count


def test_old_checkpoints_without_the_field_load_as_the_fused_path():
    saved = load_checkpoint(shipped_checkpoint("glyphs-5shot"))[1]
    assert "fast" not in saved and "path" not in saved     # shipped before the switch existed
    assert Config.from_dict(saved).path == "fused"
    readable = SMOKE.replace(path="reference")
    assert readable.to_dict()["path"] == "reference"
    assert Config.from_dict(json.loads(json.dumps(readable.to_dict()))).path == "reference"


@pytest.mark.parametrize("fast, path", [(True, "fused"), (False, "reference")])
def test_configurations_with_the_older_fast_field_load_as_its_path(fast, path):
    """Checkpoints and results written while the switch was `fast: bool`."""
    old = {k: v for k, v in SMOKE.to_dict().items() if k != "path"} | {"fast": fast}
    assert Config.from_dict(old).path == path
    with pytest.raises(ValueError, match="fast must be true or false"):
        Config.from_dict(old | {"fast": "yes"})
    with pytest.raises(ValueError, match="path must be one of reference, fused, native, got 'fast'"):
        Config.from_dict(SMOKE.to_dict() | {"path": "fast"})


@pytest.mark.parametrize("flag", [[], ["--path", "reference"]])
def test_train_cli_switch_reaches_the_model(tmp_path, capsys, calls, flag):
    out = tmp_path / "run"
    assert train_mod.main(["--config", "smoke", "--episodes", "2", "--val-every", "2", "--val-episodes", "1",
                           "--out", str(out), "--threads", "1", *flag]) == 0
    assert load_checkpoint(out / "last.pt")[1]["path"] == ("reference" if flag else "fused")
    if flag:
        assert calls == {"fused_step": 0, "relu_max_pool": 0}
    else:
        assert calls["fused_step"] > 0 and calls["relu_max_pool"] > 0


@pytest.mark.slow
def test_evaluate_cli_reference_gives_the_same_accuracy(tmp_path, capsys, calls):
    results = {}
    for flag in ([], ["--path", "reference"]):
        out = tmp_path / f"eval{len(flag)}.json"
        before = dict(calls)
        assert evaluate.main(["--checkpoint", str(shipped_checkpoint("glyphs-1shot")), "--episodes", "4",
                              "--threads", "1", "--json", str(out), *flag]) == 0
        used = {k: calls[k] - before[k] for k in calls}
        assert (used == {"fused_step": 0, "relu_max_pool": 0}) == bool(flag), used
        results[bool(flag)] = json.loads(out.read_text())
    assert results[True]["config"]["path"] == "reference" and results[False]["config"]["path"] == "fused"
    fast, ref = (meta_learner_row(results[k]) for k in (False, True))
    assert abs(fast["mean"] - ref["mean"]) <= 1 / 300 + 1e-9   # 4 episodes of 75 queries: <= 1 differs


def meta_learner_row(report: dict) -> dict:
    """The meta-learner's result in evaluate's JSON (one table, or one per test set)."""
    tables = [report] if "results" in report else list(report["test_sets"].values())
    return next(r for r in tables[0]["results"] if r["name"] == "Meta-Learner LSTM")


@pytest.mark.slow
def test_reference_path_resumes_exactly(tmp_path, calls):
    cfg = SMOKE.replace(path="reference")
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", stop_after=4, progress=False)
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / run / "last.pt")[0]["metalearner"] for run in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert calls == {"fused_step": 0, "relu_max_pool": 0}


def meta_gradient(path: str):
    """One meta-training episode on `path`: (query loss, meta-gradient by parameter name)."""
    from testkit import random_episode

    learner = Learner(5, 1, 28, path=path)
    g = torch.Generator().manual_seed(0)
    meta = MetaLearner(learner.n_params, theta0=learner.init_params(g), generator=g, path=path)
    result = ml.run_episode(learner, meta, random_episode(), steps=4, batch_size=25,
                            generator=torch.Generator().manual_seed(1))
    result.query_loss.backward()
    return result.query_loss.item(), {k: p.grad for k, p in meta.named_parameters()}


@pytest.fixture(scope="module")
def reference_meta_gradient():
    return meta_gradient("reference")


def test_every_path_gives_the_reference_meta_gradient(path, reference_meta_gradient):
    """One meta-training episode on each path: the same query loss and meta-gradient, to rounding
    (Adam, fed these, would magnify the rounding of the near-zero coordinates: compare before it)."""
    (loss_p, got), (loss_r, ref) = meta_gradient(path), reference_meta_gradient
    assert loss_p == pytest.approx(loss_r, rel=1e-5)
    for k in got:
        assert ref[k].abs().sum() > 0, k
        # float32 rounding (the pooling is exact): within 5e-5 of the norm (b_F, a sum over all 28,485
        # coordinates, differs by 1.8e-5 of its norm on the fused path, as it did before --path existed)
        assert (got[k] - ref[k]).norm() <= 5e-5 * ref[k].norm(), k


def test_the_resume_command_names_the_path_and_resuming_may_change_it():
    """The path is how the numbers are computed, not which model (Config.path is not compared):
    the resume command repeats a --path other than the default, and configurations that differ
    in path alone are the same run."""
    from pathlib import Path

    from metalstm.runs import resume_command

    assert "--path reference" in resume_command(SMOKE.replace(path="reference"), Path("r"))
    assert "--path" not in resume_command(SMOKE, Path("r"))
    assert SMOKE.replace(path="native") == SMOKE
