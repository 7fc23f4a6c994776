"""A configuration's model: the learner f(x; theta) and its update rule, built fresh from the
seed or loaded from a trained checkpoint (paper notes 2, 3, 11).

    learner, rule = build_model(cfg)             # c_0 drawn from cfg.seed, the same for every rung
    learner, rule, cfg, metrics = load_trained("data/checkpoints/glyphs-5shot.pt")

The rule is cfg.rule: the paper's `MetaLearner` for "lstm", another rung of the
ladder (`metalstm.rules.make_rule`) otherwise. The learner is cfg.learner: the built-in
`Learner` for "conv4", or the nn.Module that the factory "package.module:function" returns for
cfg, wrapped in a `metalstm.module_learner.ModuleLearner` (docs/own-network.md). cfg.path picks the
implementation (reference, fused, native), which gives the same numbers to rounding.
"""
from __future__ import annotations

import torch
from torch import nn

from metalstm.checkpoint import CheckpointError, load_checkpoint
from metalstm.config import BUILTIN_LEARNER, Config
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner
from metalstm.module_learner import ModuleLearner, load_factory
from metalstm.rules import make_rule


def build_learner(cfg: Config) -> Learner | ModuleLearner:
    """The learner f(x; theta) that cfg.learner names: `Learner` for the built-in "conv4", else
    factory(cfg) (an nn.Module mapping [b, in_channels, image_size, image_size] to [b, n_way])
    wrapped in a `ModuleLearner`. A factory that cannot be imported, fails, or returns anything
    else is one ValueError."""
    if cfg.learner == BUILTIN_LEARNER:
        return Learner(n_way=cfg.n_way, in_channels=cfg.in_channels, image_size=cfg.image_size,
                       bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum, path=cfg.path)
    factory = load_factory(cfg.learner)
    try:                                      # the factory's own init draws from cfg.seed, and the
        with torch.random.fork_rng(devices=[]):   # caller's global random state is left as it was
            torch.manual_seed(cfg.seed)
            module = factory(cfg)
    except Exception as exc:                  # the factory is the user's code: say whose error it is
        raise ValueError(f"learner {cfg.learner!r} failed: {type(exc).__name__}: "
                         f"{(str(exc).strip().splitlines() or [''])[0]}") from exc
    if not isinstance(module, nn.Module):
        raise ValueError(f"learner {cfg.learner!r} returned {type(module).__name__}, not a torch.nn.Module")
    return ModuleLearner(module, n_way=cfg.n_way, in_channels=cfg.in_channels, image_size=cfg.image_size)


def build_model(cfg: Config, device: str | torch.device = "cpu") -> tuple[Learner | ModuleLearner, nn.Module]:
    """The learner f(x; theta) (cfg.learner, `build_learner`) and the update rule cfg.rule (the
    paper's MetaLearner for "lstm"), with c_0 = a theta drawn from cfg.seed: the same c_0 for
    every rung of the ladder (and, on the built-in architecture, for either learner)."""
    learner = build_learner(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    theta0 = learner.init_params(generator=g)
    if cfg.rule != "lstm":
        return learner, make_rule(cfg.rule, learner, theta0, cfg.rule_lr, cfg.steps).to(device)
    meta = MetaLearner(learner.n_params, hidden=cfg.hidden, p=cfg.p, forget_bias=cfg.forget_bias,
                       input_bias=cfg.input_bias, theta0=theta0, generator=g, path=cfg.path)
    return learner, meta.to(device)


def load_trained(path, device: str = "cpu",
                 expect: Config | None = None) -> tuple[Learner | ModuleLearner, nn.Module, Config, dict]:
    """A trained rule from a checkpoint: (learner, rule on `device`, its config, its metrics).

    expect: the configuration it is to be used with; a checkpoint of another model (rule, N,
    image shape, hidden size, learner network: `Config.same_model`) is refused, and expect.path
    is taken. A file that holds no such rule is one CheckpointError; so is a checkpoint whose
    learner factory ("package.module:function", recorded in its configuration) cannot be
    imported here or does not build the network it was trained with."""
    state, cfg_dict, metrics = load_checkpoint(path)
    try:
        cfg = Config.from_dict(cfg_dict)
    except (TypeError, ValueError) as exc:        # a field of another version, a wrong type, not a dict
        raise CheckpointError(f"{path} holds no usable configuration: {exc}") from None
    if expect is not None and not expect.same_model(cfg):
        raise CheckpointError(
            f"{path} holds a {cfg.name!r} {cfg.rule} model ({cfg.n_way}-way, {cfg.in_channels}x"
            f"{cfg.image_size}x{cfg.image_size}, hidden {cfg.hidden}, learner {cfg.learner}), which does "
            f"not fit configuration {expect.name!r} ({expect.rule}, {expect.n_way}-way, {expect.in_channels}"
            f"x{expect.image_size}x{expect.image_size}, hidden {expect.hidden}, learner {expect.learner})")
    if expect is not None:                     # the path (reference, fused, native) is the caller's choice
        cfg = cfg.replace(path=expect.path)
    try:                                       # built here, then moved: a device's error is its own
        learner, rule = build_model(cfg)
    except (TypeError, ValueError, RuntimeError) as exc:   # values no learner or rule is built from
        raise CheckpointError(f"{path} holds no usable configuration: {exc}") from None
    rule = rule.to(device)
    try:
        rule.load_state_dict(state["metalearner"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not hold a {cfg.rule} rule of this shape: {exc}") from None
    return learner, rule, cfg, metrics
