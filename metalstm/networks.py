"""Example learner networks as plain `nn.Module`s, for `Config.learner` (docs/own-network.md).

Each function takes the configuration and returns a fresh module mapping images
[b, cfg.in_channels, cfg.image_size, cfg.image_size] to logits [b, cfg.n_way]; name it as
"metalstm.networks:<function>" and `metalstm.model.build_model` wraps it in a
`metalstm.module_learner.ModuleLearner`:

    cfg = get_config("smoke", learner="metalstm.networks:conv3_groupnorm")

conv4         the built-in architecture (`metalstm.learner.Learner`) as ordinary layers: through
              the wrapper it gives Learner's numbers (tests/package/test_module_learner.py).
conv3_groupnorm   3 x [conv 3x3 (32) -> GroupNorm(4 groups) -> ReLU -> max-pool 2] -> global
              average -> linear: no running statistics, so no batch-norm protocol to apply.
conv3_batchnorm   the same with BatchNorm, under the episode protocol (paper notes 7).
"""
from __future__ import annotations

from torch import nn

from metalstm.learner import Learner, LearnerModule

__all__ = ["conv4", "conv3_groupnorm", "conv3_batchnorm"]


def conv4(cfg) -> nn.Module:
    """Learner's 4 blocks of conv 3x3 (32) -> BN -> ReLU -> max-pool 2 -> linear, as nn layers
    with cfg's batch-norm eps, momentum and path (pooling), parameters in Learner's order
    (`LearnerModule`)."""
    return LearnerModule(Learner(cfg.n_way, cfg.in_channels, cfg.image_size, bn_eps=cfg.bn_eps,
                                 bn_momentum=cfg.bn_momentum, path=cfg.path))


def _conv3(cfg, norm) -> nn.Module:
    layers, c_in = [], cfg.in_channels
    for _ in range(3):
        layers += [nn.Conv2d(c_in, 32, 3, padding=1), norm(32), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = 32
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, cfg.n_way))


def conv3_groupnorm(cfg) -> nn.Module:
    """3 x [conv 3x3 (32) -> GroupNorm(4, 32) -> ReLU -> max-pool 2] -> global average -> linear."""
    return _conv3(cfg, lambda c: nn.GroupNorm(4, c))


def conv3_batchnorm(cfg) -> nn.Module:
    """3 x [conv 3x3 (32) -> BatchNorm (cfg's eps and momentum) -> ReLU -> max-pool 2] -> global
    average -> linear."""
    return _conv3(cfg, lambda c: nn.BatchNorm2d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum))
