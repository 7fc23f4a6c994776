"""Checks for the exercises of notebooks 01-04: right, or wrong with a hint (never the solution).

    from metalstm import check
    check.exercise("02", 1, weight_decay_gates)     # prints a verdict, returns True / False
    check.exercises()                               # what each check expects

Each check runs your function on small inputs and compares what it returns with what the
package computes, or with a property the answer must have. A stub that still raises
NotImplementedError counts as "not answered yet"; an error inside your function is reported,
not raised, so a notebook keeps running. The worked solutions are in notebooks/solutions/.
"""
from __future__ import annotations

import itertools
import math
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


class Wrong(Exception):
    """Raised by a check: the answer is not right; the message is the hint."""


@dataclass(frozen=True)
class Exercise:
    notebook: str
    number: int
    name: str            # the function the notebook asks for
    what: str            # what it must do, in one line
    check: Callable


REGISTRY: dict[tuple[str, int], Exercise] = {}


def _exercise(notebook: str, number: int, name: str, what: str):
    def register(check):
        REGISTRY[notebook, number] = Exercise(notebook, number, name, what, check)
        return check
    return register


def _expect(condition: bool, hint: str) -> None:
    if not condition:
        raise Wrong(hint)


def _close(a, b, rtol=1e-5, atol=1e-6) -> bool:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def exercise(notebook: str, number: int, answer, quiet: bool = False) -> bool:
    """Check `answer` (usually your function) for exercise `number` of notebook `notebook`
    ("01" ... "04"); print the verdict (unless quiet) and return True when it is right."""
    key = (str(notebook).zfill(2), int(number))
    if key not in REGISTRY:
        known = ", ".join(f"{n}.{k}" for n, k in sorted(REGISTRY))
        raise KeyError(f"no check for exercise {key[0]}.{key[1]}; there are checks for {known}")
    ex = REGISTRY[key]
    label = f"Exercise {ex.notebook}.{ex.number} ({ex.name})"
    try:
        ex.check(answer)
    except NotImplementedError:
        verdict, right = f"{label}: not answered yet. Write `{ex.name}` and run this cell again.", False
    except Wrong as hint:
        verdict, right = f"{label}: not yet right. Hint: {hint}", False
    except Exception as error:          # report it, do not raise: the notebook keeps running
        frames = traceback.extract_tb(error.__traceback__)
        yours = [f for f in frames if f.filename != __file__ and "site-packages" not in f.filename]
        if yours:
            where = f" (line {yours[-1].lineno}: {yours[-1].line})" if yours[-1].line else ""
            verdict = f"{label}: your code raised {type(error).__name__}: {error}{where}. It should {ex.what}."
        else:
            verdict = (f"{label}: what your function returned could not be checked ({type(error).__name__}: "
                       f"{error}). It should {ex.what}.")
        right = False
    else:
        verdict, right = f"{label}: right.", True
    if not quiet:
        print(("OK   " if right else "...  ") + verdict)
    return right


def exercises() -> None:
    """Print what every check expects."""
    for (notebook, number), ex in sorted(REGISTRY.items()):
        print(f"{notebook}.{number}  {ex.name}: {ex.what}")


