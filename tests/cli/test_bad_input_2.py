"""Never a silent wrong result from a cache, never a lost result file.

The second battery of bad inputs, as tests/cli/test_bad_input.py checks the first: ONE parametrised
test runs each case through the real command line (its main(argv), in this process) or the
Python API and checks exit code 2 (or one ValueError), one line that names the bad value and
what would be valid, no traceback, and every file that existed before byte-identical after.

Then what a bad input cannot show:
- every cache and reuse is keyed by content: the baseline cache by the data's fingerprint (two
  folders of other images under one configuration name never share a network), `evaluate
  --reuse` by the checkpoint's checksum and the episodes' data (a rung file replaced at the same
  path is measured again); the shipped cache and results are still found and reused;
- every write is atomic: a full disk (OSError ENOSPC midway or at fsync) leaves the old file
  byte-identical and no new or temporary file behind; output folders are checked before work;
- a damaged cached native library is built again, never loaded;
- Ctrl-C ends a command with one line and exit code 130.
"""
from __future__ import annotations

import ast
import dataclasses
import errno
import functools
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metalstm.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from metalstm.config import get_config
from metalstm.train import train
from test_bad_input import check_line, error_line, fingerprint, run_case

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SHIPPED = DATA / "checkpoints"
LADDER = SHIPPED / "ladder"
MATCHING = SHIPPED / "baselines" / "matching-glyphs-5shot.pt"
RESULTS = DATA / "results"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """What the cases point at: a smoke lstm run and a smoke sgd run, results files damaged in
    every way the issue lists, logs without an episode column, a wrong digits source."""
    w = tmp_path_factory.mktemp("template2")
    train(get_config("smoke", episodes=3), w / "run", progress=False)
    train(get_config("smoke", episodes=3, rule="sgd"), w / "sgd", progress=False)
    shutil.copytree(w / "run", w / "damaged")
    best = (w / "damaged" / "best.pt").read_bytes()
    (w / "damaged" / "best.pt").write_bytes(best[:len(best) // 2])            # cut short
    (w / "afile").write_text("a file, not a folder")
    (w / "adir").mkdir()
    good = {"config": get_config("smoke", episodes=3).to_dict(), "episodes": 2,
            "test_sets": {"glyphs": {"seed": 2, "results": [
                {"name": "Meta-Learner LSTM", "accuracies": [0.5, 0.6], "seconds": 1.0, "note": ""}]}}}
    def variant(**changes):
        d = json.loads(json.dumps(good))
        row = d["test_sets"]["glyphs"]["results"][0]
        for k, v in changes.items():
            if v is None:
                row.pop(k)
            else:
                row[k] = v
        return d
    files = {"list.json": [], "null.json": None, "noacc.json": variant(accuracies=None),
             "short.json": variant(accuracies=[0.5]), "percent.json": variant(accuracies=[50.0, 60.0]),
             "strings.json": variant(accuracies=["0.5", "0.6"]),
             "testsets-string.json": {**good, "test_sets": "glyphs"}}
    for name, content in files.items():
        (w / name).write_text(json.dumps(content))
    (w / "cut.json").write_text(json.dumps(good)[:50])
    (w / "empty.json").write_text("")
    (w / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    fields = "episode,train_loss,train_acc,val_acc,val_ci95,seconds\n"
    (w / "noepisode.csv").write_text("step,val_acc\n1,0.5\n")
    (w / "emptylog.csv").write_text("")
    (w / "abc.csv").write_text(fields + "abc,1,0.5,0.5,0.1,1\n")
    (w / "wrong.csv").write_text("this is text,\nbut not the digits\n")
    (w / "notgzip.csv.gz").write_text("not gzip at all")
    return w


T = ["--config", "smoke", "--threads", "1"]
RUN = "{w}/run/best.pt"
E = ["--checkpoint", RUN, "--episodes", "2", "--threads", "1"]
# (command, argv or API case, words the one line must hold)
RAW = [
    # -- silently wrong before ---------------------------------------------------------------
    ("evaluate", [*E, "--rungs", "{w}/sgd/best.pt", "{w}/sgd/best.pt"], ["sgd/best.pt", "the same rule", "once"]),
    ("evaluate", [*E, "--rungs", RUN], ["run/best.pt", "the same rule", "--checkpoint not again"]),
    ("evaluate", ["--checkpoint", str(LADDER / "glyphs-5shot-init.pt"), "--episodes", "2", "--baselines", "learned"],
     ["--baselines learned", "'init'", "lstm checkpoint"]),
    ("evaluate", [*E, "--reuse", "{w}/short.json"], ["short.json", "holds 1 accuracies", "measures 2"]),
    ("evaluate", [*E, "--reuse", "{w}/percent.json"], ["percent.json", "numbers from 0 to 1"]),
    ("baselines", ["--config", "smoke", "--shot", "5", "--episodes", "2"], ["--shot 5", "1-shot", "--config alone"]),
    ("digits", ["--nn-baseline", "--episodes", "0"], ["--episodes", ">= 1", "'0'"]),
    ("digits", ["--sample-grid", "{w}/grid"], ["--sample-grid", "grid", ".png"]),
    ("glyphs", ["--sample-grid", "{w}/grid"], ["--sample-grid", "grid", ".png"]),
    ("digits", ["--sample-grid", "/dev/full"], ["/dev/full", ".png"]),
    ("evaluate", [*E, "--json", "/dev/full"], ["--json /dev/full", "not a regular file"]),
    ("diagnose", ["--checkpoint", "{w}/sgd/best.pt", "--episodes", "2", "--train-episodes", "2",
                  "--cache", "{w}/cache"], ["--train-episodes 2", "'sgd'", "nothing to meta-train"]),
    ("api", "save_checkpoint(object())", ["a", "object", "tensors"]),
    ("api", "save_checkpoint(folder)", ["adir", "folder", "file name"]),
    ("api", "save_checkpoint(config not JSON-able)", ["config", "JSON-able"]),
    ("train", T + ["--out", "{w}/damaged", "--resume"], ["damaged/best.pt", "best so far", "restore it"]),
    # -- tracebacks before -------------------------------------------------------------------
    ("train", T + ["--out", "{w}/new", "--rule", "sgd", "--init-from", RUN],
     ["--init-from", "'lstm' rule", "'sgd'", "--rule lstm"]),
    ("train", T + ["--out", "{w}/new", "--init-from", str(LADDER / "glyphs-1shot-init.pt")],
     ["glyphs-1shot-init.pt", "'init' rule", "--rule init"]),
    ("train", T + ["--out", "{w}/new", "--rule", "meta-sgd", "--init-from", "{w}/sgd/best.pt"],
     ["'sgd' rule", "'meta-sgd'", "--rule sgd"]),
    *[("evaluate", [*E, "--reuse", "{w}/" + name], [name, words]) for name, words in (
        ("list.json", "holds list"), ("null.json", "holds null"), ("noacc.json", "\"accuracies\""),
        ("testsets-string.json", "\"test_sets\""), ("strings.json", "numbers from 0 to 1"),
        ("cut.json", "not a JSON file"), ("empty.json", "not a JSON file"), ("binary.json", "not a JSON file"))],
    ("results_table", ["{w}/list.json"], ["list.json", "holds list"]),
    ("results_table", ["{w}/cut.json"], ["cut.json", "not a JSON file"]),
    ("results_table", [str(RESULTS / "ladder-1shot.json"), str(RESULTS / "ladder-1shot.json")],
     ["ladder-1shot.json", "given twice"]),
    ("untrained_row", ["--checkpoint", RUN, "--log", "{w}/noepisode.csv"], ["noepisode.csv", "'episode' column"]),
    ("untrained_row", ["--checkpoint", RUN, "--log", "{w}/emptylog.csv"], ["emptylog.csv", "'episode' column"]),
    ("untrained_row", ["--checkpoint", RUN, "--log", "{w}/abc.csv"], ["abc.csv", "'abc'", "whole number"]),
    ("untrained_row", ["--checkpoint", RUN, "--log", "{w}/abc.csv", "--threads", "0"], ["--threads", ">= 1"]),
    ("untrained_row", ["--checkpoint", str(MATCHING), "--log", "{w}/abc.csv"], ["Matching Network"]),
    ("digits", ["--source", "{w}/missing.csv"], ["--source", "missing.csv", "no such file"]),
    ("digits", ["--source", "{w}/wrong.csv"], ["--source", "wrong.csv", "sha256", "digits.csv"]),
    ("digits", ["--source", "{w}/notgzip.csv.gz"], ["--source", "notgzip.csv.gz", "gzip"]),
    ("digits", ["--source", "{w}/wrong.csv", "--write"], ["wrong.csv", "nothing was written"]),
    ("digits", ["--nn-baseline", "--threads", "0"], ["--threads", ">= 1"]),
    ("glyphs", ["--sample-grid", "{w}/afile/grid.png"], ["--sample-grid", "afile", "is a file"]),
    ("gpu_check", ["--out", "{w}/afile", "--no-bench", "--device", "cpu"], ["--out", "afile", "folder"]),
    ("grid", ["--config", "smoke", "--shots", "1", "--out", "{w}/afile"], ["--out", "afile", "is a file"]),
    ("grid", ["--config", "smoke", "--shots", "1", "--out", "{w}/g", "--publish", "{w}/afile/pub"],
     ["--publish", "afile", "is a file", "nothing can be written"]),
    # -- unclear before ----------------------------------------------------------------------
    ("evaluate", [*E, "--test-sets", "omniglot"], ["--test-sets omniglot", "needs --data-root"]),
    ("evaluate", [*E, "--test-sets", "mini-imagenet"], ["--test-sets mini-imagenet", "needs --data-root"]),
    ("evaluate", [*E, "--test-sets", "omniglot", "folder", "--data-root", "{w}/adir"],
     ["omniglot folder", "one --data-root"]),
    ("train", T + ["--out", "{w}/new", "--seed", "99999999999999999999999"], ["--seed", "2**63 - 1"]),
    ("train", T + ["--out", "{w}/run", "--resume", "--lr", "0.5"], ["lr 0.001 (this run: 0.5)", "--init-from"]),
    ("course", ["--only", "99"], ["--only 99", "no notebook"]),
    ("episodes", ["--seed", "99999999999999999999999"], ["--seed", "2**63 - 1"]),
    ("glyphs", ["--nn-baseline", "--seed", "-1"], ["--seed", "2**63 - 1", "'-1'"]),
    ("api", "Config.from_dict(str)", ["configuration", "str", "object of fields"]),
    ("api", "Config.from_dict(n_way '5')", ["n_way", "'5'", ">= 1"]),
    ("api", "Config.from_dict(hidden 0)", ["hidden", "got 0", ">= 1"]),
    ("api", "Config.from_dict(rule adam)", ["'adam'", "lstm"]),
    ("api", "Config.from_dict(a newer field)", ["newer_field", "another version", "known:"]),
]
MAINS = {"train": "metalstm.train", "evaluate": "metalstm.evaluate", "baselines": "metalstm.baselines.suite",
         "digits": "metalstm.tools.build_digits", "glyphs": "metalstm.tools.build_glyphs",
         "diagnose": "metalstm.tools.diagnose", "results_table": "metalstm.tools.results_table",
         "untrained_row": "metalstm.tools.untrained_row", "gpu_check": "metalstm.tools.gpu_check",
         "course": "metalstm.tools.course", "episodes": "metalstm.tools.episode_rate", "grid": "metalstm.tools.grid"}


def case_id(what: str, target) -> str:
    if what == "api":
        return f"api: {target}"
    shown = [a[len("{w}/"):] if a.startswith("{w}/") else Path(a).name if "/" in a else a for a in target]
    return f"{what} {' '.join(shown)}"


CASES = [pytest.param(what, target, words, id=case_id(what, target)) for what, target, words in RAW]


def api_call(name: str, w: Path):
    from metalstm.config import Config
    smoke = get_config("smoke").to_dict()
    calls = {
        "save_checkpoint(object())": lambda: save_checkpoint(w / "new.pt", {"a": object()}, {}),
        "save_checkpoint(folder)": lambda: save_checkpoint(w / "adir", {"a": torch.zeros(1)}, {}),
        "save_checkpoint(config not JSON-able)": lambda: save_checkpoint(w / "new.pt", {"a": torch.zeros(1)},
                                                                         {"f": object()}),
        "Config.from_dict(str)": lambda: Config.from_dict("smoke"),
        "Config.from_dict(n_way '5')": lambda: Config.from_dict({**smoke, "n_way": "5"}),
        "Config.from_dict(hidden 0)": lambda: Config.from_dict({**smoke, "hidden": 0}),
        "Config.from_dict(rule adam)": lambda: Config.from_dict({**smoke, "rule": "adam"}),
        "Config.from_dict(a newer field)": lambda: Config.from_dict({**smoke, "newer_field": 1}),
    }
    return calls[name]()


@pytest.mark.slow
@pytest.mark.parametrize("what,target,words", CASES)
def test_a_bad_input_gives_one_clear_line_and_changes_no_file(what, target, words, template, tmp_path, capsys):
    run_case(what, target, words, template, tmp_path, capsys, api_call, MAINS)


# -- the API's own refusals: rules, checkpoints' configurations, the inner loop, the learner ------
def _checkpoint_with_config(path: Path, config) -> Path:
    """A smoke lstm checkpoint whose stored configuration is `config` (whatever it is)."""
    from metalstm.model import build_model
    _, rule = build_model(get_config("smoke"))
    save_checkpoint(path, {"metalearner": rule.state_dict()}, config)
    return path


NAN, INF = float("nan"), float("inf")
# (case, words the one line must hold); api_case(case, folder) makes the call
API_RAW = [
    # make_rule: a step size that is not a finite number >= 0 (magnitude: in (0, 1))
    ("make_rule(sgd, lr=nan)", ["lr (the sgd rule's step size)", "finite number >= 0", "got nan"]),
    ("make_rule(meta-sgd, lr=-1)", ["meta-sgd rule's initial step size", "finite number >= 0", "got -1"]),
    ("make_rule(init, lr=inf)", ["init rule's step size", "finite number >= 0", "got inf"]),
    ("make_rule(schedule, lr=True)", ["schedule rule's initial step size", "finite number >= 0", "got True"]),
    ("make_rule(sgd, lr='0.1')", ["sgd rule's step size", "finite number >= 0", "got '0.1'"]),
    ("make_rule(magnitude, lr=nan)", ["lr", "(0, 1)", "got nan"]),
    ("make_rule(magnitude, lr=1.5)", ["lr", "(0, 1)", "got 1.5"]),
    ("make_rule(magnitude, lr='0.5')", ["magnitude rule's initial step size", "(0, 1)", "got '0.5'"]),
    # load_trained: a stored configuration that no rule can be built from, the file named
    *[(f"load_trained({name})", ["bad.pt", "holds no usable configuration", *words]) for name, words in (
        ("configuration a string", ["str", "object of fields"]),
        ("a newer field", ["newer_field", "another version"]),
        ("n_way '5'", ["n_way", "'5'", ">= 1"]),
        ("hidden 0", ["hidden", "got 0", ">= 1"]),
        ("rule adam", ["'adam'", "lstm"]),
        ("sgd rule_lr nan", ["sgd rule's step size", "got nan"]),
        ("p -1", ["p (the preprocessing's scale", "got -1.0"]),
        ("bn_eps a string", ["bn_eps", "finite number > 0", "got 'small'"]))],
    # the learner: images with NaN or infinity (a floating image; integer ones are refused by dtype)
    ("Learner(NaN images)", ["images hold NaN or infinity", "must be finite"]),
    ("Learner(an infinite pixel)", ["images hold NaN or infinity", "must be finite"]),
    ("Learner.features(NaN images)", ["images hold NaN or infinity", "must be finite"]),
    ("Learner(float64 NaN images, bn='running')", ["images hold NaN or infinity", "must be finite"]),
    # the inner loop and an episode: steps, images and labels, refused before the first step
    ("inner_loop(steps=2.5)", ["steps must be a whole number >= 0", "got 2.5"]),
    ("inner_loop(steps=-1)", ["steps must be a whole number >= 0", "got -1"]),
    ("run_episode(steps=True)", ["steps must be a whole number >= 0", "got True"]),
    ("run_episode(steps='8')", ["steps must be a whole number >= 0", "got '8'"]),
    ("inner_loop(NaN support images)", ["the support images hold NaN or infinity", "must be finite"]),
    ("run_episode(an infinite support pixel, test)", ["the support images hold NaN or infinity"]),
    ("run_episode(NaN query images, train)", ["the query images hold NaN or infinity", "must be finite"]),
    ("run_episode(NaN query images, test)", ["the query images hold NaN or infinity", "must be finite"]),
    ("inner_loop(support label 5, 5-way)", ["support labels", "0..4", "5-way", "got 5"]),
    ("run_episode(query label -1)", ["query labels", "0..4", "got -1"]),
    ("run_episode(query label -100, cross_entropy's ignore_index)", ["query labels", "0..4", "got -100"]),
    ("run_episode(query label 7, test)", ["query labels", "0..4", "got 7"]),
    ("inner_loop(float labels)", ["support labels", "integer tensor", "torch.float32"]),
    ("inner_loop(a label short)", ["support labels", "one per image", "(25,)", "(24,)"]),
    # a meta-learner step: grad of another length, NaN or infinity in the loss or gradient
    ("MetaLearner.step(grad of 49 values)", ["grad has 49 values, theta 50"]),
    ("MetaLearner.step(NaN loss)", ["the loss L_t is nan", "must be finite"]),
    ("MetaLearner.step(an infinite loss, no_grad)", ["the loss L_t is inf", "must be finite"]),
    ("MetaLearner.step(inf in grad)", ["grad_t holds 1 NaN or infinite values of 50", "must be finite"]),
    ("MetaLearner.step(NaN grad, reference)", ["grad_t holds 2 NaN or infinite values of 50"]),
    ("MetaLearner.step(NaN grad, native C loops)", ["grad_t holds 1 NaN or infinite values of 50"]),
    ("MetaLearner.step(NaN loss and grad, no_grad)", ["the loss L_t is nan and grad_t holds 50 NaN"]),
]


def api_case(name: str, w: Path):
    """The call of case `name`, ready to make (what it reads is written into `w` first)."""
    from metalstm.learner import Learner
    from metalstm.model import load_trained
    from metalstm.rules import make_rule
    learner = Learner(n_way=5)
    theta0 = learner.init_params(torch.Generator().manual_seed(0))
    smoke = get_config("smoke").to_dict()
    if name.startswith("make_rule("):
        rung, lr = name[len("make_rule("):-1].split(", lr=")
        lr = {"nan": NAN, "inf": INF, "True": True}[lr] if lr in ("nan", "inf", "True") else ast.literal_eval(lr)
        return lambda: make_rule(rung, learner, theta0, lr, steps=3)
    if name.startswith("load_trained("):
        stored = {"configuration a string": "smoke", "a newer field": {**smoke, "newer_field": 1},
                  "n_way '5'": {**smoke, "n_way": "5"}, "hidden 0": {**smoke, "hidden": 0},
                  "rule adam": {**smoke, "rule": "adam"}, "p -1": {**smoke, "p": -1.0},
                  "sgd rule_lr nan": {**smoke, "rule": "sgd", "rule_lr": NAN},
                  "bn_eps a string": {**smoke, "bn_eps": "small"}}[name[len("load_trained("):-1]]
        path = _checkpoint_with_config(w / "bad.pt", stored)
        return lambda: load_trained(path)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    if name.startswith("Learner"):
        if "infinite" in name:
            x[3, 0, 27, 27] = INF
        else:
            x[1, 0, 5, 7] = NAN
        if "float64" in name:
            stats = learner.new_bn_stats()
            return lambda: learner(x.double(), theta0.double(), bn="running", stats=stats)
        return lambda: (learner.features if ".features" in name else learner)(x, theta0)
    if name.startswith(("inner_loop(", "run_episode(")):
        return _episode_case(name, learner, theta0)
    if name.startswith("MetaLearner.step("):
        return _step_case(name)
    raise KeyError(name)


def _episode_case(name: str, learner, theta0):
    from metalstm.metalearner import SGDCell, inner_loop, run_episode
    from testkit import random_episode
    ep, rule, steps = random_episode(k_shot=5, n_query=3), SGDCell(theta0, 0.1), 2
    if "steps=" in name:
        steps = ast.literal_eval(name.split("steps=")[1][:-1])
    if "support images" in name:
        ep.support_x[7, 0, 3, 3] = NAN
    if "support pixel" in name:
        ep.support_x[24, 0, 27, 0] = -INF
    if "query images" in name:
        ep.query_x[14, 0, 0, 0] = NAN
    if "support label 5" in name:
        ep.support_y[-1] = 5
    if "query label" in name:
        ep.query_y[3] = int(name.split("query label ")[1].split(",")[0].rstrip(")"))
    if "float labels" in name:
        ep = dataclasses.replace(ep, support_y=ep.support_y.float())
    if "a label short" in name:
        ep = dataclasses.replace(ep, support_y=ep.support_y[:-1])
    if name.startswith("inner_loop("):
        return lambda: inner_loop(learner, rule, ep.support_x, ep.support_y, steps, 5)
    mode = "test" if "test" in name else "train"
    return lambda: run_episode(learner, rule, ep, steps, 5, mode=mode)


def _step_case(name: str):
    import contextlib

    from metalstm.fast import native
    from metalstm.metalearner import MetaLearner
    n = 50
    g = torch.Generator().manual_seed(3)
    path = "reference" if "reference" in name else "native" if "native" in name else "fused"
    meta = MetaLearner(n, theta0=torch.randn(n, generator=g), generator=g, path=path)
    loss, grad, state = torch.tensor(0.7), 1e-2 * torch.randn(n, generator=g), meta.initial_state()
    if "49 values" in name:
        grad = grad[:49]
    if "NaN loss" in name:
        loss = torch.tensor(NAN)
    if "infinite loss" in name:
        loss = torch.tensor(INF)
    if "inf in grad" in name:
        grad[11] = INF
    if "NaN grad" in name:
        grad[[4, 40][:1 if "native" in name else 2]] = NAN
    if "loss and grad" in name:
        grad[:] = NAN

    def call():
        if "native" in name and not native.available():
            pytest.skip("native.c does not compile here (no C compiler?)")
        with torch.no_grad() if "no_grad" in name else contextlib.nullcontext():
            return meta.step(loss, grad, meta.c0, state)
    return call


@pytest.mark.slow
@pytest.mark.parametrize("case,words", [pytest.param(c, words, id=c) for c, words in API_RAW])
def test_a_bad_api_input_is_one_value_error_naming_it(case, words, tmp_path):
    """The API's refusals that need no run folder: one ValueError, one line naming the bad value
    and what would be valid, every file as it was."""
    call = api_case(case, tmp_path)
    before = fingerprint(tmp_path)
    with pytest.raises(ValueError) as info:
        call()
    check_line(str(info.value).strip().splitlines(), words, tmp_path)
    assert fingerprint(tmp_path) == before


def test_finite_values_whose_sum_overflows_are_not_refused():
    """The checks sum first (cheap) and test value by value only when the sum is not finite: finite
    values that overflow the sum pass; one NaN among them does not."""
    from metalstm.learner import all_finite
    from metalstm.metalearner import MetaLearner
    big = torch.full((50,), 3e38)
    assert all_finite(big) and not all_finite(torch.cat([big, torch.tensor([NAN])]))
    assert all_finite(torch.full((4,), 6e4, dtype=torch.float16))            # summed in float32
    meta = MetaLearner(50, theta0=torch.zeros(50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theta, _, _ = meta.step(torch.tensor(1.0), big, meta.c0, meta.initial_state())
    assert torch.isfinite(theta).all()


@pytest.mark.parametrize("flag", ["--out", "--publish"])
def test_grid_refuses_a_folder_it_cannot_write_before_any_run_starts(flag, tmp_path, monkeypatch, capsys):
    from metalstm.tools import grid
    locked = tmp_path / "ro"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == locked and mode == os.W_OK
                        else real_access(p, mode, **k))
    monkeypatch.setattr(subprocess, "Popen", _refused(subprocess.Popen, "a run started before the check"))
    folders = {"--out": tmp_path / "out", "--publish": tmp_path / "pub"} | {flag: locked / "sub"}
    code = grid.main(["--config", "smoke", "--shots", "1", "--rungs", "sgd", "--seeds", "0",
                      "--out", str(folders["--out"]), "--publish", str(folders["--publish"])])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    check_line(error_line(err), [flag, "ro/sub", "is not writable"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"] and not any(locked.iterdir())


# -- caches keyed by content -------------------------------------------------------------------
def _toy(seed: int, name: str = "folder/train"):
    from metalstm.data.base import ImageSet
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (60, 1, 28, 28), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(10).repeat_interleave(6), [f"c{i}" for i in range(10)], name=name)


def test_two_folders_under_one_configuration_name_never_share_a_cached_network(tmp_path, monkeypatch):
    from metalstm.baselines import suite
    cfg = get_config("smoke")
    kw = dict(methods=["nearest", "matching"], val_episodes=1, pretrain_epochs=1, matching_episodes=2,
              cache=tmp_path, progress=False)
    first, _ = suite.build_baselines(cfg, data={"train": _toy(1), "val": _toy(2)}, **kw)
    again, _ = suite.build_baselines(cfg, data={"train": _toy(1), "val": _toy(2)}, **kw)   # the same images
    assert torch.equal(again["Nearest neighbour"].theta, first["Nearest neighbour"].theta)
    assert len(list(tmp_path.glob("*.pt"))) == 2                                           # found, not made
    other, _ = suite.build_baselines(cfg, data={"train": _toy(3), "val": _toy(4)}, **kw)   # other images, same names
    assert not torch.equal(other["Nearest neighbour"].theta, first["Nearest neighbour"].theta)
    assert not torch.equal(other["Matching Networks"].theta, first["Matching Networks"].theta)
    assert len(list(tmp_path.glob("*.pt"))) == 4             # beside the first ones, never over them
    with pytest.raises(FileNotFoundError):                   # and a third folder is not served the others'
        suite.build_baselines(cfg, data={"train": _toy(5), "val": _toy(4)}, **{**kw, "progress": False},
                              train=False)


def _refused(function, why: str):
    """`function` (its signature too: the cache key reads pretrain's defaults) that fails the test."""
    @functools.wraps(function)
    def refused(*args, **kwargs):
        pytest.fail(why)
    return refused


def test_a_cache_folder_that_cannot_be_written_is_refused_before_any_training(tmp_path, monkeypatch):
    from metalstm.baselines import suite
    pretrain = importlib.import_module("metalstm.baselines.pretrain")
    cache = tmp_path / "ro"
    cache.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == cache and mode == os.W_OK
                        else real_access(p, mode, **k))
    monkeypatch.setattr(pretrain, "pretrain", _refused(pretrain.pretrain, "trained before checking --cache"))
    with pytest.raises(ValueError, match="--cache .*ro: the folder .*ro is not writable"):
        suite.build_baselines(get_config("smoke"), ["nearest"], data={"train": _toy(1), "val": _toy(2)},
                              val_episodes=1, cache=cache, progress=False)


@pytest.mark.slow
def test_the_shipped_cache_is_found_for_the_shipped_data_without_training(monkeypatch):
    from metalstm.baselines import suite
    pretrain = importlib.import_module("metalstm.baselines.pretrain")
    monkeypatch.setattr(pretrain, "pretrain", _refused(pretrain.pretrain, "pre-trained again"))
    monkeypatch.setattr(suite, "train_matching", lambda *a, **k: pytest.fail("Matching Networks trained again"))
    for k in (1, 5):
        cfg = get_config(f"glyphs-{k}shot")
        built, notes = suite.build_baselines(cfg, ["nearest", "matching"], cache=SHIPPED / "baselines",
                                             progress=False)             # the default 50 val episodes
        assert "4000 training episodes" in notes["Matching Networks"]
        suite.build_baselines(cfg, ["nearest", "matching"], cache=SHIPPED / "baselines", val_episodes=1,
                              progress=False, train=False)             # notebook 05's call
    # the keys they carry are the shipped data's contents
    from metalstm.episodes import load_split
    cfg = get_config("glyphs-5shot")
    meta = load_checkpoint(MATCHING)[1]
    assert meta["train_sha256"] == load_split(cfg, "train").fingerprint()
    assert meta["val_sha256"] == load_split(cfg, "val").fingerprint()


def test_the_shipped_results_are_reused_in_full_under_their_keys():
    """evaluate --reuse data/results/ladder-Kshot.json takes every row, rules and baselines: their
    stored keys are the shipped checkpoints' checksums and the shipped data's fingerprints."""
    from metalstm.baselines.suite import METHODS, baseline_keys
    from metalstm.config import Config
    from metalstm.episodes import load_split
    from metalstm.evaluate import meta_test_sampler, reusable, rule_key
    from metalstm.model import load_trained
    for k in (1, 5):
        path = RESULTS / f"ladder-{k}shot.json"
        report = json.loads(path.read_text())
        cfg = Config.from_dict(report["config"])
        samplers = {t: meta_test_sampler(cfg, t) for t in report["test_sets"]}
        rules = [report["checkpoint"], *report["rungs"]]
        keys = {}
        for row in report["test_sets"]["glyphs"]["results"]:
            if row["rung"] is not None:
                keys[row["name"]] = rule_key(row["note"])
        assert {r["note"] for r in report["test_sets"]["glyphs"]["results"] if r["rung"]} == set(rules)
        c0 = load_trained(report["checkpoint"])[1].c0.detach().cpu()
        keys.update(baseline_keys(cfg, METHODS, {s: load_split(cfg, s) for s in ("train", "val")}, c0))
        found = reusable([path], cfg, 600, samplers, keys)
        assert len(found) == sum(len(b["results"]) for b in report["test_sets"].values()) == 24
        assert reusable([path], cfg, 600, samplers, {}) == {}           # no key, no reuse


@pytest.fixture(scope="module")
def two_sgd_rungs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rungs")
    for seed in (0, 1):
        train(get_config("smoke", episodes=3, rule="sgd", seed=seed), root / f"sgd{seed}", progress=False)
    train(get_config("smoke", episodes=3), root / "lstm", progress=False)
    return root


@pytest.mark.slow
def test_a_replaced_rung_file_is_measured_again(two_sgd_rungs, tmp_path, capsys, monkeypatch):
    from metalstm import evaluate
    root = two_sgd_rungs
    rung = tmp_path / "rung.pt"
    shutil.copy(root / "sgd0" / "best.pt", rung)
    common = ["--checkpoint", str(root / "lstm" / "best.pt"), "--rungs", str(rung), "--episodes", "3",
              "--threads", "1"]
    first = tmp_path / "first.json"
    assert evaluate.main([*common, "--json", str(first)]) == 0
    measured = []
    real = evaluate.evaluate_methods
    monkeypatch.setattr(evaluate, "evaluate_methods",
                        lambda methods, *a, **k: measured.append(sorted(methods)) or real(methods, *a, **k))
    assert evaluate.main([*common, "--reuse", str(first)]) == 0
    assert measured == [[]]                                  # the same files: everything reused
    shutil.copy(root / "sgd1" / "best.pt", rung)             # another rule at the same path
    measured.clear()
    again = tmp_path / "again.json"
    assert evaluate.main([*common, "--reuse", str(first), "--json", str(again)]) == 0
    assert measured == [["SGD (random init)"]]               # measured again, the LSTM reused
    fresh = tmp_path / "fresh.json"
    assert evaluate.main([*common, "--json", str(fresh)]) == 0
    rows = lambda p: {r["name"]: r["accuracies"] for r in json.loads(p.read_text())["test_sets"]["glyphs"]["results"]}
    assert rows(again) == rows(fresh)
    capsys.readouterr()


# -- atomic writes -----------------------------------------------------------------------------
def _full_disk(monkeypatch) -> None:
    """The disk is full: the last step of every write, fsync, fails with ENOSPC (as it does when
    the file system learns only then that the blocks cannot be had)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("midway", [True, False], ids=["write fails midway", "fsync fails"])
def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch, midway):
    old = tmp_path / "results.json"
    old.write_text('{"valid": "earlier results"}')
    before = old.read_bytes()

    def write(f):
        f.write(b'{"new": ')
        if midway:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        f.write(b'"results"}')
    if not midway:
        _full_disk(monkeypatch)
    for target in (old, tmp_path / "new.json"):
        with pytest.raises(OSError) as info:
            atomic_write(target, write)
        assert info.value.errno == errno.ENOSPC
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]     # no empty new file, no temp


def test_evaluate_json_on_a_full_disk_keeps_the_earlier_results(template, tmp_path, monkeypatch, capsys):
    from metalstm import evaluate
    old = tmp_path / "old.json"
    old.write_text('{"an": "earlier, valid results file"}')
    before = old.read_bytes()
    _full_disk(monkeypatch)
    code = evaluate.main(["--checkpoint", str(template / "run" / "best.pt"), "--episodes", "2",
                          "--threads", "1", "--json", str(old)])
    err = capsys.readouterr().err
    assert code == 2 and "could not write --json" in err and "previous file is unchanged" in err
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


@pytest.mark.slow
def test_a_checkpoint_and_a_picture_on_a_full_disk_keep_the_old_files(template, tmp_path, monkeypatch, capsys):
    from metalstm.checkpoint import CheckpointWriteError
    from metalstm.tools import build_glyphs
    shutil.copy(template / "run" / "best.pt", tmp_path / "best.pt")
    (tmp_path / "grid.png").write_bytes(b"an earlier picture")
    before = fingerprint(tmp_path)
    _full_disk(monkeypatch)
    state, cfg, metrics = load_checkpoint(tmp_path / "best.pt")
    with pytest.raises(CheckpointWriteError, match="previous best.pt is unchanged"):
        save_checkpoint(tmp_path / "best.pt", state, cfg, metrics)
    assert build_glyphs.main(["--sample-grid", str(tmp_path / "grid.png")]) == 2
    assert "previous file is unchanged" in capsys.readouterr().err
    assert fingerprint(tmp_path) == before


def test_files_written_atomically_get_the_mode_of_a_plain_open(tmp_path):
    atomic_write(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- the native library ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_damaged_cached_native_library_is_built_again_never_loaded(tmp_path):
    from metalstm.fast import native
    if not native.available():
        pytest.skip("native.c does not compile here (no C compiler?)")
    built = Path(native.library()._name)           # the machine's cache: built once, then copied
    for suffix in (".so", ".flags", ".sha256"):
        shutil.copy(built.with_suffix(suffix), tmp_path / built.with_suffix(suffix).name)
    lib = tmp_path / built.name
    good = lib.read_bytes()
    lib.write_bytes(good[:1000])                   # cut short under its own name (as `head -c 1000`)
    assert not native.verified(lib)
    script = "from metalstm.fast import native; native.library(); print('ok')"
    again = subprocess.run([sys.executable, "-c", script], env={**os.environ, "METALSTM_CACHE": str(tmp_path)},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.strip() == "ok", (again.returncode, again.stderr)
    assert native.verified(lib) and lib.stat().st_size == len(good)   # built again (SIGBUS before)


# -- Ctrl-C ------------------------------------------------------------------------------------
def _torch_loading(pid: int) -> bool:
    """Whether the process has begun to import torch (its C library is mapped): the package's
    __init__ ran before, and Python's own start-up (site, runpy), which no package can guard, is over."""
    try:
        return "torch/lib" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interruptible() -> None:
    """In the child, before exec: Ctrl-C's default action, whatever this test run inherited (a shell
    starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["during the imports", "during the work"])
def test_ctrl_c_ends_a_command_with_one_line_and_exit_130(tmp_path, when):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see when the imports run")
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "metalstm.evaluate", "--checkpoint",
                             str(SHIPPED / "glyphs-5shot.pt"), "--episodes", "600", "--threads", "1",
                             "--log-every", "0", "--json", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TQDM_DISABLE": "1"}, preexec_fn=_interruptible)
    deadline = time.time() + 60
    while not _torch_loading(proc.pid) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if when == "during the work":
        time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted (Ctrl-C); no result was written as complete"]
    assert not out.exists()


@pytest.mark.slow
def test_a_double_ctrl_c_during_training_is_exit_130_without_a_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "metalstm.train", "--config", "smoke", "--episodes", "100000",
                             "--val-every", "50", "--threads", "1", "--out", str(tmp_path / "run")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"}, preexec_fn=_interruptible)
    deadline = time.time() + 60
    while not (tmp_path / "run" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    load_checkpoint(tmp_path / "run" / "last.pt")           # what it kept is whole


@pytest.mark.slow
def test_a_resumed_log_goes_on_counting_seconds(tmp_path):
    cfg = get_config("smoke", episodes=6, val_every=3)
    train(cfg, tmp_path / "run", progress=False, stop_after=3)
    train(cfg, tmp_path / "run", progress=False, resume=True)
    import csv
    seconds = [float(r["seconds"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv"))]
    assert len(seconds) == 3 and seconds == sorted(seconds)


@pytest.mark.slow
def test_diagnose_names_the_rule_the_checkpoint_holds():
    from metalstm.tools.diagnose import diagnose
    rows = diagnose(LADDER / "glyphs-5shot-sgd.pt", episodes=2, cache=SHIPPED / "baselines", progress=False)
    names = [r.name for r in rows if r.group in ("generalisation", "batch norm")]
    assert names and all(n.startswith("SGD (random init)") for n in names), names
