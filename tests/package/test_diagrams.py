"""The lecture diagrams (metalstm.viz.diagrams) draw, say what they must, and stay readable when
projected: no text smaller than 11 points, none outside the picture."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from metalstm.viz import diagrams  # noqa: E402


def drawn_texts(fig):
    """Draw the figure (as a PNG) and return its visible texts with their extents in pixels."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=60)
    assert png.getbuffer().nbytes > 20_000              # a real picture, not an empty canvas
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_fontsize(), t.get_window_extent(renderer))
            for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


def check_readable(fig):
    width, height = fig.bbox.width, fig.bbox.height
    texts = drawn_texts(fig)
    for text, size, box in texts:
        assert size >= 11, f"{text!r} is {size} pt: too small to read when projected"
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, \
            f"{text!r} sticks out of the picture"
    return " ".join(text for text, _, _ in texts)


@pytest.mark.slow
def test_the_coordinatewise_metalearner_draws_one_coordinate_and_the_shared_weights():
    fig = diagrams.coordinatewise_metalearner()
    try:
        words = check_readable(fig)
        for needed in ("\\mathcal{L}_t", "\\nabla_{t,j}", "pre", "LSTM, hidden 20", "forget gate $f_{t,j}$",
                       "input gate $i_{t,j}$", "\\theta_{t,j} =", "\\theta_{t-1,j}", "raw gradient", "2,046",
                       "SAME weights", "coordinate $n$ = 28,485"):
            assert needed in words, f"the diagram no longer shows {needed!r}"
    finally:
        plt.close(fig)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [2, 3, 5])
def test_the_unrolled_graph_draws_the_chain_the_detached_inputs_and_the_backward_path(steps):
    fig = diagrams.unrolled_metatraining(steps)
    try:
        words = check_readable(fig)
        for needed in ("\\theta_0 = c_0", "\\theta_T", "\\mathcal{L}_{test}", "detached", "meta-gradient",
                       "weights $W$", "no second derivatives", "\\partial\\mathcal{L}_{test}/\\partial\\theta_{1}"):
            assert needed in words, f"the diagram no longer shows {needed!r}"
        drawn = min(steps, 3)                      # 1, 2, ..., T: at most three steps fit a slide
        assert words.count("detached\n") == drawn or words.count("detached") >= drawn
        assert words.count("meta-\nlearner") == drawn
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="at least 2"):
        diagrams.unrolled_metatraining(1)
