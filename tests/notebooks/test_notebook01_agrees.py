"""Notebook 01 and the package cannot drift apart; its printed claims hold; its exercise solutions work.

The notebook's `sample_episode` (the cell marked `# package: metalstm.episodes.EpisodeSampler.__getitem__`)
is run here against `metalstm.episodes.EpisodeSampler` on the same generator. The claims its prose
makes about printed numbers (the Latin blocks of the split, the two shortcuts, the memoriser's
transfer to new classes, why one support image of episode 1 is a solid black square) are recomputed
here, so a change that breaks one fails this file.
"""
import itertools
import math
from pathlib import Path

import nbformat
import pytest
import torch

from metalstm.check import decode_tagged, tagged_set
from metalstm.data.glyphs import load_glyphs, split_table
from metalstm.episodes import EpisodeSampler
from testkit import check_markers, load_solutions, notebook_code

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOK = NOTEBOOKS / "01_episodes.ipynb"


def notebook_function(name: str):
    """The function `name` as the notebook's marked cells define it."""
    return notebook_code(NOTEBOOK, name)[name]


@pytest.fixture(scope="module")
def solutions():
    return load_solutions("01_episodes")


@pytest.fixture(scope="module")
def glyphs_train():
    return load_glyphs("train")


@pytest.mark.parametrize("n_way, k_shot, n_query", [(5, 1, 15), (5, 5, 15), (20, 1, 5), (3, 2, 18)])
def test_notebook_sampler_draws_exactly_the_package_episodes(glyphs_train, n_way, k_shot, n_query):
    sample_episode = notebook_function("sample_episode")
    data = glyphs_train
    sampler = EpisodeSampler(data, n_way, k_shot, n_query, seed=3)
    for i in (0, 1, 17, 999):
        ep = sampler[i]
        ours = sample_episode(data, n_way, k_shot, n_query, sampler.generator(i))
        for a, b in zip(ours, (ep.support_x, ep.support_y, ep.query_x, ep.query_y, ep.classes)):
            assert torch.equal(a, b)


def test_notebook_sampler_keeps_the_episode_rules():
    sample_episode = notebook_function("sample_episode")
    g = torch.Generator().manual_seed(0)
    sx, sy, qx, qy, classes = sample_episode(tagged_set([20] * 8), 4, 3, 5, g)
    s_idx, s_cls = decode_tagged(sx)
    q_idx, q_cls = decode_tagged(qx)
    assert torch.equal(s_cls, classes[sy]) and torch.equal(q_cls, classes[qy])
    assert not set(s_idx.tolist()) & set(q_idx.tolist())
    assert sy.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_the_markers_name_package_functions_whose_source_the_notebook_shows():
    assert check_markers(NOTEBOOK) == ["metalstm.episodes.EpisodeSampler.__getitem__"]


# -- the claims the prose makes about printed numbers ---------------------------------
def test_latin_blocks_are_split_between_meta_train_and_meta_val_and_absent_from_meta_test():
    latin = {}
    for row in split_table():
        if "Latin" in row["alphabet"]:
            latin.setdefault(row["split"], []).append(row["alphabet"])
    assert len(latin["train"]) == 2 and len(latin["val"]) == 3 and "test" not in latin   # "two ... three ..."
    assert sum(map(len, latin.values())) == 5                                             # "five Unicode blocks"


@pytest.fixture(scope="module")
def memoriser(glyphs_train):
    """The notebook's memoriser: the nearest mean image of a meta-train class."""
    train = glyphs_train
    means = torch.stack([train.float_images(train.indices_of(c)).mean(0)
                         for c in range(train.num_classes)]).flatten(1)
    return means, (lambda x: torch.cdist(x.flatten(1), means).argmin(1))


@pytest.mark.slow
def test_shortcut_1_a_fixed_label_order_can_be_guessed_a_shuffled_one_cannot(glyphs_train, memoriser):
    sample_episode = notebook_function("sample_episode")
    _, recognise = memoriser
    g, n, hits_sorted, hits_shuffled = torch.Generator().manual_seed(0), 5, [], []
    for _ in range(300):
        _, _, query_x, query_y, classes = sample_episode(glyphs_train, n, 1, 15, g)
        sorted_y = classes.argsort().argsort()[query_y]
        guess = (recognise(query_x) / (glyphs_train.num_classes - 1) * (n - 1)).round().long()
        hits_sorted.append((guess == sorted_y).float().mean())
        hits_shuffled.append((guess == query_y).float().mean())
    assert torch.stack(hits_sorted).mean() > 1.5 / n
    assert abs(torch.stack(hits_shuffled).mean() - 1 / n) < 0.03          # "at chance, 1/N"


@pytest.mark.slow
def test_shortcut_2_the_memoriser_wins_on_seen_classes_and_transfers_well_above_chance(glyphs_train, memoriser):
    sample_episode = notebook_function("sample_episode")
    means, recognise = memoriser
    test = load_glyphs("test")

    def nearest_neighbour(sx, sy, qx):
        return sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)]

    def memorise(sx, sy, qx):
        return sy[torch.cdist(means[recognise(qx)], means[recognise(sx)]).argmin(1)]

    acc = {}
    for model in (nearest_neighbour, memorise):
        for name, data in (("train", glyphs_train), ("test", test)):
            g = torch.Generator().manual_seed(1)
            acc[model.__name__, name] = torch.stack([(model(sx, sy, qx) == qy).float().mean() for sx, sy, qx, qy, _
                                                     in (sample_episode(data, 5, 1, 15, g) for _ in range(200))]).mean()
    assert acc["memorise", "train"] > acc["nearest_neighbour", "train"]   # wins on meta-train classes
    assert acc["memorise", "test"] < acc["nearest_neighbour", "test"]     # falls behind on new classes
    assert acc["memorise", "test"] > 2 / 5                                # but stays far above chance (20%)


