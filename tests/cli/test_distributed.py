"""Data-parallel meta-training (torchrun, gloo on CPU) equals one process with a bigger meta-batch."""
import pytest
import os
import subprocess
import sys
from pathlib import Path

import torch

from metalstm.checkpoint import load_checkpoint
from metalstm.config import get_config
from metalstm.model import build_model

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def run(args, **env):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def meta_params(run_dir):
    return load_checkpoint(Path(run_dir) / "last.pt")[0]["metalearner"]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_meta_batch_two_and_resume(tmp_path):
    common = ["-m", "metalstm.train", "--config", "smoke", "--threads", "1"]
    run([sys.executable, *common, "--meta-batch", "2", "--out", str(tmp_path / "one")])
    two = ["--nproc_per_node=2", "--master_port=29517", *common, "--meta-batch", "1"]
    # interrupted after 4 episodes, then resumed to the end
    run([str(TORCHRUN), *two, "--episodes", "4", "--out", str(tmp_path / "two")])
    assert load_checkpoint(tmp_path / "two" / "last.pt")[2]["episode"] == 4
    run([str(TORCHRUN), *two, "--resume", "--out", str(tmp_path / "two")])
    a, b = meta_params(tmp_path / "one"), meta_params(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # and the meta-parameters really moved: the comparison is not between two untouched inits
    _, untrained = build_model(get_config("smoke"))
    assert not torch.equal(untrained.c0.detach(), b["c0"])
    ha = load_checkpoint(tmp_path / "one" / "last.pt")[2]["history"]
    hb = load_checkpoint(tmp_path / "two" / "last.pt")[2]["history"]
    assert [r["episode"] for r in ha] == [r["episode"] for r in hb] == [0, 4, 6]   # 0: the untrained rule
    for ra, rb in zip(ha, hb):
        assert abs(ra["val_acc"] - rb["val_acc"]) < 1e-6