# -- small inputs ---------------------------------------------------------------------
def _tagged_set(sizes):
    """An ImageSet whose images store their own index (pixels 0, 1) and class (pixel 2)."""
    from metalstm.data import ImageSet

    n = sum(sizes)
    targets = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    idx = torch.arange(n)
    images = torch.stack([idx // 256, idx % 256, targets, torch.zeros(n, dtype=torch.long)], 1)
    return ImageSet(images.to(torch.uint8).view(n, 1, 2, 2), targets, [str(c) for c in range(len(sizes))])


def _decode(x):
    v = (x * 255).round().long().view(len(x), 4)
    return v[:, 0] * 256 + v[:, 1], v[:, 2]


def _noise_episode(n_way=5, k_shot=2, n_query=3, seed=0):
    from metalstm.episodes import Episode

    g = torch.Generator().manual_seed(seed)
    return Episode(torch.rand(n_way * k_shot, 1, 28, 28, generator=g), torch.arange(n_way).repeat_interleave(k_shot),
                   torch.rand(n_way * n_query, 1, 28, 28, generator=g), torch.arange(n_way).repeat_interleave(n_query),
                   torch.arange(n_way))


def _glyph_episodes(k_shot=5, count=2, start=0):
    from metalstm.data.glyphs import load_glyphs
    from metalstm.episodes import EpisodeSampler

    return EpisodeSampler(load_glyphs("val"), n_way=5, k_shot=k_shot, n_query=15, seed=0).take(count, start=start)


# -- notebook 01 ----------------------------------------------------------------------
@_exercise("01", 1, "sample_episode_any_sizes",
           "return (support_x, support_y, query_x, query_y, classes) drawing only classes with >= K+Q images")
def _check_01_1(sample):
    data = _tagged_set([20, 4, 20, 7, 9, 20])           # K+Q = 8: classes 1 and 3 are too small
    seen = set()
    for seed in range(40):
        out = sample(data, 3, 2, 6, torch.Generator().manual_seed(seed))
        _expect(isinstance(out, tuple) and len(out) == 5,
                "return five things, like sample_episode: support_x, support_y, query_x, query_y, classes")
        sx, sy, qx, qy, classes = out
        _expect(sx.shape == (6, 1, 2, 2) and qx.shape == (18, 1, 2, 2),
                "an episode of 3 ways, 2 shots and 6 queries has 6 support and 18 query images")
        _expect(sy.tolist() == [0, 0, 1, 1, 2, 2], "support labels are grouped by label: 0, 0, 1, 1, 2, 2")
        s_idx, s_cls = _decode(sx)
        q_idx, q_cls = _decode(qx)
        _expect(torch.equal(s_cls, classes[sy]) and torch.equal(q_cls, classes[qy]),
                "image j of label k must be an image of class classes[k]")
        _expect(len(set(s_idx.tolist()) | set(q_idx.tolist())) == 24,
                "no image may be drawn twice (support and query images are all different)")
        seen |= set(classes.tolist())
    _expect(not seen & {1, 3}, "classes with fewer than K+Q images must never be drawn (see data.class_sizes())")
    _expect(seen == {0, 2, 4, 5}, "every class with enough images should be drawn sometimes")
    a = sample(data, 3, 2, 6, torch.Generator().manual_seed(5))
    b = sample(data, 3, 2, 6, torch.Generator().manual_seed(5))
    _expect(all(torch.equal(x, y) for x, y in zip(a, b)), "use only the generator g for random draws")


@_exercise("01", 2, "count_tasks", "return how many N-way tasks C classes give, with or without the label order")
def _check_01_2(count_tasks):
    for c, n in [(6, 3), (7, 2), (5, 5), (4, 1)]:
        _expect(count_tasks(c, n, labelled=False) == len(list(itertools.combinations(range(c), n))),
                "without labels, a task is a SET of N classes: the order does not matter")
        _expect(count_tasks(c, n, labelled=True) == len(list(itertools.permutations(range(c), n))),
                "with labels, the same classes in another label order are another task")
    _expect(isinstance(count_tasks(675, 5, labelled=True), int), "return an exact integer (math.comb, math.perm)")


@_exercise("01", 3, "split_by_alphabet",
           "return three lists of class ids (meta-train, meta-val, meta-test), whole alphabets each")
def _check_01_3(split):
    from metalstm.data.glyphs import load_glyphs

    alphabets = load_glyphs("all").alphabets
    splits = split(alphabets, (0.6, 0.2, 0.2), seed=0)
    _expect(len(splits) == 3, "return one list of class ids per meta-set")
    ids = [c for s in splits for c in s]
    _expect(sorted(ids) == list(range(len(alphabets))), "every class id must be in exactly one meta-set")
    scripts = [{alphabets[c] for c in s} for s in splits]
    _expect(all(not (a & b) for a, b in itertools.combinations(scripts, 2)),
            "an alphabet must go whole to one meta-set, never be split")
    for s, target in zip(splits, (0.6, 0.2, 0.2)):
        _expect(abs(len(s) / len(alphabets) - target) < 0.13,
                "each meta-set should get about its fraction of the CLASSES (not of the alphabets)")
    _expect(splits == split(alphabets, (0.6, 0.2, 0.2), seed=0), "the same seed must give the same split")
    _expect(splits != split(alphabets, (0.6, 0.2, 0.2), seed=1), "another seed should give another split")


# -- notebook 02 ----------------------------------------------------------------------
@_exercise("02", 1, "weight_decay_gates",
           "return the constant gates (f, i) of one SGD step on L + (weight_decay / 2) |theta|^2")
def _check_02_1(gates):
    from metalstm.learner import Learner
    from metalstm.metalearner import loss_and_grad

    learner, ep = Learner(5, 1, 28), _noise_episode(seed=5)
    theta = learner.init_params(torch.Generator().manual_seed(5))
    for lr, wd in [(0.1, 0.5), (0.01, 2.0)]:
        f, i = gates(lr, wd)
        _, grad = loss_and_grad(learner, ep.support_x, ep.support_y, theta)
        leaf = theta.clone().requires_grad_(True)
        penalised = F.cross_entropy(learner(ep.support_x, leaf), ep.support_y) + wd / 2 * leaf.pow(2).sum()
        (full,) = torch.autograd.grad(penalised, leaf)
        _expect(_close(i, lr), "the input gate multiplies the gradient: compare with the plain SGD step")
        _expect(_close(f * theta + i * (-grad), theta - lr * full),
                "write one SGD step on the penalised loss, theta - lr * (grad + wd * theta), as f * theta - i * grad")


@_exercise("02", 2, "count_params", "return the conv learner's number of parameters by a formula")
def _check_02_2(count_params):
    from metalstm.learner import Learner

    for args, hint in [((5, 1, 28, 32, 4), "start with the 28x28x1 glyph learner: 28,485"),
                       ((5, 3, 84, 32, 4), "the first convolution sees in_channels channels"),
                       ((20, 3, 84, 32, 4), "the linear layer has n_way outputs"),
                       ((7, 2, 40, 16, 3), "use n_filters and n_blocks: the side after the blocks is "
                                           "image_size // 2 ** n_blocks")]:
        _expect(count_params(*args) == Learner(args[0], args[1], args[2], n_filters=args[3], n_blocks=args[4]).n_params,
                hint)


@_exercise("02", 3, "c0_meta_gradient",
           "return d(query loss after `steps` SGD steps with detached gradients)/d c0")
def _check_02_3(meta_gradient):
    from metalstm.learner import Learner
    from metalstm.metalearner import loss_and_grad

    learner, ep = Learner(5, 1, 28), _noise_episode(seed=6)
    c0 = learner.init_params(torch.Generator().manual_seed(6))

    def query_grad(theta):
        leaf = theta.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(learner(ep.query_x, leaf), ep.query_y), leaf)[0]

    zero = meta_gradient(learner, ep, c0, lr=0.1, steps=0)
    _expect(torch.is_tensor(zero) and zero.shape == c0.shape, "return one gradient value per entry of c0")
    _expect(_close(zero, query_grad(c0), 1e-4, 1e-6), "with steps=0, theta_T is c0: the query loss's gradient at c0")
    theta = c0
    for _ in range(3):
        theta = theta - 0.1 * loss_and_grad(learner, ep.support_x, ep.support_y, theta)[1]
    got = meta_gradient(learner, ep, c0, lr=0.1, steps=3)
    _expect(not _close(got, query_grad(c0), 1e-4, 1e-4),
            "the query loss is measured AFTER the steps, at theta_T, not at c0")
    _expect(_close(got, query_grad(theta), 1e-4, 1e-6),
            "take the support gradients with loss_and_grad (detached), and backpropagate the query loss "
            "at theta_T into c0 (c0 must require grad)")


# -- notebook 03 ----------------------------------------------------------------------
@_exercise("03", 1, "unpreprocess", "return x from z = preprocess(x, p), for both branches")
def _check_03_1(unpreprocess):
    from metalstm.preprocess import preprocess

    for dtype, rtol in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
        span = torch.logspace(-20, 6, 300, dtype=dtype)
        small = torch.tensor([1e-9, 3e-6, 4.4e-5], dtype=dtype)
        for p in (10.0, 3.0):
            for x, hint in [(torch.cat([span, -span]), "values of all sizes and both signs"),
                            (torch.cat([small, -small, torch.zeros(1, dtype=dtype)]),
                             "the small branch (|x| < e^-p), where the first channel is -1 and the second e^p x")]:
                back = unpreprocess(preprocess(x, p), p)
                _expect(torch.is_tensor(back) and back.shape == x.shape, "return one value per input value")
                _expect(torch.allclose(back, x, rtol=rtol, atol=0.0), f"the round trip must give x back: {hint}"
                        + ("" if p == 10.0 else " (and use p, it is not always 10)"))


@_exercise("03", 2, "count_meta_params", "return the coordinate-wise meta-learner's weights (c_0 not counted)")
def _check_03_2(count):
    from metalstm.metalearner import MetaLearner

    for hidden in (20, 1, 7, 32):
        meta = MetaLearner(10, hidden=hidden, theta0=torch.zeros(10))
        _expect(count(hidden) == sum(v.numel() for v in meta.rule_parameters()),
                "layer 1 reads [x (4), h (hidden)] into 4 gates of `hidden` units, plus a bias; layer 2 has "
                "W_F and W_I over [h, theta, previous gate] and two biases" if hidden == 20
                else "the count must hold for every hidden size, not only 20")


@_exercise("03", 3, "effective_sgd", "return (learning rate, weight decay) of the meta-learner with zero weights")
def _check_03_3(effective_sgd):
    from metalstm.metalearner import MetaLearner

    n = 200
    g = torch.Generator().manual_seed(6)
    theta, grad = torch.randn(n, generator=g), torch.randn(n, generator=g) * 1e-2
    for b_F, b_I in [(4.5, -4.5), (4.0, -5.0), (2.0, -1.0)]:
        meta = MetaLearner(n, theta0=theta, weight_range=0.0, forget_bias=(b_F, b_F), input_bias=(b_I, b_I))
        with torch.no_grad():
            stepped, _, _ = meta.step(torch.tensor(1.0), grad, theta, meta.initial_state())
        lr, wd = effective_sgd(b_F, b_I)
        _expect(_close(lr, torch.sigmoid(torch.tensor(b_I)).item()),
                "with zero weights every gate is the sigmoid of its bias")
        _expect(_close(stepped, theta - lr * (grad + wd * theta), 1e-5, 1e-7),
                "match f * theta - i * grad with theta - lr * (grad + wd * theta)")


# -- notebook 04 ----------------------------------------------------------------------
@_exercise("04", 1, "query_dependence",
           "return (change when the support set is replaced, change when other queries join)")
def _check_04_1(query_dependence):
    from metalstm.learner import Learner
    from metalstm.metalearner import SGDCell

    learner = Learner(5, 1, 28, bn_momentum=0.95)
    theta0 = learner.init_params(torch.Generator().manual_seed(0))
    e, other = _glyph_episodes(5, 2, start=2)
    out = query_dependence(learner, SGDCell(theta0, 0.1), e, other, 8, 25)
    _expect(len(out) == 2, "return two numbers: (support change, query change)")
    support_change, query_change = (float(v) for v in out)
    _expect(support_change > 0.1, "(a) another support set gives another theta_T and other running averages: "
            "the logits should change a lot. Run the whole protocol again with other's support set")
    _expect(query_change < 1e-5, "(b) with running averages (bn='running') every query is normalised on its "
            "own: evaluate the episode's queries together with other's in ONE batch, then keep the first rows")


@_exercise("04", 2, "refreshed_stats",
           "return a BNStats holding the support set's batch statistics at theta (no SGD step)")
def _check_04_2(refreshed_stats):
    from metalstm.learner import BNStats, Learner

    learner = Learner(5, 1, 28, bn_momentum=0.95)
    (e,) = _glyph_episodes(5, 1, start=4)
    g = torch.Generator().manual_seed(1)
    theta = learner.init_params(g) + 0.05 * torch.randn(learner.n_params, generator=g)
    stats = refreshed_stats(learner, theta, e.support_x)
    _expect(isinstance(stats, BNStats), "return a BNStats (learner.new_bn_stats() makes one)")
    expected = Learner(5, 1, 28, bn_momentum=1.0).new_bn_stats()
    with torch.no_grad():
        Learner(5, 1, 28, bn_momentum=1.0)(e.support_x, theta, bn="batch", stats=expected)
    for k in range(learner.n_blocks):
        _expect(_close(stats.mean[k], expected.mean[k], 1e-4, 1e-5),
                "the means must be those of the support set at theta alone: with momentum 0.95 a fresh "
                "BNStats still keeps 5% of its initial 0 (a learner with bn_momentum=1.0 keeps none)")
        _expect(_close(stats.var[k], expected.var[k], 1e-4, 1e-5),
                "the variances are the unbiased ones, as F.batch_norm stores them")


@_exercise("04", 3, "transductive_logits", "return the query logits normalised with the query batch's own statistics")
def _check_04_3(transductive_logits):
    from metalstm.learner import Learner

    learner = Learner(5, 1, 28, bn_momentum=0.95)
    (e,) = _glyph_episodes(5, 1, start=5)
    theta = learner.init_params(torch.Generator().manual_seed(2))
    logits = transductive_logits(learner, theta, e.query_x)
    with torch.no_grad():
        expected = learner(e.query_x, theta, bn="batch")
    _expect(torch.is_tensor(logits) and logits.shape == expected.shape, "return logits [queries, n_way]")
    _expect(_close(logits, expected, 1e-4, 1e-5), "use the query batch's own statistics: bn='batch', no stats")
    _expect(not _close(transductive_logits(learner, theta, e.query_x[:15]), expected[:15], 1e-3, 1e-3),
            "the logits must depend on the batch: normalise the given queries together")
