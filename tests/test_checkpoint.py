import pytest
import torch

from metalstm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def state():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "nested": {"b": torch.arange(5)}}


def test_round_trip_keeps_tensors_config_and_metrics(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", state(), {"name": "smoke"}, {"acc": 0.5})
    s, cfg, metrics = load_checkpoint(p)
    assert torch.equal(s["w"], state()["w"]) and torch.equal(s["nested"]["b"], torch.arange(5))
    assert cfg == {"name": "smoke"} and metrics == {"acc": 0.5}
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left behind


def test_a_damaged_file_gives_one_clear_error(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", state(), {"name": "smoke"})
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="a.pt"):
        load_checkpoint(p)


def test_changed_tensor_values_fail_the_checksum(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", state(), {"name": "smoke"})
    payload = torch.load(p, weights_only=True)
    payload["state"]["w"][0, 0] += 1.0
    torch.save(payload, p)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(p)


def test_truncated_and_missing_files(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", state(), {})
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_failed_save_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "a.pt", state(), {"v": 1})
    before = p.read_bytes()

    def disk_full(obj, f):  # writes half a file, then fails, as a full disk would
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(p, state(), {"v": 2})
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert load_checkpoint(p)[1] == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]


def test_a_file_that_is_no_checkpoint_gives_one_short_line(tmp_path):
    p = tmp_path / "b.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and len(message) < 300
    assert "weights_only" not in message      # torch's advice to turn the safe loader off is not ours
