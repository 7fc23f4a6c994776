"""Run the course headless: execute the notebooks in order, keep what they show.

    python -m metalstm.tools.course                 # all notebooks, quick mode (`make course`)
    python -m metalstm.tools.course --only 01 03    # some of them
    python -m metalstm.tools.course --html-only     # re-render build/notebooks as HTML (`make html`)
    python -m metalstm.tools.course --slides-only   # lecture decks of the executed notebooks (`make slides`)
    python -m metalstm.tools.course --slides        # execute, then write HTML and decks

Executed copies go to build/notebooks/, plain HTML pages (one long page per
notebook) to build/html/, reveal.js decks to build/slides/; the time each
notebook took is printed. A notebook that fails is still written (with the
error in it) and the command exits non-zero.

Offline: the pages and decks load nothing from the network. reveal.js and
MathJax come from two pinned wheels on PyPI (`pip download`, once, cached in
build/vendor/) and are copied next to the pages, so build/slides/ and
build/html/ can be copied to a lecture-room laptop and opened as files. The
decks follow the cells' slideshow metadata (slide, sub-slide, fragment, skip, notes: press `s` for the
speaker view with the notes), reshaped for a 1280x720 projector by metalstm.tools.slides (code that
draws shows only its output, printed tables become HTML tables, an agenda and a recap slide, timed notes
on every slide); a slide still taller than the screen is split in the browser between its blocks.
Widgets need a running kernel: an HTML page shows a note in their place, a deck shows notebook 06's
explorer as pre-rendered frames (right arrow: next step); run the notebook in JupyterLab (`make lab`)
to use the widget itself.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from metalstm.paths import CHECKOUT


def _write(path: Path, data: bytes | str) -> None:
    """metalstm.checkpoint.atomic_write (imported here: the course runner starts without torch)."""
    from metalstm.checkpoint import atomic_write
    atomic_write(path, data)


ROOT = CHECKOUT     # the notebooks are not installed with the package: the runner needs a checkout
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


def course_notebooks(only: list[str] | None = None) -> list[Path]:
    """The course notebooks in order (01_*.ipynb ... 06_*.ipynb), optionally filtered by prefix."""
    if not NOTEBOOKS.is_dir():
        raise SystemExit(f"no notebooks folder {NOTEBOOKS}: the course runner works in a checkout of the "
                         "course repository (the notebooks are not installed with the package)")
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
        if not books:
            raise SystemExit(f"no notebook in {NOTEBOOKS} starts with {' or '.join(only)}")
    return books


def execute(path: Path, out_dir: Path, timeout: int = 1800) -> tuple[float, str | None]:
    """Execute one notebook in its own folder; write the executed copy; return (seconds, error)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from metalstm.viz import audit

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    # every figure the notebook shows is measured as a deck projects it (metalstm.viz.audit)
    figures = out_dir / "figures" / f"{path.stem}.jsonl"
    figures.unlink(missing_ok=True)
    start, error = time.perf_counter(), None
    try:
        os.environ[audit.ENV] = str(figures.resolve())
        client.execute()
    except CellExecutionError as exc:  # keep the partly executed notebook: it shows where
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cell failed"
    finally:
        os.environ.pop(audit.ENV, None)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(nb)
    _write(out_dir / path.name, text if text.endswith("\n") else text + "\n")   # as nbformat.write
    return seconds, error


# -- offline pages and decks ----------------------------------------------------------
# (folder next to the pages, PyPI project, version, sha256 of its wheel, folder inside the wheel,
#  the parts of that folder the pages load). reveal.js 5.2.0 ships inside sphinx-revealjs (only its
# static files are used: nothing is installed); MathJax 2.7 inside jupyter-server-mathjax.
ASSETS = {
    "reveal.js": ("sphinx-revealjs", "3.2.1",
                  "805bed3ca459346e0f01967d5ed1c40d6b7b917de1541e1e4566c8341fe7017b",
                  "sphinx_revealjs/_static/revealjs/", ("LICENSE", "dist/", "plugin/notes/")),
    "mathjax": ("jupyter-server-mathjax", "0.2.6",
                "416389dde2010df46d5fbbb7adb087a5607111070af65a1445391040f2babb5e",
                "jupyter_server_mathjax/static/", ("",)),
}
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
SLIDE_SIZE = (1280, 720)        # a projector's screen; reveal.js scales this canvas to the screen

