"""Progress that shows in a log: the `metalstm` logger's lines when the output is a file, not a
terminal (a line per validation, one every --log-every episodes), and --quiet."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("TQDM_DISABLE", None)                 # a log file must show progress without being told


def run_to_file(tmp_path, *words) -> tuple[int, str, str]:
    """`python -m ...` with stdout and stderr redirected to files, as under nohup or a scheduler:
    (exit code, stdout, stderr)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        code = subprocess.run([sys.executable, "-m", *words], cwd=tmp_path, env=ENV, stdout=o, stderr=e,
                              stdin=subprocess.DEVNULL, timeout=300).returncode
    return code, out.read_text(), err.read_text()


TRAIN = ["metalstm.train", "--config", "smoke", "--episodes", "4", "--val-every", "2", "--val-episodes", "2",
         "--threads", "1"]


@pytest.mark.slow
def test_a_training_written_to_a_file_logs_each_validation_and_its_progress(tmp_path):
    code, out, err = run_to_file(tmp_path, *TRAIN, "--out", "run", "--log-every", "1")
    assert code == 0, err
    lines = err.splitlines()
    validations = [line for line in lines if "validation at episode" in line]
    assert [line.split("validation at episode ")[1].split(":")[0] for line in validations] == ["0/4", "2/4", "4/4"]
    assert all("val acc" in line and "+-" in line for line in validations)
    assert "train loss" in validations[1] and "untrained" in validations[0]
    assert [line.split(": ")[0].split()[-1] for line in lines if "mean since the last validation" in line] \
        == ["1/4", "2/4", "3/4", "4/4"]
    assert "\r" not in err and "it/s" not in err                       # no progress bar in a file
    assert lines[0].split(" ", 2)[2].startswith("smoke: ")               # the start line, with its time
    assert out.startswith("best meta-validation accuracy")              # the result stays on stdout


@pytest.mark.slow
def test_quiet_keeps_the_result_and_drops_the_progress(tmp_path):
    code, out, err = run_to_file(tmp_path, *TRAIN, "--out", "run", "--quiet")
    assert code == 0 and err.strip() == "", err
    assert out.startswith("best meta-validation accuracy")


def test_the_logger_lines_in_process_and_quiet(tmp_path, capsys, monkeypatch):
    """The same through train.main in this process (stderr captured: not a terminal)."""
    from metalstm import train
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    args = [w for w in TRAIN[1:]] + ["--log-every", "2"]
    assert train.main(args + ["--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert sum("validation at episode" in line for line in err.splitlines()) == 3
    assert sum("mean since the last validation" in line for line in err.splitlines()) == 2
    assert out.startswith("best meta-validation accuracy")
    assert train.main(args + ["--out", str(tmp_path / "b"), "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("best meta-validation accuracy")


@pytest.mark.slow
def test_an_evaluation_written_to_a_file_logs_each_method(tmp_path):
    code, out, err = run_to_file(tmp_path, "metalstm.evaluate", "--checkpoint", "glyphs-1shot", "--episodes", "4",
                                 "--threads", "1", "--log-every", "2")
    assert code == 0, err
    assert "Meta-Learner LSTM: 2/4 episodes" in err and "Meta-Learner LSTM: " in err and "on 4 episodes" in err
    assert "| Meta-Learner LSTM |" in out and "Meta-Learner LSTM:" not in out.split("\n- ")[0]


def test_the_algorithm_module_holds_no_command_line():
    text = (ROOT / "metalstm" / "train.py").read_text()
    assert "argparse" not in text and "import signal" not in text and "print(" not in text


def test_a_command_leaves_the_logger_as_it_found_it(tmp_path, capsys):
    """After train.main in this process, a library call logs nothing unasked (a notebook, a test)."""
    import logging

    from metalstm import train
    logger = logging.getLogger("metalstm")
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert train.main(["--config", "nowhere.toml"]) == 2
    assert (list(logger.handlers), logger.level, logger.propagate) == before
