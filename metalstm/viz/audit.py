"""Measure every figure a notebook shows, as the deck will project it (metalstm.viz.style).

The course build (metalstm.tools.course) sets METALSTM_FIGURE_AUDIT to a file for each notebook it
executes; style.use() then calls install(), and every picture matplotlib renders from then on (a
notebook's inline figure, a savefig, an explorer frame) adds one JSON line to that file before it is
drawn:

    {"title": "gradients of ... per layer", "tight": true, "smallest_px": 21.4,
     "small": [["conv1", 17.2], ...]}          # texts below style.MIN_PX, at most 8

`title` is the figure's suptitle or its first axes title; `tight` says whether the picture was saved
with bbox_inches="tight" (as a notebook shows it). A text's size is its font size (the em of a label,
not of its sub- and superscripts, which TeX and matplotlib draw at 70%) scaled as the deck scales the
picture. The browser lane's test reads these files (tests/notebooks/test_browser.py).

    install("build/notebooks/figures/03_x.jsonl")   # what style.use() does when the variable is set
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "METALSTM_FIGURE_AUDIT"
_installed: list[Path] = []


def figure_title(fig) -> str:
    """The words that name a figure: its suptitle, else its first axes title, else ''."""
    if fig.get_suptitle().strip():
        return fig.get_suptitle().strip()
    return next((ax.get_title().strip() for ax in fig.axes if ax.get_title().strip()), "")


def measure(fig, tight: bool) -> dict:
    """One audit record for `fig` saved with (tight=True) or without a tight bounding box."""
    from metalstm.viz import style

    sizes = style.text_px(fig, tight=tight)
    small = sorted(((text[:40], round(px, 1)) for text, px in sizes if px < style.MIN_PX), key=lambda t: t[1])
    return {"title": figure_title(fig), "tight": tight,
            "smallest_px": round(min((px for _, px in sizes), default=float("inf")), 1), "small": small[:8]}


def install(path: str | os.PathLike) -> None:
    """Record every picture matplotlib renders from now on in `path` (JSON lines; see the module).
    Called once per process: later calls with another path only switch the file."""
    from matplotlib.backend_bases import FigureCanvasBase

    if _installed:
        _installed[0] = Path(path)
        return
    _installed.append(Path(path))
    print_figure = FigureCanvasBase.print_figure

    def audited(self, filename, *args, **kwargs):
        fmt = kwargs.get("format") or Path(str(filename)).suffix.lstrip(".") or "png"
        if fmt == "png":
            record = measure(self.figure, tight=kwargs.get("bbox_inches") == "tight")
            _installed[0].parent.mkdir(parents=True, exist_ok=True)
            with open(_installed[0], "a") as out:
                out.write(json.dumps(record) + "\n")
        return print_figure(self, filename, *args, **kwargs)

    FigureCanvasBase.print_figure = audited


def read(path: str | os.PathLike) -> list[dict]:
    """The records of one audit file (a notebook's figures, in the order they were shown)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
