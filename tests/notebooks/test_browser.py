"""The course in a real browser (headless Chromium through playwright):

1. notebook 06 run in JupyterLab, its inner-loop explorer widget rendered and answering one key
   press;
2. every slide of the six lecture decks (`make slides`, build/slides/) opened from local files in a
   1280x720 window (a projector) with the network blocked: no slide taller or wider than the screen,
   no code or table cut off, no maths error, every formula typeset, no request beyond the files,
   speaker notes with a time estimate on every slide, text at least BODY_PX and code at least CODE_PX
   (metalstm.tools.slides) as measured on screen, no table cell whose text takes two lines, a heading or
   caption on every figure and table slide, no result on screen before the first key press where the
   notes ask the room, no prose that says "printed above" / "the cell below" with nothing there on its
   slide, no slide that ends with a lead-in (text ending with ':') whose list or result went on to the
   next slide; it prints (without failing) the printed lines still broken with a mark;
3. every figure the notebooks showed while the decks were built (metalstm.viz.audit) has every text
   at least 19 px on the projected screen.

Slow (a JupyterLab server, a kernel, about a minute of notebook; a few seconds a deck), so they run
only when selected: `make browser-check` (it builds the decks first), or `pytest -m browser
tests/notebooks/test_browser.py` once playwright and Chromium (/usr/bin/chromium, or $CHROMIUM) are
installed. Test 1 needs the checkpoints data/checkpoints/glyphs-{1,5}shot.pt, or a folder of
them in $METALSTM_CHECKPOINTS. Test 2 reads the decks of build/slides/ ($METALSTM_DECKS="01 06" checks
only those). Screenshots: build/browser/jupyterlab-06-{before,after,page}.png
(-failure.png when it fails) and deck-NN-SSS.png, one for every slide that shows a figure or a table
(all its fragments shown, no transition: nothing half faded in). Nothing in the repository is modified.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/06_gate_visualization.ipynb"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SHOTS = REPO / "build" / "browser"
TOKEN = "metalstm-browser-check"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK_TIMEOUT_S = 900      # the whole notebook, on a shared 2-core CPU
SERVER_TIMEOUT_S = 120


def _requirements() -> None:
    """Skip where a tool is missing (make browser-check installs them)."""
    if not shutil.which("jupyter", path=str(Path(sys.executable).parent)):
        pytest.skip("jupyter is not installed next to this Python; run `make browser-check`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed; run `make browser-check` (it installs playwright and chromium)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}; run `make browser-check` (apt-get install chromium)")


def _checkpoints() -> None:
    """Fail where the checkpoints notebook 06 needs are missing: then the check asked for cannot be made."""
    names = ("glyphs-1shot.pt", "glyphs-5shot.pt")
    folder = Path(os.environ.get("METALSTM_CHECKPOINTS") or REPO / "data" / "checkpoints")
    missing = [str(folder / n) for n in names if not (folder / n).is_file()]
    if missing:
        pytest.fail(f"notebook 06 needs trained checkpoints, missing {', '.join(missing)} "
                    "(train them, see notebook 06, or set METALSTM_CHECKPOINTS to a folder holding them)")


@pytest.fixture
def selected(request):
    expr = request.config.getoption("markexpr", "") or ""
    if "browser" not in expr or "not browser" in expr:
        pytest.skip("slow real-browser check, not part of the default run; run it with `make browser-check`")
    _requirements()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(selected, tmp_path):
    """A JupyterLab server on localhost, rooted at a temporary copy of notebooks/; yields its base URL."""
    _checkpoints()
    root = tmp_path / "course"
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)   # no "official Jupyter news?" toast over the screenshots
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}')
    notebook_settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)   # render every cell, also those scrolled out of view
    (notebook_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), TQDM_DISABLE="1", PYTHONHASHSEED="0")
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {url}:\n{(tmp_path / 'jupyter.log').read_text()}")
                time.sleep(1)
        yield url
    finally:
        # the server and the kernels it started share one process group
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        except ProcessLookupError:
            pass
        log.close()


# JavaScript run in the page: window.jupyterapp is there because of expose_app_in_browser
KERNEL_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
                   && panel.sessionContext.session.kernel;
    return kernel ? kernel.status : null;
}"""
CELLS_RUN = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    let code = 0, run = 0;
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type === 'code') { code += 1; run += cell.executionCount ? 1 : 0; }
    }
    return [code, run];
}"""
FIRST_ERROR = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const cells = panel && panel.content && panel.content.model && panel.content.model.cells;
    for (let i = 0; cells && i < cells.length; i++) {
        const cell = cells.get(i);
        for (let j = 0; cell.type === 'code' && j < cell.outputs.length; j++) {
            const out = cell.outputs.get(j).toJSON();
            if (out.output_type === 'error') return `cell ${i}: ${out.ename}: ${out.evalue}`;
        }
    }
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
                   && panel.sessionContext.session.kernel;
    return kernel && kernel.status === 'dead' ? 'the kernel died' : null;
}"""


