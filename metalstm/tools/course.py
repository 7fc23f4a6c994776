"""Run the course headless: execute the notebooks in order, keep what they show.

    python -m metalstm.tools.course                 # all notebooks, quick mode
    python -m metalstm.tools.course --only 01 03    # some of them
    python -m metalstm.tools.course --html-only     # re-render build/notebooks as HTML
    python -m metalstm.tools.course --slides        # also reveal.js slides for teaching

Executed copies go to build/notebooks/, HTML pages to build/html/ (slides to
build/slides/), and the time each notebook took is printed. A notebook that
fails is still written (with the error in it) and the command exits non-zero.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


def course_notebooks(only: list[str] | None = None) -> list[Path]:
    """The course notebooks in order (01_*.ipynb ... 06_*.ipynb), optionally filtered by prefix."""
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

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as exc:  # keep the partly executed notebook: it shows where
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cell failed"
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    return seconds, error


def render(executed: Path, fmt: str) -> Path:
    """Render an executed notebook as HTML ('html') or reveal.js slides ('slides')."""
    from nbconvert import HTMLExporter, SlidesExporter

    exporter = HTMLExporter() if fmt == "html" else SlidesExporter()
    body, _ = exporter.from_filename(str(executed))
    out = BUILD / fmt / (executed.stem + (".html" if fmt == "html" else ".slides.html"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 01 04")
    ap.add_argument("--html-only", action="store_true", help="do not execute; render build/notebooks")
    ap.add_argument("--slides", action="store_true", help="also write reveal.js slides")
    args = ap.parse_args(argv)

    books = course_notebooks(args.only)
    executed_dir = BUILD / "notebooks"
    failures, total = [], 0.0
    for book in books:
        if args.html_only:
            target = executed_dir / book.name
            if not target.exists():
                print(f"{book.name}: not executed yet, run `make course` first", file=sys.stderr)
                failures.append(book.name)
                continue
        else:
            print(f"{book.name} ...", end=" ", flush=True)
            seconds, error = execute(book, executed_dir)
            total += seconds
            print(f"{seconds:6.1f} s" + (f"  FAILED: {error}" if error else ""), flush=True)
            if error:
                failures.append(book.name)
            target = executed_dir / book.name
        for fmt in ["html"] + (["slides"] if args.slides else []):
            render(target, fmt)
    if not args.html_only:
        print(f"total {total:.1f} s; executed notebooks in {executed_dir.relative_to(ROOT)}/, "
              f"HTML in build/html/" + (", slides in build/slides/" if args.slides else ""))
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