# MathJax 2 reads this before it starts; only the STIX-Web fonts are shipped, so select them
_MATHJAX = """
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true}},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  displayAlign: "center", messageStyle: "none"
});
</script>
<script src="{{ resources.mathjax_url }}"></script>
"""
# a widget needs its kernel: a page shows this note in its place (there is no widget manager to load)
WIDGET_NOTE = ('<div class="metalstm-widget" style="border: 1px dashed #999; padding: 0.3em 0.6em; color: #555">'
               "Interactive widget: it needs a running kernel. Open this notebook in JupyterLab "
               "(<code>make lab</code>) to use it.</div>")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_NO_CDN = """
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}""" + _MATHJAX + """{%- endblock html_head_js_mathjax -%}
"""
TEMPLATES = {
    # plain pages: the lab template without require.js, mermaid and the widget manager
    "metalstm_html.j2": "{%- extends 'lab/index.html.j2' -%}\n" + _NO_CDN + """
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
""",
    # decks: nbconvert's reveal template, reveal.js loaded as plain scripts (no jQuery, no require.js),
    # sized for a 1280x720 screen (metalstm.tools.slides); a slide still taller than the screen after
    # the maths is typeset is split between its blocks into slides that follow it
    "metalstm_reveal.j2": "{%- extends 'reveal/index.html.j2' -%}\n" + _NO_CDN + """
{%- block html_head_css -%}
<script>document.documentElement.classList.add("metalstm-measure");</script>
<style type="text/css">
.reveal .slides { font-size: {{ resources.deck.body_px }}px;
          --jp-content-font-size1: {{ resources.deck.body_px }}px; --jp-code-font-size: {{ resources.deck.code_px }}px; }
.reveal .slides { text-align: left; }
.reveal .slides > section > section { box-sizing: border-box; width: {{ resources.reveal.width }}px;
  padding: 10px 24px 0 24px; }
.reveal .slides section h1, .reveal .slides section h2, .reveal .slides section h3 { text-transform: none; }
.reveal .slides h1 { font-size: 46px; } .reveal .slides h2 { font-size: 38px; } .reveal .slides h3 { font-size: 30px; }
.reveal .slides .jp-RenderedHTMLCommon { font-size: {{ resources.deck.body_px }}px; line-height: 1.35; padding-right: 0; }
.reveal .slides .jp-RenderedHTMLCommon p { margin: 0 0 0.45em 0; }
.reveal .slides .jp-RenderedHTMLCommon ul, .reveal .slides .jp-RenderedHTMLCommon ol { margin: 0 0 0.4em 1.2em; }
.reveal .slides .jp-InputPrompt, .reveal .slides .jp-OutputPrompt, .reveal .slides .jp-Collapser { display: none; }
.reveal .slides .jp-Cell { padding: 2px 0; }
.reveal .slides pre, .reveal .slides code, .reveal .slides .jp-OutputArea-output pre, .reveal .slides .highlight pre {
  font-size: {{ resources.deck.code_px }}px; line-height: 1.28; white-space: pre; word-break: normal; overflow-wrap: normal;
  font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; }
.reveal .slides pre, .reveal .slides div.jp-OutputArea-output > pre { width: max-content; max-width: none; overflow: visible; box-shadow: none; margin: 2px 0; }
.reveal .slides .jp-RenderedHTMLCommon pre { padding: 4px 8px; }
/* a command line in the prose may go on on the next line (a result never does: outputs keep white-space: pre) */
.reveal .slides .jp-RenderedMarkdown pre { width: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.reveal .slides .highlight { margin: 0; }
.reveal .slides table { font-size: {{ resources.deck.code_px }}px; border-collapse: collapse; margin: 4px 0; }
.reveal .slides table th, .reveal .slides table td { font-size: {{ resources.deck.code_px }}px; }
/* a table cell never wraps (nor hyphenates): metalstm.tools.slides splits a table too wide by its columns */
.reveal .slides table th, .reveal .slides table td, .reveal .slides table td code, .reveal .slides table th code {
  white-space: nowrap; overflow-wrap: normal; word-break: normal; hyphens: none; }
.reveal .slides table th, .reveal .slides table td { padding: 2px 10px; }
.reveal .slides .jp-OutputArea, .reveal .slides .jp-OutputArea-child, .reveal .slides .jp-OutputArea-output, .reveal .slides .jp-Cell-outputWrapper,
.reveal .slides .jp-Cell-inputWrapper, .reveal .slides .jp-InputArea, .reveal .slides .jp-InputArea-editor {
  margin-left: 0; padding-left: 0; border-left: 0; }
.reveal .slides .jp-OutputArea-output pre { padding: 0; }
.reveal .slides .jp-OutputArea-child { display: block; } .reveal .slides .jp-OutputArea-output { width: auto; }
.reveal .slides table td.num { text-align: right; font-variant-numeric: tabular-nums; }
.reveal .slides .jp-RenderedMarkdown img { max-height: {{ resources.deck.image_px }}px; max-width: 100%; width: auto; height: auto; }
/* a figure takes the slide's width (scaled up if need be: larger labels), at most image_px high */
.reveal .slides .jp-RenderedImage { display: block; width: 100%; }
.reveal .slides .jp-OutputArea-output img, .reveal .slides .metalstm-frames img {
  width: 100%; height: auto; max-height: {{ resources.deck.image_px }}px; object-fit: contain; object-position: left top; }
.reveal .slides .metalstm-frames { display: grid; }
.reveal .slides .metalstm-frames > img { grid-area: 1 / 1; }
.reveal .slides .metalstm-frames > img.fragment { transition: none; }
.reveal .slides .metalstm-caption { font-size: {{ resources.deck.body_px }}px; margin: 0; }
.reveal .slides h3.metalstm-continued-title { margin: 0 0 6px 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
html.metalstm-measure .reveal .slides section { display: block !important; position: relative !important;
  visibility: hidden; height: auto !important; min-height: 0 !important; transform: none !important; }
</style>
{%- endblock html_head_css -%}
{% block footer_js %}
<script src="{{ resources.reveal.url_prefix }}/dist/reveal.js"></script>
<script src="{{ resources.reveal.url_prefix }}/plugin/notes/notes.js"></script>
<script>
(function () {
  var H = {{ resources.reveal.height }} - 12, started = false;   // a margin for rounding and the slide number
  var TITLE_CHARS = 72;   // a continued title's words at most (then "... (continued)": one line at 1280 px)
  // a slide taller than the screen: its blocks from the first one that reaches below the screen go to a
  // new slide right after it (with notes saying it continues); blocks are cells and outputs
  // a heading's text as written (its maths as $TeX$, typeset again), not as MathJax rendered it (the
  // rendered text holds each formula several times: its HTML, its MathML and its TeX source)
  function sourceText(el) {
    var c = el.cloneNode(true);
    c.querySelectorAll(".MathJax_Preview, .MathJax, .MathJax_Display, .MJX_Assistive_MathML, .MathJax_SVG, " +
                       ".MathJax_CHTML, .anchor-link").forEach(function (n) { n.remove(); });
    c.querySelectorAll('script[type^="math/tex"]').forEach(function (s) {
      s.replaceWith(document.createTextNode("$" + s.textContent + "$"));
    });
    return c.textContent;
  }
  function leadingStrong(p) {   // a paragraph's opening bold words (a caption), or null
    var first = Array.prototype.find.call(p.childNodes, function (n) { return n.nodeType !== 3 || n.textContent.trim(); });
    return first && first.nodeType === 1 && first.tagName === "STRONG" && !p.closest("aside.notes") ? first : null;
  }
  function captionIn(block) {   // the last heading or caption (a paragraph led by bold words) in a block
    var found = block.matches && block.matches(".metalstm-continued-title, h1, h2, h3, h4") ? block : null;
    Array.prototype.forEach.call(block.querySelectorAll(".metalstm-continued-title, h1, h2, h3, h4, p"), function (e) {
      if (e.closest("aside.notes")) { return; }
      found = e.tagName === "P" ? (leadingStrong(e) || found) : e;
    });
    return found;
  }
  function titleText(el) {   // a heading's or caption's words for a continued title: no mark, no "(continued)"
    return sourceText(el).replace(/\u00b6/g, "").replace(/ \\(continued\\)/g, "").trim().replace(/[.:]$/, "");
  }
  function sectionIn(block) {   // the words of the last heading (h1-h4, not a caption) in a block, or null
    // (a title that says "(continued)" continues a section: a continued title carries that section's words)
    if (block.matches && block.matches(".metalstm-continued-title")) { return block.dataset.section || null; }
    var found = null;
    (block.matches && block.matches("h1, h2, h3, h4") ? [block] : []).concat(
      Array.prototype.slice.call(block.querySelectorAll("h1, h2, h3, h4"))).forEach(function (e) {
      if (!e.closest("aside.notes") && !/\\(continued\\)\\s*$/.test(sourceText(e).replace(/\u00b6/g, "").trim())) { found = e; }
    });
    return found && titleText(found);
  }
  function opensWithCaption(block) {   // whether a block starts with a heading or a caption of its own
    var first = block && block.querySelector("h1, h2, h3, h4, p, table, pre, img, li");
    return !!first && (/^H[1-4]$/.test(first.tagName) || (first.tagName === "P" && !!leadingStrong(first)));
  }
  function fitSlides() {
    var before = "";   // each slide knows the section it is in: the last heading on a slide before it
    document.querySelectorAll(".reveal .slides > section > section").forEach(function (slide) {
      slide.dataset.sectionBefore = before;
      before = sectionIn(slide) || before;
    });
    document.querySelectorAll(".reveal .slides > section > section").forEach(function (slide) {
      var guard = 0;
      while (slide.scrollHeight > H && guard++ < 40) {
        var blocks = Array.prototype.filter.call(slide.children, function (b) { return !b.matches("aside.notes"); });
        var first = blocks.length && blocks[0].matches(".metalstm-continued-title") ? 1 : 0;   // a repeated heading stays
        var cut = -1;
        for (var i = 0; i < blocks.length; i++) {
          if (blocks[i].offsetTop + blocks[i].offsetHeight > H) { cut = i; break; }
        }
        var moved = blocks.slice(cut);
        var fragment = cut >= 0 ? blocks[cut] : null;
        if (fragment && fragment.matches("div.fragment") && fragment.children.length > 1) {
          // a fragment of several cells: its cells from the one that reaches below the screen go on
          var inner = Array.prototype.slice.call(fragment.children), k = 0;
          while (k < inner.length && inner[k].offsetTop + inner[k].offsetHeight <= H) { k++; }   // offsets: from the slide
          if (k > 0) {
            var rest = fragment.cloneNode(false);
            inner.slice(k).forEach(function (b) { rest.appendChild(b); });
            moved = [rest].concat(blocks.slice(cut + 1));
            cut = cut + 1;
          }
        }
        // a lead-in ("What to look for:") goes on with what it introduces
        // (where the two fit on one slide below a heading: else the slide before would be left empty)
        if (cut > first + 1 && moved[0] === blocks[cut] && /:\\s*$/.test(sourceText(blocks[cut - 1]).trim()) &&
            blocks[cut - 1].offsetHeight + blocks[cut].offsetHeight + 60 <= H) {
          cut = cut - 1; moved = blocks.slice(cut);
        }
        if (cut >= 0 && cut <= first && blocks.length > first + 1) { cut = first + 1; moved = blocks.slice(cut); }
        if (cut <= first) { break; }
        var next = document.createElement("section");
        next.className = "metalstm-continued";
        next.dataset.sectionBefore = slide.dataset.sectionBefore || "";
        moved.forEach(function (b) { next.appendChild(b); });
        // the slide's heading comes along, marked: a continued slide still says what it shows
        // (or the bold words that open a paragraph of it)
        // (the nearest one before the cut: the caption of the table cut, not the slide's first; none where
        // the moved blocks open with a heading or caption of their own)
        // (a figure moved on its own takes the section's heading: a table's caption before it names the table)
        var heading = null, section = null;
        blocks.slice(0, cut).forEach(function (b) { heading = captionIn(b) || heading; section = sectionIn(b) || section; });
        var figure = !!moved[0].querySelector && !!moved[0].querySelector("img") && !moved[0].querySelector("table, pre");
        section = section || slide.dataset.sectionBefore || null;
        if (heading && !opensWithCaption(moved[0])) {
          var title = document.createElement("h3"),
              text = figure && section ? section : titleText(heading);
          // one line, "(continued)" at its end: a long title is shortened with an ellipsis before it
          // (not inside a formula: a title with maths is kept whole)
          var short = text.length > TITLE_CHARS && text.indexOf("$") < 0 ?
            text.slice(0, text.lastIndexOf(" ", TITLE_CHARS)).replace(/[,:;]$/, "") + "\u2026" : text;
          title.className = "metalstm-continued-title";
          title.dataset.section = section || text;
          title.textContent = short + " (continued)";
          next.insertBefore(title, next.firstChild);
          if (window.MathJax && MathJax.Hub && title.textContent.indexOf("$") >= 0) { MathJax.Hub.Queue(["Typeset", MathJax.Hub, title]); }
        }
        var notes = slide.querySelector("aside.notes"), minutes = notes && notes.textContent.match(/About ([0-9.]+) min/);
        var aside = document.createElement("aside");
        aside.className = "notes";
        aside.innerHTML = "<p><strong>Continued</strong> (within the " + (minutes ? minutes[1] : "1") +
                          " min of the slide before).</p>";
        if (!next.querySelector("aside.notes")) { next.appendChild(aside); }
        if (!slide.querySelector("aside.notes")) {
          var back = document.createElement("aside");
          back.className = "notes";
          back.innerHTML = "<p><strong>About " + (minutes ? minutes[1] : "1") + " min</strong> for this slide " +
                           "and the next (the same idea, split to fit the screen).</p>";
          slide.appendChild(back);
        }
        slide.parentNode.insertBefore(next, slide.nextSibling);
        slide = next;
      }
    });
  }
  function start() {
    if (started) { return; }
    started = true;
    fitSlides();
    document.documentElement.classList.remove("metalstm-measure");
    Reveal.initialize({
      controls: false, progress: true, history: true, center: false, hash: true,
      transition: "{{ resources.reveal.transition }}", slideNumber: "c/t",
      width: {{ resources.reveal.width }}, height: {{ resources.reveal.height }}, margin: 0,
      plugins: [RevealNotes]
    });
  }
  if (window.MathJax && MathJax.Hub) { MathJax.Hub.Register.StartupHook("End", start); }
  window.addEventListener("load", function () { setTimeout(start, window.MathJax && MathJax.Hub ? 20000 : 0); });
})();
</script>
{% endblock footer_js %}
""",
}


