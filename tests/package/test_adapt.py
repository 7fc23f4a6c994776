"""metalstm.adapt: adapt a trained rule to a support set, then predict under the meta-test protocol."""
import doctest

import pytest
import torch

import metalstm.adapt
from metalstm.adapt import Adapted, Trained, adapt, load
from metalstm.checkpoint import CheckpointError
from metalstm.config import get_config
from metalstm.episodes import episode_generator, sampler_for
from metalstm.learner import Learner
from metalstm.metalearner import SGDCell, run_episode
from metalstm.paths import data_dir


@pytest.fixture(scope="module")
def model5():
    return load("glyphs-5shot")


@pytest.fixture(scope="module")
def model1():
    return load(data_dir() / "checkpoints" / "glyphs-1shot.pt")


def small(n_way=3, lr=0.2, seed=0):
    learner = Learner(n_way=n_way, in_channels=1, image_size=16)
    return learner, SGDCell(learner.init_params(torch.Generator().manual_seed(seed)), lr=lr)


def images(n, seed=0, shape=(1, 16, 16)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# -- the same numbers as run_episode(mode="test") -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["5shot", "1shot"])
def test_query_accuracy_equals_run_episode(which, model5, model1):
    model = model5 if which == "5shot" else model1
    cfg = model.config
    sampler = sampler_for(cfg, "test")
    for i in (0, 1):
        ep = sampler[i]
        res = run_episode(model.learner, model.rule, ep, cfg.steps, cfg.batch_size, mode="test",
                          generator=episode_generator(sampler.seed, i))
        fitted = model.adapt(ep.support_x, ep.support_y, generator=episode_generator(sampler.seed, i))
        assert fitted.accuracy(ep.query_x, ep.query_y) == res.query_acc
        assert torch.equal(fitted.logits(ep.query_x), res.query_logits)
        assert torch.equal(fitted.theta, res.theta)
        assert list(fitted.support_losses) == res.support_losses
        assert torch.equal(fitted.predict(ep.query_x), res.query_logits.argmax(1))


def test_mini_batches_and_their_order_match_run_episode():
    """batch_size < n with a shuffling generator: the same batches as the episode's inner loop."""
    learner, rule = small()
    from metalstm.episodes import Episode
    sx, sy = images(9, 1), torch.arange(3).repeat(3)
    ep = Episode(sx, sy, images(6, 2), torch.arange(3).repeat(2), torch.arange(3))
    res = run_episode(learner, rule, ep, 5, 2, mode="test", generator=torch.Generator().manual_seed(7))
    fitted = adapt(learner, rule, sx, sy, steps=5, batch_size=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(fitted.logits(ep.query_x), res.query_logits)
    assert fitted.accuracy(ep.query_x, ep.query_y) == res.query_acc
    other = adapt(learner, rule, sx, sy, steps=5, batch_size=2, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.theta, fitted.theta)


def test_each_prediction_depends_on_its_image_alone(model5):
    ep = sampler_for(model5.config, "test")[3]
    fitted = model5.adapt(ep.support_x, ep.support_y)
    whole = fitted.logits(ep.query_x)
    alone = torch.cat([fitted.logits(ep.query_x[j]) for j in range(5)])      # one image [C, H, W]
    assert torch.allclose(whole[:5], alone, atol=1e-5)


def test_defaults_come_from_the_checkpoint(model5):
    ep = sampler_for(model5.config, "test")[0]
    fitted = model5.adapt(ep.support_x, ep.support_y)
    assert len(fitted.support_losses) == model5.config.steps == 8
    assert fitted.stats.updates == 8
    # 3 shots of 5 classes: fewer images than the checkpoint's batch 25, so batches of all 15
    three = model5.adapt(ep.support_x[::5].repeat(3, 1, 1, 1), torch.arange(5).repeat(3), steps=2)
    assert len(three.support_losses) == 2 and three.stats.updates == 2
    assert isinstance(fitted, Adapted) and isinstance(model5, Trained)
    assert "glyphs-5shot" in repr(model5) and "8 steps" in repr(fitted)


def test_uint8_pixels_are_scaled_as_the_data_sets_do():
    learner, rule = small()
    pixels = torch.randint(0, 256, (6, 1, 16, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a = adapt(learner, rule, pixels, y, steps=2)
    b = adapt(learner, rule, pixels.float() / 255, y.tolist(), steps=2)
    assert torch.equal(a.theta, b.theta)
    assert torch.equal(a.logits(pixels), b.logits(pixels.float() / 255))


# -- inference only ---------------------------------------------------------------------------------
@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "enable_grad"])
def test_inference_only_under_any_grad_mode(context):
    learner, rule = small()
    rule.c0.requires_grad_(True)                # even a trainable c_0 gets no graph and no gradient
    manager = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
               "enable_grad": torch.enable_grad}[context]
    with manager():
        x, y = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
        fitted = adapt(learner, rule, x, y, steps=3)
        logits = fitted.logits(x)
    assert fitted.theta.grad_fn is None and not fitted.theta.requires_grad
    assert logits.grad_fn is None and rule.c0.grad is None
    assert not torch.equal(fitted.theta, rule.c0.detach())       # the steps did move theta


@pytest.mark.slow
def test_adapting_leaves_the_rule_and_earlier_fits_unchanged(model1):
    before = {k: v.clone() for k, v in model1.rule.state_dict().items()}
    ep0, ep1 = sampler_for(model1.config, "test")[0], sampler_for(model1.config, "test")[1]
    first = model1.adapt(ep0.support_x, ep0.support_y)
    logits = first.logits(ep0.query_x)
    model1.adapt(ep1.support_x, ep1.support_y)
    assert torch.equal(first.logits(ep0.query_x), logits)
    assert all(torch.equal(v, model1.rule.state_dict()[k]) for k, v in before.items())


# -- clear errors -----------------------------------------------------------------------------------
def test_wrong_image_shape():
    learner, rule = small()
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"\[b, 1, 16, 16\].*got \(3, 3, 16, 16\)"):
        adapt(learner, rule, images(3, shape=(3, 16, 16)), y, steps=1)
    with pytest.raises(ValueError, match=r"got \(3, 1, 28, 28\)"):
        adapt(learner, rule, images(3, shape=(1, 28, 28)), y, steps=1)
    fitted = adapt(learner, rule, images(3), y, steps=1)
    with pytest.raises(ValueError, match=r"query images must be \[b, 1, 16, 16\]"):
        fitted.predict(torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match="floats in"):
        fitted.predict(torch.ones(2, 1, 16, 16, dtype=torch.long))


