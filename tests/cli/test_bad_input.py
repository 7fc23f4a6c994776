"""Every mistake a person can make gets one clear line and loses nothing.

ONE parametrised test runs each bad input through the real command line (its
main(argv) in this process, and a handful as real `python -m` subprocesses) or
the Python API, and checks:

- exit code 2 (a command) or one ValueError (the API);
- one line (after argparse's usage block, where argparse itself refuses) that
  names the bad value and says what would be valid;
- no traceback;
- every file that existed before (the case's folder and the shipped data/) is
  byte-identical after. The run folder's .lock is left out: it holds the pid of
  the last process that held the folder, which a refused resume also holds.

What is refused and what is kept on purpose: lr 0 is a valid learning rate
(Adam then moves nothing: tests/package/test_train.py's warm start relies on it);
steps=0 is valid for `run_episode` / `inner_loop` (theta_T = c_0) but not for
meta-training; clip=inf turns clipping off, clip <= 0 is refused.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metalstm.checkpoint import checksum, load_checkpoint, save_checkpoint
from metalstm.config import get_config
from metalstm.train import train

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SHIPPED = DATA / "checkpoints"
MATCHING = SHIPPED / "baselines" / "matching-glyphs-5shot.pt"
PRETRAINED = SHIPPED / "baselines" / "pretrained-glyphs-28.pt"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: --device cuda is valid")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The folders the cases point at: a finished smoke run, a best.pt / a shipped checkpoint /
    a two-process last.pt where last.pt should be, a NaN checkpoint, a file, a folder, and an
    Omniglot folder with a damaged PNG."""
    w = tmp_path_factory.mktemp("template")
    cfg = get_config("smoke", episodes=3)
    train(cfg, w / "run", progress=False)
    (w / "best").mkdir()
    shutil.copy(w / "run" / "best.pt", w / "best" / "last.pt")
    (w / "shipped").mkdir()
    shutil.copy(SHIPPED / "glyphs-5shot.pt", w / "shipped" / "last.pt")
    state, saved, metrics = load_checkpoint(w / "run" / "last.pt")
    save_checkpoint(w / "two" / "last.pt", state, saved, {**metrics, "processes": 2})
    payload = torch.load(w / "run" / "best.pt", weights_only=True)
    payload["state"]["metalearner"]["c0"][0] = float("nan")
    import json
    payload["sha256"] = checksum(payload["state"], json.loads(payload["meta_json"]))
    torch.save(payload, w / "nan.pt")
    (w / "afile").write_text("a file, not a folder")
    (w / "adir").mkdir()
    (w / "empty").mkdir()
    chars = w / "omni" / "omniglot-py" / "images_evaluation" / "Tengwar" / "character01"
    chars.mkdir(parents=True)
    from PIL import Image
    Image.new("L", (105, 105), 255).save(chars / "0001_01.png")
    (chars / "0001_02.png").write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    return w