def test_the_solid_black_support_image_is_a_sans_mono_hatched_square_thickened_by_two(glyphs_train):
    """Episode 1 (seed 1, 5-way 1-shot) deals a solid black square as label 2's support image: the class is
    the hatched square U+25A8, and its solid images are exactly its Sans Mono renders thickened by +2,
    whose clean hatch gaps are narrower than the other faces'."""
    from metalstm.tools.render import DRAWER_STYLES, STYLES, jitter_params, render_clean

    sample = notebook_function("sample_episode")
    x, y, _, _, classes = sample(glyphs_train, 5, 1, 15, torch.Generator().manual_seed(1))
    glyph = classes[2].item()
    name = glyphs_train.classes[glyph]
    assert name.startswith("U+25A8 ")
    images = glyphs_train.float_images(glyphs_train.indices_of(glyph))[:, 0]
    solid = (images[:, 10:18, 10:18] > 0.9).all(dim=(1, 2))
    shown = [j for j in range(20) if torch.equal(images[j], x[y == 2][0, 0])]
    assert len(shown) == 1 and solid[shown[0]]                               # the support image is a solid one
    assert 0 < int(solid.sum()) < 10                                         # the queries are mostly hatched
    stroke = jitter_params(0x25A8, seed=0)["stroke"]
    mono = torch.tensor(["Mono" in STYLES[DRAWER_STYLES[j]] for j in range(20)])
    assert torch.equal(solid, mono & (stroke == 2))                          # solid <=> Sans Mono and +2
    assert ((~mono) & (stroke == 2)).any()                                   # other faces thickened stay hatched
    clean = torch.as_tensor(render_clean([0x25A8]))[0] > 127

    def widest_gap(face):
        row = clean[face, 56]
        ink = row.nonzero().flatten()
        text = "".join("x" if v else "." for v in row[ink.min():ink.max() + 1].tolist())
        return max(len(g) for g in text.split("x"))

    assert widest_gap(8) < widest_gap(0)                                    # Sans Mono: narrower gaps


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" not in c.source:
            assert not c.outputs, f"cell {i} of {NOTEBOOK.name} is stored with outputs"


# -- exercise solutions ----------------------------------------------------
def test_solution_sampler_for_unequal_classes(solutions):
    data = tagged_set([20, 4, 20, 7, 9, 20])          # K+Q = 8: classes 1 and 3 cannot be drawn
    seen = set()
    for seed in range(60):
        sx, sy, qx, qy, classes = solutions.sample_episode_any_sizes(
            data, 3, 2, 6, torch.Generator().manual_seed(seed))
        s_idx, s_cls = decode_tagged(sx)
        q_idx, q_cls = decode_tagged(qx)
        assert torch.equal(s_cls, classes[sy]) and torch.equal(q_cls, classes[qy])
        assert len(set(s_idx.tolist()) | set(q_idx.tolist())) == 3 * 8
        assert sx.shape == (6, 1, 2, 2) and qx.shape == (18, 1, 2, 2)
        seen |= set(classes.tolist())
    assert seen == {0, 2, 4, 5}
    again = solutions.sample_episode_any_sizes(data, 3, 2, 6, torch.Generator().manual_seed(5))
    first = solutions.sample_episode_any_sizes(data, 3, 2, 6, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(again, first))
    with pytest.raises(ValueError, match="4 classes"):
        solutions.sample_episode_any_sizes(data, 5, 2, 6, torch.Generator())


def test_solution_count_tasks(solutions):
    for c, n in [(6, 3), (7, 2), (5, 5)]:
        combos = list(itertools.combinations(range(c), n))
        orders = list(itertools.permutations(range(c), n))
        assert solutions.count_tasks(c, n, labelled=False) == len(combos)
        assert solutions.count_tasks(c, n, labelled=True) == len(orders)
    assert solutions.count_tasks(675, 5) == solutions.count_tasks(675, 5, False) * math.factorial(5)


def test_solution_split_by_alphabet(solutions):
    alphabets = load_glyphs("all").alphabets
    splits = solutions.split_by_alphabet(alphabets, (0.6, 0.2, 0.2), seed=0)
    ids = [c for s in splits for c in s]
    assert sorted(ids) == list(range(len(alphabets)))                  # every class, once
    scripts = [{alphabets[c] for c in s} for s in splits]
    assert all(not (a & b) for a, b in itertools.combinations(scripts, 2))   # whole alphabets
    for s, target in zip(splits, (0.6, 0.2, 0.2)):
        assert abs(len(s) / len(alphabets) - target) < 0.13            # the largest alphabet is ~12%
    assert splits == solutions.split_by_alphabet(alphabets, (0.6, 0.2, 0.2), seed=0)
    assert splits != solutions.split_by_alphabet(alphabets, (0.6, 0.2, 0.2), seed=1)
