"""The lecture decks and HTML pages (metalstm.tools.course, `make slides`, `make html`), without a browser:
the decks follow the cells' slideshow metadata, load nothing from the network, and the notebooks'
metadata makes a deck of every lecture notebook (objectives, each idea, summary, exercises).
tests/notebooks/test_browser.py opens a real deck offline in Chromium."""
import hashlib
import re
import zipfile

import nbformat
import pytest

from metalstm.tools import course, slides

LECTURE = ("01", "02", "03", "04", "05", "06")  # the notebooks whose decks are checked
TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


def tiny_notebook(path):
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                "(https://colab.research.google.com/github/OWNER/metalstm/blob/main/notebooks/x.ipynb)\n\n# Title\n\n"
                "**After this notebook you will be able to**\n\n- say hello;\n- count to\n  three.\n"),
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
    # 3 horizontal slides holding 4 vertical ones, and the agenda and recap slides (a notes cell each)
    assert deck.count("<section") == 11 and ">Agenda<" in deck and ">Recap<" in deck
    assert '<div class="fragment"' in deck and "more, later" in deck
    assert '<aside class="notes">' in deck and "say hello" in deck
    assert "set-up" not in deck                            # skipped
    assert re.search(r'celltag_hide-input[^>]*>\s*<div class="jp-Cell-outputWrapper">', deck)  # output only
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
    assert re.search(r'celltag_hide-input[^>]*>\s*<div class="jp-Cell-inputWrapper"', page)      # code kept
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


# -- the deck built for projection (metalstm.tools.slides) ----------------------------------------
def code_cell(source, outputs=(), tags=()):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = list(outputs)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def stdout(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def picture():
    return nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})


def test_a_slide_shows_code_only_where_it_is_short_and_draws_nothing():
    short = "x = 1\nprint(x)"
    assert slides.code_shown(code_cell(short, [stdout("1\n")]))
    assert not slides.code_shown(code_cell(short, [picture()]))                        # it draws: output only
    assert not slides.code_shown(code_cell("\n".join(["y = 1"] * (slides.MAX_CODE_LINES + 1))))
    assert not slides.code_shown(code_cell("z = '" + "a" * slides.MAX_COLS + "'"))       # wider than the slide
    assert slides.code_shown(code_cell(short, [picture()], tags=[slides.SHOW]))         # the tags decide
    assert not slides.code_shown(code_cell(short, tags=[slides.HIDE]))
    assert not slides.code_shown(code_cell(short, tags=["hide-input"]))


def test_printed_tables_become_html_tables_split_by_columns_when_too_wide():
    text = "method      1-shot    5-shot\nSGD         41.2%     60.3%\nLSTM        43.4%     60.6%\n"
    assert slides.table_rows(text) == [["method", "1-shot", "5-shot"], ["SGD", "41.2%", "60.3%"],
                                       ["LSTM", "43.4%", "60.6%"]]
    assert slides.table_rows("a sentence  with  gaps\nand another  one  here\nand more  words  yes") is None
    assert slides.table_rows("only   two\nlines   1") is None
    (block,) = slides.text_blocks(text)
    html = block["data"]["text/html"]
    assert html.count("<tr>") == 3 and "<th>method</th>" in html and '<td class="num">43.4%</td>' in html
    wide = [["row"] + [f"column {j}" for j in range(20)], ["a"] + [f"{j}.{j:04d}" for j in range(20)]]
    parts = slides.split_columns(wide)
    assert len(parts) > 1 and all(p[0][0] == "row" for p in parts)                    # the first column repeated
    assert [c for p in parts for c in p[0][1:]] == wide[0][1:]                           # every column once, in order
    assert all(sum(slides._column_px(p, j) for j in range(len(p[0]))) <= slides.TABLE_PX for p in parts)


