"""Bring your own network (metalstm.module_learner, Config.learner): any nn.Module as the learner.

On the built-in architecture written as ordinary layers (metalstm.networks.conv4) the wrapper
gives Learner's numbers: logits, gradients, batch-norm averages, an episode's query accuracy,
meta-training updates. Other networks (3 blocks, GroupNorm or BatchNorm) meta-train, evaluate
and round-trip through checkpoints, in Python and on the command line via a configuration file.
"""
import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import metalstm.module_learner
import metalstm.networks
from metalstm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalstm.config import Config, get_config
from metalstm.episodes import sampler_for
from metalstm.learner import Learner, LearnerModule
from metalstm.metalearner import run_episode
from metalstm.model import build_learner, build_model, load_trained
from metalstm.module_learner import ModuleBNStats, ModuleLearner
from metalstm.rules import layer_index
from metalstm.train import train
from testkit import random_episode

ROOT = Path(__file__).resolve().parents[2]
CONV4, GROUPNORM, BATCHNORM = ("metalstm.networks:conv4", "metalstm.networks:conv3_groupnorm",
                               "metalstm.networks:conv3_batchnorm")


def images(n, c=1, size=28, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def pair(path="fused", **kw):
    """(Learner, the wrapper around the same architecture as nn layers)."""
    learner = Learner(path=path, **kw)
    return learner, ModuleLearner(LearnerModule(learner), learner.n_way, learner.in_channels, learner.image_size)


# -- the same numbers as Learner on the built-in architecture ------------------------------------
@pytest.mark.parametrize("shape", [dict(n_way=5, in_channels=1, image_size=28, bn_momentum=0.9),
                                   dict(n_way=3, in_channels=3, image_size=32, bn_momentum=0.95)])
def test_layout_init_logits_and_gradients_equal_learners(shape, path):
    learner, wrapped = pair(path, **shape)
    assert wrapped.n_params == learner.n_params and wrapped.slices() == learner.slices()
    assert [s for _, s in wrapped.layout] == [s for _, s in learner.layout]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    theta = learner.init_params(g1)
    assert torch.equal(wrapped.init_params(g2), theta)               # same draws from the generator
    assert torch.equal(g1.get_state(), g2.get_state())               # and the generator left alike
    theta = (theta + 0.05 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(4))).requires_grad_()
    x = images(10, shape["in_channels"], shape["image_size"])
    y = torch.arange(10) % shape["n_way"]
    outs = []
    for f in (learner, wrapped):
        stats = f.new_bn_stats()
        plain = f(x, theta)                                          # batch statistics, nothing kept
        support = f(x, theta, bn="batch", stats=stats)               # batch statistics, averages kept
        f(x[:4], theta, bn="batch", stats=stats)
        query = f(x[4:], theta, bn="running", stats=stats)           # the meta-test query pass
        loss = nn.functional.cross_entropy(plain, y) + nn.functional.cross_entropy(query, y[4:])
        (grad,) = torch.autograd.grad(loss, theta)
        outs.append((plain, support, query, grad, stats))
    (p1, s1, q1, g1_, st1), (p2, s2, q2, g2_, st2) = outs
    for a, b in ((p1, p2), (s1, s2), (q1, q2), (g1_, g2_)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(st1.mean + st1.var, st2.mean + st2.var):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert st1.updates == st2.updates == 2 and [int(c) for c in st2.counts] == [2] * 4


def test_built_model_has_learners_c0_and_a_whole_test_episode_gives_the_same_accuracy(path):
    cfg = get_config("smoke", path=path)
    learner, rule = build_model(cfg)
    wrapped, rule2 = build_model(cfg.replace(learner=CONV4))
    assert isinstance(wrapped, ModuleLearner) and isinstance(learner, Learner)
    assert torch.equal(rule.c0, rule2.c0)                            # c_0 drawn alike from cfg.seed
    for a, b in zip(rule.state_dict().values(), rule2.state_dict().values()):
        assert torch.equal(a, b)
    sampler = sampler_for(cfg, "val")
    for i in range(3):
        ep = sampler[i]
        res = [run_episode(f, r, ep, cfg.steps, cfg.batch_size, mode="test",
                           generator=torch.Generator().manual_seed(i)) for f, r in ((learner, rule), (wrapped, rule2))]
        torch.testing.assert_close(res[1].query_logits, res[0].query_logits, rtol=1e-5, atol=1e-5)
        assert res[1].query_acc == res[0].query_acc
        assert res[1].support_losses == pytest.approx(res[0].support_losses, rel=1e-5)


@pytest.mark.slow
def test_three_meta_training_updates_give_the_same_meta_learner():
    cfg = get_config("smoke")
    sampler = sampler_for(cfg, "train")
    rules = []
    for name in ("conv4", CONV4):
        learner, rule = build_model(cfg.replace(learner=name))
        opt = torch.optim.Adam(rule.parameters(), lr=cfg.lr)
        for i in range(3):
            opt.zero_grad()
            res = run_episode(learner, rule, sampler[i], cfg.steps, cfg.batch_size, mode="train",
                              generator=torch.Generator().manual_seed(i))
            res.query_loss.backward()
            torch.nn.utils.clip_grad_norm_(list(rule.parameters()), cfg.clip)
            opt.step()
        rules.append(rule.state_dict())
    assert rules[0].keys() == rules[1].keys()
    for key in rules[0]:
        torch.testing.assert_close(rules[1][key], rules[0][key], rtol=1e-4, atol=1e-6)
    assert not torch.equal(rules[0]["c0"], build_model(cfg)[1].c0)    # the updates did move c_0


def test_the_ladders_per_layer_rungs_see_the_same_layers():
    learner, wrapped = pair()
    index, names = layer_index(learner)
    index2, names2 = layer_index(wrapped)
    assert torch.equal(index, index2) and len(names2) == len(names) == 5
    gn = build_learner(get_config("smoke", learner=GROUPNORM))
    index3, names3 = layer_index(gn)                                 # conv + GroupNorm as one layer
    assert names3 == ["0", "4", "8", "14"] and index3.bincount().tolist() == [320 + 64, 9248 + 64, 9248 + 64, 165]
    _, rule = build_model(get_config("smoke", learner=GROUPNORM, rule="schedule"))
    assert rule.alpha.shape == (3, 4)


# -- the batch-norm protocol on a module's own BatchNorm layers -----------------------------------
def test_batchnorm_protocol_keeps_statistics_per_episode_and_never_in_the_module():
    cfg = get_config("smoke", learner=BATCHNORM)
    net = metalstm.networks.conv3_batchnorm(cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    learner = ModuleLearner(net, 5, 1, 28)
    assert learner.norm_layers == ["1", "5", "9"] and not net.training     # the caller's module: as it was
    theta, x = learner.init_params(torch.Generator().manual_seed(0)), images(8)
    stats = learner.new_bn_stats()
    assert isinstance(stats, ModuleBNStats) and [m.sum().item() for m in stats.mean] == [0.0] * 3
    learner(x, theta)                                                    # no stats: nothing is kept anywhere
    assert all(float(v.sum()) == 0 for v in stats.mean) and stats.updates == 0
    learner(x, theta, bn="batch", stats=stats)
    learner(x.flip(0), theta, bn="batch", stats=stats)
    assert stats.updates == 2 and [int(c) for c in stats.counts] == [2, 2, 2]
    # the first layer's average is the conv output's batch mean, mixed in with momentum m twice
    conv = nn.functional.conv2d(x, *[p.view(s) for p, s in zip(theta[:320].split([288, 32]), [(32, 1, 3, 3), (32,)])],
                                padding=1)
    m = cfg.bn_momentum
    torch.testing.assert_close(stats.mean[0], (m * (1 - m) + m) * conv.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    for k, v in net.state_dict().items():                               # the module's buffers untouched
        assert torch.equal(v, before[k]), k
    # running statistics: each query image's logits depend on it alone
    one = learner(x[:1], theta, bn="running", stats=stats)
    torch.testing.assert_close(learner(x, theta, bn="running", stats=stats)[:1], one, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(learner(x, theta)[:1], learner(x[:1].repeat(2, 1, 1, 1), theta)[:1])
    with pytest.raises(ValueError, match="pass stats="):
        learner(x, theta, bn="running")
    with pytest.raises(ValueError, match="3 norm layers"):
        learner(x, theta, bn="running", stats=Learner().new_bn_stats())


def test_wrong_networks_and_factories_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"logits \[b, 5\]; for b = 2 it gives \(2, 7\)"):
        ModuleLearner(nn.Sequential(nn.Flatten(), nn.Linear(784, 7)), 5, 1, 28)
    with pytest.raises(ValueError, match="fails on images"):
        ModuleLearner(nn.Sequential(nn.Flatten(), nn.Linear(100, 5)), 5, 1, 28)
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        ModuleLearner(lambda x: x, 5, 1, 28)
    with pytest.raises(ValueError, match="learner must be 'conv4'"):
        get_config("smoke", learner="not a factory")
    with pytest.raises(ValueError, match="cannot import no_such_package"):
        build_learner(get_config("smoke", learner="no_such_package.nets:net"))
    with pytest.raises(ValueError, match="has no function nothing"):
        build_learner(get_config("smoke", learner="metalstm.networks:nothing"))
    (tmp_path / "bad_nets.py").write_text("def text(cfg):\n    return 'a net'\n"
                                          "def fails(cfg):\n    raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="returned str, not a torch.nn.Module"):
        build_learner(get_config("smoke", learner="bad_nets:text"))
    with pytest.raises(ValueError, match="'bad_nets:fails' failed: RuntimeError: no GPU here"):
        build_learner(get_config("smoke", learner="bad_nets:fails"))


def test_building_a_factorys_network_is_seeded_and_leaves_the_callers_random_state():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_learner(get_config("smoke", learner=GROUPNORM))
    assert torch.equal(torch.get_rng_state(), state)
    b = build_learner(get_config("smoke", learner=GROUPNORM))
    assert torch.equal(a.flatten(), b.flatten())


def test_lazy_layers_take_their_shapes_and_shared_weights_count_once():
    lazy = ModuleLearner(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(5)), 5, 1, 28)
    assert lazy.layout[-2] == ("2.weight", (5, 4 * 26 * 26))
    shared = nn.Linear(8, 8)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), shared, nn.ReLU(), shared, nn.Linear(8, 3))
    tied = ModuleLearner(net, 3, 1, 8)
    assert tied.n_params == 64 * 8 + 8 + 72 + 27
    theta = tied.init_params(torch.Generator().manual_seed(0))
    torch.testing.assert_close(tied(images(4, size=8), theta), tied.to_module(theta).train()(images(4, size=8)))


def test_doctest():
    assert doctest.testmod(metalstm.module_learner).failed == 0


# -- meta-training, evaluation and checkpoints of another network --------------------------------
@pytest.mark.slow
def test_groupnorm_net_meta_trains_evaluates_adapts_and_round_trips(tmp_path):
    from metalstm.adapt import load
    from metalstm.evaluate import evaluate_rule
    cfg = get_config("smoke", learner=GROUPNORM, episodes=3, val_every=3, val_episodes=2, test_episodes=4)
    res = train(cfg, tmp_path, progress=False)
    state, stored, _ = load_checkpoint(tmp_path / "best.pt")
    assert stored["learner"] == GROUPNORM
    learner, rule, loaded, _ = load_trained(tmp_path / "best.pt", expect=cfg)
    assert isinstance(learner, ModuleLearner) and loaded == cfg and learner.n_params == rule.c0.numel() == 19_173
    for k, v in state["metalearner"].items():
        assert torch.equal(rule.state_dict()[k], v)
    assert res.best_episode in (0, 3)
    accs = evaluate_rule(learner, rule, sampler_for(cfg, "test"), cfg.test_episodes, cfg)
    assert len(accs) == 4 and all(0.0 <= a <= 1.0 for a in accs)
    ep = random_episode(k_shot=1, n_query=2)
    fitted = load(tmp_path / "best.pt").adapt(ep.support_x, ep.support_y)
    assert fitted.predict(ep.query_x).shape == (10,)
    with pytest.raises(CheckpointError, match="learner metalstm.networks:conv3_groupnorm"):
        load_trained(tmp_path / "best.pt", expect=get_config("smoke"))      # another network: refused
    # a checkpoint whose network cannot be built here is one CheckpointError
    save_checkpoint(tmp_path / "gone.pt", {"metalearner": state["metalearner"]},
                    {**stored, "learner": "gone_package.nets:net"}, {})
    with pytest.raises(CheckpointError, match="cannot import gone_package"):
        load_trained(tmp_path / "gone.pt")


@pytest.mark.slow
def test_cli_trains_and_evaluates_a_network_named_in_a_configuration_file(tmp_path):
    (tmp_path / "own_nets.py").write_text(
        "from torch import nn\n\n"
        "def tiny(cfg):\n"
        "    return nn.Sequential(nn.Conv2d(cfg.in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "                         nn.MaxPool2d(4), nn.Flatten(), nn.Linear(16 * 7 * 7, cfg.n_way))\n")
    (tmp_path / "tiny.toml").write_text('base = "smoke"\nlearner = "own_nets:tiny"\nepisodes = 3\n'
                                        'val_every = 3\nval_episodes = 2\n')
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                                       capture_output=True, text=True, timeout=600)
    done = run("metalstm.train", "--config", "tiny.toml", "--out", "run", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "run" / "best.pt")[1]["learner"] == "own_nets:tiny"
    done = run("metalstm.evaluate", "--checkpoint", "run/best.pt", "--episodes", "4", "--threads", "1",
               "--json", "eval.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["config"]["learner"] == "own_nets:tiny"
    assert "Meta-Learner LSTM" in done.stdout
