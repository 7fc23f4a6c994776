"""Log/sign preprocessing of the meta-learner's inputs (paper notes 4; Andrychowicz et al. 2016).

Gradients and losses span many orders of magnitude, so each value x becomes two:

    x -> (log|x| / p, sign(x))   if |x| >= e^-p
    x -> (-1,         e^p * x)   otherwise

The first component carries the magnitude, the second the sign (or, for tiny
values, the value itself rescaled). With p = 10 both stay in a range an LSTM can
use. At |x| = e^-p the two branches agree: (-1, sign(x)).
(The authors' Lua code puts |x| = e^-p in the second branch; same values.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def preprocess(x: Tensor, p: float = 10.0) -> Tensor:
    """Preprocess every element of x (paper notes 4): output shape x.shape + (2,)."""
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}")
    threshold = math.exp(-p)
    big = x.abs() >= threshold
    # clamping keeps log finite for the elements of the other branch (no -inf, no NaN gradient)
    magnitude = torch.where(big, x.abs().clamp_min(threshold).log() / p, torch.full_like(x, -1.0))
    sign = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([magnitude, sign], dim=-1)