def test_long_printed_text_and_long_markdown_are_cut_into_blocks_that_fit():
    lines = [f"line {i}" for i in range(2 * slides.MAX_OUTPUT_LINES + 3)] + ["x" * (slides.MAX_COLS + 30)]
    blocks = slides.text_blocks("\n".join(lines))
    assert len(blocks) == 3 and all(b["output_type"] == "stream" for b in blocks)
    printed = [line for b in blocks for line in b["text"].splitlines()]
    assert all(len(line) <= slides.MAX_COLS for line in printed) and printed[-1].strip().startswith("x")
    assert len(printed) == len(lines) + 1                                                 # one line broken in two
    source = "## Heading\n\n" + "\n\n".join(f"Paragraph {i} line one\nline two\nline three" for i in range(8))
    source += "\n\n$$\na\n\nb\n$$"
    pieces = slides.split_markdown(source)
    assert len(pieces) > 1 and pieces[0].startswith("## Heading\n\nParagraph 0")
    assert all(len(p.splitlines()) <= slides.MAX_MARKDOWN_LINES for p in pieces[:-1])
    assert pieces[-1].endswith("$$\na\n\nb\n$$")                                        # maths is not cut
    assert "\n\n".join(pieces) == source


def test_every_slide_gets_timed_notes_and_the_deck_an_agenda_and_a_recap(tmp_path):
    nb = nbformat.read(tiny_notebook(tmp_path / "01_tiny.ipynb"), as_version=4)
    nb.cells.insert(-1, nbformat.v4.new_markdown_cell("## Exercises", metadata={"slideshow": {"slide_type": "slide"}}))
    before = nbformat.writes(nb)
    deck = slides.prepare(nb)
    assert nbformat.writes(nb) == before                                                  # the notebook is unchanged
    groups = slides._groups(deck.cells)
    for group in groups:
        notes = [c for c in group if slides._kind(c) == "notes"]
        assert notes and re.match(r"\*\*About \d+(\.5)? min\.\*\*", notes[0].source), [c.source for c in group]
    titles = [g[0].source.splitlines()[0] for g in groups if g[0].cell_type == "markdown"]
    assert titles.index("## Agenda") == 1 and titles.index("## Recap") == titles.index("## Exercises") - 1
    agenda = next(c.source for c in deck.cells if c.source.startswith("## Agenda"))
    assert re.search(r"1\. Section one \(\d+(\.5)? min\)", agenda) and "Summary" in agenda
    recap = next(c.source for c in deck.cells if c.source.startswith("## Recap"))
    assert "- say hello" in recap and "- count to three" in recap                         # the objectives, as done
    assert "set-up" not in nbformat.writes(deck)                                          # skipped cells are gone
    assert len({c.id for c in deck.cells}) == len(deck.cells)


def test_a_widget_becomes_frames_that_step_as_fragments():
    html = slides.frames_html([b"a", b"b", b"c"], caption="step")
    imgs = re.findall(r"<img ([^>]*)>", html)
    assert len(imgs) == 3
    assert 'class="metalstm-frame fragment fade-out" data-fragment-index="1"' in imgs[0]
    assert 'fragment current-visible" data-fragment-index="1"' in imgs[1]
    assert 'class="metalstm-frame fragment" data-fragment-index="2"' in imgs[2]
    widget = nbformat.v4.new_output("display_data", data={slides.WIDGET_VIEW: {"model_id": "m"}, "text/plain": "VBox",
                                                         "image/png": "aW1n"})   # the explorer: a widget with its picture
    bar = nbformat.v4.new_output("display_data", data={slides.WIDGET_VIEW: {"model_id": "p"}, "text/plain": "10%"})
    progress = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), code_cell("train()", [bar])])
    assert not slides.has_widget(progress)                    # a progress bar needs no frames ...
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), code_cell("train()", [bar]),
                                         code_cell("explorer.show()", [widget])])
    assert slides.has_widget(nb)
    deck = slides.prepare(nb, frames=html)
    shown = [o for c in deck.cells if c.cell_type == "code" for o in c.outputs]
    assert [o["data"]["text/html"] for o in shown] == [html]   # ... and is not shown: only the explorer's frames


