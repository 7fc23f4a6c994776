"""The installed package works from any folder (issue 26): `pip install` of a clone (the
committed state), not editable, into a fresh environment; then, from an empty folder with no
METALSTM_DATA, a smoke training, an evaluation of a shipped checkpoint by name and the
adapt/predict example run.

The fresh environment reuses this one's torch and other dependencies (a .pth file naming their
folders: pip finds the dependencies installed, and never removes what lies outside the fresh
environment, such as an editable metalstm there) and installs nothing but metalstm. It needs no
network (`--no-index`) unless this environment's setuptools is older than pyproject.toml's build
requirement; then pip fetches setuptools from the package index for an isolated build. The
clone's tree must be as clean after the install as before it, and a run's files readable by
others (0644 under the usual umask 022).
"""
import importlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPENDENCIES = ("torch", "torchvision", "matplotlib", "numpy", "PIL", "platformdirs", "tqdm")
BUILD_NEEDS = (77,)                     # setuptools>=77 (pyproject.toml's build-system)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_subpackage_and_data_file_is_in_the_distribution():
    """pyproject.toml lists the packages by name (data/ is mapped onto metalstm_data): a new
    subpackage of metalstm must be listed, or an installed package would lack it."""
    tool = _pyproject()["tool"]["setuptools"]
    here = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "metalstm").rglob("__init__.py")}
    assert here <= set(tool["packages"]), f"not in pyproject.toml's packages: {sorted(here - set(tool['packages']))}"
    assert tool["package-dir"] == {"metalstm_data": "data"} and "metalstm_data" in tool["packages"]
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "data"], capture_output=True, text=True,
                             check=True).stdout.split()
    globs = tool["package-data"]["metalstm_data"]
    data = REPO / "data"
    tracked = [n for n in tracked if not n.startswith("data/grid-parked/")]   # the grid's runs in progress
    missed = [n for n in tracked if not any(Path(n).relative_to("data").match(g) and
                                           len(Path(n).relative_to("data").parts) == len(Path(g).parts)
                                           for g in globs)]
    assert not missed, f"tracked data files that the package data leaves out: {missed}"
    assert (data / "glyphs-v1.npz").is_file() and (data / "checkpoints" / "glyphs-5shot.pt").is_file()


def _setuptools_is_new_enough() -> bool:
    try:
        version = importlib.import_module("setuptools").__version__
    except ImportError:
        return False
    return tuple(int(part) for part in version.split(".")[:1]) >= BUILD_NEEDS


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(environment's python, clone, empty working folder, environment variables)."""
    root = tmp_path_factory.mktemp("install")
    clone, env = root / "clone", root / "env"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    before = subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "--ignored"],
                            capture_output=True, text=True, check=True).stdout
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    python = env / ("Scripts" if os.name == "nt" else "bin") / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    reused = {str(Path(importlib.import_module(name).__file__).resolve().parents[1]) for name in DEPENDENCIES}
    if _setuptools_is_new_enough():
        reused.add(str(Path(importlib.import_module("setuptools").__file__).resolve().parents[1]))
    (site / "reuse-installed.pth").write_text("\n".join(sorted(reused)) + "\n")
    # offline when this environment can build the clone; else pip fetches setuptools for the build
    offline = ["--no-index", "--no-build-isolation"] if _setuptools_is_new_enough() else []
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--disable-pip-version-check", *offline, str(clone)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "--ignored"],
                           capture_output=True, text=True, check=True).stdout
    assert after == before == "", f"the install wrote into the clone:\n{after}"
    away = root / "elsewhere"
    away.mkdir()
    variables = {k: v for k, v in os.environ.items()
                 if k not in ("METALSTM_DATA", "METALSTM_CHECKPOINTS", "METALSTM_CACHE", "PYTHONPATH")}
    variables.update(OMP_NUM_THREADS="1", TQDM_DISABLE="1", MPLBACKEND="Agg",
                     XDG_CACHE_HOME=str(root / "user-cache"))
    return python, clone, away, variables


