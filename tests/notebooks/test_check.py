"""metalstm.check: every exercise check of notebooks 01-06 accepts the worked solution, rejects a
wrong answer with a hint, never shows the solution, and survives a stub or a crashing answer."""
import ast
import inspect
import re
import sys
import textwrap

import pytest
import torch

from metalstm import check
from testkit import load_solutions

SOLUTIONS = {"01": "01_episodes", "02": "02_gradient_descent_as_an_lstm",
             "03": "03_preprocessing_and_parameter_sharing", "04": "04_batch_norm_in_episodes",
             "05": "05_meta_training", "06": "06_gate_visualization"}


def _wrong_split(alphabets, fractions=(0.6, 0.2, 0.2), seed=0):
    ids = torch.randperm(len(alphabets), generator=torch.Generator().manual_seed(seed)).tolist()
    a, b = int(0.6 * len(ids)), int(0.8 * len(ids))
    return [sorted(ids[:a]), sorted(ids[a:b]), sorted(ids[b:])]       # classes at random: scripts shared


def _wrong_any_sizes(data, n_way, k_shot, n_query, g):                # draws images with replacement
    eligible = torch.nonzero(data.class_sizes() >= k_shot + n_query).flatten()
    classes = eligible[torch.randperm(len(eligible), generator=g)[:n_way]]
    picks = [data.indices_of(c)[torch.randint(len(data.indices_of(c)), (k_shot + n_query,), generator=g)]
             for c in classes.tolist()]
    x = data.float_images(torch.cat(picks)).view(n_way, -1, *data.image_shape)
    labels = torch.arange(n_way)
    return (x[:, :k_shot].flatten(0, 1), labels.repeat_interleave(k_shot), x[:, k_shot:].flatten(0, 1),
            labels.repeat_interleave(n_query), classes)


def _wrong_meta_gradient(learner, episode, c0, lr, steps):           # the query gradient at c0, no steps
    leaf = c0.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(learner(episode.query_x, leaf), episode.query_y)
    return torch.autograd.grad(loss, leaf)[0]


def _wrong_query_dependence(learner, rule, episode, other, steps, batch_size):
    from metalstm.metalearner import inner_loop   # batch statistics in the query pass: leaks
    with torch.no_grad():
        theta, _, _ = inner_loop(learner, rule, episode.support_x, episode.support_y, steps, batch_size)
        base = learner(episode.query_x, theta, bn="batch")
        together = learner(torch.cat([episode.query_x, other.query_x]), theta, bn="batch")[: len(base)]
    return 1.0, (together - base).abs().max().item()


def _wrong_refreshed(learner, theta, support_x):                      # momentum 0.95 keeps some of the init
    stats = learner.new_bn_stats()
    with torch.no_grad():
        learner(support_x, theta, bn="batch", stats=stats)
    return stats


class _WrongNoForgetting(torch.nn.Module):                            # keeps the forget gate
    def __init__(self, metalearner):
        super().__init__()
        self.metalearner, self.c0 = metalearner, metalearner.c0

    def initial_state(self):
        return self.metalearner.initial_state()

    def step(self, loss, grad, theta, state):
        return self.metalearner.step(loss, grad, theta, state)


class _WrongScheduleRule(torch.nn.Module):                            # always the first step's gates
    def __init__(self, c0, forget, input):
        super().__init__()
        self.c0, self.forget, self.input = c0, forget, input

    def initial_state(self):
        return 0

    def step(self, loss, grad, theta, state):
        from metalstm.metalearner import Gates
        return self.forget[0] * theta - self.input[0] * grad, state + 1, Gates(self.forget[0], self.input[0])


def _wrong_beyond_T(learner, metalearner, sampler, cfg, factor=2, episodes=10):   # stops at T
    from metalstm.viz import trace_episode
    return torch.stack([trace_episode(learner, metalearner, sampler[i], cfg.steps, cfg.batch_size).query_acc
                        for i in range(episodes)]).mean(dim=0)