def test_a_question_to_the_room_holds_back_the_slides_result(tmp_path):
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("# T"), md("## Which wins?"), code_cell("table()", [stdout("a  1  2\nb  3  4\nc  5  6\n")]),
             md("*Lecturer's notes.* Ask the room before showing the table.")]
    for cell, kind in zip(cells, ["slide", "slide", "-", "notes"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells))
    code, result = [c for c in deck.cells if c.cell_type == "code"]          # the code shows, its result waits
    assert not code.outputs and slides._kind(code) == "-"
    assert slides._kind(result) == "fragment" and "metalstm-table" in result.outputs[0]["data"]["text/html"]
    cells[3].source = "*Lecturer's notes.* Explain the table."
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells))
    assert [slides._kind(c) for c in deck.cells if c.cell_type == "code"] == ["-", "-"]


def test_a_long_printed_table_is_cut_into_tables_that_repeat_the_header():
    lines = ["layer    mean    spread"] + [f"conv{i}    0.{i:03d}    1e-0{i % 9}" for i in range(30)]
    blocks = slides.text_blocks("\n".join(lines))
    tables = [b["data"]["text/html"] for b in blocks]
    assert len(tables) == 3 and all(t.count("<th>layer</th>") == 1 for t in tables)
    assert all(t.count("<tr>") <= slides.MAX_OUTPUT_LINES for t in tables)
    assert sum(t.count("<td>conv") for t in tables) == 30


def test_markdown_from_code_is_cut_into_paragraphs_and_tables_of_a_few_rows():
    rows = [f"| m{i} | {i}.0 |" for i in range(2 * slides.MAX_TABLE_ROWS + 1)]
    text = "Intro line.\n\n**Caption:**\n| method | acc |\n|---|---|\n" + "\n".join(rows)
    blocks = slides.markdown_blocks(text)
    assert len(blocks) == 3 and blocks[0].startswith("Intro line.\n\n**Caption:**\n| method | acc |")
    assert all(b.startswith("| method | acc |\n|---|---|\n") for b in blocks[1:])      # the header repeated
    assert [line for b in blocks for line in b.split("|---|---|\n")[1].splitlines()] == rows
    assert slides.markdown_blocks("Just one line.") == ["Just one line."]
    out = nbformat.v4.new_output("display_data", data={"text/markdown": text, "text/plain": "<Markdown>"})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), code_cell("show()", [out])])
    shown = [o["data"] for c in slides.prepare(nb).cells if c.cell_type == "code" for o in c.outputs]
    assert [d["text/markdown"] for d in shown] == blocks


# -- tables and text that project cleanly (issue 27's lecturer review) ------------------------------
def markdown_out(text):
    return nbformat.v4.new_output("display_data", data={"text/markdown": text, "text/plain": "<Markdown>"})


def pipe_rows(block):
    """The rows of the pipe table in a Markdown block (its header first)."""
    lines = [line for line in block.splitlines() if line.lstrip().startswith("|")]
    return [slides._pipe_cells(line) for i, line in enumerate(lines) if i != 1]


WIDE = ["| method | accuracy (%) | vs Meta-Learner LSTM | vs the rung below | seconds |", "|---|---|---|---|---|"] + [
    f"| Learned init (FO-MAML) {i} | 94.13 +- 4.77 | +4.80 +- 12.26 (n.s.) | -1.07 +- 10.23 (n.s.) (vs Learned init (FO-MAML)) | {i} |"
    for i in range(3)]


