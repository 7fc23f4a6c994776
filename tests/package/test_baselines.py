"""Tests of metalstm.baselines: fine-tune, nearest neighbour, Matching Networks, SGD/Adam ablations.

Everything but the command-line test (which reads the shipped glyphs) runs on
a small synthetic ImageSet, a random template per class plus noise; the file
takes seconds.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from metalstm.baselines import (AdamCell, MatchingNetwork, NearestNeighbour, SupportFit, accuracy,
                                confidence_interval, evaluate, finetune, grid_search, learned_init,
                                load_matching, load_or_pretrain, load_pretrained, markdown_table,
                                matching_attention, matching_log_probs, pretrain, random_init,
                                save_matching, save_pretrained, train_matching, tune_finetune, tune_lr,
                                with_new_head)
from metalstm.baselines.nearest import nearest_neighbour_scores
from metalstm.data.base import ImageSet
from metalstm.episodes import Episode, EpisodeSampler
from metalstm.learner import Learner


def toy_images(n_classes=10, per_class=20, noise=0.3, seed=0, name="toy"):
    """Each class: one random 28x28 template, each image = template plus fresh noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(n_classes, 1, 28, 28, generator=g)
    x = (1 - noise) * templates.repeat_interleave(per_class, 0) + noise * torch.rand(
        n_classes * per_class, 1, 28, 28, generator=g)
    return ImageSet((x * 255).round().to(torch.uint8), torch.arange(n_classes).repeat_interleave(per_class),
                    [f"c{i}" for i in range(n_classes)], name=name)


@pytest.fixture(scope="module")
def toy():
    return toy_images()


@pytest.fixture(scope="module")
def pre(toy):
    return pretrain(toy, epochs=2, batch_size=32, seed=0, progress=False)


@pytest.fixture(scope="module")
def episodes(toy):
    return EpisodeSampler(toy, n_way=5, k_shot=1, n_query=3, seed=1).take(4)


@pytest.fixture(scope="module")
def matching(toy):
    sampler = EpisodeSampler(toy, n_way=5, k_shot=1, n_query=3, seed=2)
    return train_matching(sampler, Learner(5), episodes=30, seed=0, log_every=5, progress=False)


def all_methods(pre, matching):
    c0 = Learner(5).init_params(torch.Generator().manual_seed(5))
    return [NearestNeighbour(pre.learner, pre.theta),
            finetune(pre, 5, steps=5, lr=0.1),
            finetune(pre, 5, steps=5, lr=1e-3, optimizer="adam", head="random"),
            random_init(Learner(5), steps=5, lr=0.1),
            random_init(Learner(5), steps=5, lr=1e-3, optimizer="adam"),
            learned_init(Learner(5), c0, steps=5, lr=0.1),
            matching.method]


@pytest.mark.slow
def test_every_method_gives_deterministic_scores_of_shape_nq_by_n(pre, matching, episodes):
    for method in all_methods(pre, matching):
        a, b = method.predict(episodes[0]), method.predict(episodes[0])
        assert a.shape == (15, 5), method.name
        assert torch.isfinite(a).all(), method.name
        assert torch.equal(a, b), f"{method.name} is not deterministic"
    # rebuilt from the same seeds -> the same numbers
    again = all_methods(pre, matching)
    for m1, m2 in zip(all_methods(pre, matching), again):
        assert torch.equal(m1.predict(episodes[1]), m2.predict(episodes[1])), m1.name


def test_a_query_prediction_does_not_depend_on_the_other_queries(pre, matching, episodes):
    """Paper notes 7: support batch statistics fill the running averages; queries use them."""
    ep = episodes[0]
    alone = Episode(ep.support_x, ep.support_y, ep.query_x[4:6], ep.query_y[4:6], ep.classes)
    for method in all_methods(pre, matching):
        full, few = method.predict(ep), method.predict(alone)
        torch.testing.assert_close(few, full[4:6], msg=method.name)