T = ["--config", "smoke", "--threads", "1"]
SUB, NO_GPU_SUB = ("sub",), ("sub", NO_GPU)
# (command, argv or API case, words the one line must hold[, "sub": also as a real subprocess][, marks])
RAW = [
    # -- python -m metalstm.train ---------------------------------------------------------
    ("train", T + ["--out", "{w}/new", "--device", "cuda"], ["cuda", "--device cpu"], *NO_GPU_SUB),
    ("train", T + ["--out", "{w}/new", "--device", "gpu"], ["'gpu'", "cpu, cuda"]),
    ("train", T + ["--out", "{w}/new", "--episodes", "0"], ["--episodes", ">= 1", "'0'"], *SUB),
    ("train", T + ["--out", "{w}/new", "--episodes", "-5"], ["--episodes", ">= 1", "'-5'"]),
    ("train", T + ["--out", "{w}/new", "--val-every", "0"], ["--val-every", ">= 1"]),
    ("train", T + ["--out", "{w}/new", "--val-episodes", "0"], ["--val-episodes", ">= 1"]),
    ("train", T + ["--out", "{w}/new", "--threads", "-1"], ["--threads", ">= 1", "'-1'"]),
    ("train", T + ["--out", "{w}/new", "--threads", "0"], ["--threads", ">= 1", "'0'"]),
    ("train", T + ["--out", "{w}/new", "--meta-batch", "0"], ["--meta-batch", ">= 1"]),
    ("train", T + ["--out", "{w}/new", "--lr", "inf"], ["--lr", "finite", "'inf'"]),
    ("train", T + ["--out", "{w}/new", "--lr", "-1"], ["--lr", ">= 0", "'-1'"]),
    ("train", T + ["--out", "{w}/new", "--rule", "adam"], ["--rule", "'adam'", "lstm"]),
    ("train", ["--config", "paper-3shot", "--out", "{w}/new"], ["'paper-3shot'", "glyphs-5shot"]),
    ("train", T + ["--out", "{w}/best", "--resume"], ["best/last.pt", "cannot be resumed", "--init-from"]),
    ("train", ["--config", "glyphs-5shot", "--threads", "1", "--out", "{w}/shipped", "--resume"],
     ["shipped/last.pt", "cannot be resumed", "--init-from"]),
    ("train", T + ["--out", "{w}/run", "--resume", "--seed", "1"], ["seed 0 (this run: 1)", "--resume`"]),
    ("train", T + ["--out", "{w}/run", "--resume", "--data-root", "{w}/adir"], ["--data-root", "adir", "'smoke'",
                                                                              "reads no folder"]),
    ("train", T + ["--out", "{w}/empty", "--resume"], ["nothing to resume", "empty/last.pt"]),
    ("train", T + ["--out", "{w}/two", "--resume"], ["2 process", "torchrun --nproc_per_node=2"]),
    ("train", T + ["--out", "{w}/run"], ["already holds a run", "--resume"]),
    ("train", T + ["--out", "{w}/afile"], ["afile", "is a file"]),
    ("train", T + ["--out", "{w}/afile/run"], ["afile/run", "Not a directory"]),
    ("train", T + ["--out", "{w}/new", "--init-from", str(MATCHING)],
     ["matching-glyphs-5shot.pt", "Matching Network", "--baselines matching"]),
    ("train", T + ["--out", "{w}/new", "--init-from", "{w}/nan.pt"], ["nan.pt", "NaN"]),
    ("train", T + ["--out", "{w}/new", "--init-from", "{w}/missing.pt"], ["no checkpoint", "missing.pt"]),
    # -- python -m metalstm.evaluate ------------------------------------------------------
    ("evaluate", ["--checkpoint", str(SHIPPED / "glyphs-1shot.pt"), "--config", "glyphs-5shot"],
     ["1-shot", "--config glyphs-5shot is 5-shot", "--config glyphs-1shot"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--episodes", "0"], ["--episodes", ">= 1", "'0'"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--episodes", "-3"], ["--episodes", ">= 1", "'-3'"]),
    ("evaluate", ["--checkpoint", str(MATCHING)], ["Matching Network", "metalstm.evaluate",
                                                   "--baselines matching"], *SUB),
    ("evaluate", ["--checkpoint", str(PRETRAINED)], ["pre-trained classifier", "--baselines finetune"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--json", "{w}/adir"], ["--json", "adir", "is a folder"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--json", "{w}/afile/r.json"], ["--json", "afile", "is a file"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--cache", "{w}/afile"], ["--cache", "afile", "folder"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--device", "cuda"], ["cuda", "--device cpu"], NO_GPU),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--threads", "0"], ["--threads", ">= 1"]),
    ("evaluate", ["--checkpoint", "{w}/run/best.pt", "--baselines", "nn"], ["--baselines", "'nn'", "nearest"]),
    ("evaluate", ["--checkpoint", "{w}/nan.pt"], ["nan.pt", "NaN", "earlier checkpoint"]),
    ("evaluate", ["--checkpoint", "{w}/missing.pt"], ["no checkpoint", "missing.pt"]),
    # -- python -m metalstm.tools.episode_rate --------------------------------------------
    ("episodes", ["--n-way", "5000", "--episodes", "2"], ["5000-way", "675 classes"], *SUB),
    ("episodes", ["--episodes", "-5"], ["--episodes", ">= 1", "'-5'"]),
    ("episodes", ["--episodes", "0"], ["--episodes", ">= 1"]),
    ("episodes", ["--k-shot", "0"], ["--k-shot", ">= 1"]),
    ("episodes", ["--threads", "0"], ["--threads", ">= 1"]),
    # -- python -m metalstm.tools.build_glyphs --------------------------------------------
    ("glyphs", ["--nn-baseline", "--episodes", "0"], ["--episodes", ">= 1"], *SUB),
    ("glyphs", ["--nn-baseline", "--episodes", "-5"], ["--episodes", ">= 1"]),
    ("glyphs", ["--nn-baseline", "--way", "500", "--episodes", "2"], ["500-way", "215 classes"]),
    # -- python -m metalstm.baselines -----------------------------------------------------
    ("baselines", ["--config", "smoke", "--episodes", "-1"], ["--episodes", ">= 1", "'-1'"], *SUB),
    ("baselines", ["--config", "smoke", "--cache", "{w}/afile"], ["--cache", "afile", "folder"]),
    ("baselines", ["--config", "smoke", "--json", "{w}/adir"], ["--json", "adir", "is a folder"]),
    ("baselines", ["--config", "smoke", "--threads", "0"], ["--threads", ">= 1"]),
    ("baselines", ["--config", "smoke", "--checkpoint", str(MATCHING)], ["Matching Network"]),
    # -- python -m metalstm.tools.bench / diagnose ----------------------------------------
    ("bench", ["--device", "cuda"], ["cuda", "--device cpu"], NO_GPU),
    ("bench", ["--threads", "0"], ["--threads", ">= 1"]),
    ("bench", ["--repeats", "0"], ["--repeats", ">= 1"]),
    ("bench", ["--warmup", "-1"], ["--warmup", ">= 0"]),
    ("diagnose", ["--checkpoint", "{w}/run/best.pt", "--device", "cuda"], ["unrecognized", "--device"]),
    ("diagnose", ["--checkpoint", "{w}/run/best.pt", "--json", "{w}/adir"], ["--json", "adir", "is a folder"]),
    ("diagnose", ["--checkpoint", "{w}/run/best.pt", "--episodes", "1"], ["--episodes", "at least 2"]),
    ("diagnose", ["--checkpoint", str(MATCHING)], ["Matching Network"]),
    ("diagnose", ["--checkpoint", "{w}/run/best.pt", "--threads", "0"], ["--threads", ">= 1"]),
    # -- the Python API -------------------------------------------------------------------
    ("api", "sampler[1.5]", ["1.5", "whole number"]),
    ("api", "Learner(float64 images)", ["torch.float64", "torch.float32"]),
    ("api", "MetaLearner(hidden=-1)", ["hidden", "-1", ">= 1"]),
    ("api", "MetaLearner(hidden=0)", ["hidden", "got 0", ">= 1"]),
    ("api", "MetaLearner(p=0)", ["p (", "> 0", "0.0"]),
    ("api", "MetaLearner(p=-1)", ["p (", "> 0", "-1"]),
    ("api", "load_dataset(glyphs, image_size=0)", ["image_size", ">= 1", "got 0"]),
    ("api", "load_omniglot(damaged PNG)", ["0001_02.png", "cannot read"]),
    ("api", "Learner(bn_eps=-1)", ["bn_eps", "> 0", "-1"]),
    ("api", "train(steps=0)", ["steps", ">= 1", "got 0"]),
    ("api", "train(clip=0)", ["clip", "> 0", "0.0"]),
    ("api", "train(lr=nan)", ["lr", "finite", "nan"]),
]


