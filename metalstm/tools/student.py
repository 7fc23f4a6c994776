"""Write the student edition of the course: the same course with no solutions in it.

    python -m metalstm.tools.student build/student            # `make student`
    python -m metalstm.tools.student OUT --force              # replace an earlier student edition in OUT

The repository is the instructor's edition. The student edition is a plain folder
(copies, no links) that runs the course on its own: notebooks/, the package
metalstm/, data/ (the shipped data sets, checkpoints and results the notebooks
load), docs/, pyproject.toml, Makefile, environment.yml, README.md and a LICENSE
if there is one. `pip install -e OUT` or `make course` inside it works as in the
repository. The files copied are those git knows in the checkout as it is on disk
(tracked, or new and not ignored), so caches, build output and local data sets
(data/cache/, ...) never travel.

What it leaves out, and why
- notebooks/solutions/ (the worked answers) and any file or folder named like
  "solution";
- tests/: the notebook tests run the solutions and hold the answers' numbers, and
  the exercise checks' own tests hold wrong and right answers side by side;
- metalstm/tools/student.py, this tool: it names the solutions' folder;
- the lecturer's documents: docs/teaching.md and any Markdown file holding the
  line `<!-- instructor only -->` (a lecture plan, say); links to a file left out
  become their plain text;
- in the notebooks: the cells and regions marked as solutions (below), and the
  lecturer's notes: cells whose slideshow type is "notes" (the speaker view of
  `make slides`), which address the lecturer and answer the questions put to the
  room, reveal.js `<aside class="notes">` blocks in Markdown cells, and metadata
  keys named like "notes". The decks of the student edition are built from its
  notebooks, so they carry no solutions and only the timing notes `make slides`
  generates from the slides themselves;
- package code that IS an exercise's answer (ANSWERS): metalstm.distill's
  NoForgetting (exercise 06.1) and StepTable (06.2, the ScheduleRule asked for)
  keep their class and docstring (the exercise's own statement), but their
  __init__, initial_state and step raise NotImplementedError naming the exercise.
  Why stubs and not another exercise: the exercises ask for exactly these rules
  because notebook 06 tests sentences by substitution, and no notebook runs the
  package's copies (notebook 06 reads the table `python -m
  metalstm.tools.substitute` stored), so the edition loses nothing it runs; the
  substitution tool itself then stops at once with that message until the
  student pastes the answer in. Package code that an exercise asks the student to
  rebuild in miniature (train's meta-batch step for 05.2, EpisodeSampler's
  eligible classes for 01.1, evaluate_rule and paired_difference for 06.4) is
  the course's subject and stays: the exercises name it as the reference;
- pointers to the solutions: the exercises' "Solutions: `notebooks/solutions/...`
  (...)." line becomes "Your instructor has the solutions.", and the README's,
  metalstm.check's and the package docstrings' mentions of the solutions or of
  which package class answers which exercise are rewritten (REWRITES);
- the Makefile targets that need tests/ (`browser-check`) or the solutions
  (`student`); `make test` runs the notebooks only (nbval).
The tool then scans everything it wrote and refuses (exit status 1, nothing left
half-written in OUT) if any text still points to the solutions, or a notebook
still holds speaker notes in an ordinary cell or in metadata: a new pointer gets a
rule here or a marker in its notebook, it never ships silently.
tests/delivery/test_student.py searches every file of the edition for every
solution's body, docstring, comment block and one-line answer.

The marker convention (instructor's notebooks)
- a cell tagged `solution` (cell metadata "tags") is an answer: the student
  edition drops it, outputs and all. Put a worked answer in a cell of its own,
  under the exercise's stub cell, and tag it;
- a cell whose metadata says `"nbgrader": {"solution": true}` and has no
  delimiters is all answer (nbgrader's rule);
- inside any cell, the lines from `### BEGIN SOLUTION` to `### END SOLUTION`
  (nbgrader's delimiters: a comment line holding the words, `# BEGIN SOLUTION`
  works too) are an answer: in a code cell they become
  `# YOUR CODE HERE` / `raise NotImplementedError()` at the indentation of the
  BEGIN line, in a markdown cell "YOUR ANSWER HERE" (nbgrader's replacements),
  and the cell's outputs are cleared. Use it for an answer inside a cell that must
  stay (a function whose signature the student keeps);
- cells whose slideshow type is "notes" are the lecturer's and are dropped.
Today's notebooks keep only stubs (`raise NotImplementedError`) in their exercise
cells and their answers in notebooks/solutions/*.py, so no cell needs a marker;
the pointer line is rewritten by rule (REWRITES), markers or not.

nbgrader: its conventions, not its package
The markers above are nbgrader's (`### BEGIN SOLUTION` / `### END SOLUTION`, its
"YOUR CODE HERE" / `raise NotImplementedError()` / "YOUR ANSWER HERE"
replacements, its `solution` cell metadata), so a course that later grades with
nbgrader keeps its notebooks as they are, and a lecturer who knows nbgrader knows
how to mark an answer here. The package is not used, because here it would not
pay for itself: its `generate_assignment` wants its own layout
(source/<assignment>/, a gradebook database, nbgrader metadata with a grade_id on
every graded cell) and brings a Jupyter server extension and a database stack, to
do what `strip_notebook` does here in forty lines; its grading half (hidden
tests, autograde, feedback, a gradebook) is for courses that collect and mark
submissions, while this course checks each exercise in place with
metalstm.check (a verdict and a hint, nothing collected), and its hidden-test
idea does not fit answers that must be checked against the package on the
student's own machine. And it would not cover what the edition needs beyond the
notebooks: copying the package and data, leaving the package's own answers out,
rewriting the README, the Makefile and the pointers. docs/teaching.md says the
same for lecturers.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from metalstm.paths import CHECKOUT

ROOT = CHECKOUT
# what a student needs to run the course (top-level names; a missing LICENSE is fine)
INCLUDE = ("notebooks", "metalstm", "data", "docs", "pyproject.toml", "Makefile", "environment.yml",
           "README.md", "LICENSE", "LICENSE.md", "LICENSE.txt")
# never copied: the answers, the tests (they run the answers), this tool (it names the answers' folder)
LEAVE_OUT = ("notebooks/solutions/", "tests/", "metalstm/tools/student.py", "docs/teaching.md")
INSTRUCTOR_ONLY = "<!-- instructor only -->"    # a Markdown file holding this line is the lecturer's: left out
STAMP = ".student-edition"       # marks an OUT this tool wrote: --force replaces only such a folder
SOLUTION_TAG = "solution"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
# nbgrader's delimiter test: the words in a line that is only a comment (`### BEGIN SOLUTION`, `# END SOLUTION`)
BEGIN_LINE, END_LINE = re.compile(r"\s*#+\s*BEGIN SOLUTION\s*"), re.compile(r"\s*#+\s*END SOLUTION\s*")
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = "YOUR ANSWER HERE"
NEUTRAL = "Your instructor has the solutions."
# Package code that IS an exercise's answer, left to the student: (file, class, exercise). The course never runs
# these classes (notebook 06 reads the substitution table that `python -m metalstm.tools.substitute` stored);
# in the student edition their RULE_METHODS raise NotImplementedError with a message naming the exercise, the
# class itself, its docstring (the exercise's own statement) and everything else in the file stay.
ANSWERS: tuple[tuple[str, str, str], ...] = (
    ("metalstm/distill.py", "NoForgetting", "06.1"),
    ("metalstm/distill.py", "StepTable", "06.2"),
)
RULE_METHODS = ("__init__", "initial_state", "step")
# speaker notes outside "notes" cells: a reveal.js <aside class="notes"> in a Markdown cell, notes in metadata
ASIDE_NOTES = re.compile(r"(?is)<aside\s+class=[\"']notes[\"']\s*>.*?</aside>\s*")
NOTES_KEY = re.compile(r"(?i)notes")
NOTES_TEXT = re.compile(r"(?i)\b(?:lecturer'?s|speaker|teacher'?s|instructor'?s) notes\b")
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".c", ".csv", ".json", ""}

# (files, pattern, replacement, why): applied to the copy's text (a notebook: its cells' sources)
REWRITES: list[tuple[str, str, str, str]] = [
    ("*", r"Solutions: `notebooks/solutions/[^`]*`(?:\s*\([^()]*\))?\.", NEUTRAL,
     "the exercises' pointer to the solution file (and to the tests that run it)"),
    ("README.md", r"the solutions are in `notebooks/solutions/?`", "your instructor has the solutions",
     "the README's pointer"),
    ("README.md", r";\s*solutions/ holds the exercises' answers", "",
     "the README's layout: there is no solutions/ folder here"),
    ("README.md", r"(?m)^tests/ .*\n", "", "the README's layout: there is no tests/ folder here"),
    ("metalstm/check.py", r"The worked solutions are in notebooks/solutions/\.",
     "Your instructor has the worked solutions.", "metalstm.check's pointer"),
    ("metalstm/*.py", r"\s*\((?:notebook \d\d, exercise \d+|exercise \d+ of notebook \d\d[^()]*)\)", "",
     "a package docstring that names the class answering an exercise"),
]
# what must not survive in the copy's text (checked after writing; README and notebooks included)
POINTER = re.compile(r"solutions/|notebooks/solutions|exercise \d+ of notebook \d\d|"
                     r"notebook \d\d, exercise \d+")


class StudentEditionError(Exception):
    """The student edition cannot be written as asked (a pointer left, a broken marker, a bad OUT)."""


# -- the notebooks --------------------------------------------------------------------
def _source(cell) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _clear_regions(text: str, code: bool, where: str) -> tuple[str, bool]:
    """`text` with every BEGIN/END SOLUTION region replaced by nbgrader's stub; whether there was one."""
    if "BEGIN SOLUTION" not in text and "END SOLUTION" not in text:
        return text, False
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if BEGIN_LINE.fullmatch(line.rstrip("\n")):
            if inside:
                raise StudentEditionError(f"{where}: '{BEGIN}' inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + s + "\n" for s in CODE_STUB] if code else [MARKDOWN_STUB + "\n"]
        elif END_LINE.fullmatch(line.rstrip("\n")):
            if not inside:
                raise StudentEditionError(f"{where}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise StudentEditionError(f"{where}: '{BEGIN}' without '{END}'")
    return "".join(out).rstrip("\n") if not text.endswith("\n") else "".join(out), True


def _without_notes(meta):
    """Metadata without any key named like "notes", at any depth."""
    if isinstance(meta, dict):
        return {key: _without_notes(value) for key, value in meta.items() if not NOTES_KEY.search(key)}
    return [_without_notes(value) for value in meta] if isinstance(meta, list) else meta


def strip_notebook(nb: dict, name: str = "notebook") -> dict:
    """The student's version of a notebook (nbformat 4 as a dict): solution cells and the lecturer's
    notes dropped, solution regions replaced by stubs, pointers to the solutions rewritten."""
    nb = copy.deepcopy(nb)
    nb["metadata"] = _without_notes(nb.get("metadata", {}))
    cells = []
    for k, cell in enumerate(nb["cells"]):
        meta = cell.get("metadata", {})
        if SOLUTION_TAG in meta.get("tags", []) or meta.get("slideshow", {}).get("slide_type") == "notes":
            continue
        cell["metadata"] = meta = _without_notes(meta)
        text = _source(cell)
        if cell["cell_type"] == "markdown":
            text = ASIDE_NOTES.sub("", text)
        if meta.get("nbgrader", {}).get("solution") and "BEGIN SOLUTION" not in text:
            text = f"{BEGIN}\n{text}\n{END}"          # nbgrader: a solution cell without delimiters is all answer
        text, changed = _clear_regions(text, cell["cell_type"] == "code", f"{name} cell {k}")
        if changed and cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell["source"] = rewrite(name, text).splitlines(keepends=True)
        cells.append(cell)
    nb["cells"] = cells
    return nb


def _notebook_text(nb: dict) -> str:
    """Every cell's source and every text output of a notebook, one after the other."""
    parts = []
    for cell in nb["cells"]:
        parts.append(_source(cell))
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            parts.append(text if isinstance(text, str) else "".join(text))
            for value in output.get("data", {}).values():
                if isinstance(value, (str, list)):
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


# -- text ---------------------------------------------------------------------------
def rewrite(relpath: str, text: str) -> str:
    """`text` of the file at `relpath` (relative to the course root) with REWRITES applied."""
    for files, pattern, replacement, _ in REWRITES:
        if Path(relpath).match(files) or files == "*":
            text = re.sub(pattern, replacement, text)
    return text


def leave_answers_out(relpath: str, text: str) -> str:
    """`text` of a package file with the methods of the classes that ANSWERS lists for it replaced by a
    NotImplementedError naming the exercise (the signature and any docstring stay). Raises
    StudentEditionError when a listed class or all of its methods are missing (the list is stale)."""
    wanted = [(cls, ex) for path, cls, ex in ANSWERS if path == relpath]
    if not wanted:
        return text
    tree, lines = ast.parse(text), text.splitlines(keepends=True)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    edits = []                                      # (first line, last line, replacement), 1-based, inclusive
    for cls, ex in wanted:
        if cls not in classes:
            raise StudentEditionError(f"{relpath}: no class {cls} to leave to exercise {ex} (ANSWERS is stale)")
        methods = [m for m in classes[cls].body if isinstance(m, ast.FunctionDef) and m.name in RULE_METHODS]
        if not methods:
            raise StudentEditionError(f"{relpath}: {cls} has none of {', '.join(RULE_METHODS)} (ANSWERS is stale)")
        for method in methods:
            body = method.body[1:] if ast.get_docstring(method, clean=False) is not None else method.body
            if not body:
                continue
            indent = " " * body[0].col_offset
            stub = (f'{indent}raise NotImplementedError(\n'
                    f'{indent}    "{cls}.{method.name} is exercise {ex} of the course, left to you in the student "\n'
                    f'{indent}    "edition: write it in notebook {ex[:2]} (and here, to run python -m '
                    f'metalstm.tools.substitute)")\n')
            edits.append((body[0].lineno, method.end_lineno, stub))
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first - 1: last] = [replacement]
    out = "".join(lines)
    compile(out, relpath, "exec")                   # the edition's package still imports
    return out


def unlink_left_out(relpath: str, text: str, left_out: set[str]) -> str:
    """The Markdown of the file at `relpath` without links to files the edition leaves out: a list item
    that starts with such a link (a README's "- [docs/x.md](docs/x.md) - what it is") goes, any other
    such link becomes its plain text."""
    def gone(target: str) -> bool:
        target = target.split("#", 1)[0]
        if not target or "://" in target:
            return False
        parts = []
        for part in (Path(relpath).parent / target).as_posix().split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        return "/".join(parts) in left_out

    text = re.sub(r"(?m)^[ \t]*[-*] \[[^\]]+\]\(([^()\s]+)\).*\n?",
                  lambda m: "" if gone(m.group(1)) else m.group(0), text)
    return re.sub(r"\[([^\]]+)\]\(([^()\s]+)\)", lambda m: m.group(1) if gone(m.group(2)) else m.group(0), text)


def student_makefile(text: str) -> str:
    """The Makefile without the targets that need tests/ or the solutions; `test` runs the notebooks."""
    blocks = re.split(r"\n(?=\n)", text)          # paragraphs: a target with its comments and recipe
    kept, dropped = [], []
    for block in blocks:
        target = re.search(r"(?m)^([A-Za-z][\w.-]*):", block)
        name = target.group(1) if target else None
        if name == "test":
            block = re.sub(r"(-m pytest[^\n]*?) tests notebooks", r"\1 notebooks", block)
            block = re.sub(r"(?m)^## the whole test suite.*$", "## run every notebook under nbval (the "
                           "student edition ships no test suite)", block)
        elif name and (name == "student" or re.search(r"(?<![\w.])tests/|\btests\b(?= |$)", block.split(":", 1)[1])):
            dropped.append(name)
            continue
        kept.append(block)
    text = "\n".join(kept).rstrip("\n") + "\n"
    for name in dropped:
        text = re.sub(rf"(?m)^(\.PHONY:.*?) {re.escape(name)}\b", r"\1", text)
    return text


def student_readme(text: str) -> str:
    note = ("> **Student edition.** The exercises' solutions are not included: your instructor has them.\n"
            "> `make test` runs the notebooks; the package's own tests ship with the instructor's edition.\n\n")
    return note + rewrite("README.md", text)


# -- the files --------------------------------------------------------------------------
def _left_out(rel: str) -> bool:
    return (any(rel == p.rstrip("/") or rel.startswith(p) for p in LEAVE_OUT)
            or any("solution" in part.lower() for part in Path(rel).parts))


def _instructor_only(path: Path) -> bool:
    """A Markdown file that declares itself the lecturer's (INSTRUCTOR_ONLY on a line of its own)."""
    return path.suffix == ".md" and INSTRUCTOR_ONLY in path.read_text(encoding="utf-8").splitlines()


def source_files(root: Path = ROOT, left_out: bool = False) -> list[str]:
    """The course files to copy, relative to `root`: what git knows (tracked, or new and not ignored)
    under INCLUDE and present on disk; without git, every file under INCLUDE but caches. With
    left_out=True: the files under INCLUDE that the edition leaves out instead."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                              "--", *INCLUDE], capture_output=True, check=True).stdout.decode()
        names = sorted(set(filter(None, out.split("\0"))))
    except (OSError, subprocess.CalledProcessError):
        names = []
        for top in INCLUDE:
            path = root / top
            found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            names += [p.relative_to(root).as_posix() for p in found
                      if not {"__pycache__", ".ipynb_checkpoints", "cache"} & set(p.relative_to(root).parts)
                      and p.suffix != ".pyc" and ".egg-info" not in p.as_posix()]
    names = [n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    return [n for n in names if (_left_out(n) or _instructor_only(root / n)) == left_out]


def _is_text(path: Path) -> bool:
    return path.suffix in TEXT_SUFFIXES or path.name == "Makefile"


def _write_one(src: Path, dst: Path, rel: str, left_out: set[str] = frozenset()) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith(".ipynb"):
        nb = strip_notebook(json.loads(src.read_text(encoding="utf-8")), rel)
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = unlink_left_out(rel, _source(cell), left_out).splitlines(keepends=True)
        dst.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    elif rel == "Makefile":
        dst.write_text(student_makefile(src.read_text(encoding="utf-8")), encoding="utf-8")
    elif rel == "README.md":
        dst.write_text(unlink_left_out(rel, student_readme(src.read_text(encoding="utf-8")), left_out),
                       encoding="utf-8")
    elif src.suffix == ".md":
        dst.write_text(unlink_left_out(rel, rewrite(rel, src.read_text(encoding="utf-8")), left_out),
                       encoding="utf-8")
    elif src.suffix == ".py":
        dst.write_text(rewrite(rel, leave_answers_out(rel, src.read_text(encoding="utf-8"))), encoding="utf-8")
    else:
        shutil.copy2(src, dst)                # data, checkpoints: byte for byte
    shutil.copymode(src, dst)


def leftover_pointers(out: Path) -> list[str]:
    """'file:line: text' for every line of the copy that still points to the solutions or names
    a file named like a solution."""
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if "solution" in rel.lower():
            found.append(f"{rel}: a file named like a solution")
        if not _is_text(path) or path.suffix in {".csv", ".json"} and "data" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if path.suffix == ".ipynb":
            nb = json.loads(text)
            text = _notebook_text(nb)
            metadata = json.dumps([nb.get("metadata"), *(c.get("metadata") for c in nb["cells"])])
            found += [f"{rel}: speaker notes in a cell's metadata or text ({part.strip()[:60]})"
                      for part in [*(_source(c) for c in nb["cells"]), metadata]
                      if NOTES_TEXT.search(part) or re.search(r'"[^"]*notes[^"]*":', part, re.I)]
        for n, line in enumerate(text.splitlines(), 1):
            if POINTER.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    return found


def build(out: Path, force: bool = False, root: Path = ROOT) -> list[str]:
    """Write the student edition into `out`; return the files written (relative to `out`)."""
    out, root = Path(out).resolve(), Path(root).resolve()
    if out == root or root.is_relative_to(out):
        raise StudentEditionError(f"{out} holds the course itself: give a new folder, e.g. build/student")
    if out.is_relative_to(root) and out.relative_to(root).parts[0] in INCLUDE:
        raise StudentEditionError(f"{out} is inside the course's own {out.relative_to(root).parts[0]}: the next "
                                  "edition would copy it; give a folder outside them, e.g. build/student")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise StudentEditionError(f"{out} is not empty: add --force to replace an earlier student edition")
        if not (out / STAMP).exists():
            raise StudentEditionError(f"{out} is not empty and was not written by this tool: not replacing it")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        files, left_out = source_files(root), set(source_files(root, left_out=True))
        for rel in files:
            _write_one(root / rel, staging / rel, rel, left_out)
        left = leftover_pointers(staging)
        if left:
            raise StudentEditionError("the student edition would still point to the solutions (add a rewrite "
                                      "rule in metalstm/tools/student.py or a marker in the notebook):\n  "
                                      + "\n  ".join(left))
        (staging / STAMP).write_text("written by python -m metalstm.tools.student; no solutions inside\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder to write, e.g. build/student")
    ap.add_argument("--force", action="store_true", help="replace an earlier student edition in OUT")
    args = ap.parse_args(argv)
    try:
        files = build(args.out, args.force)
    except StudentEditionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    books = sum(1 for f in files if f.startswith("notebooks/") and f.endswith(".ipynb"))
    print(f"student edition in {args.out}: {len(files)} files, {books} notebooks, no solutions "
          f"(left out: {', '.join(LEAVE_OUT)}, lecturer's notes, solution cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
