"""The student edition (`make student`, python -m metalstm.tools.student OUT): the course without its solutions.

It must hold none of the solutions' code or worked answers (searched for, function by function, in every
text file), no file named like a solution and no pointer to one; and it must still run: a notebook executes
in it with its own package, and the exercise checks work there, with no solutions folder to read.
"""
from __future__ import annotations

import ast
import filecmp
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest

from metalstm.tools import student

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "notebooks" / "solutions"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Answers the package itself implements because a notebook uses them: not something the student edition can
# leave out without breaking the course. Each is allowed in that one file only (any other copy still fails).
PACKAGE_HOLDS = {
    # notebook 06's substitution table runs the "no-forget" rule: metalstm.distill.NoForgetting is exercise 06.1
    ("06_gate_visualization.py", "NoForgetting.__init__"): "metalstm/distill.py",
    ("06_gate_visualization.py", "NoForgetting.step"): "metalstm/distill.py",
}


# -- the solutions' fingerprints -----------------------------------------------------------------
def _norm(text: str) -> str:
    """Whitespace collapsed, comment signs dropped: the same code or prose however it is wrapped."""
    return re.sub(r"\s+", " ", text.replace("#", " ")).strip()


def _functions(tree):
    """(qualified name, node) of every function and method."""
    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, prefix + child.name + ".")
    yield from visit(tree, "")


def fingerprints(path: Path) -> list[tuple[str, str]]:
    """(what, normalised text) for a solutions file: every function body of a few lines (as written, with its
    comments, and as bare statements), every docstring and comment block long enough to be an answer."""
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    found = []
    for name, node in _functions(ast.parse(src)):
        body = node.body
        doc = ast.get_docstring(node, clean=False)
        if doc is not None:
            body = body[1:]
            if len(_norm(doc)) >= 80:
                found.append((f"{name} docstring", _norm(doc)))
        if not body:
            continue
        raw = _norm("\n".join(lines[body[0].lineno - 1: body[-1].end_lineno]))
        bare = _norm("\n".join(ast.get_source_segment(src, s) for s in body))
        if body[-1].end_lineno - body[0].lineno + 1 >= 3 or len(bare) >= 60:    # a few lines, or a long one
            found += [(f"{name} body", raw)] + ([(f"{name} body without comments", bare)] if bare != raw else [])
        code = [line for line in lines[body[0].lineno - 1: body[-1].end_lineno]
                if line.strip() and not line.strip().startswith("#")]
        for k in range(len(code) - 2):             # a part of a longer body: any three lines in a row
            window = _norm("\n".join(code[k: k + 3]))
            if len(window) >= 60 and window != raw:
                found.append((f"{name} lines {k + 1}-{k + 3}", window))
    block, last = [], None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type != tokenize.COMMENT:
            continue
        if last is not None and tok.start[0] == last + 1 and tok.line.lstrip().startswith("#"):
            block.append(tok.string)
        else:
            if len(_norm(" ".join(block))) >= 80:
                found.append((f"comment at line {last}", _norm(" ".join(block))))
            block = [tok.string]
        last = tok.start[0]
    if len(_norm(" ".join(block))) >= 80:
        found.append((f"comment at line {last}", _norm(" ".join(block))))
    return found


