"""The course in a real browser (headless Chromium through playwright):

1. notebook 06 run in JupyterLab, its inner-loop explorer widget rendered and answering one key
   press;
2. a lecture deck (`make slides`) opened from a local file with the network blocked: reveal.js
   and MathJax come from the files beside it, every main section has more than one slide, the
   maths is typeset, and a slide taller than the screen scrolls.

Slow (a JupyterLab server, a kernel, about a minute of notebook; executing notebook 01 for the
deck), so they run only when selected: `make browser-check`, or `pytest -m browser
tests/notebooks/test_browser.py` once playwright and Chromium (/usr/bin/chromium, or $CHROMIUM) are
installed. Test 1 needs the checkpoints data/checkpoints/glyphs-{1,5}shot.pt, or a folder of
them in $METALSTM_CHECKPOINTS. Test 2 builds the deck of notebook $METALSTM_DECK (default 01) in
a temporary folder; the first run downloads the two pinned wheels with reveal.js and MathJax
into build/vendor/ (that is the only network use, before the browser starts).
Screenshots: build/browser/jupyterlab-06-{before,after,page}.png and deck-NN-{first,maths,scrolled,last}.png
(-failure.png when one fails). Nothing in the repository is modified.
"""
from __future__ import annotations

import os
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


# -- a lecture deck, offline ---------------------------------------------------------------------
DECK = os.environ.get("METALSTM_DECK", "01")
SECTIONS = """() => [...document.querySelectorAll('.reveal .slides > section')].map(s => {
    const h = s.querySelector('h1, h2');
    return {level: h ? h.tagName : null, title: h ? h.textContent.replace('\u00b6', '').trim() : '',
            slides: s.querySelectorAll(':scope > section').length};
})"""
MATHS = """() => ({typeset: document.querySelectorAll('span.MathJax').length,
               sources: document.querySelectorAll('script[type^="math/tex"]').length,
               errors: document.querySelectorAll('.MathJax_Error, merror').length,
               raw: ['$$', '\\theta', '\\mathcal'].filter(t => document.body.innerText.includes(t))})"""


LONGEST = """() => {
    let best = {h: 0, v: 0, height: 0};
    Reveal.getHorizontalSlides().forEach((top, h) => top.querySelectorAll(':scope > section').forEach((s, v) => {
        if (s.scrollHeight > best.height) { best = {h: h, v: v, height: s.scrollHeight}; }
    }));
    return best;
}"""
SHOWN = """() => {
    const maths = [...Reveal.getCurrentSlide().querySelectorAll('span.MathJax')];
    return {formulas: maths.length, visible: maths.filter(m => m.getBoundingClientRect().width > 2).length};
}"""


@pytest.fixture
def deck(selected, tmp_path):
    """Notebook $METALSTM_DECK executed and rendered as a deck in a temporary folder, with reveal.js
    and MathJax copied beside it, as `make slides` does; yields the deck's path."""
    from metalstm.tools import course

    (book,) = course.course_notebooks([DECK])
    course.BUILD, build = tmp_path / "build", course.BUILD
    try:
        _, error = course.execute(book, tmp_path / "build" / "notebooks")
        assert error is None, f"{book.name} failed: {error}"
        path = course.render(tmp_path / "build" / "notebooks" / book.name, "slides")
        course.install_assets(path.parent, cache=REPO / "build" / "vendor")
    finally:
        course.BUILD = build
    yield path


def test_a_deck_opens_offline_from_a_file_with_its_slides_and_typeset_maths(deck):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"deck-{DECK}"
    blocked, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        # the network is off: anything but a local file is refused (and recorded)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                   else (blocked.append(route.request.url), route.abort()))
        page.on("requestfailed", lambda request: failed.append(request.url))
        try:
            page.goto(deck.as_uri(), wait_until="load")
            page.wait_for_function("() => window.Reveal && Reveal.isReady()")
            page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0"
                                   " && document.querySelectorAll('.MathJax, .MathJax_Display').length > 0")
            page.screenshot(path=f"{shot}-first.png")
            sections = page.evaluate(SECTIONS)
            maths = page.evaluate(MATHS)
            main = [s for s in sections if s["level"] == "H2" and s["title"] != "Summary"]
            assert len(main) >= 4, f"the deck has only {len(main)} main sections: {sections}"
            thin = [s["title"] for s in main if s["slides"] < 2]
            assert not thin, f"main sections with a single slide: {thin}"
            assert maths["typeset"] >= 10 and maths["typeset"] == maths["sources"], maths
            assert maths["errors"] == 0 and not maths["raw"], maths
            # the deck answers the keyboard; the slide with the first display maths is typeset
            total = page.evaluate("() => Reveal.getTotalSlides()")
            page.keyboard.press("ArrowRight")
            page.wait_for_function("() => Reveal.getIndices().h === 1 && MathJax.Hub.queue.pending === 0")
            shown = page.evaluate(SHOWN)
            assert shown["formulas"] > 0 and shown["visible"] == shown["formulas"], \
                f"the formulas of slide 2 are not all visible: {shown}"
            page.screenshot(path=f"{shot}-maths.png")
            # a slide taller than the screen scrolls instead of being cut off
            long = page.evaluate(LONGEST)
            assert long["height"] > 800, f"no slide of this deck is taller than the screen: {long}"
            page.evaluate(f"() => Reveal.slide({long['h']}, {long['v']})")
            page.wait_for_function("() => Reveal.getCurrentSlide().classList.contains('metalstm-scroll')")
            page.mouse.move(640, 400)
            page.mouse.wheel(0, 600)
            page.wait_for_function("() => Reveal.getCurrentSlide().scrollTop > 0")
            page.screenshot(path=f"{shot}-scrolled.png")
            page.evaluate("() => Reveal.slide(Reveal.getHorizontalSlides().length - 1)")
            page.screenshot(path=f"{shot}-last.png")
            assert not blocked, f"the deck asked the network for {blocked}"
            missing = [u for u in failed if u.startswith("file://") and not u.endswith(".otf")]
            assert not missing, f"files the deck needs are missing beside it: {missing}"
            print(f"deck {deck.name}: {total} slides in {len(sections)} sections "
                  f"({', '.join(str(s['slides']) for s in sections)} slides each), {maths['typeset']} formulas "
                  f"typeset, no network request")
        except BaseException:
            page.screenshot(path=f"{shot}-failure.png")
            raise
        finally:
            browser.close()
