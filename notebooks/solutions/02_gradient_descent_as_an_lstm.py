"""Solutions to the exercises of notebook 02_gradient_descent_as_an_lstm (checked by tests/notebooks/test_notebook02_agrees.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metalstm.metalearner import loss_and_grad


# Exercise 1 -------------------------------------------------------------------
def weight_decay_gates(lr: float, weight_decay: float) -> tuple[float, float]:
    """Constant gates (f, i) that make the cell update one SGD step on L + (wd/2) |theta|^2.

    theta - lr * (grad + wd * theta) = (1 - lr * wd) * theta + lr * (-grad),
    so f = 1 - lr * wd (a forget gate just below 1) and i = lr.
    """
    return 1.0 - lr * weight_decay, lr


# Exercise 2 -------------------------------------------------------------------
def count_params(n_way: int, in_channels: int, image_size: int, n_filters: int = 32, n_blocks: int = 4) -> int:
    """Parameters of the conv learner (paper notes 2), by formula.

    conv1: 9 * C * F weights + F biases; conv2..: 9 * F * F + F each; every block's batch norm
    2 * F; linear: n_way * F * s^2 + n_way with s = image_size // 2^n_blocks.
    Only the linear layer grows with the image size (through s^2): 84x84x3 with 20 ways has
    20 * 800 + 20 = 16,020 linear parameters and 44,916 in all.
    """
    side = image_size // 2 ** n_blocks
    conv = (9 * in_channels * n_filters + n_filters) + (n_blocks - 1) * (9 * n_filters * n_filters + n_filters)
    batch_norm = n_blocks * 2 * n_filters
    linear = n_way * n_filters * side * side + n_way
    return conv + batch_norm + linear


# Exercise 3 -------------------------------------------------------------------
def c0_meta_gradient(learner, episode, c0: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """d(query loss after `steps` SGD steps from c0) / d c0, with detached gradients (paper notes 5).

    What you notice: it equals the gradient of the query loss at theta_T with respect to theta_T.
    theta_T = c0 - lr * (g_1 + ... + g_T) and every g_t is detached (a constant for autograd),
    so d theta_T / d c0 is the identity. This is the "first-order" approximation; with f_t != 1
    or a learned i_t that depends on theta, the meta-gradient is no longer this simple.
    """
    c0 = c0.detach().requires_grad_(True)
    theta = c0
    for _ in range(steps):
        _, grad = loss_and_grad(learner, episode.support_x, episode.support_y, theta)
        theta = theta - lr * grad
    query_loss = F.cross_entropy(learner(episode.query_x, theta), episode.query_y)
    (meta_grad,) = torch.autograd.grad(query_loss, c0)
    return meta_grad
