"""The checkpoints that ship in git stay small: every file of data/checkpoints/grid/ and
data/checkpoints/ladder/ is under 150 KB unless the rule's learned numbers alone need more
(Meta-SGD: c_0 and one step size per coordinate, 2 x 28,869 float32 = 225 KB), and every shipped
.pt holds its tensors only: no optimiser state (Adam's moments would double a file), and, for a
trained rule, exactly the state_dict that the rule's model has (nothing recomputable, such as
the schedule rung's layer of each coordinate). A schedule checkpoint written before layer_of
left the state still loads, to the same rule."""
from pathlib import Path

import pytest
import torch

from metalstm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalstm.config import Config, get_config
from metalstm.model import build_model, load_trained

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "data" / "checkpoints"
SMALL = ("grid", "ladder")
LIMIT = 150_000
OVERHEAD = 16_000            # torch's zip container, the JSON config and metrics
OPTIMISER_WORDS = ("optim", "exp_avg", "exp_avg_sq", "param_groups", "momentum_buffer")


def small_files() -> list[Path]:
    return sorted(p for folder in SMALL for p in (CHECKPOINTS / folder).iterdir() if p.is_file())


def shipped_checkpoints() -> list[Path]:
    return sorted(CHECKPOINTS.rglob("*.pt"))


def _keys(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}/{k}"
            yield from _keys(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _keys(v, f"{prefix}/{i}")


def learned_bytes(path: Path) -> int:
    """The bytes of the tensors that the checkpoint's rule must carry (its state_dict)."""
    _, config, _ = load_checkpoint(path)
    _, rule = build_model(Config.from_dict(config))
    return sum(t.numel() * t.element_size() for t in rule.state_dict().values())


def test_there_are_shipped_checkpoints_to_check():
    assert len([p for p in small_files() if p.suffix == ".pt"]) >= 12 and len(shipped_checkpoints()) >= 15


@pytest.mark.parametrize("path", small_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_grid_and_ladder_file_is_small(path):
    size = path.stat().st_size
    if path.suffix != ".pt" or learned_bytes(path) + OVERHEAD <= LIMIT:
        assert size < LIMIT, f"{path} is {size / 1e3:.0f} KB (limit {LIMIT / 1e3:.0f} KB)"
    else:                    # Meta-SGD: its learned numbers alone are over the limit; nothing more
        assert size <= learned_bytes(path) + OVERHEAD, f"{path} holds more than its learned tensors"


@pytest.mark.parametrize("path", shipped_checkpoints(), ids=lambda p: str(p.relative_to(CHECKPOINTS)))
def test_a_shipped_checkpoint_holds_no_optimiser_state(path):
    state, config, metrics = load_checkpoint(path)
    bad = [k for k in _keys(state) if any(w in k.lower() for w in OPTIMISER_WORDS)]
    assert not bad, f"{path} holds optimiser state: {bad[:3]}"
    if "metalearner" in state:          # a trained rule: exactly its model's state_dict, nothing else
        assert list(state) == ["metalearner"]
        _, rule = build_model(Config.from_dict(config))
        assert sorted(state["metalearner"]) == sorted(rule.state_dict()), path


def test_an_older_schedule_checkpoint_with_layer_of_loads_to_the_same_rule(tmp_path):
    cfg = get_config("smoke", rule="schedule")
    _, rule = build_model(cfg)
    with torch.no_grad():
        rule.alpha.copy_(torch.rand_like(rule.alpha, generator=torch.Generator().manual_seed(0)))
    assert "layer_of" not in rule.state_dict()                       # not saved any more
    new, old, wrong = tmp_path / "new.pt", tmp_path / "old.pt", tmp_path / "wrong.pt"
    save_checkpoint(new, {"metalearner": rule.state_dict()}, cfg.to_dict())
    save_checkpoint(old, {"metalearner": {**rule.state_dict(), "layer_of": rule.layer_of.clone()}}, cfg.to_dict())
    assert old.stat().st_size > new.stat().st_size
    a, b = load_trained(new)[1], load_trained(old)[1]
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name])
    assert torch.equal(a.layer_of, b.layer_of)
    save_checkpoint(wrong, {"metalearner": {**rule.state_dict(), "layer_of": rule.layer_of.flip(0)}},
                    cfg.to_dict())
    with pytest.raises(CheckpointError, match="layer_of"):
        load_trained(wrong)