def test_nearest_neighbour_is_cosine():
    """Query [1, 0]: the cosine neighbour is [10, 1] (label 0); the Euclidean one would be [0.5, 0.5]."""
    support = torch.tensor([[10.0, 1.0], [0.5, 0.5]])
    scores = nearest_neighbour_scores(torch.tensor([[1.0, 0.0]]), support, torch.tensor([0, 1]), 2)
    torch.testing.assert_close(scores, torch.tensor([[10 / math.sqrt(101), 1 / math.sqrt(2)]]))
    # a label's score is its BEST support example
    scores = nearest_neighbour_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
                                      torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(scores, torch.tensor([[1.0, 1 / math.sqrt(2)]]))


def test_nearest_neighbour_finds_copies_of_the_support_images(toy):
    """Queries that are copies of support images (of very different classes) are all right."""
    ep = EpisodeSampler(toy, n_way=5, k_shot=2, n_query=1, seed=3)[0]
    order = torch.tensor([3, 0, 9, 4, 7, 1, 8, 2, 6, 5])    # shuffled copies
    copies = Episode(ep.support_x, ep.support_y, ep.support_x[order], ep.support_y[order], ep.classes)
    learner = Learner(n_way=3)                              # any head: NN ignores it
    theta = learner.init_params(torch.Generator().manual_seed(0))
    assert accuracy(NearestNeighbour(learner, theta), copies) == 1.0


def test_matching_attention_is_the_cosine_softmax():
    q = torch.tensor([[1.0, 0.0]])
    s = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])       # cosines 1, 0, 1/sqrt(2)
    e = [math.exp(2 * c) for c in (1.0, 0.0, 1 / math.sqrt(2))]
    expected = torch.tensor([[v / sum(e) for v in e]])
    torch.testing.assert_close(matching_attention(q, s, scale=2.0), expected)
    # P(y = c) sums the attention over the support examples of label c
    log_p = matching_log_probs(q, s, torch.tensor([0, 1, 0]), 2, scale=2.0)
    torch.testing.assert_close(log_p.exp(), torch.tensor([[(e[0] + e[2]) / sum(e), e[1] / sum(e)]]))
    # exact even where exp() would overflow
    assert torch.isfinite(matching_log_probs(q, s, torch.tensor([0, 1, 0]), 2, scale=1e4)).all()


def test_matching_training_learns_and_roundtrips(tmp_path, toy, matching):
    losses = [row["loss"] for row in matching.history]
    assert matching.episodes == 30 and losses[-1] < losses[0]
    test = EpisodeSampler(toy, n_way=5, k_shot=1, n_query=3, seed=7).take(4)
    assert evaluate(matching.method, test, progress=False).mean > 0.5     # chance is 0.2
    path = save_matching(tmp_path / "mn.pt", matching.method, {"episodes": 30})
    loaded, meta = load_matching(path)
    assert meta["episodes"] == 30
    assert torch.equal(loaded.predict(test[0]), matching.method.predict(test[0]))


def test_matching_training_can_stop_on_a_time_budget(toy):
    sampler = EpisodeSampler(toy, n_way=5, k_shot=1, n_query=3, seed=2)
    out = train_matching(sampler, Learner(5), episodes=10_000, max_seconds=0.0, progress=False)
    assert out.episodes == 1 and out.history[-1]["episode"] == 1


@pytest.mark.slow
def test_finetune_without_steps_is_uniform_and_steps_learn(pre, toy):
    easy = EpisodeSampler(toy, n_way=5, k_shot=5, n_query=5, seed=4).take(3)
    untouched = finetune(pre, 5, steps=0, lr=0.1)
    logits = untouched.predict(easy[0])
    torch.testing.assert_close(logits.softmax(1), torch.full((25, 5), 0.2))
    assert evaluate(untouched, easy, progress=False).mean == pytest.approx(0.2)
    assert evaluate(finetune(pre, 5, steps=10, lr=0.1), easy, progress=False).mean > 0.9


def test_new_head_keeps_the_pretrained_conv_weights(pre):
    learner, theta0 = with_new_head(pre, 5)
    new, old = learner.unflatten(theta0), pre.learner.unflatten(pre.theta)
    assert new["fc.weight"].shape == (5, 32) and not new["fc.weight"].any() and not new["fc.bias"].any()
    for name in new:
        if not name.startswith("fc."):
            assert torch.equal(new[name], old[name]), name


