"""A configuration's model: the learner f(x; theta) and its update rule, built fresh from the
seed or loaded from a trained checkpoint (paper notes 2, 3, 11).

    learner, rule = build_model(cfg)             # c_0 drawn from cfg.seed, the same for every rung
    learner, rule, cfg, metrics = load_trained("data/checkpoints/glyphs-5shot.pt")

The rule is cfg.rule: the paper's `MetaLearner` for "lstm", another rung of the
ladder (`metalstm.rules.make_rule`) otherwise. cfg.path picks the
implementation (reference, fused, native), which gives the same numbers to rounding.
"""
from __future__ import annotations

import torch
from torch import nn

from metalstm.checkpoint import CheckpointError, load_checkpoint
from metalstm.config import Config
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner
from metalstm.rules import make_rule


def build_model(cfg: Config, device: str | torch.device = "cpu") -> tuple[Learner, nn.Module]:
    """The learner f(x; theta) and the update rule cfg.rule (the paper's MetaLearner for "lstm"),
    with c_0 = a theta drawn from cfg.seed: the same c_0 for every rung of the ladder."""
    learner = Learner(n_way=cfg.n_way, in_channels=cfg.in_channels, image_size=cfg.image_size,
                      bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum, path=cfg.path)
    g = torch.Generator().manual_seed(cfg.seed)
    theta0 = learner.init_params(generator=g)
    if cfg.rule != "lstm":
        return learner, make_rule(cfg.rule, learner, theta0, cfg.rule_lr, cfg.steps).to(device)
    meta = MetaLearner(learner.n_params, hidden=cfg.hidden, p=cfg.p, forget_bias=cfg.forget_bias,
                       input_bias=cfg.input_bias, theta0=theta0, generator=g, path=cfg.path)
    return learner, meta.to(device)


def load_trained(path, device: str = "cpu",
                 expect: Config | None = None) -> tuple[Learner, nn.Module, Config, dict]:
    """A trained rule from a checkpoint: (learner, rule on `device`, its config, its metrics).

    expect: the configuration it is to be used with; a checkpoint of another model (rule, N,
    image shape, hidden size: `Config.same_model`) is refused, and expect.path is taken. A file
    that holds no such rule is one CheckpointError."""
    state, cfg_dict, metrics = load_checkpoint(path)
    try:
        cfg = Config.from_dict(cfg_dict)
    except (TypeError, ValueError) as exc:        # a field of another version, a wrong type, not a dict
        raise CheckpointError(f"{path} holds no usable configuration: {exc}") from None
    if expect is not None and not expect.same_model(cfg):
        raise CheckpointError(
            f"{path} holds a {cfg.name!r} {cfg.rule} model ({cfg.n_way}-way, {cfg.in_channels}x"
            f"{cfg.image_size}x{cfg.image_size}, hidden {cfg.hidden}), which does not fit configuration "
            f"{expect.name!r} ({expect.rule}, {expect.n_way}-way, {expect.in_channels}x{expect.image_size}"
            f"x{expect.image_size}, hidden {expect.hidden})")
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
