"""Every figure of metalstm.viz is readable from the back of a lecture room: drawn with small data and
shown in a deck's image box (metalstm.viz.style: BOX_W x BOX_H px on a 1280x720 screen), every
visible text is at least MIN_PX = 19 px (14 pt) high on the screen."""
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from metalstm.viz import GateRecord, LAYERS, plot_gate_bands, plot_gates, plot_query_accuracy_by_step  # noqa: E402
from metalstm.viz import plot_step_sizes  # noqa: E402
from metalstm.viz import style  # noqa: E402
from metalstm.viz.diagrams import coordinatewise_metalearner, unrolled_metatraining  # noqa: E402
from metalstm.viz.mechanism import plot_gate_response  # noqa: E402
from metalstm.viz.plots import plot_seed_spread  # noqa: E402

SIZES = {name: n for name, n in zip(LAYERS, (12, 20, 20, 20, 15))}
STEPS = 6


def hand_record(k_shot: int, seed: int) -> GateRecord:
    """A small GateRecord (4 episodes, 6 steps, 87 coordinates) with gates spread like a trained
    meta-learner's: 1 - f_t over decades near 1e-4, i_t between 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    slices, start = {}, 0
    for name, n in SIZES.items():
        slices[name] = slice(start, start + n)
        start += n
    E, T, P = 4, STEPS, start
    forget = 1 - 10 ** (-4 - 2 * torch.rand(E, T, P, generator=g))
    input_ = torch.rand(E, T, P, generator=g)
    acc = torch.linspace(0.2, 0.95, T + 1).expand(E, T + 1) + 0.05 * torch.rand(E, T + 1, generator=g)
    loss = 10 ** torch.linspace(1, -3, T + 1).expand(E, T + 1).clone()
    return GateRecord(forget=forget, input=input_, query_acc=acc.clamp(0, 1), query_loss=loss,
                      support_loss=loss[:, 1:].clone(), episodes=list(range(E)), slices=slices,
                      name=f"glyphs-{k_shot}shot", k_shot=k_shot, n_way=5)


@pytest.fixture(scope="module")
def records():
    return hand_record(1, 0), hand_record(5, 1)


def seed_rows():
    rows = []
    for shot in (1, 5):
        for test_set in ("glyphs", "digits"):
            for x, rung in enumerate(("sgd", "init", "meta-sgd", "schedule", "lstm")):
                seeds = {s: 0.5 + 0.08 * x + 0.01 * s for s in range(3 if rung != "lstm" else 1)}
                mean = sum(seeds.values()) / len(seeds)
                rows.append({"shot": shot, "test_set": test_set, "rung": rung, "seed_means": seeds,
                             "mean": mean, "half": 0.02 if len(seeds) > 1 else math.nan})
    return rows


def response_figure():
    magnitudes = torch.logspace(-8, 0, 9)
    responses = {f"{k}-shot": torch.rand(2, STEPS, len(magnitudes), len(LAYERS),
                                         generator=torch.Generator().manual_seed(k)) for k in (1, 5)}
    observed = {("1-shot", 1): (magnitudes[:3], torch.rand(3))}
    return plot_gate_response(responses, magnitudes, observed)


FIGURES = {
    "plot_gates forget": lambda r: plot_gates(*r, gate="forget"),
    "plot_gates input": lambda r: plot_gates(*r, gate="input"),
    "plot_gates one record": lambda r: plot_gates(r[0], gate="input"),
    "plot_gate_bands": lambda r: plot_gate_bands(*r),
    "plot_step_sizes": lambda r: plot_step_sizes(
        *r, schedule={k: torch.rand(STEPS, len(LAYERS)) for k in (1, 5)},
        meta_sgd={k: torch.rand(len(LAYERS)) for k in (1, 5)}, sgd=0.1),
    "plot_query_accuracy_by_step": lambda r: plot_query_accuracy_by_step(*r),
    "plot_seed_spread": lambda r: plot_seed_spread(seed_rows()),
    "plot_gate_response": lambda r: response_figure(),
    "coordinatewise_metalearner": lambda r: coordinatewise_metalearner(),
    "unrolled_metatraining 2": lambda r: unrolled_metatraining(2),
    "unrolled_metatraining 3": lambda r: unrolled_metatraining(3),
    "unrolled_metatraining 5": lambda r: unrolled_metatraining(5),
}


def assert_readable(fig, what: str, tight: bool = True) -> None:
    sizes = style.text_px(fig, tight=tight)
    assert sizes, f"{what}: no text found"
    small = sorted((px, text) for text, px in sizes if px < style.MIN_PX)
    assert not small, (f"{what}: {len(small)} texts below {style.MIN_PX} px on the projected screen, "
                       f"e.g. {[(t[:30], round(px, 1)) for px, t in small[:4]]}")


@pytest.mark.parametrize("name", FIGURES)
def test_every_text_of_a_viz_figure_is_at_least_19_px_when_projected(records, name):
    fig = FIGURES[name](records)
    try:
        assert_readable(fig, name)
    finally:
        plt.close(fig)


def test_the_explorer_frames_are_readable():
    """The explorer's picture at t = 0 and t = T, as the widget and the deck save it (no tight box)
    and as a notebook shows it (tight box)."""
    from metalstm.config import get_config
    from metalstm.episodes import sampler_for
    from metalstm.model import build_model
    from metalstm.viz import InnerLoopExplorer

    cfg = get_config("smoke")
    torch.manual_seed(0)
    learner, meta = build_model(cfg)
    explorer = InnerLoopExplorer(learner, meta, sampler_for(cfg, "val"), cfg, episodes=1)
    for step in (0, cfg.steps):
        fig = explorer.static_figure(0, LAYERS[0], step)
        assert_readable(fig, f"explorer at t = {step}", tight=False)
        assert_readable(fig, f"explorer at t = {step}", tight=True)


def test_the_measure_finds_small_text_and_follows_the_deck_box():
    """The measure itself: 10 pt on a 16-inch-wide figure is too small (10 / 72 * 1232 / 16 = 10.7 px);
    the same text on a figure that fills the box at WIDE is not; a figure taller than the box is
    scaled by its height. The box is the deck's (metalstm.tools.slides.DECK_STYLE, the deck's padding)."""
    from metalstm.tools import course, slides

    assert slides.DECK_STYLE["image_px"] == style.BOX_H
    assert "padding: 10px 24px 0 24px" in course.TEMPLATES["metalstm_reveal.j2"]
    assert course.SLIDE_SIZE[0] - 2 * 24 == style.BOX_W
    for figsize, readable in (((16, 4), False), (style.WIDE, True), ((5, 9), False)):
        fig = plt.figure(figsize=figsize)
        fig.text(0.5, 0.5, "a label", fontsize=10 if figsize[0] == 16 else 12)
        px = style.smallest_text_px(fig, tight=False)
        assert (px >= style.MIN_PX) == readable, (figsize, px)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=50)
        plt.close(fig)
    assert style.screen_scale(10, 4) == pytest.approx(123.2)
    assert style.screen_scale(5, 10) == pytest.approx(60.0)


def test_the_notebooks_draw_in_the_course_style():
    """The notebooks' own matplotlib cells: the course style is switched on before the first figure,
    no text is set below style.SMALL points, and no figure is so large that SMALL would be shown
    below MIN_PX (a w x h inch figure shows SMALL at SMALL / 72 * screen_scale(w, h) px)."""
    import re

    import nbformat

    from metalstm.paths import CHECKOUT

    books = sorted((CHECKOUT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not books:
        pytest.skip("no notebooks in this checkout")
    for book in books:
        code = [c.source for c in nbformat.read(book, as_version=4).cells if c.cell_type == "code"]
        drawing = [i for i, s in enumerate(code) if re.search(r"plt\.(subplots|figure)\(|figsize=", s)]
        if not drawing:
            continue
        styled = [i for i, s in enumerate(code) if "style.use()" in s]
        assert styled and styled[0] <= drawing[0], f"{book.name}: call metalstm.viz.style.use() before the first figure"
        for source in code:
            for size in re.findall(r"(?:fontsize|labelsize)=(\d+(?:\.\d+)?)", source):
                assert float(size) >= style.SMALL, f"{book.name}: a text of {size} pt (the smallest is {style.SMALL})"
            for w, h in re.findall(r"figsize=\((\d+(?:\.\d+)?),\s*(\d+(?:\.\d+)?)\)", source):
                px = style.SMALL / 72 * style.screen_scale(float(w), float(h))
                assert px >= style.MIN_PX, f"{book.name}: figsize=({w}, {h}) shows {style.SMALL} pt as {px:.1f} px"


def test_the_gate_response_legend_names_the_dots_and_the_dotted_line():
    fig = response_figure()
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]                 # one, below the panels
    assert any("recorded" in t for t in texts) and any("e^{-p}" in t for t in texts), texts
    plt.close(fig)


def test_the_audit_records_every_picture_a_notebook_renders(tmp_path):
    """With METALSTM_FIGURE_AUDIT set (the course build sets it per notebook), importing metalstm.viz
    makes every PNG matplotlib renders add a record: title, tight box or not, and the texts below
    MIN_PX. Run in a child process: the audit stays installed for the rest of a process."""
    import json
    import os
    import subprocess
    import sys

    from metalstm.viz import audit

    log = tmp_path / "figures" / "nb.jsonl"
    code = ("import io, matplotlib; matplotlib.use('Agg'); import metalstm.viz; import matplotlib.pyplot as plt\n"
            "fig = plt.figure(figsize=(16, 4)); fig.add_subplot().plot([0, 1]); fig.suptitle('a wide figure', fontsize=20)\n"
            "fig.text(0.5, 0.5, 'tiny words', fontsize=8)\n"
            "fig.savefig(io.BytesIO(), format='png', bbox_inches='tight')\n"
            "fig.savefig(io.BytesIO(), format='svg')\n"                       # not a picture a deck shows
            "small = plt.figure(figsize=(4, 2)); small.gca().set_title('readable'); small.savefig(io.BytesIO(), format='png')\n")
    env = {**os.environ, audit.ENV: str(log)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    records = audit.read(log)
    assert [r["title"] for r in records] == ["a wide figure", "readable"]
    assert records[0]["tight"] and not records[1]["tight"]
    assert records[0]["small"][0][0] == "tiny words"                        # the smallest first (8 pt)
    assert records[0]["small"][0][1] == pytest.approx(records[0]["smallest_px"]) and records[0]["smallest_px"] < style.MIN_PX
    assert records[1]["small"] == [] and records[1]["smallest_px"] >= style.MIN_PX
    assert json.loads(log.read_text().splitlines()[0])["title"] == "a wide figure"