def test_adam_cell_matches_torch_adam(episodes):
    """AdamCell run by run_episode = torch.optim.Adam on the same support batches."""
    learner, ep = Learner(5), episodes[0]
    theta0 = learner.init_params(torch.Generator().manual_seed(0))
    ours = SupportFit(learner, theta0, steps=4, lr=0.01, optimizer="adam").run(ep).theta
    theta = theta0.clone().requires_grad_()
    opt = torch.optim.Adam([theta], lr=0.01)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(learner(ep.support_x, theta), ep.support_y).backward()
        opt.step()
    # conv biases feed straight into batch norm: their gradient is rounding noise, which
    # Adam's normalisation blows up to +-lr steps in either implementation; compare the rest
    keep = torch.ones(learner.n_params, dtype=torch.bool)
    for name, part in learner.slices().items():
        if name.startswith("conv") and name.endswith(".bias"):
            keep[part] = False
    torch.testing.assert_close(ours[keep], theta.detach()[keep], rtol=1e-3, atol=1e-4)  # steps are 1e-2
    assert isinstance(SupportFit(learner, theta0, 1, 0.1, "adam").rule, AdamCell)


class KnownBest:
    """A fake method that is right only at one grid point."""

    def __init__(self, right):
        self.name, self.right = "fake", right

    def predict(self, ep):
        labels = ep.query_y if self.right else (ep.query_y + 1) % ep.n_way
        return F.one_hot(labels, ep.n_way).float()


def test_grid_search_picks_the_best_point(episodes):
    best, table = grid_search(lambda s, lr: KnownBest((s, lr) == (25, 0.01)),
                              [(10, 0.1), (25, 0.01), (50, 0.001)], episodes, progress=False)
    assert best == (25, 0.01) and table == {(10, 0.1): 0.0, (25, 0.01): 1.0, (50, 0.001): 0.0}
    lr, accs = tune_lr(lambda lr: KnownBest(lr == 0.3), [0.1, 0.3, 1.0], episodes, progress=False)
    assert lr == 0.3 and accs[0.3] == 1.0


def test_tune_finetune_prefers_learning_over_no_steps(pre, toy):
    val = EpisodeSampler(toy, n_way=5, k_shot=5, n_query=3, seed=5).take(2)
    (steps, lr), table = tune_finetune(pre, val, steps_grid=(0, 10), lr_grid=(0.1,), progress=False)
    assert (steps, lr) == (10, 0.1)
    assert table[(0, 0.1)] == pytest.approx(0.2) and table[(10, 0.1)] > 0.9


