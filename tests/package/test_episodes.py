"""EpisodeSampler (paper notes 1): reproducible, random-access N-way K-shot episodes."""
import collections

import pytest
import torch

from metalstm.data import ImageSet
from metalstm.episodes import Episode, EpisodeSampler


def tagged_set(sizes=(20,) * 10, name="tagged"):
    """Every image carries its own index (pixels 0, 1) and its class (pixel 2), so episodes can be decoded."""
    n = sum(sizes)
    targets = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    idx = torch.arange(n)
    images = torch.stack([idx // 256, idx % 256, targets, torch.zeros(n, dtype=torch.long)], 1)
    return ImageSet(images.to(torch.uint8).view(n, 1, 2, 2), targets,
                    [f"class{c}" for c in range(len(sizes))], name=name)


def decode(x):
    """(image indices, true classes) of float images made by tagged_set."""
    v = (x * 255).round().long().view(len(x), 4)
    return v[:, 0] * 256 + v[:, 1], v[:, 2]


def same(a: Episode, b: Episode) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("support_x", "support_y", "query_x", "query_y", "classes"))


def test_shapes_and_label_layout():
    s = EpisodeSampler(tagged_set(), n_way=5, k_shot=3, n_query=4, seed=1)
    ep = s[0]
    assert ep.support_x.shape == (15, 1, 2, 2) and ep.query_x.shape == (20, 1, 2, 2)
    assert ep.support_x.dtype == torch.float32 and 0 <= ep.support_x.min() and ep.support_x.max() <= 1
    assert ep.support_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert ep.query_y.tolist() == sum(([j] * 4 for j in range(5)), [])
    assert (ep.n_way, ep.k_shot, ep.n_query) == (5, 3, 4)
    assert len(set(ep.classes.tolist())) == 5


def test_images_belong_to_the_class_behind_their_label_and_are_disjoint():
    s = EpisodeSampler(tagged_set(), n_way=5, k_shot=5, n_query=15, seed=3)
    for ep in s.take(50):
        s_idx, s_cls = decode(ep.support_x)
        q_idx, q_cls = decode(ep.query_x)
        assert torch.equal(s_cls, ep.classes[ep.support_y])
        assert torch.equal(q_cls, ep.classes[ep.query_y])
        everything = torch.cat([s_idx, q_idx]).tolist()
        assert len(set(everything)) == len(everything) == 5 * 20    # K+Q distinct images per class


def test_same_seed_same_episodes_different_seed_different():
    data = tagged_set()
    a, b = EpisodeSampler(data, 5, 1, 5, seed=7), EpisodeSampler(data, 5, 1, 5, seed=7)
    c = EpisodeSampler(data, 5, 1, 5, seed=8)
    assert all(same(x, y) for x, y in zip(a.take(20), b.take(20)))
    assert sum(same(x, y) for x, y in zip(a.take(20), c.take(20))) == 0
    assert not same(a[0], a[1])


def test_random_access_does_not_depend_on_order():
    data = tagged_set()
    s = EpisodeSampler(data, 4, 2, 3, seed=0)
    backwards = [s[i] for i in reversed(range(10))][::-1]
    fresh = EpisodeSampler(data, 4, 2, 3, seed=0)
    assert all(same(x, y) for x, y in zip(backwards, fresh.take(10)))
    assert all(same(x, y) for x, y in zip(fresh.take(3, start=5), [s[5], s[6], s[7]]))
    it = iter(s)
    assert all(same(next(it), s[i]) for i in range(4))
    torch.manual_seed(123)                       # the global RNG plays no part
    assert same(s[9], fresh[9])
    with pytest.raises(IndexError):
        s[-1]


def test_labels_are_permuted_across_episodes():
    s = EpisodeSampler(tagged_set(), n_way=5, k_shot=1, n_query=1, seed=0)
    labels_of = collections.defaultdict(set)
    for ep in s.take(300):
        for label, c in enumerate(ep.classes.tolist()):
            labels_of[c].add(label)
    assert sorted(labels_of) == list(range(10))                       # every class is drawn
    assert all(labels == set(range(5)) for labels in labels_of.values())  # under every label
    # the class behind label 0 is not simply the smallest one drawn
    assert sum(int(ep.classes[0]) == int(ep.classes.min()) for ep in s.take(100)) < 50


def test_every_image_gets_used_and_small_classes_are_skipped():
    data = tagged_set(sizes=(20, 20, 20, 20, 3, 20))   # class 4 cannot give K+Q = 6 images
    s = EpisodeSampler(data, n_way=3, k_shot=2, n_query=4, seed=2)
    seen_classes, seen_images = set(), set()
    for ep in s.take(400):
        seen_classes |= set(ep.classes.tolist())
        seen_images |= set(decode(torch.cat([ep.support_x, ep.query_x]))[0].tolist())
    assert seen_classes == {0, 1, 2, 3, 5}
    assert seen_images == set(range(len(data))) - set(data.indices_of(4).tolist())


def test_on_the_glyph_set():
    from metalstm.data.glyphs import load_glyphs
    data = load_glyphs("train")
    s = EpisodeSampler(data, n_way=5, k_shot=5, n_query=15, seed=0)
    ep = s[0]
    assert ep.support_x.shape == (25, *data.image_shape) and ep.query_x.shape == (75, *data.image_shape)
    assert ep.classes.max() < data.num_classes
    for label in range(5):                     # each image is one of its class's images
        own = data.float_images(data.indices_of(int(ep.classes[label]))).flatten(1)
        for x in torch.cat([ep.support_x[ep.support_y == label], ep.query_x[ep.query_y == label]]):
            assert (own == x.flatten()).all(1).any()
    assert same(ep, EpisodeSampler(data, 5, 5, 15, seed=0)[0])


@pytest.mark.parametrize("n_way, k_shot, n_query, numbers", [
    (11, 1, 1, ["11", "10"]),                  # more classes than the data set has
    (5, 15, 6, ["15", "6", "21", "20"]),       # K+Q more than the images of a class
    (0, 1, 1, ["0"]), (5, -1, 15, ["-1"]), (5, 1, 0, ["0"]),
    (5.0, 1, 1, ["5.0"]), (5, "1", 1, ["'1'"]), (True, 1, 1, ["True"]),
])
def test_impossible_requests_name_the_numbers(n_way, k_shot, n_query, numbers):
    with pytest.raises(ValueError) as e:
        EpisodeSampler(tagged_set(), n_way, k_shot, n_query)
    for number in numbers:
        assert number in str(e.value)


def test_speed_command_runs(capsys):
    from metalstm.tools.episode_rate import main
    rate = main(["--n-way", "5", "--k-shot", "1", "--n-query", "5", "--episodes", "20", "--split", "val"])
    assert rate > 0 and "episodes/s" in capsys.readouterr().out
