"""Every paper-notes reference resolves inside the repository.

"paper notes N" (also "paper notes N.M", lists such as "paper notes 3, 4, 6" and ranges such as
"paper notes 2-7") in code, docstrings, comments, notebooks (markdown and code cells), docs and
the README means section N (or N.M) of docs/paper.md. These tests find every such reference and
fail on one whose section does not exist there, on any mention of a file outside the repository
(the reference documents the project was started from), and on any reference written in the old
form, an upper-case short name for that outside file followed by a section number. The finders
are tested on made-up text first, so a broken finder cannot pass by finding nothing.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "docs" / "paper.md"

# the outside names are assembled here so that this file never contains them itself
OLD_NAME = "SP" + "EC"
OUTSIDE = ("../" + "shared", OLD_NAME + ".md", "DES" + "IGN.md")

_NUM = r"\d+(?:\.\d+)*"
# "paper notes 5", "Paper notes 3, 4", "paper notes 2-7", "paper notes 3 and 4", "paper notes 5.2";
# a list may continue on the next line of a comment ("# ") or a docstring
_SEP = r"\s*(?:,|-|–|\band\b)\s*(?:#\s*)?"
REF = re.compile(rf"\bpaper\s+notes\s+§?({_NUM}(?:{_SEP}§?{_NUM})*)", re.IGNORECASE)
ITEM = re.compile(rf"({_NUM})(?:\s*[-–]\s*({_NUM}))?")
HEADING = re.compile(rf"^#{{2,6}}\s+({_NUM})\.?\s", re.MULTILINE)
ANCHOR = re.compile(r"paper\.md#([A-Za-z0-9_\-]+)")

TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".json", ".csv", ".yml", ".yaml", ".toml", ".txt",
                 ".cfg", ".ini", ".sh", ".j2", ".html", ".css", ".js", ".tex", ".rst", ""}
SKIP_DIRS = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}


# -- the finders -------------------------------------------------------------------------------------
def sections(markdown: str) -> set[str]:
    """Section numbers of the paper notes: '1', '1.1', ... from headings '## 1. Title', '### 1.1 Title'."""
    return set(HEADING.findall(markdown))


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings (lower case, punctuation dropped, spaces to hyphens)."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            out.add(slug)
    return out


def references(text: str) -> list[tuple[str, list[str]]]:
    """(the reference as written, the sections it names) for every paper-notes reference in text.
    A range 'a-b' of whole sections names a, a+1, ..., b; of sub-sections, its two ends."""
    found = []
    for m in REF.finditer(text):
        names = []
        for a, b in ITEM.findall(m.group(1)):
            if b and "." not in a + b and int(a) <= int(b):
                names += [str(k) for k in range(int(a), int(b) + 1)]
            else:
                names += [a] + ([b] if b else [])
        found.append((m.group(0), names))
    return found


def unresolved(text: str, known: set[str]) -> list[str]:
    """The references in text that name a section not in `known`, each with the missing sections."""
    return [f"{raw!r} (no section {', '.join(n for n in names if n not in known)})"
            for raw, names in references(text) if any(n not in known for n in names)]


def outside_mentions(text: str) -> list[str]:
    """Mentions of files outside the repository."""
    return [name for name in OUTSIDE if name in text]


# -- the repository ----------------------------------------------------------------------------------
def repository_files() -> list[Path]:
    """The repository's text files: tracked and untracked-but-not-ignored (git), else a walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split("\n")
        paths = [ROOT / p for p in out if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not any(part in SKIP_DIRS or part.endswith(".egg-info")
                                                       for part in p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and p.stat().st_size < 5_000_000)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def searchable_parts(path: Path, text: str) -> list[tuple[str, str]]:
    """(where, text) pieces to search: a notebook's cells one by one, any other file whole."""
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return [(f"cell {i} ({c['cell_type']})", "".join(c["source"])) for i, c in enumerate(cells)]
    return [("", text)]


def repository_texts() -> list[tuple[str, str]]:
    """(file and place, text) for every searchable piece of the repository but this file, whose
    made-up references are wrong on purpose."""
    out = []
    for path in repository_files():
        text = read_text(path) if path != Path(__file__).resolve() else None
        if text is None:
            continue
        rel = path.relative_to(ROOT).as_posix()
        for where, part in searchable_parts(path, text):
            out.append((f"{rel} {where}".strip(), part))
    return out


@pytest.fixture(scope="module")
def known() -> set[str]:
    return sections(PAPER.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def texts() -> list[tuple[str, str]]:
    return repository_texts()


# -- the finders on made-up text ----------------------------------------------------------------------
NOTES = """# Notes
## 1. One
### 1.1 One point one
## 2. Two
## 3. Three
### 3.2 Three point two
"""


def test_sections_are_read_from_the_headings():
    assert sections(NOTES) == {"1", "1.1", "2", "3", "3.2"}


def test_finder_reads_single_references_lists_ranges_and_subsections():
    text = ("Batch norm (paper notes 3). See Paper notes 1, 2 and 3.2; also paper notes 1-3,\n"
            "paper notes 2 and 3, and (paper notes §1, §2). Nothing here: the paper notes, docs/.")
    assert [names for _, names in references(text)] == [
        ["3"], ["1", "2", "3.2"], ["1", "2", "3"], ["2", "3"], ["1", "2"]]


def test_finder_reads_a_list_that_continues_on_the_next_comment_line():
    assert references("x = 1  # the update (paper notes 1,\n# 2)") [0][1] == ["1", "2"]


def test_a_bad_reference_is_reported():
    text = "good: paper notes 3.2; bad: paper notes 4, also paper notes 1.7 and paper notes 2-5"
    bad = unresolved(text, sections(NOTES))
    assert len(bad) == 3
    assert "no section 4" in bad[0] and "no section 1.7" in bad[1] and "no section 4, 5" in bad[2]
    assert unresolved("paper notes 1, 1.1, 3.2", sections(NOTES)) == []


def test_outside_files_are_reported():
    text = f"see {OUTSIDE[0]}/{OUTSIDE[1]} and paper notes 5"
    assert outside_mentions(text) == list(OUTSIDE[:2])


def test_anchors_follow_githubs_rule():
    assert {"1-one", "11-one-point-one", "32-three-point-two"} <= anchors(NOTES)


# -- the repository --------------------------------------------------------------------------------------
def test_the_paper_notes_have_sections_1_to_11_in_order():
    text = PAPER.read_text(encoding="utf-8")
    top = [s for s in HEADING.findall(text) if "." not in s]
    assert top == [str(k) for k in range(1, 12)]
    assert "https://openreview.net/forum?id=rJY0-Kcll" in text


def test_the_scan_sees_code_notebooks_docs_and_readme(texts):
    places = {where.split()[0] for where, _ in texts}
    assert {"README.md", "docs/paper.md", "metalstm/metalearner.py", "tests/conftest.py"} <= places
    assert "tests/claims/test_paper_refs.py" not in places
    assert any(p.endswith(".ipynb") for p in places)


def test_every_paper_notes_reference_resolves(known, texts):
    bad = [f"{where}: {problem}" for where, text in texts for problem in unresolved(text, known)]
    assert not bad, "references to sections that docs/paper.md does not have:\n" + "\n".join(bad)


def test_links_into_the_paper_notes_name_existing_headings(texts):
    have = anchors(PAPER.read_text(encoding="utf-8"))
    bad = [f"{where}: #{a}" for where, text in texts for a in ANCHOR.findall(text) if a not in have]
    assert not bad, "links to headings that docs/paper.md does not have:\n" + "\n".join(bad)


def test_nothing_points_outside_the_repository(texts):
    bad = [f"{where}: {name}" for where, text in texts for name in outside_mentions(text)]
    assert not bad, "files outside the repository are mentioned:\n" + "\n".join(bad)

