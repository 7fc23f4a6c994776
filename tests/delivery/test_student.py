"""The student edition (`make student`, python -m metalstm.tools.student OUT): the course without its solutions.

It must hold none of the solutions' code or worked answers (searched for, function by function, in every
text file), no file named like a solution and no pointer to one; and it must still run: a notebook executes
in it with its own package, and the exercise checks work there, with no solutions folder to read.
"""
from __future__ import annotations

import ast
import filecmp
import hashlib
import inspect
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
    comments, and as bare statements), any three of its lines in a row, every line that returns or assigns
    something (`return 1.0 - lr * weight_decay, lr`: a one-line answer), every docstring and comment block
    long enough to be an answer."""
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
        for statement in ast.walk(node):
            if isinstance(statement, (ast.Return, ast.Assign, ast.AugAssign)) and statement.value is not None:
                line = _norm(ast.get_source_segment(src, statement))
                if len(line) >= 20 and line not in {text for _, text in found}:
                    found.append((f"{name} line {statement.lineno}", line))
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
    """The needles. A line, or three lines, of a body that the instructor's course already shows outside the
    solutions (`learner, meta = build_model(cfg)`, the notebook's own sampler) are not an answer and are not
    searched for; whole bodies, docstrings and comments always are."""
    left_out = set(student.source_files(ROOT, left_out=True))        # not shown to a student: no excuse
    course = [text for folder in (ROOT / "notebooks", ROOT / "metalstm", ROOT / "docs")
              for rel, text in _texts(folder).items()
              if f"{folder.name}/{rel}" not in left_out and not rel.startswith("solutions/")]
    return [(p.name, what, text) for p in sorted(SOLUTIONS.glob("*.py")) for what, text in fingerprints(p)
            if not re.search(r" lines? \d", what) or not any(text in haystack for haystack in course)]


def test_the_fingerprints_cover_every_solutions_file(prints):
    """The search below is only as good as its needles: every solutions file gives some, and each needle is
    found in the file it came from (the search would find a verbatim copy; the bare statements of a body
    with comments inside are the needle for a copy without them)."""
    assert {name for name, _, _ in prints} == {p.name for p in SOLUTIONS.glob("*.py")}
    assert len(prints) >= 30
    needles = {text for _, _, text in prints}
    for one_liner in ("return math.perm(num_classes, n_way) if labelled else math.comb(num_classes, n_way)",
                      "return 1.0 - lr * weight_decay, lr", "return z[..., 1] * torch.exp(p * z[..., 0])",
                      "return i, (1 - f) / i", 'return learner(query_x, theta, bn="batch")'):
        assert one_liner in needles, one_liner            # the short answers are searched for too
    own = _texts(SOLUTIONS)
    for name, what, text in prints:
        assert text in own[name] or what.endswith("without comments"), (name, what)


def test_the_student_edition_holds_none_of_the_solutions_code(edition, prints):
    texts = _texts(edition)
    leaks = []
    for name, what, text in prints:
        leaks += [f"{rel}: {name} {what}" for rel, haystack in texts.items() if text in haystack]
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
    for rel in student.source_files(ROOT, left_out=True):             # no mention of a page left out
        if rel.startswith("docs/"):
            assert rel not in readme, rel
    assert "notebooks/solutions" not in (edition / "metalstm" / "check.py").read_text()


def test_the_student_edition_has_what_the_course_needs(edition):
    for name in ("pyproject.toml", "Makefile", "environment.yml", "README.md", "metalstm/__init__.py",
                 "metalstm/check.py", "notebooks/colab_setup.py", "data/glyphs-v1.npz"):
        assert (edition / name).is_file(), name
    assert [p.name for p in sorted((edition / "notebooks").glob("[0-9][0-9]_*.ipynb"))] == [p.name for p in NOTEBOOKS]
    left_out = set(student.source_files(ROOT, left_out=True))
    assert {p.name for p in (edition / "docs").glob("*.md")} == {p.name for p in (ROOT / "docs").glob("*.md")
                                                                 if f"docs/{p.name}" not in left_out}
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
        _cell("code", "def h():\n    # BEGIN SOLUTION\n    return 4\n    # END SOLUTION"),
        _cell("code", "def k():\n    return 5", nbgrader={"solution": True, "grade": False}),
        _cell("markdown", "A slide.\n<aside class=\"notes\">Say: the answer is 3.</aside>\nMore.",
              speaker_notes="The answer is 3.", slideshow={"slide_type": "slide"}),
    ]}
    out = student.strip_notebook(nb, "09_x.ipynb")
    sources = ["".join(c["source"]) for c in out["cells"]]
    assert sources == [
        "## Exercises\n\nYour instructor has the solutions. Write each function.",
        "def f(x):\n    # your answer\n    raise NotImplementedError",
        "def g(x):\n    y = x\n    # YOUR CODE HERE\n    raise NotImplementedError()\n    return y",
        "Why?\n\nYOUR ANSWER HERE",
        "print(1)",
        "def h():\n    # YOUR CODE HERE\n    raise NotImplementedError()",
        "# YOUR CODE HERE\nraise NotImplementedError()",
        "A slide.\nMore."]
    assert out["cells"][-1]["metadata"] == {"slideshow": {"slide_type": "slide"}}     # notes in metadata go
    assert out["cells"][2]["outputs"] == [] and out["cells"][1]["outputs"]      # a cleared answer's output goes
    assert len(nb["cells"]) == 10                                               # the instructor's is untouched
    for broken in ("### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                   "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(student.StudentEditionError, match="09_x.ipynb cell 0"):
            student.strip_notebook({**nb, "cells": [_cell("code", broken)]}, "09_x.ipynb")


def test_a_pointer_without_a_rule_stops_the_build(tmp_path, monkeypatch):
    fake = tmp_path / "root"
    (fake / "notebooks").mkdir(parents=True)
    (fake / "README.md").write_text("See notebooks/solutions for the answers.\n")
    monkeypatch.setattr(student, "source_files", lambda root, left_out=False: [] if left_out else ["README.md"])
    with pytest.raises(student.StudentEditionError, match="README.md:4: See notebooks/solutions"):
        student.build(tmp_path / "out", root=fake)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_speaker_notes_outside_notes_cells_stop_the_build(tmp_path, monkeypatch):
    """Notes written as text in an ordinary cell (not a "notes" cell) are not dropped by the rules: the
    build refuses rather than ship them."""
    fake = tmp_path / "root"
    (fake / "notebooks").mkdir(parents=True)
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        _cell("markdown", "*Speaker notes.* Ask the room; the answer is 3.", slideshow={"slide_type": "-"})]}
    (fake / "notebooks" / "09_x.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(student, "source_files", lambda root, left_out=False: [] if left_out else
                        ["notebooks/09_x.ipynb"])
    with pytest.raises(student.StudentEditionError, match="speaker notes"):
        student.build(tmp_path / "out", root=fake)


def test_links_to_what_the_edition_leaves_out_become_plain_text():
    left_out = {"docs/teaching.md", "notebooks/solutions/01_episodes.py"}
    text = ("See [teaching](teaching.md#edition), [results](results.md), [the web](https://example.org/teaching.md) "
            "and [the answers](../notebooks/solutions/01_episodes.py).")
    assert student.unlink_left_out("docs/paper.md", text, left_out) == (
        "See teaching, [results](results.md), [the web](https://example.org/teaching.md) and the answers.")
    assert student.unlink_left_out("README.md", "[plan](docs/teaching.md)", left_out) == "plan"
    listed = "More:\n- [docs/teaching.md](docs/teaching.md) - teaching.\n- [docs/paper.md](docs/paper.md) - notes.\n"
    assert student.unlink_left_out("README.md", listed, left_out) == (
        "More:\n- [docs/paper.md](docs/paper.md) - notes.\n")             # a list item about a page left out goes


def test_the_package_answers_are_stubs_in_the_edition_and_nothing_else_changes(edition):
    """Each class of ANSWERS exists in the instructor's package; in the edition its rule methods raise
    NotImplementedError naming the exercise, and the module keeps every other name (it still imports)."""
    import importlib.util

    for rel, cls, ex in student.ANSWERS:
        ours, theirs = (ROOT / rel).read_text(), (edition / rel).read_text()
        assert f"class {cls}(" in ours and f"class {cls}(" in theirs
        spec = importlib.util.spec_from_file_location(f"edition_{cls}", edition / rel)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(NotImplementedError, match=rf"{cls}\.__init__ is exercise {re.escape(ex)}"):
            getattr(module, cls)(*[None] * (len(inspect.signature(getattr(module, cls)).parameters)))
        names = {n for n in dir(module) if not n.startswith("__")}
        spec = importlib.util.spec_from_file_location("instructor_copy", ROOT / rel)
        original = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(original)
        assert names == {n for n in dir(original) if not n.startswith("__")}
    with pytest.raises(student.StudentEditionError, match="no class Gone"):
        student.ANSWERS, saved = (("metalstm/distill.py", "Gone", "06.9"),), student.ANSWERS
        try:
            student.leave_answers_out("metalstm/distill.py", (ROOT / "metalstm/distill.py").read_text())
        finally:
            student.ANSWERS = saved


@pytest.mark.slow
def test_the_package_answers_answer_their_exercise():
    """Why ANSWERS lists them: in the instructor's package each class passes its exercise's check as it is."""
    import importlib

    from metalstm import check

    for rel, cls, ex in student.ANSWERS:
        module = importlib.import_module(rel.removesuffix(".py").replace("/", "."))
        assert check.exercise(*ex.split("."), getattr(module, cls), quiet=True), (rel, cls, ex)


# -- it runs ---------------------------------------------------------------------------------------------------
def _env(edition: Path) -> dict:
    """The environment of a student's session: the edition's package first, its own data folder."""
    env = {k: v for k, v in os.environ.items() if k != "METALSTM_DATA"}
    env.update(PYTHONPATH=str(edition), TQDM_DISABLE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    return env


@pytest.mark.slow
def test_the_exercise_checks_work_in_the_student_edition(edition):
    """metalstm.check from the edition, with no solutions anywhere in it, on every exercise: a stub is "not
    answered yet", a wrong answer (tests/notebooks/test_check.py's) is refused with a hint, the instructor's
    solution (loaded from the instructor's repository before the checks run) is right. No file under a
    solutions folder is opened while the checks run (an audit hook watches every open)."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path[:0] = [{str(ROOT / "tests")!r}, {str(ROOT / "tests" / "notebooks")!r}]
        import metalstm
        from metalstm import check
        assert Path(metalstm.__file__).resolve().is_relative_to(Path({str(edition)!r}).resolve()), metalstm.__file__
        assert not (Path(metalstm.__file__).parents[1] / "notebooks" / "solutions").exists()
        from test_check import SOLUTIONS, WRONG
        from testkit import load_solutions
        solutions = {{nb: load_solutions(stem) for nb, stem in SOLUTIONS.items()}}
        opened, watching = [], []
        sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                         if watching and event == "open" and args else None)
        watching.append(True)

        def stub(*args, **kwargs):
            raise NotImplementedError

        for key in sorted(check.REGISTRY):
            ex = check.REGISTRY[key]
            assert check.exercise(*key, stub) is False, key
            assert check.exercise(*key, WRONG[key]) is False, key
            assert check.exercise(*key, getattr(solutions[key[0]], ex.name)) is True, key
        watching.clear()
        bad = [p for p in opened if "solution" in p.lower()]
        assert not bad, bad
        print("checks ok", len(check.REGISTRY))
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=edition, env=_env(edition), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    from metalstm import check

    n = len(check.REGISTRY)
    assert f"checks ok {n}" in out
    assert set(re.findall(r"Exercise (\d\d\.\d) \(", out)) == {f"{nb}.{k}" for nb, k in check.REGISTRY}
    assert out.count(": not answered yet.") == n and out.count(": not yet right. Hint:") == n
    assert out.count(": right.") == n


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
