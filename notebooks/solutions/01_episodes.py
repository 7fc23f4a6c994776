"""Solutions to the exercises of notebook 01_episodes (checked by tests/notebooks/test_notebook01_agrees.py)."""
from __future__ import annotations

import math

import torch


# Exercise 1 -------------------------------------------------------------------
def sample_episode_any_sizes(data, n_way, k_shot, n_query, g):
    """The notebook's sampler for classes of unequal sizes.

    Only classes with at least K+Q images can be drawn; each drawn class gives
    a random K+Q of its own images. Returns (support_x, support_y, query_x,
    query_y, classes) like the notebook's `sample_episode`.
    """
    eligible = torch.nonzero(data.class_sizes() >= k_shot + n_query).flatten()
    if len(eligible) < n_way:
        raise ValueError(f"only {len(eligible)} classes have {k_shot + n_query} images, "
                         f"{n_way} are needed")
    classes = eligible[torch.randperm(len(eligible), generator=g)[:n_way]]
    picks = []
    for c in classes.tolist():
        idx = data.indices_of(c)
        picks.append(idx[torch.randperm(len(idx), generator=g)[: k_shot + n_query]])
    x = data.float_images(torch.stack(picks).flatten()).view(n_way, k_shot + n_query,
                                                             *data.image_shape)
    labels = torch.arange(n_way)
    return (x[:, :k_shot].flatten(0, 1), labels.repeat_interleave(k_shot),
            x[:, k_shot:].flatten(0, 1), labels.repeat_interleave(n_query), classes)


# Exercise 2 -------------------------------------------------------------------
def count_tasks(num_classes: int, n_way: int, labelled: bool = True) -> int:
    """How many different N-way tasks C classes give (ignoring which images are drawn).

    As sets of classes: C choose N. With the labels 0..N-1 assigned in every
    possible order (what the sampler draws): C! / (C-N)! = (C choose N) * N!.
    """
    return math.perm(num_classes, n_way) if labelled else math.comb(num_classes, n_way)

# For the 675 meta-train glyph classes and N = 5: count_tasks(675, 5, labelled=False) is
# about 1.2e12 sets of classes, and 120 times that (about 1.4e14) labelled tasks: a
# meta-learner never sees the same task twice, so it cannot memorise tasks either.


# Exercise 3 -------------------------------------------------------------------
def split_by_alphabet(alphabets: list[str], fractions=(0.6, 0.2, 0.2), seed: int = 0):
    """Class ids of meta-train / meta-val / meta-test, split by alphabet.

    Every alphabet goes whole to one split (so no split shares a script with
    another); alphabets are shuffled with `seed` and dealt out until each split
    holds about its fraction of the classes.
    """
    names = sorted(set(alphabets))
    g = torch.Generator().manual_seed(seed)
    order = [names[i] for i in torch.randperm(len(names), generator=g).tolist()]
    size = {a: alphabets.count(a) for a in names}
    bounds = [sum(fractions[: s + 1]) * len(alphabets) for s in range(len(fractions))]
    splits: list[list[int]] = [[] for _ in fractions]
    done = 0
    for a in order:
        s = next((s for s, b in enumerate(bounds) if done + size[a] / 2 <= b), len(bounds) - 1)
        splits[s] += [c for c, name in enumerate(alphabets) if name == a]
        done += size[a]
    return [sorted(s) for s in splits]

# Why not split the classes at random? Then meta-test would hold characters of the
# very scripts seen in meta-training (Cyrillic letters on both sides, say): a model
# that learned "Cyrillic strokes" would look better at few-shot learning than it is.
# Whole alphabets out make meta-test a test of learning genuinely new kinds of
# characters (Omniglot's background / evaluation split follows the same idea).
