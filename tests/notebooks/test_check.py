"""metalstm.check: every exercise check of notebooks 01-04 and 06 accepts the worked solution, rejects a
wrong answer with a hint, never shows the solution, and survives a stub or a crashing answer."""
import inspect
import sys

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