def test_a_table_too_wide_for_the_slide_is_split_by_columns_never_wrapped():
    assert slides.table_px(pipe_rows("\n".join(WIDE))) > slides.TABLE_PX       # as written it would have to wrap
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"),
                                         code_cell("show()", [markdown_out("**Caption**\n\n" + "\n".join(WIDE))])])
    shown = [o["data"]["text/markdown"] for c in slides.prepare(nb).cells if c.cell_type == "code" for o in c.outputs]
    tables = [pipe_rows(b) for b in shown]
    assert len(tables) >= 2 and shown[0].startswith("**Caption**")
    assert all(slides.table_px(t) <= slides.TABLE_PX for t in tables)
    assert all(t[0][0] == "method" for t in tables)                                # the first column repeated
    assert [h for t in tables for h in t[0][1:]] == pipe_rows(WIDE[0])[0][1:]        # every column once, in order
    assert all(len(t) == 4 for t in tables)                                          # every row in every part
    # a table in a markdown cell: one cell for each part, the prose after it a cell of its own
    cell = nbformat.v4.new_markdown_cell("## Results\n\nThe table:\n\n" + "\n".join(WIDE) + "\n\nAfter it.",
                                         metadata={"slideshow": {"slide_type": "slide"}})
    deck = slides.prepare(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), cell]))
    pieces = [c.source for c in deck.cells if c.source.startswith(("## Results", "| method", "After"))]
    assert len(pieces) >= 3 and pieces[-1] == "After it." and pieces[0].startswith("## Results\n\nThe table:")
    assert all(slides.table_px(pipe_rows(p)) <= slides.TABLE_PX for p in pieces[:-1])
    # the deck's style: no table cell wraps or hyphenates
    css = course.TEMPLATES["metalstm_reveal.j2"]
    assert re.search(r"table th, \.reveal \.slides table td[^{]*\{\s*white-space: nowrap;[^}]*hyphens: none", css)
    assert "white-space: normal" not in css


def test_a_first_column_too_wide_to_repeat_is_shortened_and_explained_after_the_tables():
    rows = ["| rule (the sentence it tests) | numbers | glyphs 1-shot | glyphs 5-shot | digits 1-shot |", "|---|---|---|---|---|",
            "| Meta-Learner LSTM (its own accuracy) | 2046 | 93.00 +- 0.55 | 98.18 +- 0.22 | 77.71 +- 0.80 |",
            "| `median`: a learned learning-rate schedule (the median gates per step and tensor) | 432/288 | -28.77 +- 1.65 | "
            "-26.85 +- 2.53 | -45.21 +- 1.20 |",
            "| (intervention) the LSTM's first 3 updates only: the later, large steps add nothing | 0 | -2.15 +- 0.35 | "
            "-1.66 +- 0.33 | -5.36 +- 0.57 |"]
    blocks = slides.markdown_blocks("\n".join(rows))
    tables, legend = [pipe_rows(b) for b in blocks[:-1]], blocks[-1]
    assert all(slides.table_px(t) <= slides.TABLE_PX for t in tables)
    assert [r[0] for r in tables[0]] == ["rule", "Meta-Learner LSTM", "`median`", "(intervention) the LSTM's first 3 updates only"]
    assert legend.splitlines() == ["- **rule**: the sentence it tests", "- **Meta-Learner LSTM**: its own accuracy",
                                   "- **`median`**: a learned learning-rate schedule (the median gates per step and tensor)",
                                   "- **(intervention) the LSTM's first 3 updates only**: the later, large steps add nothing"]


