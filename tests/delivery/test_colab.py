"""The Open-in-Colab set-up cell: one snippet (notebooks/colab_setup.py) that every lecture notebook
carries verbatim as its second cell, and that installs the course where `metalstm` is missing.

The install test is slow (a fresh virtual environment): `pytest -m slow tests/delivery/test_colab.py`.
It runs the snippet with a new venv's Python, outside the repository, with REPO pointed at this
repository (a file:// URL) and its current branch. The venv sees the packages of the project's
.venv (torch, ...) through a .pth file over a folder of links that leaves metalstm out, and pip
runs with no index and no build isolation: nothing is downloaded, nothing in .venv is touched.
"""
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = ROOT / "notebooks" / "colab_setup.py"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CARRY_IT = ("01", "02", "03", "04", "05", "06")   # notebooks that must carry the cell
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                   r"\(https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/notebooks/(\S+)\)")


def snippet() -> str:
    return SNIPPET.read_text().rstrip("\n")


def setup_cells(path: Path) -> list[int]:
    first = snippet().splitlines()[0]
    nb = nbformat.read(path, as_version=4)
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(first)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_notebook_carries_the_one_setup_cell_and_its_badge(path):
    cells = setup_cells(path)
    if path.name[:2] not in CARRY_IT and not cells:
        pytest.skip(f"{path.name} has no Colab cell yet")
    nb = nbformat.read(path, as_version=4)
    assert cells == [1], f"{path.name}: the set-up cell must be the second cell, once (found at {cells})"
    assert nb.cells[1].source == snippet(), f"{path.name}: its set-up cell differs from {SNIPPET.name}"
    badge = BADGE.search(nb.cells[0].source)
    assert nb.cells[0].cell_type == "markdown" and badge, f"{path.name}: no Open-in-Colab badge in the first cell"
    assert badge.group(1) == path.name, f"{path.name}: its badge opens {badge.group(1)}"
    repo = re.search(r'^REPO = "https://github\.com/([^"]+)"', snippet(), re.M)
    assert repo and f"colab.research.google.com/github/{repo.group(1)}/blob/" in nb.cells[0].source, \
        "the badge and REPO must name the same repository"


@pytest.mark.slow
def test_the_cell_does_nothing_but_print_versions_where_metalstm_is_installed(tmp_path):
    done = subprocess.run([sys.executable, str(SNIPPET)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.match(r"metalstm \d+\.\d+\.\d+ \(commit \w+\) from .*; torch .*; Python 3", done.stdout)
    assert list(tmp_path.iterdir()) == [], "it cloned something although metalstm was importable"


def _site_without_metalstm(tmp_path: Path) -> Path:
    """A folder of links to everything in this Python's site-packages except metalstm itself."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()))
    links = tmp_path / "deps"
    links.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith(("metalstm", "__editable__", "_metalstm")) or entry.suffix == ".pth":
            continue
        (links / entry.name).symlink_to(entry)
    return links


@pytest.mark.slow
def test_the_cell_clones_and_installs_the_course_in_a_fresh_environment(tmp_path):
    branch = subprocess.run(["git", "-C", str(ROOT), "symbolic-ref", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if not branch:
        pytest.skip("the repository is on a detached HEAD: no branch to clone")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    for old in Path(purelib).glob("setuptools*"):     # ensurepip's old one would shadow .venv's (no PEP 660)
        shutil.rmtree(old)
    Path(purelib, "course-deps.pth").write_text(str(_site_without_metalstm(tmp_path)) + "\n")
    work = tmp_path / "colab"
    work.mkdir()
    source = snippet()
    source = re.sub(r'^REPO = .*$', f'REPO = "file://{ROOT}"', source, count=1, flags=re.M)
    source = re.sub(r'^BRANCH = .*$', f'BRANCH = "{branch}"', source, count=1, flags=re.M)
    (work / "cell.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    absent = subprocess.run([str(python), "-c", "import metalstm"], cwd=work, capture_output=True, env=env)
    assert absent.returncode != 0, "the fresh environment must start without metalstm"
    done = subprocess.run([str(python), "cell.py"], cwd=work, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    clone = work / "metalstm-course"
    assert f"metalstm 0.1.0 (commit {commit}) from {clone / 'metalstm'}; torch " in done.stdout, done.stdout
    # installed for good: a new process finds it, from anywhere
    again = subprocess.run([str(python), "-c", "import metalstm; print(metalstm.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout.strip() == str(clone / "metalstm" / "__init__.py"), again.stderr
    # and the cell, run again, does not clone again
    rerun = subprocess.run([str(python), "cell.py"], cwd=work, capture_output=True, text=True, env=env,
                           timeout=120)
    assert rerun.returncode == 0 and f"(commit {commit})" in rerun.stdout, rerun.stderr