def _wait(page, what: str, check, timeout_s: float):
    """Poll check() until it returns something true; fail with the first notebook error if one shows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        error = page.evaluate(FIRST_ERROR)
        if error:
            pytest.fail(f"notebook 06 raised while waiting for {what}:\n{error}")
        page.wait_for_timeout(1000)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_notebook06_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        # playwright gives the browser a fresh temporary profile (its --user-data-dir) itself
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{lab}/lab/tree/{NOTEBOOK}?token={TOKEN}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=180_000)
            _wait(page, "the kernel to start", lambda: page.evaluate(KERNEL_IDLE) == "idle", 180)

            start = time.monotonic()
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # the explorer: a VBox of sliders and a dropdown above an Output holding the picture
            step = page.locator(".widget-slider", has=page.locator("label", has_text="step t")).first
            _wait(page, "the explorer widget", lambda: step.count() and step.is_visible(), NOTEBOOK_TIMEOUT_S)
            code, _ = page.evaluate(CELLS_RUN)
            _wait(page, "the rest of the notebook", lambda: page.evaluate(CELLS_RUN)[1] == code
                  and page.evaluate(KERNEL_IDLE) == "idle", NOTEBOOK_TIMEOUT_S)
            ran_s = time.monotonic() - start
            assert page.evaluate(FIRST_ERROR) is None, page.evaluate(FIRST_ERROR)

            box = page.locator(".widget-vbox", has=step).first
            picture = box.locator(".widget-output img").first
            readout = step.locator(".widget-readout")
            box.scroll_into_view_if_needed()
            _wait(page, "the explorer's picture", lambda: picture.count() and picture.get_attribute("src"), 120)
            before_step, before_src = readout.inner_text().strip(), picture.get_attribute("src")
            assert box.locator(".widget-dropdown select").count() == 1, "the layer dropdown is missing"
            assert before_step.isdigit(), f"the step slider's readout shows {before_step!r}, not a step"
            after_step = str(int(before_step) + 1)   # the notebook starts the slider below its last step T
            box.screenshot(path=str(SHOTS / "jupyterlab-06-before.png"))

            # one interaction: focus the step slider's handle and press the right arrow key
            step.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            _wait(page, f"the step readout to move from {before_step} to {after_step}",
                  lambda: readout.inner_text().strip() == after_step, 30)
            # the kernel redraws the figure; the Output widget then shows a new picture
            _wait(page, "a redrawn picture", lambda: picture.count() and picture.get_attribute("src")
                  not in (None, before_src), 180)
            box.scroll_into_view_if_needed()
            box.screenshot(path=str(SHOTS / "jupyterlab-06-after.png"))
            page.screenshot(path=str(SHOTS / "jupyterlab-06-page.png"))
            print(f"notebook 06 ({code} code cells) ran in JupyterLab in {ran_s:.0f} s; "
                  f"step slider {before_step} -> {after_step} redrew the picture")
        except BaseException:
            page.screenshot(path=str(SHOTS / "jupyterlab-06-failure.png"))
            raise
        finally:
            browser.close()


# -- the six lecture decks, offline, at 1280x720 -------------------------------------------------
DECKS = REPO / "build" / "slides"
SCREEN = {"width": 1280, "height": 720}
# every slide, measured where it is shown: its size, what sticks out, the text sizes on screen, the notes
MEASURE = """([W, H, BODY, CODE]) => {
    const slide = Reveal.getCurrentSlide(), scale = Reveal.getScale();
    const out = {height: slide.scrollHeight, width: slide.scrollWidth, outside: [], cut: [], small: [], wrapped: [],
                 marks: [], positions: [],
                 notes: [...slide.querySelectorAll('aside.notes')].map(a => a.textContent.trim()).join(' '),
                 figures: slide.querySelectorAll('img').length, tables: slide.querySelectorAll('table').length};
    // the lines a cell's text takes on screen: its text's boxes, grouped by their vertical middle
    const lines = e => {
        const range = document.createRange();
        range.selectNodeContents(e);
        const mids = [...range.getClientRects()].filter(r => r.width > 0).map(r => (r.top + r.bottom) / 2).sort((a, b) => a - b);
        const half = parseFloat(getComputedStyle(e).fontSize) / 2;
        return mids.filter((m, i) => i === 0 || m - mids[i - 1] > half).length;
    };
    const name = e => e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined ? '.' +
                      String(e.className).split(' ')[0] : '') + ' "' + (e.textContent || '').trim().slice(0, 40) + '"';
    for (const e of slide.querySelectorAll('*')) {
        if (e.closest('aside.notes, .MathJax, .MathJax_Display, .MathJax_Preview, script, style, sub, sup')) continue;
        const r = e.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue;
        if (r.right > W + 1 || r.bottom > H + 1 || r.left < -1 || r.top < -1) out.outside.push(name(e));
        if (['PRE', 'TABLE'].includes(e.tagName) && e.scrollWidth > e.clientWidth + 1) out.cut.push(name(e));
        if (['TD', 'TH'].includes(e.tagName) && lines(e) > 1) out.wrapped.push(name(e));
        const text = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!text) continue;
        const px = parseFloat(getComputedStyle(e).fontSize) * scale;
        const code = !!e.closest('pre, code, table');
        if (px < (code ? CODE : BODY) - 0.01) out.small.push(`${name(e)} ${px.toFixed(1)} px`);
    }
    // printed lines broken with a mark; prose that points above or below at nothing there on this slide
    const shown = [...slide.querySelectorAll('pre, p, li, td')].filter(e => !e.closest('aside.notes'));
    for (const e of shown) {
        if (e.tagName === 'PRE') {
            for (const line of e.textContent.split('\\n')) if (line.includes('\u21a9')) out.marks.push(line.trim().slice(0, 90));
        }
    }
    // 'above' / 'below' as a place on the page: after what is shown there, in brackets, or before 'we'
    const POSITION = new RegExp('\\\\b(printed|shown|drawn|plotted|listed|checked|imported|defined|loop|cells?|code|' +
        'tables?|figures?|plots?|pictures?|lines?|numbers|output|checks?|methods?|gradients|differences|' +
        'validation|reading|everything|measurement|curves?)\\\\s+(above|below)\\\\b|\\\\((above|below)\\\\b|' +
        '\\\\b(above|below)\\\\s+we\\\\b', 'gi');
    const things = [...slide.querySelectorAll('img, table, .jp-OutputArea pre, .MathJax_Display')]
        .filter(e => !e.closest('aside.notes'));
    for (const e of slide.querySelectorAll('.jp-RenderedMarkdown p, .jp-RenderedMarkdown li')) {
        if (e.closest('aside.notes, .jp-OutputArea')) continue;
        for (const found of e.textContent.matchAll(POSITION)) {
            const w = found[0].match(/above|below/i)[0];
            const before = things.some(t => t.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING);
            const after = things.some(t => e.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING);
            if (w.toLowerCase() === 'above' ? !before : !after) {
                const i = found.index + found[0].length;
                out.positions.push(`"...${e.textContent.slice(Math.max(0, i - 60), i).replace(/\\s+/g, ' ')}..."`);
            }
        }
    }
    // a lead-in left at the foot of a slide: its last text ends with ':' and what it introduces is not there
    const shownLast = [...slide.querySelectorAll('p, li, pre, table, img, .MathJax_Display')]
        .filter(e => !e.closest('aside.notes') && e.getBoundingClientRect().height > 0).pop();
    out.dangling = shownLast && ['P', 'LI'].includes(shownLast.tagName) && /:\\s*$/.test(shownLast.textContent.trim()) ?
        shownLast.textContent.trim().slice(-60) : '';
    // a figure or table slide says what it shows: a heading, a caption, or a paragraph led by bold words
    const led = e => { const first = [...e.childNodes].find(n => n.nodeType !== 3 || n.textContent.trim());
                       return first && first.nodeType === 1 && first.tagName === 'STRONG'; };
    out.titled = !!slide.querySelector('h1, h2, h3, h4, .metalstm-caption, caption') ||
                 [...slide.querySelectorAll('p')].some(e => !e.closest('aside.notes') && led(e));
    return out;
}"""
# a table or figure on screen while no fragment is shown yet (the slide's first state)
UNASKED = ("[...Reveal.getCurrentSlide().querySelectorAll('.jp-OutputArea img, .jp-OutputArea table')].filter(e => !e.closest("
           "'aside.notes, .fragment:not(.visible)')).length")
MATHS = """() => ({typeset: document.querySelectorAll('span.MathJax, div.MathJax_Display').length,
               sources: document.querySelectorAll('script[type^="math/tex"]').length,
               errors: document.querySelectorAll('.MathJax_Error, merror').length})"""


def _decks() -> list[Path]:
    """The six decks of build/slides/ (or those of $METALSTM_DECKS, e.g. "01 06", while working on them)."""
    decks = sorted(DECKS.glob("[0-9][0-9]_*.slides.html"))
    only = os.environ.get("METALSTM_DECKS", "").split()
    if only:
        return [d for d in decks if d.name[:2] in only]
    if len(decks) < 6:
        pytest.fail(f"{len(decks)} decks in {DECKS}, expected the six: run `make slides` first "
                    "(`make browser-check` does)")
    return decks


def test_every_slide_of_the_six_decks_fits_a_1280x720_screen_offline(selected):
    from playwright.sync_api import sync_playwright

    from metalstm.tools.slides import ASK, BODY_PX, CODE_PX

    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("deck-*.png"):
        old.unlink()
    problems, summary, blocked, marks, positions, dangling = [], [], [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            for deck in _decks():
                tag = deck.name[:2]
                page = browser.new_page(viewport=SCREEN)
                page.set_default_timeout(120_000)
                # the network is off: anything but a local file is refused (and recorded)
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                           else (blocked.append(route.request.url), route.abort()))
                failed = []
                page.on("requestfailed", lambda request, failed=failed: failed.append(request.url))
                page.goto(deck.as_uri(), wait_until="load")
                page.wait_for_function("() => window.Reveal && Reveal.isReady()")
                page.wait_for_function("() => MathJax.Hub.queue.pending === 0")
                # no transitions: a screenshot shows a fragment as it is once shown, not half faded in
                page.add_style_tag(content=".reveal .slides *, .reveal .slides { transition: none !important; }")
                maths = page.evaluate(MATHS)
                if maths["errors"] or maths["typeset"] < maths["sources"]:
                    problems.append(f"deck {tag}: maths {maths}")
                missing = [u for u in failed if u.startswith("file://") and not u.endswith(".otf")]
                if missing:
                    problems.append(f"deck {tag}: files missing beside it: {missing}")
                slides = page.evaluate("() => Reveal.getHorizontalSlides().map(s => "
                                       "Math.max(1, s.querySelectorAll(':scope > section').length))")
                number, shots = 0, 0
                for h, count in enumerate(slides):
                    for v in range(count):
                        number += 1
                        page.evaluate(f"() => Reveal.slide({h}, {v}, 999)")     # every fragment shown
                        page.wait_for_function("() => MathJax.Hub.queue.pending === 0")
                        m = page.evaluate(MEASURE, [SCREEN["width"], SCREEN["height"], BODY_PX, CODE_PX])
                        where = f"deck {tag} slide {number} ({h}/{v})"
                        if m["height"] > SCREEN["height"] + 1 or m["width"] > SCREEN["width"] + 1 or m["outside"]:
                            problems.append(f"{where}: {m['width']}x{m['height']} px, outside the screen: "
                                            f"{m['outside'][:3]}")
                        if m["cut"]:
                            problems.append(f"{where}: cut off at the right: {m['cut'][:3]}")
                        if m["small"]:
                            problems.append(f"{where}: text below {BODY_PX} px (code {CODE_PX} px): {m['small'][:3]}")
                        if m["wrapped"]:
                            problems.append(f"{where}: table cells whose text wraps: {m['wrapped'][:3]}")
                        if m["dangling"]:
                            dangling.append(f"{where}: ...{m['dangling']!r}")
                        if (m["figures"] or m["tables"]) and not m["titled"]:
                            problems.append(f"{where}: a figure or table without a heading or caption")
                        positions.extend(f"{where}: " + "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)
                                         for text in m["positions"])      # (no half of a cut surrogate pair)
                        marks.extend(f"{where}: {line}" for line in m["marks"])
                        if not re.search(r"\d+(\.\d+)? min", m["notes"]):
                            problems.append(f"{where}: no speaker notes with a time estimate")
                        if ASK.search(m["notes"]) and page.evaluate(f"() => Reveal.slide({h}, {v}, -1) || {UNASKED}"):
                            problems.append(f"{where}: its notes ask the room, but a result is on screen before "
                                            "the first key press")
                        page.evaluate(f"() => Reveal.slide({h}, {v}, 999)")
                        if m["figures"] or m["tables"]:
                            page.screenshot(path=str(SHOTS / f"deck-{tag}-{number:03d}.png"))
                            shots += 1
                summary.append(f"deck {tag}: {number} slides, {maths['sources']} formulas, {shots} figure/table "
                               f"slides photographed, {sum(m.startswith(f'deck {tag} ') for m in marks)} printed "
                               "lines broken with a mark")
                page.close()
        finally:
            browser.close()
    print("\n".join(summary))
    # reported, not failed: a line broken with a mark is readable (the lecturer reads the list: docs/lectures.md)
    print(f"{len(marks)} printed lines broken with a mark (\u21a9):\n" + "\n".join(marks))
    # failed: prose pointing 'above' or 'below' at nothing on its slide (name what it points at instead), and a
    # lead-in left at a slide's foot with its list or result on the next slide (make it a caption)
    problems += [f"says 'above'/'below' with nothing there: {p}" for p in positions]
    problems += [f"ends with a lead-in whose list or result is on the next slide: {d}" for d in dangling]
    assert not blocked, f"the decks asked the network for {sorted(set(blocked))[:5]}"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_every_figure_of_the_executed_notebooks_is_readable_on_a_slide():
    """Every picture the six notebooks rendered while `course --slides` executed them (measured by
    metalstm.viz.audit into build/notebooks/figures/) shows every text at least style.MIN_PX high when
    the deck projects it; and the audit saw every figure the executed notebooks show."""
    import nbformat

    from metalstm.viz import audit, style

    executed = REPO / "build" / "notebooks"
    books = sorted(executed.glob("[0-9][0-9]_*.ipynb"))
    if len(books) < 6:
        pytest.fail(f"{len(books)} executed notebooks in {executed}: run `make slides` first (`make browser-check` does)")
    small = []
    for book in books:
        records_file = executed / "figures" / f"{book.stem}.jsonl"
        assert records_file.is_file(), f"{book.name}: no figure audit ({records_file}): rebuild with `make slides`"
        records = audit.read(records_file)
        shown = sum("image/png" in o.get("data", {}) for c in nbformat.read(book, as_version=4).cells
                    if c.cell_type == "code" for o in c.get("outputs", []))
        assert len(records) >= shown, (f"{book.name}: {shown} figures shown, {len(records)} measured: a figure "
                                       "was drawn before metalstm.viz was imported")
        small += [f"{book.name[:2]} '{r['title'][:50]}': {r['small']}" for r in records if r["small"]]
        print(f"{book.name}: {len(records)} pictures measured, smallest text "
              f"{min((r['smallest_px'] for r in records), default=float('inf'))} px")
    assert not small, f"{len(small)} pictures with text below {style.MIN_PX} px on the slide:\n" + "\n".join(small)