def _texts(folder: Path) -> dict[str, str]:
    """Every text file under `folder` (a notebook: its cells' sources and text outputs), normalised."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue                                # data arrays, checkpoints, pictures
        if path.suffix == ".ipynb":
            text = student._notebook_text(json.loads(text))
        out[path.relative_to(folder).as_posix()] = _norm(text)
    return out


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "course"
    student.build(out)
    return out


@pytest.fixture(scope="module")
def prints():
    """The needles. Three lines of a body that the instructor's course already shows outside the solutions
    (a solution that reuses the notebook's own sampler, say) are not an answer and are not searched for;
    whole bodies, docstrings and comments always are."""
    course = [text for folder in (ROOT / "notebooks", ROOT / "metalstm", ROOT / "docs")
              for rel, text in _texts(folder).items() if not rel.startswith("solutions/")]
    return [(p.name, what, text) for p in sorted(SOLUTIONS.glob("*.py")) for what, text in fingerprints(p)
            if " lines " not in what or not any(text in haystack for haystack in course)]


def test_the_fingerprints_cover_every_solutions_file(prints):
    """The search below is only as good as its needles: every solutions file gives some, and each needle is
    found in the file it came from (the search would find a verbatim copy; the bare statements of a body
    with comments inside are the needle for a copy without them)."""
    assert {name for name, _, _ in prints} == {p.name for p in SOLUTIONS.glob("*.py")}
    assert len(prints) >= 30
    own = _texts(SOLUTIONS)
    for name, what, text in prints:
        assert text in own[name] or what.endswith("without comments"), (name, what)


def test_the_student_edition_holds_none_of_the_solutions_code(edition, prints):
    texts = _texts(edition)
    leaks = []
    for name, what, text in prints:
        allowed = PACKAGE_HOLDS.get((name, what.split(" ")[0]))
        leaks += [f"{rel}: {name} {what}" for rel, haystack in texts.items() if text in haystack and rel != allowed]
    assert not leaks, "solution text in the student edition:\n" + "\n".join(leaks)


def test_no_file_named_like_a_solution_and_no_tests(edition):
    names = [p.relative_to(edition).as_posix() for p in edition.rglob("*")]
    assert not [n for n in names if "solution" in n.lower()]
    assert not (edition / "notebooks" / "solutions").exists() and not (edition / "tests").exists()
    assert not (edition / "metalstm" / "tools" / "student.py").exists()      # it names the solutions' folder


def test_no_pointer_to_the_solutions_and_no_lecturer_notes(edition):
    assert student.leftover_pointers(edition) == []
    for path in sorted((edition / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        exercises = [c for c in cells if "".join(c["source"]).startswith("## Exercises")]
        assert len(exercises) == 1 and student.NEUTRAL in "".join(exercises[0]["source"]), path.name
        assert not [c for c in cells if c["metadata"].get("slideshow", {}).get("slide_type") == "notes"]
        assert not [c for c in cells if "Lecturer's notes" in "".join(c["source"])]
        assert not [c for c in cells if student.SOLUTION_TAG in c["metadata"].get("tags", [])]
    readme = (edition / "README.md").read_text()
    assert "Student edition" in readme and "solutions/" not in readme
    assert "notebooks/solutions" not in (edition / "metalstm" / "check.py").read_text()


def test_the_student_edition_has_what_the_course_needs(edition):
    for name in ("pyproject.toml", "Makefile", "environment.yml", "README.md", "metalstm/__init__.py",
                 "metalstm/check.py", "notebooks/colab_setup.py", "data/glyphs-v1.npz"):
        assert (edition / name).is_file(), name
    assert [p.name for p in sorted((edition / "notebooks").glob("[0-9][0-9]_*.ipynb"))] == [p.name for p in NOTEBOOKS]
    assert {p.name for p in (edition / "docs").glob("*.md")} == {p.name for p in (ROOT / "docs").glob("*.md")}
    shipped = subprocess.run(["git", "-C", str(ROOT), "ls-files", "data"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert any(n.endswith(".pt") for n in shipped)
    for name in shipped:                        # copied byte for byte, not linked
        if (ROOT / name).is_file():
            assert not (edition / name).is_symlink() and filecmp.cmp(ROOT / name, edition / name, shallow=False), name
    assert not [p for p in edition.rglob("*") if p.is_symlink()]
    make = (edition / "Makefile").read_text()
    assert "tests/" not in make and "browser-check" not in make and "metalstm.tools.student" not in make
    assert re.search(r"(?m)^test:.*\n(\t.*\n)*\t.*pytest .* notebooks$", make)


def test_the_instructor_edition_is_left_as_it_was(tmp_path):
    def digest():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in [*NOTEBOOKS, *SOLUTIONS.glob("*.py"), ROOT / "README.md", ROOT / "Makefile",
                          ROOT / "metalstm" / "check.py"]}
    before = digest()
    student.build(tmp_path / "out")
    assert digest() == before


def test_the_output_folder_is_checked(tmp_path, capsys):
    with pytest.raises(student.StudentEditionError, match="holds the course"):
        student.build(ROOT)
    with pytest.raises(student.StudentEditionError, match="inside the course's own notebooks"):
        student.build(ROOT / "notebooks" / "student")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert student.main([str(tmp_path / "mine")]) == 1
    assert student.main([str(tmp_path / "mine"), "--force"]) == 1          # not written by the tool: kept
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert "not written by this tool" in capsys.readouterr().err
    out = tmp_path / "edition"
    assert student.main([str(out)]) == 0
    (out / "stale.txt").write_text("from last time")
    assert student.main([str(out), "--force"]) == 0                        # an earlier edition is replaced
    assert not (out / "stale.txt").exists() and (out / student.STAMP).exists()
    assert not (tmp_path / "edition.partial").exists()


# -- the marker convention ------------------------------------------------------------------------------------
def _cell(kind, source, **metadata):
    cell = {"cell_type": kind, "metadata": metadata, "source": source}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "42\n"}], execution_count=3)
    return cell


def test_the_markers():
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        _cell("markdown", "## Exercises\n\nSolutions: `notebooks/solutions/09_x.py` (one function per exercise;\n"
                          "`tests/notebooks/test_notebook09_agrees.py` checks them). Write each function."),
        _cell("code", "def f(x):\n    # your answer\n    raise NotImplementedError"),
        _cell("code", "def f(x):\n    return 2 * x", tags=["solution"]),
        _cell("code", "def g(x):\n    y = x\n    ### BEGIN SOLUTION\n    y = 3 * x\n    ### END SOLUTION\n    return y"),
        _cell("markdown", "Why?\n\n### BEGIN SOLUTION\nBecause 3.\n### END SOLUTION"),
        _cell("markdown", "*Lecturer's notes.* The answer is 3.", slideshow={"slide_type": "notes"}),
        _cell("code", "print(1)", tags=["hide-input"]),
    ]}
    out = student.strip_notebook(nb, "09_x.ipynb")
    sources = ["".join(c["source"]) for c in out["cells"]]
    assert sources == [
        "## Exercises\n\nYour instructor has the solutions. Write each function.",
        "def f(x):\n    # your answer\n    raise NotImplementedError",
        "def g(x):\n    y = x\n    # YOUR CODE HERE\n    raise NotImplementedError()\n    return y",
        "Why?\n\nYOUR ANSWER HERE",
        "print(1)"]
    assert out["cells"][2]["outputs"] == [] and out["cells"][1]["outputs"]      # a cleared answer's output goes
    assert len(nb["cells"]) == 7                                                # the instructor's is untouched
    for broken in ("### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                   "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(student.StudentEditionError, match="09_x.ipynb cell 0"):
            student.strip_notebook({**nb, "cells": [_cell("code", broken)]}, "09_x.ipynb")


def test_a_pointer_without_a_rule_stops_the_build(tmp_path, monkeypatch):
    fake = tmp_path / "root"
    (fake / "notebooks").mkdir(parents=True)
    (fake / "README.md").write_text("See notebooks/solutions for the answers.\n")
    monkeypatch.setattr(student, "source_files", lambda root: ["README.md"])
    with pytest.raises(student.StudentEditionError, match="README.md:4: See notebooks/solutions"):
        student.build(tmp_path / "out", root=fake)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


# -- it runs ---------------------------------------------------------------------------------------------------
def _env(edition: Path) -> dict:
    """The environment of a student's session: the edition's package first, its own data folder."""
    env = {k: v for k, v in os.environ.items() if k != "METALSTM_DATA"}
    env.update(PYTHONPATH=str(edition), TQDM_DISABLE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    return env


def _function_source(path: Path, name: str) -> str:
    src = path.read_text()
    node = next(n for n in ast.parse(src).body if getattr(n, "name", None) == name)
    return ast.get_source_segment(src, node)


@pytest.mark.slow
def test_the_exercise_checks_work_in_the_student_edition(edition):
    """metalstm.check from the edition, with no solutions anywhere in it: a stub is "not answered yet", a wrong
    answer gets a hint, the instructor's solution (copied into the script from outside the edition) is right.
    No file under a solutions folder is opened (an audit hook watches every open)."""
    right_count = _function_source(SOLUTIONS / "01_episodes.py", "count_tasks")
    right_unpre = _function_source(SOLUTIONS / "03_preprocessing_and_parameter_sharing.py", "unpreprocess")
    script = textwrap.dedent(f"""
        import math, sys
        from pathlib import Path
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and args else None)
        import torch
        import metalstm
        from metalstm import check
        assert Path(metalstm.__file__).resolve().is_relative_to(Path({str(edition)!r}).resolve()), metalstm.__file__

        def count_tasks(num_classes, n_way, labelled=True):
            raise NotImplementedError
        assert check.exercise("01", 2, count_tasks) is False
        def count_tasks(num_classes, n_way, labelled=True):
            return math.comb(num_classes, n_way)            # forgets the label order
        assert check.exercise("01", 2, count_tasks) is False
        def unpreprocess(z, p=10.0):
            return z[..., 1]                                # the sign only
        assert check.exercise("03", 1, unpreprocess) is False
        """) + right_count + "\n" + right_unpre + textwrap.dedent("""
        assert check.exercise("01", 2, count_tasks) is True
        assert check.exercise("03", 1, unpreprocess) is True
        bad = [p for p in opened if "solution" in p.lower()]
        assert not bad, bad
        print("checks ok")
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=edition, env=_env(edition), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "checks ok" in out
    assert "Exercise 01.2 (count_tasks): not answered yet" in out
    assert "Exercise 01.2 (count_tasks): not yet right. Hint:" in out
    assert "Exercise 03.1 (unpreprocess): not yet right. Hint:" in out
    assert "Exercise 01.2 (count_tasks): right." in out and "Exercise 03.1 (unpreprocess): right." in out


def _execute(edition: Path, names: list[str], out: Path, timeout: int) -> None:
    """Execute notebooks of the edition as its `make course` does (metalstm.tools.course.execute, the edition's
    own copy), each in its folder; assert they ran through with the edition's package and its checks."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from metalstm.tools import course
        failed = []
        for name in {names!r}:
            seconds, error = course.execute(Path("notebooks") / name, Path({str(out)!r}))
            print(f"{{name}} {{seconds:.1f}} s {{error or 'ok'}}", flush=True)
            failed += [name] if error else []
        sys.exit(1 if failed else 0)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=edition, env=_env(edition), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    for name in names:
        text = student._notebook_text(json.loads((out / name).read_text()))
        assert f"from {edition.resolve() / 'metalstm'}" in text           # colab_setup's line: the edition's package
        assert "not answered yet" in text and "Traceback" not in text


@pytest.mark.slow
def test_notebook01_runs_in_the_student_edition(edition, tmp_path):
    _execute(edition, ["01_episodes.ipynb"], tmp_path / "executed", timeout=900)


@pytest.mark.edition
def test_all_six_notebooks_run_in_the_student_edition(edition, tmp_path):
    _execute(edition, [p.name for p in NOTEBOOKS], tmp_path / "executed", timeout=3600)
