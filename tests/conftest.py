"""Test-wide settings: one torch thread, and the `path` fixture.

The tests run many tiny tensor operations, where handing work between threads
costs more than the work (20-60x slower on a busy 2-core machine), and one
thread makes every number independent of the machine's core count.
"""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["reference", "fused", "native"])
def path(request) -> str:
    """The three implementations of the same model (Config.path, metalstm.config.PATHS):
    "reference", `MetaLearner.reference_step` and plain F.max_pool2d(F.relu(x), 2); "fused", the
    hand-written backward of metalstm.fast.fused and channels-last pooling (the default);
    "native", the fused step as the C loops of metalstm/fast/native.c (skipped where they cannot
    be compiled). A test that takes `path` runs over all three."""
    if request.param == "native":
        from metalstm.fast import native
        if not native.available():
            pytest.skip("no C compiler: metalstm/fast/native.c cannot be built")
    return request.param