def fetch_assets(cache: Path | None = None) -> dict[str, Path]:
    """The wheels that hold reveal.js and MathJax, downloaded once from PyPI into `cache`
    (default build/vendor/) and checked against their pinned sha256; name -> wheel file."""
    cache = BUILD / "vendor" if cache is None else cache
    cache.mkdir(parents=True, exist_ok=True)
    wheels = {}
    for name, (project, version, sha256, _, _) in ASSETS.items():
        stem = project.replace("-", "_") + f"-{version}-py3-none-any.whl"
        wheel = cache / stem
        if not wheel.exists():
            cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                   "--no-deps", "--only-binary=:all:", "--dest", str(cache), f"{project}=={version}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0 or not wheel.exists():
                raise RuntimeError(f"could not download {project}=={version} (it holds {name} for the "
                                   f"offline pages) with `{' '.join(cmd[2:])}`:\n{done.stderr.strip()}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != sha256:
            wheel.unlink()
            raise RuntimeError(f"{wheel.name} has sha256 {digest}, expected {sha256}; removed it, run again")
        wheels[name] = wheel
    return wheels


def install_assets(dest: Path, names=("reveal.js", "mathjax"), cache: Path | None = None) -> list[Path]:
    """Copy reveal.js and / or MathJax next to the pages in `dest` (dest/reveal.js/, dest/mathjax/)."""
    wheels = fetch_assets(cache)
    done = []
    for name in names:
        target = dest / name
        _, _, sha256, inside, parts = ASSETS[name]
        stamp = target / ".from-wheel"
        if stamp.exists() and stamp.read_text() == sha256:
            done.append(target)
            continue
        shutil.rmtree(target, ignore_errors=True)
        with zipfile.ZipFile(wheels[name]) as wheel:
            for member in wheel.namelist():
                rel = member[len(inside):] if member.startswith(inside) else None
                if rel and not member.endswith("/") and any(rel.startswith(p) for p in parts):
                    out = target / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    _write(out, wheel.read(member))
        _write(stamp, sha256)
        done.append(target)
    return done


# the Open-in-Colab badge is an image on the web: a page made to be read offline drops it
COLAB_BADGE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*\n*", re.MULTILINE)


def exporter(fmt: str):
    """nbconvert's HTML ('html') or reveal.js ('slides') exporter with the offline templates."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter, SlidesExporter
    from nbconvert.preprocessors import Preprocessor
    from traitlets.config import Config

    class Offline(Preprocessor):
        """Drops the Colab badge (a web image) and puts a note where a widget would be."""

        def preprocess(self, nb, resources):
            nb.metadata.pop("widgets", None)             # the widgets' saved state: nothing can show it
            return super().preprocess(nb, resources)

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type == "markdown":
                cell.source = COLAB_BADGE.sub("", cell.source)
            for output in cell.get("outputs", []):
                if WIDGET_VIEW in output.get("data", {}):
                    output["data"] = {"text/html": WIDGET_NOTE}
            return cell, resources

    loaders = [DictLoader(TEMPLATES)]
    made = _exporter(fmt, loaders, Config, HTMLExporter, SlidesExporter)
    made.register_preprocessor(Offline(), enabled=True)
    return made


def _exporter(fmt, loaders, Config, HTMLExporter, SlidesExporter):
    if fmt == "html":
        return HTMLExporter(extra_loaders=loaders, template_file="metalstm_html.j2", mathjax_url=MATHJAX_URL)
    if fmt == "slides":
        # a cell tagged "hide-input" shows only its output on a slide (a figure without its plotting code)
        # (metalstm.tools.slides.prepare tags the cells whose code a slide leaves out)
        hide = Config({"TagRemovePreprocessor": {"enabled": True,
                                                 "remove_input_tags": ["hide-input", "slide-hide-code"]}})
        return SlidesExporter(config=hide, extra_loaders=loaders, template_file="metalstm_reveal.j2",
                              mathjax_url=MATHJAX_URL,
                              reveal_url_prefix="reveal.js", reveal_theme="white", reveal_transition="none",
                              reveal_width=str(SLIDE_SIZE[0]), reveal_height=str(SLIDE_SIZE[1]))
    raise ValueError(f"fmt must be 'html' or 'slides', got {fmt!r}")


def render(executed: Path, fmt: str) -> Path:
    """Render an executed notebook as a plain HTML page ('html', build/html/NAME.html) or a
    reveal.js deck ('slides', build/slides/NAME.slides.html). The page loads MathJax (and the
    deck reveal.js) from folders next to it: `install_assets` puts them there."""
    if fmt == "slides":
        import nbformat

        from metalstm.tools import slides
        nb = nbformat.read(executed, as_version=4)
        frames = slides.explorer_frames() if slides.has_widget(nb) else None
        resources = {"metadata": {"name": executed.stem, "path": str(executed.parent)},
                     "deck": slides.DECK_STYLE}
        body, _ = exporter(fmt).from_notebook_node(slides.prepare(nb, frames), resources=resources)
    else:
        body, _ = exporter(fmt).from_filename(str(executed))
    out = BUILD / fmt / (executed.stem + (".html" if fmt == "html" else ".slides.html"))
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out, body)
    return out


def offline_assets(formats: list[str]) -> str | None:
    """Put MathJax (and reveal.js for decks) next to the pages of `formats`; an error message or None."""
    try:
        for fmt in formats:
            install_assets(BUILD / fmt, ("reveal.js", "mathjax") if fmt == "slides" else ("mathjax",))
    except (RuntimeError, OSError) as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 01 04")
    ap.add_argument("--html-only", action="store_true", help="do not execute; render build/notebooks as HTML")
    ap.add_argument("--slides", action="store_true", help="also write reveal.js decks")
    ap.add_argument("--slides-only", action="store_true",
                    help="write the decks of build/notebooks (executing first any notebook not executed "
                         "yet or changed since)")
    args = ap.parse_args(argv)

    try:
        books = course_notebooks(args.only)
    except SystemExit as exc:                # no notebook with that prefix: a person's mistake
        print(f"error: --only {' '.join(args.only)}: {exc}", file=sys.stderr)
        return 2
    executed_dir = BUILD / "notebooks"
    formats = ["slides"] if args.slides_only else ["html"] + (["slides"] if args.slides else [])
    failures, total, ran = [], 0.0, 0
    for book in books:
        target = executed_dir / book.name
        stale = not target.exists() or target.stat().st_mtime < book.stat().st_mtime
        if args.html_only and not target.exists():
            print(f"{book.name}: not executed yet, run `make course` first", file=sys.stderr)
            failures.append(book.name)
            continue
        if not args.html_only and (not args.slides_only or stale):
            print(f"{book.name} ...", end=" ", flush=True)
            seconds, error = execute(book, executed_dir)
            total, ran = total + seconds, ran + 1
            print(f"{seconds:6.1f} s" + (f"  FAILED: {error}" if error else ""), flush=True)
            if error:
                failures.append(book.name)
        for fmt in formats:
            render(target, fmt)
    problem = offline_assets(formats)
    if ran:
        print(f"total {total:.1f} s; executed notebooks in {executed_dir.relative_to(ROOT)}/")
    for fmt in formats:
        where = (BUILD / fmt).relative_to(ROOT)
        print(("decks" if fmt == "slides" else "HTML pages") + f" in {where}/"
              + ("" if problem else ", with MathJax" + (" and reveal.js" if fmt == "slides" else "")
                 + " beside them (no network needed to open them)"))
    if problem:
        print(f"the pages are written, but they cannot show maths (or slides) offline:\n{problem}",
              file=sys.stderr)
        if "slides" in formats:
            failures.append("offline assets")
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
