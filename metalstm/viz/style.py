"""One figure style for the course: every text of a figure readable from the back of a lecture room.

A deck (metalstm.tools.course) shows a figure's PNG, W x H pixels, in a box BOX_W x BOX_H screen pixels
on a 1280 x 720 screen (width 100%, max-height `image_px`, object-fit contain): it is scaled by

    s = min(BOX_W / W, BOX_H / H).

A text of `size` points in a PNG saved at `dpi` is size * dpi / 72 pixels in the PNG and
size * dpi / 72 * s on the screen. With W = w * dpi for a figure w inches wide (h high) that is

    size / 72 * min(BOX_W / w, BOX_H / h)         (independent of the dpi),

and the goal is MIN_PX = 19 px (14 pt at 96 px per inch) for every text. A figure that fills the box,
WIDE = 10 x 4.85 inches (BOX_W / BOX_H = 2.05), is shown at 123 px per inch, so its smallest text,
SMALL = 13 pt, is 22 px on the screen; so is a smaller figure's (it is scaled up more). One style
for slides and notebooks: `RC` (rcParams) and the sizes below.

    use()                           the course style for every figure of a notebook (call once)
    with plt.rc_context(RC): ...    the same inside a function (metalstm.viz does this)
    text_px(fig)                    [(text, px on the screen)] for every visible text of a figure
    smallest_text_px(fig)           the smallest of them (the tests assert >= MIN_PX)
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

BOX_W, BOX_H = 1232, 600        # px: the deck's image box (1280 - 2 x 24 px padding; image_px)
MIN_PX = 19                     # px on the screen: 14 pt
SMALL, BODY, TITLE, HEADLINE = 13, 14, 15, 16      # points: ticks and legends, labels, panel titles, figure title
WIDE = (10.0, 4.85)             # inches: a figure that fills the deck's box
TALL = (8.0, 5.6)               # inches: at most this high (a figure higher than 5.6 in shrinks below 123 px/in)

RC = {"font.size": BODY, "axes.titlesize": TITLE, "axes.labelsize": BODY, "xtick.labelsize": SMALL,
      "ytick.labelsize": SMALL, "legend.fontsize": SMALL, "legend.title_fontsize": SMALL,
      "figure.titlesize": HEADLINE, "figure.figsize": WIDE, "lines.linewidth": 2.0, "lines.markersize": 7,
      "axes.titlepad": 8.0}


def use() -> None:
    """Apply the course style to every figure drawn from now on (a notebook's first cells call it)."""
    plt.rcParams.update(RC)


def screen_scale(width_in: float, height_in: float) -> float:
    """Screen pixels per inch of a figure width_in x height_in inches shown in the deck's box."""
    if width_in <= 0 or height_in <= 0:
        raise ValueError(f"a figure needs a positive size, got {width_in} x {height_in} in")
    return min(BOX_W / width_in, BOX_H / height_in)


def text_px(fig, tight: bool = True) -> list[tuple[str, float]]:
    """Every visible, non-empty text of `fig` with its size on the projected screen in px:
    fontsize / 72 * screen_scale(size of the saved picture). tight=True measures the picture the way
    a notebook saves it (bbox_inches="tight"), tight=False the whole figure (figure_png)."""
    if not hasattr(fig.canvas, "get_renderer"):        # a Figure made without pyplot (the explorer's)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.get_tightbbox(renderer) if tight else fig.bbox_inches
    scale = screen_scale(box.width, box.height)
    return [(t.get_text(), t.get_fontsize() / 72 * scale) for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip() and _drawn(t, renderer, fig)]


def smallest_text_px(fig, tight: bool = True) -> float:
    """The smallest text of `fig` on the projected screen, in px (inf for a figure without text)."""
    return min((px for _, px in text_px(fig, tight)), default=float("inf"))


def _drawn(text, renderer, fig) -> bool:
    """Whether a text lies in the figure (tick labels beyond an axis's limits are kept but not drawn)."""
    box = text.get_window_extent(renderer)
    inside = fig.bbox.expanded(1.5, 1.5)
    return box.width > 0 and box.x1 >= inside.x0 and box.x0 <= inside.x1 and box.y1 >= inside.y0 \
        and box.y0 <= inside.y1
