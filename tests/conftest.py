"""Test-wide settings: one torch thread.

The tests run many tiny tensor operations, where handing work between threads
costs more than the work (20-60x slower on a busy 2-core machine), and one
thread makes every number independent of the machine's core count.
"""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["fast", "reference"])
def path(request) -> str:
    """The two paths through the same model (Config.fast): "fast", the fused meta-learner step
    and channels-last pooling (the default); "reference", `MetaLearner.reference_step` and
    plain F.max_pool2d(F.relu(x), 2). A test that takes `path` runs over both."""
    return request.param
