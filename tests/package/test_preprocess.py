"""Log/sign preprocessing of gradients and losses (paper notes 4)."""
import math

import pytest
import torch

from metalstm.preprocess import preprocess


def formula(x: float, p: float = 10.0) -> tuple[float, float]:
    """Paper notes 4, written out per value in double precision."""
    if abs(x) >= math.exp(-p):
        return math.log(abs(x)) / p, math.copysign(1.0, x)
    return -1.0, math.exp(p) * x


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_preprocessing_matches_the_formula_over_many_magnitudes(p):
    values = [s * 10.0 ** e for e in range(-12, 8) for s in (1.0, -1.0)] + [0.37, -2.5, 1e-6, -3e-7]
    x = torch.tensor(values, dtype=torch.float64)
    out = preprocess(x, p)
    expected = torch.tensor([formula(v, p) for v in values], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_preprocessing_at_the_boundary_takes_the_log_branch_and_is_continuous():
    p = 10.0
    edge = math.exp(-p)
    below = math.nextafter(edge, 0.0)
    x = torch.tensor([edge, -edge, below, -below], dtype=torch.float64)
    out = preprocess(x, p)
    # |x| = e^-p exactly: the log branch, (log|x| / p, sign) = (-1, +-1) exactly
    # (the other branch would give e^p * e^-p = 1.0000000000000002 in double precision)
    assert out[0].tolist() == [-1.0, 1.0]
    assert out[1].tolist() == [-1.0, -1.0]
    # just below: (-1, e^p x), which is +-1 up to rounding - the two branches meet
    assert out[2].tolist() == [-1.0, math.exp(p) * below]
    assert out[3].tolist() == [-1.0, -math.exp(p) * below]
    assert out[2, 1].item() == pytest.approx(1.0, abs=1e-12)
    # half the boundary is clearly on the small side: (-1, 0.5), not (log(0.5 e^-p) / p, 1)
    torch.testing.assert_close(preprocess(torch.tensor([edge / 2], dtype=torch.float64), p)[0],
                               torch.tensor([-1.0, 0.5], dtype=torch.float64))
    # in float32 the boundary is e^-p rounded to float32, still on the log side
    edge32 = torch.tensor(edge, dtype=torch.float32)
    out32 = preprocess(torch.stack([edge32, torch.nextafter(edge32, torch.tensor(0.0))]), p)
    assert out32[0, 1].item() == 1.0
    assert out32[0, 0].item() == pytest.approx(-1.0, abs=1e-6)
    assert out32[1, 0].item() == -1.0 and out32[1, 1].item() == pytest.approx(1.0, abs=1e-6)


def test_preprocessing_is_finite_for_zero_huge_and_tiny_values():
    fmax = torch.finfo(torch.float32).max
    tiny = torch.finfo(torch.float32).tiny
    x = torch.tensor([0.0, -0.0, 1e-45, -1e-45, tiny, fmax, -fmax, 1e30], dtype=torch.float32)
    out = preprocess(x)
    assert torch.isfinite(out).all()
    assert out[0].tolist() == [-1.0, 0.0]               # zero: the small branch, e^p * 0
    assert out[5, 0].item() == pytest.approx(math.log(float(fmax)) / 10, rel=1e-6)
    assert out[5, 1].item() == 1.0 and out[6, 1].item() == -1.0


def test_preprocessing_gradient_is_finite_even_for_zero():
    x = torch.tensor([0.0, 1e-9, 2.0], requires_grad=True)
    preprocess(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_preprocessing_keeps_the_magnitude_and_flips_only_the_sign():
    x = torch.logspace(-8, 3, 50)
    pos, neg = preprocess(x), preprocess(-x)
    torch.testing.assert_close(pos[..., 0], neg[..., 0])
    torch.testing.assert_close(pos[..., 1], -neg[..., 1])


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)])
def test_preprocessing_adds_a_last_dimension_of_two(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert preprocess(x).shape == shape + (2,)


def test_preprocessing_rejects_a_non_positive_p():
    with pytest.raises(ValueError, match="p must be positive"):
        preprocess(torch.ones(3), p=0.0)
