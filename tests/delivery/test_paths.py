"""One function finds the data folder (metalstm.paths.data_dir): the checkout's data/, or
$METALSTM_DATA, so that the package also works when installed away from the checkout."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from metalstm import paths
from metalstm.data import glyphs
from metalstm.paths import shipped_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(paths.ENV, raising=False)
    monkeypatch.delenv("METALSTM_CHECKPOINTS", raising=False)


@pytest.fixture
def no_editable_data(monkeypatch):
    """Only sys.path finds metalstm_data: an editable install's finder and path hook (which map it
    onto the checkout's data/ for every process) are taken out for the test."""
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if "__editable__" not in getattr(f, "__module__", "")
                                           and "__editable__" not in getattr(type(f), "__module__", "")])
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "__editable__" not in p])   # its path hook
    monkeypatch.delitem(sys.modules, paths.DATA_PACKAGE, raising=False)


def test_checkout_data_folder_by_default(no_env):
    assert paths.data_dir() == REPO / "data"
    assert glyphs.paths()[0] == REPO / "data" / "glyphs-v1.npz"
    assert shipped_checkpoint("glyphs-5shot") == REPO / "data" / "checkpoints" / "glyphs-5shot.pt"


def test_the_setting_moves_every_data_file(no_env, tmp_path, monkeypatch):
    for path in glyphs.paths():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "glyphs-5shot.pt").write_bytes(b"")
    monkeypatch.setenv(paths.ENV, str(tmp_path))
    assert paths.data_dir() == tmp_path
    assert glyphs.paths()[1] == tmp_path / "glyphs-v1.json"
    assert glyphs.load_glyphs("val").num_classes > 100
    assert shipped_checkpoint("glyphs-5shot") == tmp_path / "checkpoints" / "glyphs-5shot.pt"
    monkeypatch.setenv(paths.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="METALSTM_DATA is .*nowhere.*not a folder"):
        paths.data_dir()


def test_no_data_folder_is_one_clear_error(no_env, no_editable_data, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CHECKOUT", tmp_path)               # a package with no data/ beside it
    with pytest.raises(FileNotFoundError, match="Set METALSTM_DATA to the folder that holds glyphs-v1.npz"):
        paths.data_dir()
    with pytest.raises(FileNotFoundError, match="METALSTM_DATA"):
        glyphs.load_glyphs("train")


@pytest.mark.slow
def test_an_installed_copy_works_with_the_setting(tmp_path):
    """The package copied away from the checkout without its data package (tests/delivery/
    test_install.py installs both)."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "metalstm", site / "metalstm", ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent("""
        import sys
        sys.modules["metalstm_data"] = None    # nor the data package (an editable install maps it to data/)
        from metalstm.data.glyphs import load_glyphs
        from metalstm.tools import course
        try:
            load_glyphs("val")
        except FileNotFoundError as err:
            print("ERROR", err)
        else:
            print("LOADED")
        try:
            course.course_notebooks()
        except SystemExit as err:
            print("COURSE", err)
    """)
    env = {k: v for k, v in os.environ.items() if k not in (paths.ENV, "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    def run(**extra):
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = run()
    assert f"no data folder: {site / 'data'} does not exist" in out and "METALSTM_DATA" in out
    assert "COURSE no notebooks folder" in out and "checkout" in out
    assert "LOADED" in run(**{paths.ENV: str(REPO / "data")})


def test_cache_folder_is_the_users_not_the_current_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert paths.cache_dir() == tmp_path / "xdg" / "metalstm"          # platformdirs on Linux
    assert paths.cache_dir("baselines") == tmp_path / "xdg" / "metalstm" / "baselines"
    assert not paths.cache_dir().exists()                               # made by whoever writes
    monkeypatch.setenv(paths.CACHE_ENV, "~/elsewhere")
    assert paths.cache_dir("baselines") == Path.home() / "elsewhere" / "baselines"


def test_cache_folder_without_platformdirs(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "platformdirs", None)              # import fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert paths.cache_dir() == tmp_path / "metalstm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.cache_dir() == Path.home() / ".cache" / "metalstm"


def test_lookup_order_setting_then_checkout_then_installed_data_package(no_env, no_editable_data, tmp_path,
                                                                       monkeypatch):
    site = tmp_path / "site"
    (site / paths.DATA_PACKAGE).mkdir(parents=True)
    monkeypatch.delitem(sys.modules, paths.DATA_PACKAGE, raising=False)
    monkeypatch.syspath_prepend(str(site))                          # as pip installs data/ beside metalstm
    assert paths.data_dir() == REPO / "data"                         # a checkout's data/ comes first
    monkeypatch.setattr(paths, "CHECKOUT", tmp_path / "no-checkout")
    with pytest.raises(FileNotFoundError, match="metalstm_data is not installed"):
        paths.data_dir()                                             # a folder without the data is not it
    (site / paths.DATA_PACKAGE / "glyphs-v1.npz").write_bytes(b"")
    assert paths.data_dir() == site / paths.DATA_PACKAGE
    assert paths.checkpoint_path("runs/x/best.pt") == Path("runs/x/best.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint .*metalstm_data/checkpoints/glyphs-5shot.pt"):
        paths.checkpoint_path("glyphs-5shot")
    monkeypatch.setenv(paths.ENV, str(tmp_path))                     # the setting wins over both
    assert paths.data_dir() == tmp_path


def test_shipped_checkpoints_and_rungs_by_name(no_env, tmp_path, monkeypatch):
    shipped = REPO / "data" / "checkpoints"
    assert paths.checkpoint_path("glyphs-1shot") == shipped / "glyphs-1shot.pt"
    assert paths.checkpoint_path("glyphs-5shot-meta-sgd") == shipped / "ladder" / "glyphs-5shot-meta-sgd.pt"
    names = paths.shipped_names()
    assert {"glyphs-1shot", "glyphs-5shot", "glyphs-1shot-lstm", "glyphs-5shot-sgd"} <= set(names)
    with pytest.raises(FileNotFoundError, match="'glyph-5shot': not a file, nor the name of a shipped "
                                                "checkpoint \\(glyphs-1shot, glyphs-5shot, .*glyphs-1shot-init"):
        paths.checkpoint_path("glyph-5shot")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glyphs-1shot").write_bytes(b"")                  # a file of that name here wins
    assert paths.checkpoint_path("glyphs-1shot") == Path("glyphs-1shot")
    monkeypatch.setenv("METALSTM_CHECKPOINTS", str(tmp_path / "mine"))
    with pytest.raises(FileNotFoundError, match="(?s)mine/glyphs-5shot.pt .*METALSTM_CHECKPOINTS.*--config glyphs-5shot"):
        paths.checkpoint_path("glyphs-5shot")                      # a configuration: how to train it