def _wrong_best_from_log(path):                                    # the LAST of tied maxima
    import csv
    rows = [(int(r["episode"]), float(r["val_acc"])) for r in csv.DictReader(open(path))]
    return max(reversed(rows), key=lambda r: r[1])


def _wrong_meta_batch(learner, meta, opt, episodes, generators, cfg):   # sums instead of averaging
    from metalstm.metalearner import run_episode
    opt.zero_grad(set_to_none=True)
    for episode, generator in zip(episodes, generators):
        run_episode(learner, meta, episode, cfg.steps, cfg.batch_size, mode="train", generator=generator
                    ).query_loss.backward()
    torch.nn.utils.clip_grad_norm_(meta.parameters(), cfg.clip)
    opt.step()


def _wrong_c0_only(cfg, episodes):                                     # trains the rule too
    from metalstm.model import build_model
    from metalstm.episodes import episode_generator, sampler_for
    from metalstm.metalearner import run_episode
    learner, meta = build_model(cfg)
    opt = torch.optim.Adam(meta.parameters(), lr=cfg.lr)
    train_episodes = sampler_for(cfg, "train")
    for i in range(episodes):
        opt.zero_grad(set_to_none=True)
        run_episode(learner, meta, train_episodes[i], cfg.steps, cfg.batch_size, mode="train",
                    generator=episode_generator(train_episodes.seed, i)).query_loss.backward()
        opt.step()
    return learner, meta


def _wrong_gap_unpaired(learner, metalearner, rule, sampler, cfg, episodes):   # the difference of the means
    from metalstm.evaluate import evaluate_rule                                 # with an unpaired interval
    from metalstm.stats import mean_ci95
    a, b = (evaluate_rule(learner, r, sampler, episodes, cfg) for r in (rule, metalearner))
    (ma, ha), (mb, hb) = mean_ci95(a), mean_ci95(b)
    return ma - mb, ha + hb


WRONG = {
    ("01", 1): _wrong_any_sizes,
    ("01", 2): lambda c, n, labelled=True: c ** n,
    ("01", 3): _wrong_split,
    ("02", 1): lambda lr, wd: (1.0, lr),                              # no decay at all
    ("02", 2): lambda n_way, c, size, n_filters=32, n_blocks=4: 9 * c * n_filters + n_way,
    ("02", 3): _wrong_meta_gradient,
    ("03", 1): lambda z, p=10.0: z[..., 1],                           # only the sign
    ("03", 2): lambda hidden: 2046,                                   # right for 20 only
    ("03", 3): lambda b_F, b_I: (0.01, 1.0),
    ("04", 1): _wrong_query_dependence,
    ("04", 2): _wrong_refreshed,
    ("04", 3): lambda learner, theta, query_x: learner(query_x, theta, bn="batch")[:1].expand(len(query_x), -1),
    ("05", 1): _wrong_best_from_log,
    ("05", 2): _wrong_meta_batch,
    ("05", 3): _wrong_c0_only,
    ("06", 1): _WrongNoForgetting,
    ("06", 2): _WrongScheduleRule,
    ("06", 3): _wrong_beyond_T,
    ("06", 4): _wrong_gap_unpaired,
}


@pytest.fixture(scope="module")
def solutions():
    return {nb: load_solutions(stem) for nb, stem in SOLUTIONS.items()}


def test_every_exercise_has_a_check():
    three = [(nb, k) for nb in ("01", "02", "03", "04", "05", "06") for k in (1, 2, 3)]
    assert sorted(check.REGISTRY) == sorted(three + [("06", 4)])
    assert set(WRONG) == set(check.REGISTRY)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(check.REGISTRY), ids=lambda k: f"{k[0]}.{k[1]}")
