"""The Meta-Learner LSTM the way the paper is usually ported to PyTorch, written plainly: the
straightforward implementation that `metalstm.tools.bench` times beside metalstm's ((b_naive),
(c_naive)).

As in the widely used port, the learner is an ordinary nn.Module, and two copies of it take
turns: one gets theta's values copied into its parameters to compute each support step's loss
and gradient, the other has its parameters replaced by slices of theta_T so that the query loss
reaches the meta-learner. Layer 1 is nn.LSTMCell with the n coordinates as its batch ([n, 4]
inputs, a ROW per coordinate), layer 2 the meta-LSTM cell as tensor operations; autograd
differentiates everything. Its names are the port's: WF, WI, bF, bI, cI are the glossary's
W_F, W_I, b_F, b_I and c_0 (docs/paper.md), with theta, f and i as [n, 1] columns.

It computes the same numbers as metalstm (tests/cli/test_bench.py), which the port does not
quite: the port divides the gradient by the batch size and feeds back the gates' logits.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from metalstm.episodes import Episode
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner, support_batches
from metalstm.preprocess import preprocess


class NaiveLearner(nn.Module):
    """The learner as nn layers, parameters in `Learner.layout` order."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        layers, c_in = [], learner.in_channels
        for _ in range(learner.n_blocks):
            layers += [nn.Conv2d(c_in, learner.n_filters, 3, padding=1),
                       nn.BatchNorm2d(learner.n_filters, eps=learner.bn_eps, momentum=learner.bn_momentum),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c_in = learner.n_filters
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(learner.n_features, learner.n_way)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))

    def copy_flat_params(self, theta):
        """theta's values into the parameters (no graph: only the gradient is wanted)."""
        start = 0
        for param in self.parameters():
            param.data.copy_(theta[start:start + param.numel()].view_as(param))
            start += param.numel()

    def transfer_params(self, other: "NaiveLearner", theta):
        """The other copy's batch-norm statistics, then theta's slices AS the parameters (in
        the graph: the query loss backpropagates through them to theta)."""
        self.load_state_dict(other.state_dict())
        start = 0
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                for name in ("weight", "bias"):
                    old = module._parameters[name]
                    module._parameters[name] = theta[start:start + old.numel()].view_as(old).clone()
                    start += old.numel()

    def reset_batch_stats(self):
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()


class NaiveMetaLearner(nn.Module):
    """Layer 1 as nn.LSTMCell over [n, 4] inputs, layer 2 as the meta-LSTM cell; theta a column."""

    def __init__(self, meta: MetaLearner) -> None:
        super().__init__()
        H, self.p, self.prev_gate = meta.hidden, meta.p, meta.prev_gate
        self.lstm = nn.LSTMCell(4, H)
        self.WF = nn.Parameter(torch.empty(H + 2, 1))
        self.WI = nn.Parameter(torch.empty(H + 2, 1))
        self.bF, self.bI = nn.Parameter(torch.empty(1)), nn.Parameter(torch.empty(1))
        self.cI = nn.Parameter(torch.empty(meta.n_params, 1))
        self.lstm.bias_hh.requires_grad_(False)         # metalstm's layer 1 has one bias
        self.to(meta.c0)
        with torch.no_grad():                           # metalstm's weights, in this layout
            self.lstm.weight_ih.copy_(meta.lstm_weight[:, :4])
            self.lstm.weight_hh.copy_(meta.lstm_weight[:, 4:])
            self.lstm.bias_ih.copy_(meta.lstm_bias)
            self.lstm.bias_hh.zero_()
            self.WF.copy_(meta.W_F[:, None])
            self.WI.copy_(meta.W_I[:, None])
            self.bF.copy_(meta.b_F.reshape(1))
            self.bI.copy_(meta.b_I.reshape(1))
            self.cI.copy_(meta.c0[:, None])

    def forward(self, loss, grad, hs):
        """One update: (theta_t [n, 1], hs = [(h, c) of layer 1, [f, i, theta_t]])."""
        n = grad.shape[0]
        x = torch.cat([preprocess(loss, self.p).reshape(1, 2).expand(n, 2), preprocess(grad, self.p)], 1)
        h, c = self.lstm(x, hs[0])
        f_prev, i_prev, theta = hs[1]
        a_f = torch.cat([h, theta, f_prev], 1) @ self.WF + self.bF
        a_i = torch.cat([h, theta, i_prev], 1) @ self.WI + self.bI
        f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
        theta = f * theta - i * grad[:, None]
        fed_back = [f, i] if self.prev_gate == "value" else [a_f, a_i]
        return theta, [(h, c), fed_back + [theta]]


def naive_episode(nets: tuple[NaiveLearner, NaiveLearner], meta: NaiveMetaLearner, ep: Episode,
                  steps: int, batch_size: int, mode: str = "train"):
    """run_episode(..., mode) the straightforward way: (query loss, query logits)."""
    w_grad, wo_grad = nets
    theta = meta.cI
    zeros = theta.new_zeros(theta.shape)
    hs = [None, [zeros, zeros, theta]]
    w_grad.train()
    if mode == "test":
        w_grad.reset_batch_stats()                      # a fresh episode's running averages
    for idx in support_batches(len(ep.support_y), batch_size, steps):
        idx = idx.to(ep.support_x.device)
        w_grad.copy_flat_params(theta.detach().squeeze(1))
        loss = F.cross_entropy(w_grad(ep.support_x[idx]), ep.support_y[idx])
        w_grad.zero_grad()
        loss.backward()
        grad = torch.cat([param.grad.view(-1) for param in w_grad.parameters()])
        with torch.no_grad() if mode == "test" else nullcontext():
            theta, hs = meta(loss.detach(), grad, hs)
    wo_grad.transfer_params(w_grad, theta.squeeze(1))
    wo_grad.train(mode == "train")
    with torch.no_grad() if mode == "test" else nullcontext():
        logits = wo_grad(ep.query_x)
        return F.cross_entropy(logits, ep.query_y), logits


def naive_models(learner: Learner, meta: MetaLearner) -> tuple[tuple[NaiveLearner, NaiveLearner], NaiveMetaLearner]:
    w_grad = NaiveLearner(learner).to(meta.c0)
    return (w_grad, copy.deepcopy(w_grad)), NaiveMetaLearner(meta)