def run(installed, *command, timeout=600):
    python, _, away, variables = installed
    done = subprocess.run([str(c) for c in command], cwd=away, env=variables, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=(lambda: os.umask(0o022)) if os.name == "posix" else None)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_installed_package_finds_its_data_from_any_folder(installed):
    python, clone, away, _ = installed
    out = run(installed, python, "-c", "import metalstm, metalstm.paths as p; print(metalstm.__file__); "
                                       "print(p.data_dir()); print(p.checkpoint_path('glyphs-5shot'))")
    package, data, checkpoint = (Path(line) for line in out.split())
    site = package.parents[1]
    assert site.is_relative_to(python.parents[1]) and not package.is_relative_to(clone)
    assert data == site / "metalstm_data" and checkpoint == data / "checkpoints" / "glyphs-5shot.pt"
    assert (data / "glyphs-v1.npz").is_file() and (data / "digits-v1.json").is_file()
    assert (data / "results" / "ladder-5shot.json").is_file()


@pytest.mark.slow
def test_smoke_training_from_an_empty_folder(installed):
    python, _, away, _ = installed
    script = python.with_name("metalstm-train")
    assert run(installed, script, "--help").startswith("usage: metalstm-train")   # the command's own name
    run(installed, script, "--config", "smoke", "--out", "smoke-run", "--threads", "1")
    modes = _modes(away / "smoke-run")
    assert {"best.pt", "last.pt", "log.csv"} <= set(modes), modes
    assert ".lock" not in modes and not list((away / "smoke-run").glob(".*"))
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items()}


@pytest.mark.slow
def test_evaluating_a_shipped_checkpoint_by_name(installed):
    python, _, away, _ = installed
    script = python.with_name("metalstm-evaluate")
    run(installed, script, "--checkpoint", "glyphs-5shot", "--episodes", "3", "--threads", "1",
        "--json", "eval.json")
    assert stat.S_IMODE((away / "eval.json").stat().st_mode) == 0o644
    assert "glyphs-5shot" in (away / "eval.json").read_text()


README_EXAMPLES = """
import doctest, sys
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
runner = doctest.DocTestRunner(optionflags=flags)
runner.run(doctest.DocTestParser().get_doctest(open(sys.argv[1]).read(), {}, "README", sys.argv[1], 0))
assert runner.failures == 0, runner.summarize()
print("README EXAMPLES", runner.tries)
"""


@pytest.mark.slow
def test_adapt_and_predict_with_a_shipped_checkpoint(installed, tmp_path):
    """metalstm.adapt's own examples (doctests: load("glyphs-5shot") by name), a 1-shot one, and
    the README's Python examples (its ```python blocks with >>> prompts), if it has any."""
    python, clone, away, _ = installed
    script = """
import doctest, torch
import metalstm.adapt
result = doctest.testmod(metalstm.adapt)
assert result.attempted > 0 and result.failed == 0, result
model = metalstm.adapt.load("glyphs-1shot")
g = torch.Generator().manual_seed(0)
support_x, support_y = torch.rand(5, *model.image_shape, generator=g), torch.arange(5)
fitted = model.adapt(support_x, support_y)
predicted = fitted.predict(torch.rand(7, *model.image_shape, generator=g))
assert predicted.shape == (7,) and int(predicted.min()) >= 0 and int(predicted.max()) < model.n_way
print("ADAPTED", result.attempted)
"""
    assert "ADAPTED" in run(installed, python, "-c", script)
    blocks = re.findall(r"```(?:python|pycon)\n(.*?)```", (clone / "README.md").read_text(), re.S)
    examples = "\n".join(b for b in blocks if ">>>" in b)
    if examples:
        (tmp_path / "readme-examples.txt").write_text(examples)
        assert "README EXAMPLES" in run(installed, python, "-c", README_EXAMPLES, tmp_path / "readme-examples.txt")
    assert {p.name for p in away.iterdir()} <= {"eval.json", "smoke-run"}     # no runs/, no cache here
