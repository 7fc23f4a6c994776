"""The README is an entry point and the docs hold together.

Every relative link in README.md and docs/*.md names a file that exists, and a link with an
`#anchor` into a markdown page names one of its headings (GitHub's rule for heading anchors).
The README stays short (at most 220 lines) and opens with the two commands that CI and the
Makefile promise; every code fence is closed (an open one swallows the rest of a page); the
pages a user reads do not read like a lab journal (that belongs in docs/history.md).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# the pages for users; docs/history.md is the journal and may say what one round of work found
USER_PAGES = [README] + [ROOT / "docs" / n for n in ("results.md", "speed.md", "reproducing.md")]
MAX_README_LINES = 220

LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    out, inside = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens,
    '-1', '-2', ... appended to repeats; headings inside code fences are not headings."""
    seen: dict[str, int] = {}
    out, inside = set(), False
    for line in markdown.splitlines():
        if FENCE.match(line):
            inside = not inside
        m = None if inside or FENCE.match(line) else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(markdown: str) -> list[str]:
    """The targets of the markdown links outside code."""
    return LINK.findall(prose(markdown))


def broken(page: Path) -> list[str]:
    """'target: why' for every relative link of a page that does not resolve."""
    bad = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):      # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
            bad.append(f"{target}: {file.name} has no heading #{anchor}")
    return bad


# -- the finders, on made-up text first ---------------------------------------------------------------
def test_the_finders_see_links_and_headings_and_skip_code():
    text = ("# Top\n\n## The C loops (`--native`)\n\n## Top\n\nsee [a](docs/a.md#top), [b](#top-1)"
            " and ![img](x.png), `[c](not-a-link.md)`, [d](https://example.org)\n\n"
            "```bash\n# not a heading\n[e](inside-code.md)\n```\n[f](g.md \"title\")\n")
    assert anchors(text) == {"top", "the-c-loops---native", "top-1"}
    assert links(text) == ["docs/a.md#top", "#top-1", "https://example.org", "g.md"]


def test_a_broken_link_is_reported(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# Here\n")
    page.write_text("[ok](there.md#here) [no file](gone.md) [no heading](there.md#elsewhere) [self](#nope)\n")
    bad = broken(page)
    assert len(bad) == 3 and "no file gone.md" in bad[0] and "#elsewhere" in bad[1] and "#nope" in bad[2]


# -- the repository ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    bad = broken(page)
    assert not bad, f"{page.relative_to(ROOT)} has links that do not resolve:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_fence_is_closed(page):
    fences = [line for line in page.read_text(encoding="utf-8").splitlines() if FENCE.match(line)]
    assert len(fences) % 2 == 0, f"{page.relative_to(ROOT)} has a code fence that is never closed"


def test_the_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, \
        f"README.md has {len(text.splitlines())} lines; keep it under {MAX_README_LINES} and move detail to docs/"
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block and text.index(block.group(0)) < text.index("\n## "), "the two commands come first"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make course", "make test"]


def test_the_readme_links_every_page_of_the_docs():
    targets = {t.partition("#")[0] for t in links(README.read_text(encoding="utf-8"))}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in targets, f"README.md does not link docs/{page.name}"


JOURNAL = ["this session", "this round", "in this round", "was lent", "did not fit into",
           "this machine", "not run yet", "has not been run yet", "so far"]


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_user_pages_do_not_read_like_a_journal(page):
    text = " ".join(page.read_text(encoding="utf-8").lower().split())
    found = [phrase for phrase in JOURNAL if phrase in text]
    assert not found, (f"{page.relative_to(ROOT)} says {found}: what one round of work met belongs in "
                       "docs/history.md")