def test_every_figure_or_table_slide_says_what_it_shows():
    md = nbformat.v4.new_markdown_cell
    cells = [md("# T"), md("## 2. Batch norm"), md("### 2.1 Query 0 in four batches"), code_cell("plot()", [picture()]),
             md("Left: the same image."), code_cell("plot()", [picture()]), md("**Reading it.** Text."),
             code_cell("plot()", [picture()])]
    for cell, kind in zip(cells, ["slide", "slide", "subslide", "-", "subslide", "-", "subslide", "-"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    groups = slides._groups(slides.prepare(nbformat.v4.new_notebook(cells=cells)).cells)
    starts = [g[0].source for g in groups if any(c.cell_type == "code" for c in g)]
    # a heading of its own, the heading it continues (marked), or bold words that open it
    assert starts == ["### 2.1 Query 0 in four batches", "### 2.1 Query 0 in four batches (continued)", "**Reading it.** Text."]
    assert slides._kind(next(g for g in groups if g[0].source.endswith("(continued)"))[0]) == "subslide"
    captioned = code_cell("show()", [markdown_out("**Accuracy by method**\n\n| method | acc |\n|---|---|\n| a | 1.0 |")])
    captioned.metadata["slideshow"] = {"slide_type": "subslide"}
    groups = slides._groups(slides.prepare(nbformat.v4.new_notebook(cells=cells + [captioned])).cells)
    assert groups[-2][0].cell_type == "code"                        # a caption written by the code counts: no heading
    js = course.TEMPLATES["metalstm_reveal.j2"]                   # a slide split in the browser repeats its heading
    assert 'title.className = "metalstm-continued-title"' in js and '" (continued)"' in js


def test_long_printed_lines_go_on_as_code_would_and_aligned_tables_are_found():
    code = ('        for name, value in (("n_way", n_way), ("in_channels", in_channels), ("image_size", image_size), '
            '("x", 1)):')
    lines = slides._break_long(code)
    assert lines == ['        for name, value in (("n_way", n_way), ("in_channels", in_channels),',
                     '                            ("image_size", image_size), ("x", 1)):']      # under its bracket, no mark
    comment = "    # " + " ".join(["word"] * 30)
    assert all(line.startswith("    # ") and "\u21a9" not in line for line in slides._break_long(comment))
    assert all(len(line) <= slides.MAX_COLS for line in lines + slides._break_long(comment))
    trailing = "            side //= 2" + " " * 23 + "# 3x3 conv with padding 1 keeps the size; the pool halves it, as said"
    assert slides._break_long(trailing)[1] == " " * 45 + "# pool halves it, as said"          # under its '#'
    assert slides._break_long("x" * (slides.MAX_COLS + 5))[0].endswith("\u21a9")              # else: a mark
    # an indented header over all but the first column, a rule line, a cell of two words: a table still
    text = ("         layer   forget mean    input mean\n" + "-" * 44 + "\n"
            "1-shot   conv 1       1.0000        0.6609\n1-shot   linear       0.9999        0.6673\n")
    assert slides.table_rows(text) == [["", "layer", "forget mean", "input mean"],
                                       ["1-shot", "conv 1", "1.0000", "0.6609"], ["1-shot", "linear", "0.9999", "0.6673"]]


def test_printed_tables_keep_their_key_columns_headers_and_parts():
    # an indented header over all but the first column, a last cell of single-spaced words: cut by 2+ spaces
    text = ("         layer   forget mean    10%-90%  between-episode std\n" + "-" * 60 + "\n"
            "1-shot   conv 1       1.0000  0.9999-1.0000  f 0.00002 / i 0.07414\n"
            "1-shot   linear       0.9999  0.9998-1.0000  f 0.00003 / i 0.07971\n")
    rows = slides.table_rows(text)
    assert rows[0] == ["", "layer", "forget mean", "10%-90%", "between-episode std"]
    assert rows[1] == ["1-shot", "conv 1", "1.0000", "0.9999-1.0000", "f 0.00002 / i 0.07414"]
    # a split repeats every key column (the leading columns of words that say which row it is)
    wide = [["rule", "shot"] + [f"column {j}" for j in range(20)],
            ["SGD", "1-shot"] + [f"{j}.{j:04d}" for j in range(20)], ["SGD", "5-shot"] + [f"{j}.5" for j in range(20)]]
    assert slides.key_columns(wide) == 2
    parts = slides.split_columns(wide)
    assert len(parts) > 1 and all([r[:2] for r in p] == [r[:2] for r in wide] for p in parts)
    assert [c for p in parts for c in p[0][2:]] == wide[0][2:]
    # text that only lines up in places (a line going on under the one before) is not a table
    wrapped = ("1-shot: a_t = -2.86 -3.01 -2.99 -3.47 -1.82\n        b_t = -0.24 -0.38 -0.40 -0.48 -0.31   (10 numbers)\n"
               "5-shot: a_t = -2.71 -2.27 -2.98 -2.01 -3.09\n        b_t = -0.17 -0.24 -0.27 -0.21 -0.28   (10 numbers)\n")
    assert slides.table_groups(wrapped) is None
    assert all(b["output_type"] == "stream" for b in slides.text_blocks(wrapped))
    # two header lines (one table per shot): two tables, no header row among the data
    two = ("1-shot   1-f: step 1   later   share\nconv 1   2.1e-04   8e-07   0.51%\nlinear   2.2e-04   8e-07   0.36%\n"
           "5-shot   1-f: step 1   later   share\nconv 1   3.0e-04   8e-06   0.49%\nlinear   3.1e-04   9e-06   0.41%\n")
    tables = slides.table_groups(two)
    assert [t[0][0] for t in tables] == ["1-shot", "5-shot"] and all(len(t) == 3 for t in tables)
    html = [b["data"]["text/html"] for b in slides.text_blocks(two)]
    assert len(html) == 2 and all(h.count("<th>") == 4 and "5-shot</td>" not in h for h in html)
    # a table printed without a header line: its first row of data is not made a header
    plain = ("meta-train  675 classes   7 alphabets   13500 images\nmeta-val    132 classes   5 alphabets    2640 images\n"
             "meta-test   215 classes   5 alphabets    4300 images\n")
    rows = slides.table_rows(plain)
    assert rows and not slides.is_header(rows)
    (block,) = slides.text_blocks(plain)
    assert "<th>" not in block["data"]["text/html"] and block["data"]["text/html"].count("<tr>") == 3
    assert slides.is_header([["method", "1-shot", "5-shot"], ["SGD", "41.2%", "60.3%"], ["LSTM", "43.4%", "60.6%"]])


def test_a_continued_title_is_the_nearest_caption_or_heading_before_it_a_figure_the_nearest_heading():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

    def table_cell(caption):
        cell = code("show()")
        cell.outputs = [nbformat.v4.new_output("display_data", data={
            "text/markdown": f"**{caption}: the first episodes**\n\n| a | b |\n|---|---|\n| 1 | 2 |"})]
        return cell

    plot = code("plot()")
    plot.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "fig"})]
    # a table slide takes the caption before it (not the heading "Results" further up); a figure slide
    # takes the heading (the caption before it names a table, not the figure)
    cells = [md("# Deck"), md("## Results"), table_cell("glyphs-1shot"), table_cell("glyphs-5shot"),
             table_cell("digits-5shot"), plot]
    for cell, kind in zip(cells, ["slide", "slide", "-", "-", "slide", "slide"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    for cell in cells[4].outputs:
        cell.data["text/markdown"] = cell.data["text/markdown"].split("\n\n", 1)[1]       # no caption of its own
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells))
    titles = [c.source for c in deck.cells if c.cell_type == "markdown" and c.source.endswith("(continued)")]
    assert titles == ["### glyphs-5shot: the first episodes (continued)", "### Results (continued)"]