def case_id(what: str, target) -> str:
    if what == "api":
        return f"api: {target}"
    target = target[len(T):] if target[:len(T)] == T else target
    target = target[2:] if target[:2] == ["--out", "{w}/new"] else target
    shown = [a[len("{w}/"):] if a.startswith("{w}/") else Path(a).name if "/" in a else a for a in target]
    return f"{what} {' '.join(shown)}"


CASES = [pytest.param(what, target, words, id=case_id(what, target),
                      marks=[m for m in rest if m != "sub"]) for what, target, words, *rest in RAW]
SUBPROCESS = {case_id(what, target): (what, target, words) for what, target, words, *rest in RAW if "sub" in rest}
MODULES = {"train": "metalstm.train", "evaluate": "metalstm.evaluate", "episodes": "metalstm.tools.episode_rate",
           "glyphs": "metalstm.tools.build_glyphs", "baselines": "metalstm.baselines",
           "bench": "metalstm.tools.bench", "diagnose": "metalstm.tools.diagnose"}
MAINS = {**MODULES, "baselines": "metalstm.baselines.suite"}      # where each main(argv) is


def api_call(name: str, w: Path):
    from metalstm.data import load_dataset, load_omniglot
    from metalstm.episodes import sampler_for
    from metalstm.learner import Learner
    from metalstm.metalearner import MetaLearner

    smoke = get_config("smoke")
    learner = Learner(5)
    calls = {
        "sampler[1.5]": lambda: sampler_for(smoke, "val")[1.5],
        "Learner(float64 images)": lambda: learner(torch.zeros(2, 1, 28, 28, dtype=torch.float64), learner.init_params()),
        "MetaLearner(hidden=-1)": lambda: MetaLearner(learner.n_params, hidden=-1, learner=learner),
        "MetaLearner(hidden=0)": lambda: MetaLearner(learner.n_params, hidden=0, learner=learner),
        "MetaLearner(p=0)": lambda: MetaLearner(learner.n_params, p=0.0, learner=learner),
        "MetaLearner(p=-1)": lambda: MetaLearner(learner.n_params, p=-1.0, learner=learner),
        "load_dataset(glyphs, image_size=0)": lambda: load_dataset("glyphs", "train", image_size=0),
        "load_omniglot(damaged PNG)": lambda: load_omniglot(w / "omni", "test"),
        "Learner(bn_eps=-1)": lambda: Learner(5, bn_eps=-1.0),
        "train(steps=0)": lambda: train(smoke.replace(steps=0), w / "new", progress=False),
        "train(clip=0)": lambda: train(smoke.replace(clip=0.0), w / "new", progress=False),
        "train(lr=nan)": lambda: train(smoke.replace(lr=float("nan")), w / "new", progress=False),
    }
    return calls[name]()


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` and of the shipped data, but the run folders' .lock."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"]
    files += [p for p in DATA.rglob("*") if p.is_file() and p.suffix in (".pt", ".npz", ".json", ".csv")]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def error_line(stderr: str) -> list[str]:
    """stderr without argparse's usage block (the 'usage:' line and its indented continuation)."""
    lines, in_usage = [], False
    for line in stderr.strip().splitlines():
        if line.startswith("usage:"):
            in_usage = True
            continue
        if in_usage and line.startswith(" "):
            continue
        in_usage = False
        if line.strip():
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def subprocess_results(template, tmp_path_factory):
    """The SUBPROCESS cases as real `python -m ...` runs, all started at once (their startup is
    paid in parallel): {case id: (exit code, stderr, the folder they ran on)}."""
    work = tmp_path_factory.mktemp("sub") / "w"
    shutil.copytree(template, work)
    before = fingerprint(work)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    procs = {}
    for name, (what, argv, _) in SUBPROCESS.items():
        argv = [a.replace("{w}", str(work)) for a in argv]
        procs[name] = subprocess.Popen([sys.executable, "-m", MODULES[what], *argv], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results = {name: (p.communicate(timeout=300)[1], p.returncode, work) for name, p in procs.items()}
    assert fingerprint(work) == before
    return results


def check_line(lines: list[str], words: list[str], w: Path) -> None:
    assert len(lines) == 1, lines
    for word in words:
        assert word.replace("{w}", str(w)) in lines[0], (word, lines[0])


def run_case(what, target, words, template, tmp_path, capsys, api, mains) -> None:
    """One bad input on a fresh copy of `template`: `api(target, w)` for what == "api", else
    mains[what]'s main(argv); one clear line (exit 2 for a command, no traceback), no file changed."""
    w = tmp_path / "w"
    shutil.copytree(template, w)
    before = fingerprint(tmp_path)
    if what == "api":
        with pytest.raises(ValueError) as info:
            api(target, w)
        check_line(str(info.value).strip().splitlines(), words, w)
    else:
        argv = [a.replace("{w}", str(w)) for a in target]
        try:
            code = importlib.import_module(mains[what]).main(argv)
        except SystemExit as exc:                   # argparse's refusals
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        check_line(error_line(err), words, w)
    assert fingerprint(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("what,target,words", CASES)
def test_a_bad_input_gives_one_clear_line_and_changes_no_file(what, target, words, template, tmp_path,
                                                              capsys, request, subprocess_results):
    run_case(what, target, words, template, tmp_path, capsys, api_call, MAINS)
    name = request.node.callspec.id
    if name in subprocess_results:                  # the same input through a real `python -m`
        err, code, sub_w = subprocess_results[name]
        assert code == 2 and "Traceback" not in err, err
        check_line(error_line(err), words, sub_w)
