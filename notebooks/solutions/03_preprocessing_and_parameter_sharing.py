"""Solutions to the exercises of notebook 03_preprocessing_and_parameter_sharing (checked by tests/notebooks/test_notebook03_agrees.py)."""
from __future__ import annotations

import math

import torch


# Exercise 1 -------------------------------------------------------------------
def unpreprocess(z: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Recover x from z = preprocess(x, p) (last dimension 2).

    One formula covers both branches: x = z[..., 1] * exp(p * z[..., 0]).
    Log branch: sign(x) * exp(log|x|) = x.  Small branch: e^p x * e^-p = x.
    """
    return z[..., 1] * torch.exp(p * z[..., 0])


# Exercise 2 -------------------------------------------------------------------
def count_meta_params(hidden: int) -> int:
    """Weights of the coordinate-wise meta-learner (paper notes 4), c_0 not included.

    Layer 1: (4 + H) * 4H weights + 4H biases. Layer 2: W_F and W_I of H + 2 each, b_F and b_I.
    Total 4H^2 + 22H + 6: 2,046 for H = 20. It reaches the 28x28 learner's 28,485 parameters
    at H = 82 (28,706).
    """
    return (4 + hidden) * 4 * hidden + 4 * hidden + 2 * (hidden + 2) + 2


# Exercise 3 -------------------------------------------------------------------
def effective_sgd(b_F: float, b_I: float) -> tuple[float, float]:
    """(learning rate, weight decay) of the meta-learner whose weights are all 0.

    Its gates are f = sigmoid(b_F), i = sigmoid(b_I), so one step is
    f * theta - i * grad = theta - i * (grad + ((1 - f) / i) * theta):
    SGD with lr = i on L + (wd/2) |theta|^2, wd = (1 - f) / i.
    For b_F = 4.5, b_I = -4.5: lr = 0.0110 and wd = 1 exactly (1 - sigmoid(b) = sigmoid(-b)).
    """
    f = 1 / (1 + math.exp(-b_F))
    i = 1 / (1 + math.exp(-b_I))
    return i, (1 - f) / i