def test_a_lead_in_stays_with_its_list_markers_are_not_shown_frames_get_a_title():
    lead = "**Reading the curves.** The numbers come next.\nWhat to look for:"
    items = "\n".join(f"- point {i}\n  goes on" for i in range(6))
    pieces = slides.split_markdown("Intro line one\nline two\nline three\n\n" + lead + "\n\n" + items)
    assert not any(p.rstrip().endswith(":") for p in pieces)                 # never cut after the lead-in
    assert any("What to look for:\n\n- point 0" in p for p in pieces)
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    shown = code("# NBVAL_CHECK_OUTPUT\nprint(1)")
    shown.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    widget = code("explorer.show()")
    widget.outputs = [nbformat.v4.new_output("display_data", data={
        slides.WIDGET_VIEW: {"model_id": "x"}, "image/png": "iVBORw0KGgo=", "text/plain": "VBox"})]
    cells = [md("# Deck"), md("## The explorer"), shown, widget]
    for cell, kind in zip(cells, ["slide", "slide", "-", "slide"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells), frames=slides.frames_html([b"a", b"b"]))
    assert not any("NBVAL" in c.source for c in deck.cells)
    assert any(c.cell_type == "code" and c.source == "print(1)" for c in deck.cells)
    groups = slides._groups(deck.cells)
    framed = next(g for g in groups if any("metalstm-frames" in str(o.get("data", {})) for c in g
                                           for o in c.get("outputs", [])))
    assert framed[0].source == "### The explorer (continued)"