def test_the_check_accepts_the_solution_and_rejects_a_wrong_answer(key, solutions, capsys):
    ex = check.REGISTRY[key]
    solution = getattr(solutions[key[0]], ex.name)
    assert check.exercise(*key, solution) is True
    assert capsys.readouterr().out.startswith("OK ")
    assert check.exercise(*key, WRONG[key]) is False
    out = capsys.readouterr().out
    assert "not yet right. Hint:" in out, out
    # the verdict never shows the solution's code
    sys.modules.setdefault(solution.__module__, solutions[key[0]])   # inspect finds a class's source there
    body = [line.strip() for line in inspect.getsource(solution).splitlines()[1:]
            if line.strip() and not line.strip().startswith(("#", '"""', "'''"))]
    assert not [line for line in body if len(line) > 25 and line in out], out


def test_a_stub_is_not_answered_yet_and_a_crash_is_reported_not_raised(capsys):
    def weight_decay_gates(lr, weight_decay):
        raise NotImplementedError

    assert check.exercise("02", 1, weight_decay_gates) is False
    assert "not answered yet" in capsys.readouterr().out

    def count_params(n_way, in_channels, image_size, n_filters=32, n_blocks=4):
        return n_way / 0

    assert check.exercise(2, 2, count_params) is False
    out = capsys.readouterr().out
    assert "ZeroDivisionError" in out and "return n_way / 0" in out
    with pytest.raises(KeyError, match="no check for exercise 09.1"):
        check.exercise("09", 1, count_params)
    check.exercises()
    assert "weight_decay_gates" in capsys.readouterr().out


# -- the hints guide, they never answer ------------------------------------------------------------------------
def _exercise_text(notebook: str, number: int) -> str:
    """The markdown of exercise `number` in notebook `notebook` ("**Exercise k.**" or "k. **...**")."""
    import json
    from pathlib import Path

    path = next((Path(__file__).resolve().parents[2] / "notebooks").glob(f"{notebook}_*.ipynb"))
    for cell in json.loads(path.read_text())["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and re.match(rf"\s*(\*\*Exercise {number}\.\*\*|{number}\. \*\*)", text):
            return text
    raise AssertionError(f"no exercise {number} in {path.name}")


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text).replace("'", '"')


