"""Checks for the exercises of notebooks 01-06: right, or wrong with a hint (never the solution).

    from metalstm import check
    check.exercise("02", 1, weight_decay_gates)     # prints a verdict, returns True / False
    check.exercises()                               # what each check expects

Each check runs your function on small inputs and compares what it returns with what the
package computes, or with a property the answer must have. A stub that still raises
NotImplementedError counts as "not answered yet"; an error inside your function is reported,
not raised, so a notebook keeps running. The worked solutions are in notebooks/solutions/.

Where the references come from. No check reads a solution: each one computes what a right answer
must give from the package itself (`Learner.n_params`, `MetaLearner.step`, `train`, autograd on
the penalised loss, ...) or from properties (self-describing images: `tagged_set`), so the checks
work unchanged in the student edition of the course, which has no solutions. A hint guides: it
names what is wrong and where to look, never the answer's code or value.
"""
from __future__ import annotations

import itertools
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
    ("01" ... "04", "06"); print the verdict (unless quiet) and return True when it is right."""
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
def tagged_set(sizes):
    """An ImageSet of len(sizes) classes, sizes[c] images of class c, whose 1x2x2 images store
    their own index (pixels 0, 1: index // 256, index % 256) and class (pixel 2); `decode_tagged`
    reads them back from a sampler's float images. Used by this exercise check and by
    tests/notebooks/test_notebook01_agrees.py."""
    from metalstm.data import ImageSet

    n = sum(sizes)
    targets = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    idx = torch.arange(n)
    images = torch.stack([idx // 256, idx % 256, targets, torch.zeros(n, dtype=torch.long)], 1)
    return ImageSet(images.to(torch.uint8).view(n, 1, 2, 2), targets, [str(c) for c in range(len(sizes))])


def decode_tagged(x):
    """(image indices [B], classes [B]) of float images x [B, 1, 2, 2] drawn from a `tagged_set`."""
    v = (x * 255).round().long().view(len(x), 4)
    return v[:, 0] * 256 + v[:, 1], v[:, 2]


# What the right answer returns on a check's inputs, for the three checks whose reference, computed here,
# would be the answer itself (04.2, 04.3) or the answer to the exercise's question (02.3): each tensor as
# its `fingerprint`. tests/notebooks/test_check.py recomputes them from the package and says when to
# update them (a change to the learner's initialisation or the glyph data set moves them).
REFERENCES = {
    "02.3": [28485, -12.394477096937756, -5.604550082507679, 801.4309553336907],
    "04.2 mean": [[32, -0.38432470243424177, 0.6943145914964619, 5.309475683607161],
                  [32, -3.7463926724158227, 0.7937602323119439, 9.36252185376361],
                  [32, 2.139278333634138, -1.1611214730768435, 13.218252655118704],
                  [32, 0.2999033544328995, 0.5921828920461027, 14.592913261440117]],
    "04.2 var": [[32, 0.8037650918122381, 0.05063250292122604, 0.8037650918122381],
                 [32, 21.212626978754997, -1.2424752370965098, 21.212626978754997],
                 [32, 19.95425370335579, 0.07561859680760313, 19.95425370335579],
                 [32, 20.75951087474823, -0.8197686287664598, 20.75951087474823]],
    "04.3": [375, 116.31422462314367, -12.542237429934389, 195.00537279993296],
}


def fingerprint(t) -> list[float]:
    """[numel, sum, sum weighted by a ramp from -1 to 1 over the flattened entries, sum of |entries|] of a
    tensor, in float64: four numbers that tell it from what a wrong answer returns."""
    t = torch.as_tensor(t).detach().double().flatten()
    ramp = torch.linspace(-1.0, 1.0, len(t), dtype=torch.float64)
    return [len(t), t.sum().item(), (t * ramp).sum().item(), t.abs().sum().item()]


def _matches(t, stored, rtol=1e-4, scale=1e-5) -> bool:
    """Whether tensor t has the fingerprint `stored`: the same size, and each sum within rtol of its
    value plus `scale` times the sum of |entries| (float rounding of a right answer, not a wrong one)."""
    found = fingerprint(t)
    return found[0] == stored[0] and all(abs(a - b) <= rtol * abs(b) + scale * stored[3]
                                         for a, b in zip(found[1:], stored[1:]))


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
    data = tagged_set([20, 4, 20, 7, 9, 20])           # K+Q = 8: classes 1 and 3 are too small
    seen = set()
    for seed in range(40):
        out = sample(data, 3, 2, 6, torch.Generator().manual_seed(seed))
        _expect(isinstance(out, tuple) and len(out) == 5,
                "return five things, like sample_episode: support_x, support_y, query_x, query_y, classes")
        sx, sy, qx, qy, classes = out
        _expect(sx.shape == (6, 1, 2, 2) and qx.shape == (18, 1, 2, 2),
                "an episode of 3 ways, 2 shots and 6 queries has 6 support and 18 query images")
        _expect(sy.tolist() == [0, 0, 1, 1, 2, 2], "support labels are grouped by label: 0, 0, 1, 1, 2, 2")
        s_idx, s_cls = decode_tagged(sx)
        q_idx, q_cls = decode_tagged(qx)
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
    _expect(isinstance(count_tasks(675, 5, labelled=True), int),
            "return an exact integer: these counts are too large for a float to hold exactly")


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
        _expect(_close(i, lr), "i is not right: which factor multiplies the gradient in one SGD step?")
        _expect(_close(f * theta + i * (-grad), theta - lr * full),
                "f is not right: expand one SGD step on the penalised loss and collect the terms that multiply "
                "theta")


@_exercise("02", 2, "count_params", "return the conv learner's number of parameters by a formula")
def _check_02_2(count_params):
    from metalstm.learner import Learner

    for args, hint in [((5, 1, 28, 32, 4), "start with the 28x28x1 glyph learner: compare your count with "
                                          "Learner(5, 1, 28).n_params, layer by layer"),
                       ((5, 3, 84, 32, 4), "the first convolution sees in_channels channels"),
                       ((20, 3, 84, 32, 4), "the linear layer has n_way outputs"),
                       ((7, 2, 40, 16, 3), "use n_filters and n_blocks: what does each block's max-pooling "
                                           "do to the side of the feature map?")]:
        _expect(count_params(*args) == Learner(args[0], args[1], args[2], n_filters=args[3], n_blocks=args[4]).n_params,
                hint)


@_exercise("02", 3, "c0_meta_gradient",
           "return d(query loss after `steps` SGD steps with detached gradients)/d c0")
def _check_02_3(meta_gradient):
    from metalstm.learner import Learner

    learner, ep = Learner(5, 1, 28), _noise_episode(seed=6)
    c0 = learner.init_params(torch.Generator().manual_seed(6))

    def query_grad(theta):
        leaf = theta.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(learner(ep.query_x, leaf), ep.query_y), leaf)[0]

    zero = meta_gradient(learner, ep, c0, lr=0.1, steps=0)
    _expect(torch.is_tensor(zero) and zero.shape == c0.shape, "return one gradient value per entry of c0")
    _expect(_close(zero, query_grad(c0), 1e-4, 1e-6), "with steps=0, theta_T is c0: the query loss's gradient at c0")
    got = meta_gradient(learner, ep, c0, lr=0.1, steps=3)
    _expect(not _close(got, query_grad(c0), 1e-4, 1e-4),
            "the query loss is measured AFTER the steps, at theta_T, not at c0")
    _expect(_matches(got, REFERENCES["02.3"]),
            "the support gradients are constants (detached, as above); the meta-gradient is the query loss at "
            "theta_T differentiated with respect to c0 through the steps")


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
                "count layer 1 and layer 2 separately, weights and biases (paper notes 4; the shapes of "
                "MetaLearner(...).rule_parameters() show them)" if hidden == 20
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
                "the weight decay is not right: write both steps out and match their terms in theta")


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
    _expect(query_change < 1e-5, "(b) is not what the meta-test protocol gives: are the queries (the episode's "
            "and other's, one batch) evaluated in test mode, with the episode's own support steps' statistics?")


@_exercise("04", 2, "refreshed_stats",
           "return a BNStats holding the support set's batch statistics at theta (no SGD step)")
def _check_04_2(refreshed_stats):
    from metalstm.learner import BNStats, Learner

    learner = Learner(5, 1, 28, bn_momentum=0.95)
    (e,) = _glyph_episodes(5, 1, start=4)
    g = torch.Generator().manual_seed(1)
    theta = learner.init_params(g) + 0.05 * torch.randn(learner.n_params, generator=g)
    stats = refreshed_stats(learner, theta, e.support_x)
    _expect(isinstance(stats, BNStats),
            "return a BNStats (metalstm.learner.BNStats), the running statistics a batch-norm pass updates")
    for k in range(learner.n_blocks):
        _expect(_matches(stats.mean[k], REFERENCES["04.2 mean"][k]),
                "the means must be those of the support set at theta alone: a fresh BNStats updated at the "
                "learner's momentum (0.95) still keeps part of its initial values")
        _expect(_matches(stats.var[k], REFERENCES["04.2 var"][k]),
                "the variances are the unbiased ones, as F.batch_norm stores them")


@_exercise("04", 3, "transductive_logits", "return the query logits normalised with the query batch's own statistics")
def _check_04_3(transductive_logits):
    from metalstm.learner import Learner

    learner = Learner(5, 1, 28, bn_momentum=0.95)
    (e,) = _glyph_episodes(5, 1, start=5)
    theta = learner.init_params(torch.Generator().manual_seed(2))
    logits = transductive_logits(learner, theta, e.query_x)
    _expect(torch.is_tensor(logits) and logits.shape == (len(e.query_x), learner.n_way),
            "return logits [queries, n_way]")
    _expect(_matches(logits, REFERENCES["04.3"]), "these are not the logits of the query batch normalised "
            "with its own statistics (no running averages are read or updated here)")
    _expect(not _close(transductive_logits(learner, theta, e.query_x[:15]), logits[:15], 1e-3, 1e-3),
            "the logits must depend on the batch: normalise the given queries together")


# -- notebook 06 ----------------------------------------------------------------------
def _gated_metalearner(seed=3):
    """A 28x28 learner and a meta-learner whose gates vary (seeded noise on its weights) and whose
    forget gate is visibly below 1 (b_F = 3: f about 0.95), so forgetting shows in theta."""
    from metalstm.learner import Learner
    from metalstm.metalearner import MetaLearner

    learner = Learner(5, 1, 28)
    g = torch.Generator().manual_seed(seed)
    meta = MetaLearner(learner.n_params, theta0=learner.init_params(g), generator=g)
    with torch.no_grad():
        for p in meta.rule_parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
        meta.b_F.fill_(3.0)
    return learner, meta


@_exercise("06", 1, "NoForgetting",
           "be a rule class NoForgetting(metalearner): the meta-learner's steps with f_t = 1, theta - i_t * grad_t")
def _check_06_1(NoForgetting):
    from metalstm.metalearner import inner_loop, loss_and_grad, support_batches

    learner, meta = _gated_metalearner()
    e = _noise_episode(k_shot=2)
    rule = NoForgetting(meta)
    _expect(torch.equal(rule.c0.detach(), meta.c0.detach()), "start where the meta-learner starts: its c0")
    with torch.no_grad():
        theta, _, gates = inner_loop(learner, rule, e.support_x, e.support_y, 3, 10, record=True)
        with_forgetting, _, _ = inner_loop(learner, meta, e.support_x, e.support_y, 3, 10)
        expected, state = meta.c0, meta.initial_state()
        for idx in support_batches(10, 10, 3):
            loss, grad = loss_and_grad(learner, e.support_x[idx], e.support_y[idx], expected)
            _, state, g = meta.step(loss, grad, expected, state)
            expected = expected - g.i * grad
    _expect(not _close(theta, with_forgetting, 1e-4, 1e-5),
            "this is the meta-learner's own update, forget gate included: the forget gate must be 1")
    _expect(_close(theta, expected, 1e-5, 1e-6),
            "theta is not theta_{t-1} - i_t * grad_t with the meta-learner's own i_t at every step: is its "
            "state carried from one step to the next?")
    _expect(all(torch.all(gate.f == 1) for gate in gates), "return Gates with f = 1, the forget gate you applied")


@_exercise("06", 2, "ScheduleRule",
           "be a rule class ScheduleRule(c0, forget, input) with theta_t = forget[t] * theta - input[t] * grad")
def _check_06_2(ScheduleRule):
    from metalstm.learner import Learner
    from metalstm.metalearner import SGDCell, run_episode

    learner = Learner(5, 1, 28)
    g = torch.Generator().manual_seed(4)
    theta0, T = learner.init_params(g), 3
    P = learner.n_params
    e = _noise_episode(k_shot=2)
    plain = ScheduleRule(theta0, torch.ones(T, P), torch.full((T, P), 0.05))
    a = run_episode(learner, plain, e, T, 10, mode="test")
    b = run_episode(learner, SGDCell(theta0, 0.05), e, T, 10, mode="test")
    _expect(_close(a.query_logits, b.query_logits, 1e-4, 1e-5),
            "with forget = 1 and input = 0.05 at every step the rule must be plain SGD with step size 0.05")
    forget, input_ = 1 - 0.05 * torch.rand(T, P, generator=g), 0.1 * torch.rand(T, P, generator=g)
    rule = ScheduleRule(theta0, forget, input_)
    theta, state = theta0, rule.initial_state()
    for t in range(T):
        grad = torch.randn(P, generator=g)
        new, state, gates = rule.step(torch.tensor(1.0), grad, theta, state)
        _expect(_close(new, forget[t] * theta - input_[t] * grad),
                f"step {t + 1} must use row {t} of forget and input: the state counts the steps")
        theta = new
    try:
        rule.step(torch.tensor(1.0), grad, theta, state)
    except ValueError:
        pass
    else:
        raise Wrong(f"a schedule of {T} steps has no step {T + 1}: raise a ValueError")


@_exercise("06", 3, "accuracy_beyond_T",
           "return the mean query accuracy of theta_0 .. theta_{factor*T} over the first `episodes` episodes")
def _check_06_3(accuracy_beyond_T):
    from metalstm.config import get_config
    from metalstm.episodes import episode_generator, sampler_for
    from metalstm.learner import Learner
    from metalstm.viz import trace_episode

    cfg = get_config("smoke")
    _, meta = _gated_metalearner(5)
    learner = Learner(cfg.n_way, cfg.in_channels, cfg.image_size)
    sampler = sampler_for(cfg, "val")
    acc = torch.as_tensor(accuracy_beyond_T(learner, meta, sampler, cfg, factor=2, episodes=2))
    _expect(acc.shape == (2 * cfg.steps + 1,), f"one accuracy per theta_0 .. theta_2T: {2 * cfg.steps + 1} values "
            f"for T = {cfg.steps}")
    runs = [trace_episode(learner, meta, sampler[i], 2 * cfg.steps, cfg.batch_size,
                          generator=episode_generator(sampler.seed, i)).query_acc for i in range(2)]
    _expect(_close(acc, torch.stack(runs).mean(dim=0)),
            "the accuracies are not the record's: average over the first `episodes` episodes, each run "
            "with meta-validation's mini-batch order (as record_gates runs them)")


@_exercise("06", 4, "substitution_gap",
           "return (mean, half-width) of the per-episode accuracy difference rule - metalearner on the episodes")
def _check_06_4(substitution_gap):
    from metalstm.config import get_config
    from metalstm.episodes import sampler_for
    from metalstm.evaluate import evaluate_rule
    from metalstm.learner import Learner
    from metalstm.metalearner import SGDCell
    from metalstm.stats import paired_difference

    cfg = get_config("smoke")
    learner = Learner(cfg.n_way, cfg.in_channels, cfg.image_size)
    _, meta = _gated_metalearner(6)
    rule = SGDCell(meta.c0, 0.05)
    sampler = sampler_for(cfg, "val")
    found = substitution_gap(learner, meta, rule, sampler, cfg, range(2, 6))
    _expect(found is not None and len(found) == 2, "return a pair (mean, half-width)")
    ours, theirs = (evaluate_rule(learner, r, sampler, range(2, 6), cfg) for r in (meta, rule))
    mean, half = paired_difference(theirs, ours)
    if abs(float(found[0]) + mean) < 1e-9 and abs(mean) > 1e-9:
        raise Wrong("the sign: the difference is rule minus meta-learner (negative: the rule is worse)")
    _expect(abs(float(found[0]) - mean) < 1e-9,
            "the mean is not right: run both rules on exactly the given episodes under the meta-test protocol "
            "and pair them episode by episode")
    _expect(abs(float(found[1]) - half) < 1e-9, "the half-width is not right: the 95% interval of the paired "
            "per-episode differences")


# -- notebook 05 ----------------------------------------------------------------------
@_exercise("05", 1, "best_from_log", "return (episode, val_acc) of the log.csv row that train kept as best.pt")
def _check_05_1(best_from_log):
    import csv
    import tempfile
    from pathlib import Path

    rows = [(0, 0.41), (10, 0.70), (20, 0.65), (30, 0.70), (40, 0.55)]     # a tie at 10 and 30
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["episode", "train_loss", "train_acc", "val_acc", "val_ci95", "seconds"])
            w.writeheader()
            for k, (episode, acc) in enumerate(rows):     # the episode-0 row has no training loss yet
                w.writerow({"episode": episode, "train_loss": "" if k == 0 else 1.0,
                            "train_acc": "" if k == 0 else 0.5, "val_acc": acc, "val_ci95": 0.1, "seconds": k})
        found = best_from_log(path)
    _expect(found is not None and len(found) == 2, "return a pair (episode, val_acc)")
    episode, acc = found
    _expect(abs(float(acc) - 0.70) < 1e-12, "the best row is the one with the highest val_acc")
    _expect(int(episode) == 10, "on a tie, which row does train keep? Read when it replaces best.pt")


@_exercise("05", 2, "meta_train_step_batch",
           "take one clipped Adam step on the mean meta-gradient of several episodes, as train(meta_batch=M)")
def _check_05_2(meta_train_step_batch):
    import tempfile

    from metalstm.checkpoint import load_checkpoint
    from metalstm.config import get_config
    from metalstm.episodes import episode_generator, sampler_for
    from metalstm.model import build_model
    from metalstm.train import train

    cfg = get_config("smoke").replace(episodes=4, meta_batch=2, val_every=100, val_episodes=1)
    with tempfile.TemporaryDirectory() as folder:
        train(cfg, folder, progress=False)
        state = load_checkpoint(f"{folder}/last.pt")[0]["metalearner"]
    learner, meta = build_model(cfg)
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr)
    episodes = sampler_for(cfg, "train")
    for first in (0, 2):
        meta_train_step_batch(learner, meta, opt, [episodes[first], episodes[first + 1]],
                              [episode_generator(episodes.seed, i) for i in (first, first + 1)], cfg)
    for name, value in meta.state_dict().items():
        _expect(_close(value, state[name], rtol=1e-5, atol=1e-7),
                f"after two updates on episodes (0, 1) and (2, 3), {name} differs from train's: compare your "
                f"update with metalstm.train's meta_gradient and meta_step (how are the episodes' losses "
                f"combined, when is the gradient clipped, how many optimiser steps?)")


@_exercise("05", 3, "train_c0_only", "meta-train c_0 alone; the LSTM keeps its initialisation")
def _check_05_3(train_c0_only):
    from metalstm.config import get_config
    from metalstm.model import build_model

    cfg = get_config("smoke")
    _, fresh = build_model(cfg)
    found = train_c0_only(cfg, 2)
    _expect(isinstance(found, tuple) and len(found) == 2, "return (learner, meta)")
    _, meta = found
    for p, q in zip(meta.rule_parameters(), fresh.rule_parameters()):
        _expect(torch.equal(p.detach(), q.detach()), "the LSTM's weights must stay at their initialisation: "
                "which parameters does your optimiser update?")
    _expect(not torch.equal(meta.c0.detach(), fresh.c0.detach()), "c_0 did not move: two meta-updates should "
            "change it")
