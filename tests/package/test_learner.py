"""The learner as a pure function f(x; theta) of one flat parameter vector (paper notes 2, 7); the
tests against PyTorch's layers and of batch norm run over every path (conftest.py's `path`: reference, fused, native)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalstm.learner import BNStats, Learner


def reference_net(n_way, in_channels, n_features, eps=1e-3, momentum=0.95):
    """Paper notes 2's network built from PyTorch layers, independently of metalstm."""
    layers, c = [], in_channels
    for _ in range(4):
        layers += [nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32, eps=eps, momentum=momentum),
                   nn.ReLU(), nn.MaxPool2d(2)]
        c = 32
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(n_features, n_way))


def images(n, c=1, size=28, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_learner_has_32901_parameters_at_84x84x3_with_800_features():
    learner = Learner(n_way=5, in_channels=3, image_size=84)
    assert learner.n_params == 32_901
    assert learner.n_features == 800
    assert learner.n_params == sum(p.numel() for p in reference_net(5, 3, 800).parameters())


@pytest.mark.parametrize("n_way", [5, 20])
def test_learner_at_28x28x1_has_32_features_and_counts_like_the_layers(n_way):
    learner = Learner(n_way=n_way, in_channels=1, image_size=28)
    assert learner.n_features == 32
    assert learner.n_params == sum(p.numel() for p in reference_net(n_way, 1, 32).parameters())
    assert learner.features(images(3), learner.init_params()).shape == (3, 32)


def test_layout_names_shapes_and_slices_tile_theta_in_order():
    learner = Learner()
    names = [name for name, _ in learner.layout]
    assert names[:4] == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"]
    assert names[-2:] == ["fc.weight", "fc.bias"] and len(names) == 18
    assert dict(learner.layout)["conv1.weight"] == (32, 1, 3, 3)
    assert dict(learner.layout)["fc.weight"] == (5, 32)
    # the layout is the order of an nn.Module's named_parameters
    ref = [(n, tuple(p.shape)) for n, p in learner.to_module(learner.init_params()).named_parameters()]
    assert ref == learner.layout
    end = 0
    for (name, shape), (sname, s) in zip(learner.layout, learner.slices().items()):
        assert sname == name and s.start == end and s.stop - s.start == torch.Size(shape).numel()
        end = s.stop
    assert end == learner.n_params


def test_unflatten_gives_views_that_keep_the_graph():
    learner = Learner()
    theta = learner.init_params().requires_grad_(True)
    parts = learner.unflatten(theta)
    s = learner.slices()["bn2.weight"]
    assert parts["bn2.weight"].data_ptr() == theta[s].data_ptr()        # a view, not a copy
    parts["bn2.weight"].sum().backward()
    expected = torch.zeros(learner.n_params)
    expected[s] = 1.0
    assert torch.equal(theta.grad, expected)


def test_init_params_is_deterministic_and_standard():
    learner = Learner(5, 3, 84)
    a = learner.init_params(torch.Generator().manual_seed(1))
    b = learner.init_params(torch.Generator().manual_seed(1))
    c = learner.init_params(torch.Generator().manual_seed(2))
    assert a.dtype == torch.float32 and a.shape == (32_901,)
    assert torch.equal(a, b) and not torch.equal(a, c)
    p = learner.unflatten(a)
    assert torch.equal(p["bn3.weight"], torch.ones(32)) and torch.equal(p["bn3.bias"], torch.zeros(32))
    bound = 1 / (32 * 9) ** 0.5          # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), like nn.Conv2d
    assert p["conv2.weight"].abs().max() <= bound and p["conv2.weight"].abs().max() > 0.9 * bound
    assert p["fc.weight"].abs().max() <= 1 / 800 ** 0.5


def test_forward_and_gradient_equal_pytorch_layers_with_the_same_weights(path):
    learner = Learner(5, 1, 28, path=path)
    theta = learner.init_params(torch.Generator().manual_seed(0))
    net = reference_net(5, 1, 32)
    nn.utils.vector_to_parameters(theta.clone(), net.parameters())
    x, y = images(10), torch.arange(5).repeat(2)
    theta = theta.requires_grad_(True)
    F.cross_entropy(learner(x, theta), y).backward()
    F.cross_entropy(net(x), y).backward()
    torch.testing.assert_close(learner(x, theta), net(x))
    torch.testing.assert_close(theta.grad, torch.cat([p.grad.flatten() for p in net.parameters()]))


def test_features_are_the_input_of_the_linear_layer():
    learner = Learner(5, 1, 28)
    theta = learner.init_params(torch.Generator().manual_seed(0))
    p = learner.unflatten(theta)
    x = images(6)
    torch.testing.assert_close(learner(x, theta), learner.features(x, theta) @ p["fc.weight"].T + p["fc.bias"])


def test_to_module_copies_the_weights():
    learner = Learner()
    theta = learner.init_params(torch.Generator().manual_seed(0))
    before = theta.clone()
    net = learner.to_module(theta)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert torch.equal(theta, before)


def test_one_84x84x3_forward_matches_pytorch_layers_and_to_module(path):
    learner = Learner(5, 3, 84, path=path)
    theta = learner.init_params(torch.Generator().manual_seed(0))
    net = reference_net(5, 3, 800)          # plain NCHW layers: checks the flatten order too
    nn.utils.vector_to_parameters(theta.clone(), net.parameters())
    x = images(4, 3, 84)
    torch.testing.assert_close(learner(x, theta), net(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(learner(x, theta), learner.to_module(theta)(x), rtol=1e-4, atol=1e-5)


def test_running_averages_follow_pytorch_momentum_convention(path):
    learner = Learner(bn_momentum=0.9, path=path)
    theta = learner.init_params(torch.Generator().manual_seed(0))
    net = reference_net(5, 1, 32, momentum=0.9)
    nn.utils.vector_to_parameters(theta.clone(), net.parameters())
    stats = learner.new_bn_stats()
    assert isinstance(stats, BNStats) and stats.updates == 0
    assert torch.equal(stats.mean[0], torch.zeros(32)) and torch.equal(stats.var[3], torch.ones(32))
    for seed in range(3):
        x = images(8, seed=seed)
        with torch.no_grad():
            learner(x, theta, bn="batch", stats=stats)
            net.train()(x)
    assert stats.updates == 3
    bns = [m for m in net if isinstance(m, nn.BatchNorm2d)]
    for k, bn in enumerate(bns):
        torch.testing.assert_close(stats.mean[k], bn.running_mean)
        torch.testing.assert_close(stats.var[k], bn.running_var)
    # bn="running" is PyTorch's eval mode with those averages
    x = images(5, seed=9)
    torch.testing.assert_close(learner(x, theta, bn="running", stats=stats), net.eval()(x))


def test_batch_mode_without_stats_changes_nothing_and_running_mode_changes_nothing(path):
    learner = Learner(path=path)
    theta = learner.init_params()
    stats = learner.new_bn_stats()
    learner(images(5), theta, bn="batch")                     # no stats given: nothing to update
    learner(images(5), theta, bn="running", stats=stats)      # reading the averages does not move them
    assert stats.updates == 0
    assert torch.equal(stats.mean[1], torch.zeros(32)) and torch.equal(stats.var[1], torch.ones(32))


def test_the_running_stat_updates_do_not_enter_the_graph(path):
    learner = Learner(path=path)
    theta = learner.init_params().requires_grad_(True)
    stats = learner.new_bn_stats()
    learner(images(5), theta, bn="batch", stats=stats).sum().backward()
    assert not any(t.requires_grad for t in stats.mean + stats.var)


def test_learner_errors_are_clear():
    learner = Learner()
    theta = learner.init_params()
    with pytest.raises(ValueError, match=r"images \[b, 1, 28, 28\]"):
        learner(images(2, 3, 28), theta)
    with pytest.raises(ValueError, match="28485 parameters"):
        learner(images(2), theta[:-1])
    with pytest.raises(ValueError, match="pass stats="):
        learner(images(2), theta, bn="running")
    with pytest.raises(ValueError, match="'batch' or 'running'"):
        learner(images(2), theta, bn="eval")
    with pytest.raises(ValueError, match="too small"):
        Learner(image_size=8)
    with pytest.raises(ValueError, match="n_way"):
        Learner(n_way=0)


@pytest.mark.parametrize("shape", [(3, 4, 28, 28), (2, 3, 21, 21), (5, 32, 3, 3), (2, 2, 7, 7)])
def test_fast_relu_max_pool_is_exactly_relu_then_max_pool(shape):
    from metalstm.learner import relu_max_pool
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = relu_max_pool(ours), F.max_pool2d(F.relu(theirs), 2)
    assert torch.equal(y_ours, y_theirs)
    upstream = torch.randn_like(y_theirs)
    y_ours.backward(upstream)
    y_theirs.backward(upstream)
    assert torch.equal(ours.grad, theirs.grad)
    with torch.no_grad():
        assert torch.equal(relu_max_pool(x), y_theirs)
