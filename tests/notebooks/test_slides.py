"""The lecture decks and HTML pages (metalstm.tools.course, `make slides`, `make html`), without a browser:
the decks follow the cells' slideshow metadata, load nothing from the network, and the notebooks'
metadata makes a deck of every lecture notebook (objectives, each idea, summary, exercises).
tests/notebooks/test_browser.py opens a real deck offline in Chromium."""
import hashlib
import re
import zipfile

import nbformat
import pytest

from metalstm.tools import course

LECTURE = ("01", "02", "03", "04", "05", "06")  # the notebooks whose decks are checked
TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


def tiny_notebook(path):
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                "(https://colab.research.google.com/github/OWNER/metalstm/blob/main/notebooks/x.ipynb)\n\n# Title"),
             code("print('set-up')"), md("*Speaker:* say hello"), md("## Section one\n\n$x^2$"),
             md("second idea"), code("print('shown on a slide')"), md("more, later"),
             code("print('plotting code')"), md("## Summary")]
    kinds = ["slide", "skip", "notes", "slide", "subslide", "-", "fragment", "-", "slide"]
    for cell, kind in zip(cells, kinds):
        cell.metadata["slideshow"] = {"slide_type": kind}
    cells[7].metadata["tags"] = ["hide-input"]
    for cell in cells:
        if cell.cell_type == "code":
            text = cell.source.split("'")[1]
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def loaded_urls(page: str) -> list[str]:
    """What a page loads by itself: script sources, style sheets, images (not the links one may click)."""
    return (re.findall(r'<script[^>]*\ssrc="([^"]+)"', page) + re.findall(r'<link[^>]*\shref="([^"]+)"', page)
            + [u for u in re.findall(r'<img[^>]*\ssrc="([^"]+)"', page) if not u.startswith("data:")])


def test_a_deck_follows_the_slideshow_metadata_and_loads_only_local_files(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "BUILD", tmp_path / "build")
    deck = course.render(tiny_notebook(tmp_path / "01_tiny.ipynb"), "slides").read_text()
    assert deck.count("<section") == 7                     # 3 horizontal slides holding 4 vertical ones
    assert '<div class="fragment"' in deck and "more, later" in deck
    assert '<aside class="notes">' in deck and "say hello" in deck
    assert "set-up" not in deck                            # skipped
    assert re.search(r'celltag_hide-input"[^>]*>\s*<div class="jp-Cell-outputWrapper">', deck)  # output only
    assert "<pre>plotting code" in deck
    assert "colab-badge" not in deck                       # a web image: dropped offline
    urls = loaded_urls(deck)
    assert urls and all(not u.startswith(("http:", "https:", "//")) for u in urls), urls
    assert "reveal.js/dist/reveal.js" in urls and any(u.startswith("mathjax/MathJax.js") for u in urls)
    assert "require" not in " ".join(urls) and "jquery" not in " ".join(urls)


def test_an_html_page_is_one_plain_page_with_local_maths_and_a_note_for_widgets(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "BUILD", tmp_path / "build")
    path = tiny_notebook(tmp_path / "02_tiny.ipynb")
    nb = nbformat.read(path, as_version=4)
    nb.cells[5].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
        "text/plain": "VBox(...)"})]
    nbformat.write(nb, path)
    page = course.render(path, "html").read_text()
    assert "<section" not in page and "set-up" in page
    assert re.search(r'celltag_hide-input"[^>]*>\s*<div class="jp-Cell-inputWrapper"', page)      # code kept
    urls = loaded_urls(page)
    assert urls == [course.MATHJAX_URL.replace("&", "&amp;")] or urls == [course.MATHJAX_URL], urls
    assert "it needs a running kernel" in page and "make lab" in page


def test_assets_come_from_a_pinned_wheel_and_are_copied_once(tmp_path, monkeypatch):
    cache = tmp_path / "vendor"
    cache.mkdir()
    wheel = cache / "fake_assets-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake_assets/static/dist/reveal.js", "window.Reveal = {};")
        z.writestr("fake_assets/static/plugin/notes/notes.js", "window.RevealNotes = {};")
        z.writestr("fake_assets/static/plugin/other/skip.js", "not copied")
        z.writestr("fake_assets/__init__.py", "")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(course, "ASSETS", {"reveal.js": ("fake-assets", "1.0", digest, "fake_assets/static/",
                                                          ("dist/", "plugin/notes/"))})
    dest = tmp_path / "slides"
    (target,) = course.install_assets(dest, ("reveal.js",), cache=cache)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == \
        [".from-wheel", "dist/reveal.js", "plugin/notes/notes.js"]
    (target / "dist" / "reveal.js").write_text("changed")           # a second call keeps what is there
    course.install_assets(dest, ("reveal.js",), cache=cache)
    assert (target / "dist" / "reveal.js").read_text() == "changed"
    monkeypatch.setattr(course, "ASSETS", {"reveal.js": ("fake-assets", "1.0", "0" * 64, "fake_assets/static/",
                                                          ("dist/",))})
    with pytest.raises(RuntimeError, match="expected 0000"):
        course.fetch_assets(cache)
    assert not wheel.exists()                                        # a wrong wheel is not kept


def deck_plan(path):
    """The deck a notebook's metadata makes: [(heading, number of vertical slides)] per horizontal slide."""
    nb = nbformat.read(path, as_version=4)
    plan = []
    for i, cell in enumerate(nb.cells):
        kind = cell.metadata.get("slideshow", {}).get("slide_type")
        assert kind in TYPES, f"{path.name} cell {i} has no slide type (or an unknown one: {kind!r})"
        if i == 0:
            assert kind == "slide", f"{path.name}: the first cell must start a slide"
        if kind == "slide":
            heading = cell.source.split("\n")[0] if cell.cell_type == "markdown" else ""
            heading = next((line for line in cell.source.splitlines() if line.startswith("#")), heading)
            plan.append([heading, 1])
        elif kind == "subslide":
            plan[-1][1] += 1
        if cell.cell_type == "markdown" and re.match(r"^##? ", cell.source):
            assert kind == "slide", f"{path.name} cell {i}: a section heading must start a slide"
    return plan


@pytest.mark.parametrize("prefix", LECTURE)
def test_every_lecture_notebook_is_a_deck(prefix):
    (path,) = course.course_notebooks([prefix])
    plan = deck_plan(path)
    headings = [h for h, _ in plan]
    assert headings[0].startswith("# ") and "After this notebook you will be able to" in \
        nbformat.read(path, as_version=4).cells[0].source                   # title and objectives
    assert headings[-2:] == ["## Summary", "## Exercises"], headings
    main = [(h, n) for h, n in plan if h.startswith("## ") and h != "## Summary"]
    assert len(main) >= 4 and all(n >= 2 for _, n in main), main           # each idea on slides of its own
    nb = nbformat.read(path, as_version=4)
    kinds = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    assert "notes" in kinds and "fragment" in kinds
    for cell in nb.cells:                                                    # set-up, stubs and checks: skipped
        if cell.cell_type == "code" and (cell.source.startswith(("# Set-up for Colab", "check.exercise("))
                                         or "raise NotImplementedError" in cell.source):
            assert cell.metadata["slideshow"]["slide_type"] == "skip", cell.source[:60]
