"""One description of a run for every command (metalstm.cli.add_run_options / config_from_args):
built-in names, .toml / .json configuration files, options in place of fields, and the refusal of
options the configuration does not use; gray and RGB image folders through options and files."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalstm import cli, evaluate
from metalstm import train as train_mod
from metalstm.baselines import suite
from metalstm.checkpoint import load_checkpoint
from metalstm.config import Config, get_config
from metalstm.episodes import load_split
from metalstm.tools import diagnose

SMALL = ["--episodes", "2", "--val-every", "2", "--val-episodes", "2", "--threads", "1", "-q"]


def image_folder(root, mode: str, size: int = 28):
    """root/{train,val,test}/<class>/<i>.png: 5 classes per split, 6 images each, stored as `mode`
    ("L" gray, "RGB"); each class a noisy copy of its own random picture."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in range(5):
            folder = root / split / f"{split}-{c}"
            folder.mkdir(parents=True)
            base = rng.integers(0, 256, (size, size, 3))
            for i in range(6):
                pixels = np.clip(base + rng.integers(-30, 31, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").convert(mode).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    top = tmp_path_factory.mktemp("folders")
    return {"gray": image_folder(top / "gray", "L"), "rgb": image_folder(top / "rgb", "RGB")}


def parse(*words, training=True):
    ap = argparse.ArgumentParser()
    cli.add_run_options(ap, training=training)
    return ap.parse_args(list(words))


def test_options_replace_the_configuration_fields():
    cfg = cli.config_from_args(parse("--config", "smoke", "--n-way", "3", "--k-shot", "2", "--steps", "4",
                                     "--lr", "0.01", "--rule", "sgd", "--seed", "7"))
    assert cfg == get_config("smoke", n_way=3, k_shot=2, steps=4, lr=0.01, rule="sgd", seed=7)
    assert cli.config_from_args(parse("--config", "glyphs-5shot")) is get_config("glyphs-5shot")


def test_a_toml_file_changes_a_base_and_a_json_file_stands_alone(tmp_path, folders):
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "gray").symlink_to(folders["gray"])
    (sub / "gray.toml").write_text('base = "smoke"\ndataset = "folder"\ndata_root = "../gray"\n'
                                   'in_channels = 1\nk_shot = 2\nforget_bias = [3.0, 4.0]\n')
    cfg = cli.load_config(str(sub / "gray.toml"))
    assert cfg.name == "gray" and cfg.dataset == "folder" and cfg.k_shot == 2 and cfg.steps == 3   # smoke's
    assert cfg.forget_bias == (3.0, 4.0) and cfg.data_root == str(folders["gray"].resolve())  # beside the file
    (tmp_path / "mine.json").write_text(json.dumps({"name": "mine", "n_query": 3, "episodes": 7}))
    mine = cli.load_config(str(tmp_path / "mine.json"))
    assert mine == Config("mine", n_query=3, episodes=7)


@pytest.mark.parametrize("text,words", [
    ('base = "smoke"\nn_ways = 3\n', ["unknown field(s) n_ways", "n_way"]),
    ('base = "smoke"\nk_shot = 0\n', ["k_shot", ">= 1"]),
    ('base = "smoke-2"\n', ["base 'smoke-2'", "glyphs-5shot"]),
    ('base = "smoke"\nk_shot = \n', ["not valid TOML"]),
])
def test_a_bad_configuration_file_is_one_line(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        cli.load_config(str(path))
    assert len(str(info.value).splitlines()) == 1 and all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("words,expected", [
    (["--config", "smoke", "--data-root", "somewhere"], ["--data-root somewhere", "'smoke'", "reads no folder"]),
    (["--config", "smoke", "--channels", "3"], ["--channels 3", "gray"]),
    (["--config", "smoke", "--val-alphabets", "Latin"], ["--val-alphabets", "Omniglot"]),
    (["--config", "smoke", "--dataset", "folder"], ["folder data set needs --data-root"]),
    (["--config", "paper-5shot", "--channels", "1"], ["--channels 1", "RGB"]),
    (["--config", "my.yaml"], ["unknown configuration 'my.yaml'", ".toml / .json"]),
])
def test_an_option_the_configuration_does_not_use_is_refused_by_train(tmp_path, capsys, words, expected):
    assert train_mod.main(words + ["--out", str(tmp_path / "run")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in expected), err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_omniglot_alphabets_reach_the_loader(tmp_path):
    from metalstm.data.omniglot import VAL_ALPHABETS
    for subset, alphabets in {"images_background": ["Latin", "Greek", VAL_ALPHABETS[0]],
                              "images_evaluation": ["Tengwar"]}.items():
        for a in alphabets:
            for c in range(5):
                d = tmp_path / "omniglot-py" / subset / a / f"character{c + 1:02d}"
                d.mkdir(parents=True)
                for k in range(6):
                    Image.fromarray(np.full((20, 20), 40 * k, np.uint8), "L").save(d / f"{c}_{k}.png")
    cfg = cli.config_from_args(parse("--config", "smoke", "--dataset", "omniglot", "--data-root", str(tmp_path),
                                     "--val-alphabets", "Greek"))
    assert cfg.val_alphabets == ("Greek",)
    assert {n.split("/")[0] for n in load_split(cfg, "val").classes} == {"Greek"}
    assert {n.split("/")[0] for n in load_split(cfg, "train").classes} == {"Latin", VAL_ALPHABETS[0]}
    # a glyph-trained rule tested on Omniglot's test split, named by options alone
    assert evaluate.main(["--checkpoint", "glyphs-1shot", "--episodes", "2", "--threads", "1", "-q",
                          "--test-sets", "omniglot", "--data-root", str(tmp_path), "--n-query", "5"]) == 0


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_an_image_folder_trains_and_evaluates_through_the_options(folders, tmp_path, capsys, kind):
    channels = "1" if kind == "gray" else "3"
    out = tmp_path / "run"
    assert train_mod.main(["--config", "smoke", "--dataset", "folder", "--data-root", str(folders[kind]),
                           "--channels", channels, "--out", str(out), *SMALL]) == 0
    _, cfg, _ = load_checkpoint(out / "best.pt")
    assert (cfg["dataset"], cfg["in_channels"], cfg["data_root"]) == ("folder", int(channels), str(folders[kind].resolve()))
    report = tmp_path / "r.json"
    assert evaluate.main(["--checkpoint", str(out / "best.pt"), "--episodes", "2", "--threads", "1", "-q",
                          "--json", str(report)]) == 0
    assert "2 meta-test episodes of folder" in capsys.readouterr().out
    assert json.loads(report.read_text())["config"]["in_channels"] == int(channels)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_an_image_folder_trains_and_evaluates_through_a_configuration_file(folders, tmp_path, capsys, kind):
    (tmp_path / f"{kind}.toml").write_text(f'base = "smoke"\ndataset = "folder"\ndata_root = "{folders[kind]}"\n'
                                           f'in_channels = {1 if kind == "gray" else 3}\n')
    out = tmp_path / "run"
    assert train_mod.main(["--config", str(tmp_path / f"{kind}.toml"), "--out", str(out), *SMALL]) == 0
    _, cfg, _ = load_checkpoint(out / "best.pt")
    assert cfg["name"] == kind and cfg["in_channels"] == (1 if kind == "gray" else 3)
    assert evaluate.main(["--checkpoint", str(out / "best.pt"), "--config", str(tmp_path / f"{kind}.toml"),
                          "--episodes", "2", "--threads", "1", "-q"]) == 0
    assert f"{kind}: 5-way 1-shot, 2 meta-test episodes of folder" in capsys.readouterr().out


def test_evaluate_takes_a_shipped_run_by_name_and_refuses_another_model_shape(capsys):
    assert evaluate.main(["--checkpoint", "glyphs-1shot", "--episodes", "3", "--threads", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "glyphs-1shot: 5-way 1-shot, 3 meta-test episodes of glyphs" in out and "checkpoints/glyphs-1shot.pt" in out
    assert evaluate.main(["--checkpoint", "glyphs-1shot", "--n-way", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n-way 3" in err[0] and "n_way 5" in err[0]
    assert evaluate.main(["--checkpoint", "glyphs-1shot", "--test-sets", "folder"]) == 2
    assert "needs --data-root" in capsys.readouterr().err


COMMANDS = {"python -m metalstm.train": lambda: _parser(train_mod.main),
            "python -m metalstm.evaluate": evaluate.parser,
            "python -m metalstm.baselines": suite.parser,
            "python -m metalstm.tools.diagnose": lambda: _parser(diagnose.main)}


def _parser(main):
    """The ArgumentParser a main() builds (captured at parse_args; --help is not run)."""
    seen = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):
        seen.append(self)
        raise SystemExit(0)
    argparse.ArgumentParser.parse_args = capture
    try:
        main([])
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_args = real
    return seen[0]


@pytest.mark.parametrize("prog", COMMANDS)
def test_every_command_shares_the_run_options_and_shows_each_default(prog):
    ap = COMMANDS[prog]()
    assert ap.format_usage().startswith(f"usage: {prog} ")
    flags = {s for a in ap._actions for s in a.option_strings}
    assert {"--config", "--dataset", "--data-root", "--channels", "--n-way", "--k-shot", "--n-query",
            "--image-size", "--steps", "--batch-size", "--seed", "--quiet", "--verbose"} <= flags
    formatter = ap._get_formatter()
    for action in ap._actions:
        if action.option_strings and action.nargs != 0 and not action.required:
            text = formatter._expand_help(action) if action.help else ""
            assert "default" in text, (prog, action.option_strings, text)


def test_the_shipped_baselines_are_found_and_other_ones_go_to_the_user_cache(tmp_path, monkeypatch):
    from metalstm.paths import data_dir
    monkeypatch.setenv("METALSTM_CACHE", str(tmp_path / "cache"))
    no_cache = argparse.Namespace(cache=None)
    cfg = get_config("glyphs-5shot")
    data = {s: load_split(cfg, s) for s in ("train", "val")}
    shipped = data_dir() / "checkpoints" / "baselines"
    assert suite.pick_cache(no_cache, cfg, ["nearest", "matching", "sgd"], None, data) == shipped
    smoke = get_config("smoke")            # its Matching Network does not ship
    assert suite.pick_cache(no_cache, smoke, ["matching"], None, data) == tmp_path / "cache" / "baselines"
    assert suite.pick_cache(argparse.Namespace(cache="mine"), cfg, ["nearest"], None, data) == \
        Path("mine")
