import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from metalstm.checkpoint import (CheckpointError, CheckpointWriteError, FolderInUseError, checksum, hold_folder,
                                 load_checkpoint, refuse_other_kinds, remove_temporaries, save_checkpoint)


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


# -- nothing is lost: full disks, NaN, the run folder's lock --------------------
def test_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "a.pt", state(), {"v": 1})
    before = p.read_bytes()
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real(obj, open("/dev/full", "wb")))   # a real ENOSPC
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(p, state(), {"v": 2})
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "enforce fail" not in message
    assert "a.pt" in message and "disk full" in message and "previous a.pt is unchanged" in message
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]


def test_a_state_with_nan_or_infinity_is_never_written_nor_read(tmp_path):
    bad = state()
    bad["nested"]["x"] = torch.tensor([1.0, float("inf")])
    with pytest.raises(CheckpointError, match="refusing to write .*nested/x.*NaN or infinity"):
        save_checkpoint(tmp_path / "a.pt", bad, {})
    assert list(tmp_path.iterdir()) == []
    meta = {"format": "metalstm-checkpoint-1", "config": {}, "metrics": {}}
    torch.save({"meta_json": json.dumps(meta, sort_keys=True), "state": bad,   # as an older writer would
                "sha256": checksum(bad, meta)}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="b.pt holds NaN or infinity .*nested/x"):
        load_checkpoint(tmp_path / "b.pt")


HOLD = """
import sys, time
from metalstm.checkpoint import hold_folder
with hold_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_folder_is_held_by_one_process_and_freed_when_it_is_killed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=f"in use by another run \\(pid {child.pid}\\)"):
            with hold_folder(tmp_path / "run"):
                pass
    finally:
        child.kill()                                  # kill -9: no clean-up code runs
        child.wait()
        child.stdout.close()
    with hold_folder(tmp_path / "run") as folder:     # the kernel released the lock
        assert folder == tmp_path / "run"
        with pytest.raises(FolderInUseError):         # and it is exclusive within one process too
            with hold_folder(tmp_path / "run"):
                pass


def test_temporaries_of_killed_saves_are_removed_and_nothing_else(tmp_path):
    names = [".last.pt.abc.tmp", ".best.pt.x1.tmp", ".log.csv.q.tmp", "last.pt", "other.tmp", ".lock"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    gone = remove_temporaries(tmp_path, ("last.pt", "best.pt", "log.csv"))
    assert sorted(p.name for p in gone) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


def test_a_baseline_checkpoint_says_what_it_is_and_which_command_reads_it(tmp_path):
    p = save_checkpoint(tmp_path / "matching-smoke.pt", state(), {"config": "smoke"}, {"kind": "matching"})
    with pytest.raises(CheckpointError, match="Matching Network baseline.*--baselines matching --cache "
                                              + str(tmp_path)):
        refuse_other_kinds(p)
    refuse_other_kinds(save_checkpoint(tmp_path / "rule.pt", state(), {}, {"episode": 3}))   # no error


def test_a_flipped_byte_in_the_mini_imagenet_cache_is_decoded_again(tmp_path):
    from PIL import Image

    from metalstm.data import load_mini_imagenet

    root = tmp_path / "mini"
    (root / "images").mkdir(parents=True)
    lines = ["filename,label"]
    g = torch.Generator().manual_seed(0)
    for c in range(2):
        for k in range(2):
            pixels = torch.randint(0, 256, (30, 40, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy(), "RGB").save(root / "images" / f"c{c}-{k}.png")
            lines.append(f"c{c}-{k}.png,n{c}")
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    first = load_mini_imagenet(root, "test", image_size=16)
    cache = root / "cache" / "test-16.pt"
    saved = torch.load(cache, weights_only=True)
    saved["images"][1, 2, 3, 4] ^= 1                  # one flipped bit, the rest of the file intact
    torch.save(saved, cache)
    with pytest.warns(UserWarning, match="checksum"):
        again = load_mini_imagenet(root, "test", image_size=16)
    assert torch.equal(again.images, first.images)
    assert torch.equal(load_mini_imagenet(root, "test", image_size=16).images, first.images)   # rewritten


def test_a_held_folder_keeps_no_lock_file_afterwards(tmp_path):
    with hold_folder(tmp_path / "run") as folder:
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
        (folder / "best.pt").write_bytes(b"x")
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]
    (folder / ".lock").write_text("12345\n")          # left by a killed run: taken over, then removed
    with hold_folder(folder):
        pass
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]
    with hold_folder(folder):                         # refused while held; the holder's file stays
        with pytest.raises(FolderInUseError):
            with hold_folder(folder):
                pass
        assert (folder / ".lock").is_file()
    assert not (folder / ".lock").exists()


def test_a_lock_file_removed_under_a_waiting_process_is_not_trusted(tmp_path, monkeypatch):
    """The race of removing a lock file: a process that opened .lock just before its holder
    removed it must not count a lock on the removed file as holding the folder."""
    folder = tmp_path / "run"
    folder.mkdir()
    real_open, calls = os.open, []

    def open_then_lose_it(path, *args):
        fd = real_open(path, *args)
        calls.append(path)
        if len(calls) == 1:                           # the holder removes the file meanwhile
            os.unlink(path)
        return fd

    monkeypatch.setattr(os, "open", open_then_lose_it)
    with hold_folder(folder):
        assert len(calls) == 2 and (folder / ".lock").is_file()
    assert not (folder / ".lock").exists()


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_have_the_mode_a_plain_open_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = save_checkpoint(tmp_path / "a.pt", state(), {"config": "smoke"})
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    expected = 0o666 & ~mask                          # 0644 under the usual umask 022
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == expected