def hint_texts(check_function) -> list[str]:
    """Every string a check can print: its string constants, f-strings' literal parts included."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(check_function)))
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def answer_tokens(source: str) -> set[str]:
    """What a solution's code is made of, as a hint would have to spell it: every function it calls
    (dotted, e.g. `math.perm`, and its last name when that is distinctive), every keyword argument with
    its value (`bn="batch"`), every expression it returns (`1.0-lr*weight_decay`)."""
    tree = ast.parse(textwrap.dedent(source))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if "." in name and "(" not in name and not name.startswith("self."):
                found.add(name)
            last = name.rsplit(".", 1)[-1]
            if "_" in last and len(last) >= 8:
                found.add(last)
            found |= {_squeeze(ast.unparse(k)) for k in node.keywords if k.arg and not isinstance(k.value, ast.Name)}
        elif isinstance(node, ast.Return) and node.value is not None:
            parts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            found |= {_squeeze(ast.unparse(part)) for part in [node.value, *parts] if not isinstance(part, ast.Name)}
    return {t for t in found if len(t) >= 6}


def leaks(key, solution_source: str, hints: list[str] | None = None) -> list[str]:
    """The answer tokens of a solution that the check's hints (or `hints`) spell out and its exercise
    does not name."""
    ex = check.REGISTRY[key]
    named = _squeeze(_exercise_text(*key) + " " + ex.what)
    hints = _squeeze(" ".join(hint_texts(ex.check) if hints is None else hints))
    return sorted(t for t in answer_tokens(solution_source) if t in hints and t not in named)


@pytest.mark.parametrize("key", sorted(check.REGISTRY), ids=lambda k: f"{k[0]}.{k[1]}")
def test_no_hint_spells_out_the_answer(key, solutions):
    """A hint may point at what the exercise already names (`evaluate_rule`, `paired_difference` in 06.4);
    the functions, arguments and expressions of the answer that the exercise leaves to the student stay out."""
    solution = getattr(solutions[key[0]], check.REGISTRY[key].name)
    sys.modules.setdefault(solution.__module__, solutions[key[0]])
    assert leaks(key, inspect.getsource(solution)) == []


def test_the_hint_search_finds_an_answer_in_a_hint():
    """The search above can fail: hints that spell out an answer (the kind this module's checks once gave)
    are found, a hint that only guides is not."""
    cases = [(("01", 2), "return an exact integer (math.comb, math.perm)",
              "def count_tasks(c, n, labelled=True):\n    return math.perm(c, n) if labelled else math.comb(c, n)\n"),
             (("04", 3), "use the query batch's own statistics: bn='batch', no stats",
              "def f(learner, theta, query_x):\n    return learner(query_x, theta, bn=\"batch\")\n"),
             (("02", 1), "write it as theta - lr*(grad + wd*theta): f = 1.0 - lr * weight_decay",
              "def f(lr, weight_decay):\n    return 1.0 - lr * weight_decay, lr\n")]
    for key, hint, source in cases:
        assert leaks(key, source, [hint]), (key, hint)
        assert not leaks(key, source, ["a hint that guides: compare with the step above"])


# -- the stored references ---------------------------------------------------------------------------------------
def reference_tensors() -> dict:
    """What check.REFERENCES fingerprints, computed from the package on each check's inputs (the answers'
    own computation: it lives here, in the instructor's tests, not in metalstm.check)."""
    from metalstm.learner import Learner
    from metalstm.metalearner import loss_and_grad

    out = {}
    learner, ep = Learner(5, 1, 28), check._noise_episode(seed=6)
    theta = learner.init_params(torch.Generator().manual_seed(6))
    for _ in range(3):
        theta = theta - 0.1 * loss_and_grad(learner, ep.support_x, ep.support_y, theta)[1]
    leaf = theta.detach().requires_grad_(True)
    out["02.3"] = torch.autograd.grad(torch.nn.functional.cross_entropy(learner(ep.query_x, leaf), ep.query_y),
                                      leaf)[0]
    (e,) = check._glyph_episodes(5, 1, start=4)
    g = torch.Generator().manual_seed(1)
    theta = Learner(5, 1, 28).init_params(g) + 0.05 * torch.randn(learner.n_params, generator=g)
    one = Learner(5, 1, 28, bn_momentum=1.0)
    stats = one.new_bn_stats()
    with torch.no_grad():
        one(e.support_x, theta, bn="batch", stats=stats)
    out["04.2 mean"], out["04.2 var"] = list(stats.mean), list(stats.var)
    (e,) = check._glyph_episodes(5, 1, start=5)
    learner = Learner(5, 1, 28, bn_momentum=0.95)
    with torch.no_grad():
        out["04.3"] = learner(e.query_x, learner.init_params(torch.Generator().manual_seed(2)), bn="batch")
    return out


def test_the_stored_references_are_what_the_package_computes():
    fresh = reference_tensors()
    assert set(fresh) == set(check.REFERENCES)
    stale = {}
    for key, value in fresh.items():
        tensors, stored = (value, check.REFERENCES[key]) if isinstance(value, list) else \
            ([value], [check.REFERENCES[key]])
        if not all(check._matches(t, s) for t, s in zip(tensors, stored, strict=True)):
            stale[key] = [check.fingerprint(t) for t in tensors]
    assert not stale, f"update metalstm.check.REFERENCES with: {stale}"


def test_a_fingerprint_tells_a_right_answer_from_a_near_miss():
    right = reference_tensors()["04.3"]
    stored = check.REFERENCES["04.3"]
    assert check._matches(right, stored) and check._matches(right + 1e-6, stored)
    assert not check._matches(right * 1.001, stored)                      # 0.1% off
    assert not check._matches(right.flip(0), stored)                      # the right numbers, in the wrong rows
    assert not check._matches(right[:-1], stored)                         # one query short