def test_pretraining_lowers_the_loss_and_is_seeded(toy, pre):
    history = pre.meta["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert pre.learner.n_way == toy.num_classes
    again = pretrain(toy, epochs=2, batch_size=32, seed=0, progress=False)
    assert torch.equal(again.theta, pre.theta)


def test_pretrained_save_load_and_cache(tmp_path, toy, pre):
    path = save_pretrained(tmp_path / "pre.pt", pre)
    loaded = load_pretrained(path)
    assert torch.equal(loaded.theta, pre.theta) and loaded.meta["history"] == pre.meta["history"]
    cached = load_or_pretrain(path, toy, epochs=2, batch_size=32, seed=0, progress=False)
    assert torch.equal(cached.theta, pre.theta)
    with pytest.raises(FileNotFoundError, match="no pre-trained baseline with these settings"):
        load_or_pretrain(path, toy, epochs=1, batch_size=32, seed=0, progress=False, train=False)
    other = load_or_pretrain(path, toy, epochs=1, batch_size=32, seed=0, progress=False)   # other settings
    assert other.meta["epochs"] == 1
    assert load_pretrained(path).meta["epochs"] == 2          # the cached one is kept, not overwritten
    variants = sorted(tmp_path.glob("pre-*.pt"))
    assert len(variants) == 1 and load_pretrained(variants[0]).meta["epochs"] == 1
    again = load_or_pretrain(path, toy, epochs=1, batch_size=32, seed=0, progress=False, train=False)
    assert torch.equal(again.theta, other.theta)               # and found again, without training


def test_clear_errors(tmp_path, pre, episodes):
    with pytest.raises(ValueError, match="10 outputs"):
        SupportFit(Learner(10), Learner(10).init_params(), 1, 0.1).predict(episodes[0])
    with pytest.raises(ValueError, match="optimizer"):
        finetune(pre, 5, 1, 0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="head"):
        finetune(pre, 5, 1, 0.1, head="ones")
    path = save_matching(tmp_path / "mn.pt", MatchingNetwork(Learner(5), Learner(5).init_params()))
    with pytest.raises(ValueError, match="not of a pre-trained"):
        load_pretrained(path)


def test_confidence_interval_and_table():
    mean, half = confidence_interval([0.5, 0.7, 0.6, 0.6])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(3.182446305 * torch.tensor([0.5, 0.7, 0.6, 0.6]).std().item() / 2)   # t, df 3
    ev = evaluate(KnownBest(True), EpisodeSampler(toy_images(), 5, 1, 2, seed=0).take(3), progress=False)
    assert ev.mean == 1.0 and "| fake | 100.00 +- 0.00 | 3 |" in markdown_table([ev])


def test_accuracy_curve_equals_separate_runs(pre, episodes):
    method = finetune(pre, 5, steps=6, lr=0.05)
    curve = method.accuracy_curve(episodes[0], [0, 2, 6])
    for s in (0, 2, 6):
        assert curve[s] == accuracy(finetune(pre, 5, steps=s, lr=0.05), episodes[0]), s


@pytest.mark.slow
def test_build_baselines_gives_every_method(tmp_path, toy):
    from metalstm.baselines.suite import build_baselines
    from metalstm.config import get_config

    cfg = get_config("smoke")                      # 5-way 1-shot, 5 queries, T = 3 steps of batch 5
    c0 = Learner(5).init_params(torch.Generator().manual_seed(3))
    built, notes = build_baselines(cfg, c0=c0, val_episodes=2, pretrain_epochs=1, matching_episodes=4,
                                   matching_seconds=None, cache=tmp_path, data={"train": toy, "val": toy},
                                   finetune_steps=(0, 3), finetune_lrs=(0.1,), sgd_lrs=(0.1,),
                                   adam_lrs=(1e-3,), progress=False)
    assert list(built) == ["Fine-tune", "Nearest neighbour", "Matching Networks", "SGD from random init",
                           "Adam from random init", "SGD from learned c_0"]
    assert set(notes) == set(built) and "3 steps" in notes["Fine-tune"]
    ep = EpisodeSampler(toy, 5, 1, 5, seed=9)[0]
    for name, method in built.items():
        assert method.name == name and method.predict(ep).shape == (25, 5)
    assert {p.name for p in tmp_path.iterdir()} == {"pretrained-glyphs-28.pt", "matching-smoke.pt"}
    cached = dict(methods=["nearest", "matching"], val_episodes=2, pretrain_epochs=1, cache=tmp_path,
                  data={"train": toy, "val": toy}, progress=False, train=False)
    again, _ = build_baselines(cfg, matching_episodes=4, **cached)      # from the cache, nothing trained
    assert torch.equal(again["Matching Networks"].theta, built["Matching Networks"].theta)
    with pytest.raises(FileNotFoundError, match="no Matching Network for smoke with 5 training episodes"):
        build_baselines(cfg, matching_episodes=5, **cached)
    assert {p.name for p in tmp_path.iterdir()} == {"pretrained-glyphs-28.pt", "matching-smoke.pt"}
    with pytest.raises(ValueError, match="needs a trained meta-learner"):
        build_baselines(cfg, methods=["learned"], data={"train": toy, "val": toy})


def test_command_line_prints_a_table(tmp_path, capsys):
    from metalstm.baselines.suite import main

    code = main(["--config", "smoke", "--episodes", "3", "--val-episodes", "1", "--methods", "nearest",
                 "--pretrain-epochs", "0", "--cache", str(tmp_path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "| Nearest neighbour |" in out and "| 3 |" in out
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["name"] == "Nearest neighbour"
    assert main(["--config", "no-such-config"]) == 2