def test_a_long_list_is_cut_between_items_and_a_lead_in_keeps_the_next_cell_on_its_slide():
    items = "\n".join(f"{i}. item {i}\n   goes on\n   and on" for i in range(1, 10))     # 27 lines, no blank line
    pieces = slides.split_markdown("**Reading it.**\n\n" + items)
    assert len(pieces) > 1 and all(len(p.splitlines()) <= slides.MAX_MARKDOWN_LINES for p in pieces)
    assert all(re.match(r"^(\*\*Reading|\d+\. item)", p) for p in pieces)              # cut between items
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    shown = code("print(1)")
    shown.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cells = [md("# Deck"), md("## Part\n\nThe package agrees with the notebook:"), shown]
    for cell, kind in zip(cells, ["slide", "slide", "subslide"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells))
    group = next(g for g in slides._groups(deck.cells) if g[0].source.startswith("## Part"))
    assert any(c.cell_type == "code" for c in group)


def test_a_slide_whose_heading_sits_above_its_own_table_gets_no_continued_title():
    md = nbformat.v4.new_markdown_cell
    cells = [md("# Deck"), md("## 4. Before\n\nSome words."),
             md("## 5. The ladder\n\nWhich rung wins?\n\n| rung | what |\n|---|---|\n| init | c_0 |"),
             md("| rung | what |\n|---|---|\n| sgd | nothing |")]
    for cell, kind in zip(cells, ["slide", "slide", "slide", "slide"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells))
    titles = [c.source for c in deck.cells if c.cell_type == "markdown" and c.source.endswith("(continued)")]
    assert titles == ["### 5. The ladder (continued)"]          # the bare table's slide only


def test_the_recap_finds_the_objectives_of_a_long_title_cell_and_every_recap_slide_has_notes():
    md = nbformat.v4.new_markdown_cell
    intro = "\n\n".join(f"Paragraph {i} of a long introduction, " + "words " * 40 for i in range(8))
    goals = "\n".join(f"- do thing {i}, which takes a line of words to say " + "and more " * 8 for i in range(9))
    cells = [md("# 05 · A deck\n\n" + intro + "\n\n**After this notebook you will be able to**\n\n" + goals),
             md("## 1. First\n\nText."), md("## Exercises\n\nDo them.")]
    for cell, kind in zip(cells, ["slide", "slide", "slide"]):
        cell.metadata["slideshow"] = {"slide_type": kind}
    deck = slides.prepare(nbformat.v4.new_notebook(cells=cells))
    assert len(slides.split_markdown(cells[0].source)) > 1                  # the title cell is cut in pieces
    recap = [i for i, c in enumerate(deck.cells) if c.cell_type == "markdown" and c.source.startswith("## Recap")]
    assert recap and "You can now:" in deck.cells[recap[0]].source and "do thing 0" in deck.cells[recap[0]].source
    starts = [i for i, c in enumerate(deck.cells) if i >= recap[0] and c.metadata.get("slideshow", {}).get(
        "slide_type") in ("slide", "subslide") and not c.source.startswith("## Exercises")]
    starts = starts[:next((k for k, i in enumerate(starts) if deck.cells[i].source.startswith("## 1.")), len(starts))]
    for i in starts:                                     # each recap slide is followed by its notes
        assert deck.cells[i + 1].metadata["slideshow"]["slide_type"] == "notes", deck.cells[i].source[:60]
