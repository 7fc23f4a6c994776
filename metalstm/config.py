"""Named configurations: smoke, glyphs-1shot, glyphs-5shot, paper-1shot, paper-5shot.

The paper configurations follow paper notes 5 with the *reference code's* numbers
(T = 8 steps of batch 25 for 5-shot, T = 12 steps of batch 5 for 1-shot,
75,000 / 50,000 episodes, validation every 1,000 episodes on 100); the
paper's text gives fewer steps in places, which is `steps=` away:

    get_config("paper-5shot", steps=5)

The glyph configurations keep every rule of the paper (Adam 1e-3, clip 0.25,
hidden 20, gate init, batch-norm protocol) and only shrink the number of
episodes so that a 2-core CPU trains them in about half an hour.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field


# the counts that `Config.from_dict` checks in a stored configuration
COUNTS = ("image_size", "in_channels", "n_way", "k_shot", "n_query", "steps", "batch_size", "episodes",
          "val_every", "val_episodes", "test_episodes", "meta_batch", "hidden")


# the ladder of update rules (paper notes 11), in order; metalstm.rules builds each of them
RUNGS = ("sgd", "init", "meta-sgd", "schedule", "magnitude", "lstm")

# the three implementations of one model (Config.path, `--path`), the same numbers to rounding:
#   "reference"  MetaLearner.reference_step and plain F.max_pool2d(F.relu(x), 2): the readable one
#   "fused"      metalstm.fast.fused (a hand-written backward) and channels-last pooling: the default
#   "native"     "fused" with the meta-learner step as the C loops of metalstm/fast/native.c
PATHS = ("reference", "fused", "native")


# the learner network (Config.learner): the built-in 4-block conv net (metalstm.learner.Learner), or
# "package.module:function", a factory that returns an nn.Module given the configuration
# (metalstm.module_learner, docs/own-network.md)
BUILTIN_LEARNER = "conv4"


def check_learner(learner) -> None:
    """One ValueError unless learner is BUILTIN_LEARNER or of the form "package.module:function"
    (checked by its form only: the factory is imported when the model is built)."""
    if learner != BUILTIN_LEARNER and not (isinstance(learner, str) and re.fullmatch(
            r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", learner)):
        raise ValueError(f"learner must be {BUILTIN_LEARNER!r} (the built-in network) or an importable "
                         f"factory 'package.module:function', got {learner!r}")


def check_path(path) -> None:
    """One ValueError unless path is one of PATHS."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")


@dataclass(frozen=True)
class Config:
    name: str
    # data (paper notes 1)
    dataset: str = "glyphs"            # glyphs | omniglot | mini-imagenet | folder
    data_root: str | None = None       # where a real data set lives (not used by glyphs)
    val_alphabets: tuple[str, ...] | None = None   # Omniglot: meta-val alphabets (None: VAL_ALPHABETS)
    image_size: int = 28
    in_channels: int = 1
    n_way: int = 5
    k_shot: int = 5
    n_query: int = 15
    # inner loop (paper notes 5)
    steps: int = 8                     # T
    batch_size: int = 25               # B
    # meta-training (paper notes 5)
    episodes: int = 10_000
    val_every: int = 500
    val_episodes: int = 100
    test_episodes: int = 600
    lr: float = 1e-3
    clip: float = 0.25
    meta_batch: int = 1                # episodes per meta-update and process (1 in the paper)
    # the update rule (paper notes 11): sgd | init | meta-sgd | schedule | lstm (the paper's)
    rule: str = "lstm"
    rule_lr: float = 0.1               # the fixed (sgd, init) or initial (meta-sgd, schedule) step size
    # meta-learner (paper notes 4, 6)
    hidden: int = 20
    p: float = 10.0
    forget_bias: tuple[float, float] = (4.0, 5.0)
    input_bias: tuple[float, float] = (-5.0, -4.0)
    # which implementation runs the model (PATHS above, `--path`): how the numbers are computed, not
    # which model, so not compared (a run may resume on another path; equal to rounding). A checkpoint
    # written before the field existed loads as "fused"; one with the older `fast` field as
    # fast=True -> "fused", False -> "reference"
    path: str = field(default="fused", compare=False)
    # the learner network (BUILTIN_LEARNER above, or "package.module:function": docs/own-network.md)
    learner: str = BUILTIN_LEARNER
    # learner batch norm (paper notes 7)
    bn_eps: float = 1e-3
    bn_momentum: float = 0.95
    seed: int = 0
    description: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        """A JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """The configuration a checkpoint or a results file stored; one ValueError saying which
        field is wrong and what it should be (a field of a newer version, a rule not on the
        ladder, a count that is not a whole number >= 1)."""
        if not isinstance(d, dict):
            raise ValueError(f"the stored configuration is {type(d).__name__}, not an object of fields")
        if "fast" in d and "path" not in d:           # written before `path` replaced `fast`
            fast = d["fast"]
            if not isinstance(fast, bool):
                raise ValueError(f"configuration field fast must be true or false, got {fast!r}")
            d = {k: v for k, v in d.items() if k != "fast"}
            d["path"] = "fused" if fast else "reference"
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ValueError(f"unknown configuration fields: {', '.join(map(str, unknown))} (written by "
                             f"another version of metalstm?); known: {', '.join(sorted(known))}")
        if "name" not in d:
            raise ValueError("the stored configuration has no name")
        for name in COUNTS:
            value = d.get(name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"configuration field {name} must be a whole number >= 1, got {value!r}")
        if d.get("rule", "lstm") not in RUNGS:
            raise ValueError(f"configuration field rule is {d['rule']!r}; the ladder is {', '.join(RUNGS)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def __post_init__(self) -> None:
        check_path(self.path)
        check_learner(self.learner)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def same_model(self, other: "Config") -> bool:
        """True when a checkpoint of `other` fits a model built from this config."""
        keys = ("image_size", "in_channels", "n_way", "hidden", "learner")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


CONFIGS: dict[str, Config] = {c.name: c for c in [
    Config("smoke", k_shot=1, n_query=5, steps=3, batch_size=5, episodes=6, val_every=3,
           val_episodes=4, test_episodes=20, bn_momentum=0.9,
           description="seconds; for tests"),
    Config("glyphs-1shot", k_shot=1, steps=12, batch_size=5, episodes=5_000, val_every=500,
           bn_momentum=0.9, description="5-way 1-shot glyphs, the course's CPU setting"),
    Config("glyphs-5shot", k_shot=5, steps=8, batch_size=25, episodes=5_000, val_every=500,
           bn_momentum=0.95, description="5-way 5-shot glyphs, the course's CPU setting"),
    Config("paper-1shot", dataset="mini-imagenet", data_root="data/mini-imagenet", image_size=84,
           in_channels=3, k_shot=1, steps=12, batch_size=5, episodes=75_000, val_every=1_000,
           bn_momentum=0.9, description="paper notes 5, Mini-ImageNet 5-way 1-shot (GPU)"),
    Config("paper-5shot", dataset="mini-imagenet", data_root="data/mini-imagenet", image_size=84,
           in_channels=3, k_shot=5, steps=8, batch_size=25, episodes=50_000, val_every=1_000,
           bn_momentum=0.95, description="paper notes 5, Mini-ImageNet 5-way 5-shot (GPU)"),
]}


def get_config(name: str, **overrides) -> Config:
    """The named configuration, with fields replaced by `overrides`."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]
    bad = sorted(set(overrides) - {f.name for f in dataclasses.fields(Config)})
    if bad:
        raise ValueError(f"unknown configuration fields: {', '.join(bad)}")
    return cfg.replace(**overrides) if overrides else cfg