def test_labels_outside_the_ways_or_not_class_numbers():
    learner, rule = small()
    with pytest.raises(ValueError, match=r"0\.\.2 \(the learner is 3-way\), got 3"):
        adapt(learner, rule, images(4), torch.tensor([0, 1, 2, 3]), steps=1)
    with pytest.raises(ValueError, match="got -1"):
        adapt(learner, rule, images(4), torch.tensor([0, 1, 2, -1]), steps=1)
    with pytest.raises(ValueError, match="integer tensor"):
        adapt(learner, rule, images(3), torch.tensor([0.0, 1.0, 2.0]), steps=1)
    with pytest.raises(ValueError, match="one per image"):
        adapt(learner, rule, images(3), torch.tensor([0, 1, 2, 0]), steps=1)
    fitted = adapt(learner, rule, images(3), torch.tensor([0, 1, 2]), steps=1)
    with pytest.raises(ValueError, match="query labels must lie in 0..2"):
        fitted.accuracy(images(2), torch.tensor([0, 5]))


def test_a_class_missing_from_the_support_set():
    learner, rule = small(n_way=5)
    with pytest.raises(ValueError, match=r"no example of classes 1, 4: a 5-way learner"):
        adapt(learner, rule, images(3), torch.tensor([0, 2, 3]), steps=1)
    with pytest.raises(ValueError, match=r"no example of class 4:"):
        adapt(learner, rule, images(4), torch.tensor([0, 1, 2, 3]), steps=1)


def test_nan_or_infinite_images():
    learner, rule = small()
    x, y = images(3), torch.tensor([0, 1, 2])
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="support images hold NaN or infinity"):
        adapt(learner, rule, x, y, steps=1)
    fitted = adapt(learner, rule, images(3), y, steps=1)
    q = images(2)
    q[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        fitted.predict(q)


def test_bad_steps_and_batch_size():
    learner, rule = small()
    x, y = images(3), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="steps= is needed"):
        adapt(learner, rule, x, y)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        adapt(learner, rule, x, y, steps=-1)
    with pytest.raises(ValueError, match=r"batch_size must be a whole number between 1 and .* 3, got 4"):
        adapt(learner, rule, x, y, steps=1, batch_size=4)
    with pytest.raises(ValueError, match="learner must be"):
        adapt(rule, learner, x, y, steps=1)
    zero = adapt(learner, rule, x, y, steps=0)          # T = 0: theta_0 = c_0 and fresh statistics
    assert torch.equal(zero.theta, rule.c0.detach()) and zero.support_losses == ()


def test_load_errors(tmp_path):
    with pytest.raises((FileNotFoundError, CheckpointError), match="nothing-here"):
        load(tmp_path / "nothing-here.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load(tmp_path / "bad.pt")


# -- the docstrings' examples run ------------------------------------------------------------------
def test_docstring_examples_run():
    results = doctest.testmod(metalstm.adapt, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 15 and results.failed == 0


def test_every_public_name_has_the_four_sections():
    for name in ("Adapted", "Trained", "adapt", "load"):
        doc = getattr(metalstm.adapt, name).__doc__
        for section in ("Description", "Arguments", "Returns", "Example"):
            assert section in doc, (name, section)
