"""Quantizers against an independent NumPy reference of the affine min/max formula, and their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnn.precision.quantizers import (
    channel_range,
    check_bits,
    fake_quantize,
    quantize_activation,
    quantize_gradient,
    quantize_weight,
)


def numpy_affine(x: np.ndarray, bits: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reference: lo + scale * rint(clip((x - lo) / scale, 0, 2^b - 1)), scale = (hi - lo) / (2^b - 1)."""
    levels = 2.0 ** bits - 1
    scale = np.maximum((hi - lo) / levels, 1e-8)
    return lo + scale * np.rint(np.clip((x - lo) / scale, 0, levels))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_channel_weight_quantization_matches_numpy_reference(bits: int) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64)
    got = quantize_weight(w, bits).numpy()
    flat = w.numpy().reshape(6, -1)
    want = np.stack([numpy_affine(row, bits, row.min(), row.max()) for row in flat]).reshape(w.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for row_q, row in zip(got.reshape(6, -1), flat):
        assert len(np.unique(np.round(row_q, 10))) <= 2 ** bits
        assert row_q.min() == pytest.approx(row.min()) and row_q.max() == pytest.approx(row.max())
        assert np.abs(row_q - row).max() <= (row.max() - row.min()) / (2 ** bits - 1) / 2 + 1e-12


def test_activation_quantization_uses_the_given_range_and_clamps_outside_it() -> None:
    x = torch.linspace(-2.0, 3.0, 101, dtype=torch.float64)
    lo, hi = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    got = quantize_activation(x, 3, lo, hi).numpy()
    np.testing.assert_allclose(got, numpy_affine(x.numpy(), 3, -1.0, 1.0), atol=1e-12)
    assert got.min() == -1.0 and got.max() == 1.0


def test_straight_through_gradient_is_identity() -> None:
    w = torch.randn(4, 5, requires_grad=True)
    c = torch.randn(4, 5)
    (quantize_weight(w, 3) * c).sum().backward()
    torch.testing.assert_close(w.grad, c, rtol=0, atol=0)
    x = torch.randn(10, requires_grad=True)
    quantize_activation(x, 2, x.detach().min(), x.detach().max()).pow(2).sum().backward()
    q = quantize_activation(x.detach(), 2, x.detach().min(), x.detach().max())
    torch.testing.assert_close(x.grad, 2 * q)  # d/dx sum(Q(x)^2) with dQ/dx := 1


def test_constant_tensor_does_not_divide_by_zero() -> None:
    w = torch.full((3, 4), 0.5)
    assert torch.equal(quantize_weight(w, 4), w)
    lo, hi = channel_range(w)
    assert lo.shape == (3, 1) and torch.equal(lo, hi)


def test_gradient_quantizer_is_identity_forward_and_quantized_unbiased_backward() -> None:
    torch.manual_seed(0)
    n = 4000
    x = torch.randn(n, 64, requires_grad=True)
    y = quantize_gradient(x * 1.0, 4)
    assert torch.equal(y, x)
    upstream = torch.randn(64)
    # n identical rows: one per-tensor range (the row's min/max), n independent roundings per element
    (draws,) = torch.autograd.grad(y, x, upstream.expand(n, 64))
    lo, hi = upstream.min(), upstream.max()
    scale = (hi - lo) / 15
    levels = torch.round((draws - lo) / scale)
    torch.testing.assert_close(draws, lo + levels * scale, rtol=0, atol=1e-5)  # on the 4-bit grid
    assert 0 <= levels.min() and levels.max() <= 15
    assert (draws != upstream).any(dim=0).float().mean() > 0.9  # genuinely rounded
    # stochastic rounding is unbiased: the mean of n draws is within 5 standard errors (<= scale/2/sqrt(n))
    assert (draws.mean(0) - upstream).abs().max() <= 5 * (scale / 2) / np.sqrt(n)


def test_gradient_quantizer_reads_bits_at_forward_time() -> None:
    x = torch.randn(32, requires_grad=True)
    bits = {"b": 1}
    y = quantize_gradient(x * 1.0, bits["b"])
    bits["b"] = 8  # a schedule changing the bits before backward must not matter
    (g,) = torch.autograd.grad(y, x, torch.randn(32))
    assert len(torch.unique(g)) <= 2


def test_gradient_quantizer_allows_a_following_in_place_op() -> None:
    x = torch.tensor([-1.5, -0.2, 0.3, 0.9, 2.0, -0.7], requires_grad=True)
    y = torch.relu_(quantize_gradient(x * 2.0, 1))  # e.g. conv -> ReLU(inplace=True)
    (g,) = torch.autograd.grad(y.sum(), x)
    # the hook quantized d/d(2x) = 1{x > 0} (two levels: 0 and 1, exact), then the chain rule doubled it
    torch.testing.assert_close(g, 2.0 * (x > 0).float())


def test_fake_quantize_does_not_modify_its_input() -> None:
    x = torch.randn(100)
    before = x.clone()
    fake_quantize(x, 3, x.min(), x.max(), stochastic=True)
    assert torch.equal(x, before)


@pytest.mark.parametrize("bad", [0, 33, -1, 2.5, "8", True])
def test_bad_bit_widths_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="bit"):
        check_bits(bad)  # type: ignore[arg-type]


def test_full_precision_spellings() -> None:
    assert check_bits(None) is None and check_bits(32) is None
    assert check_bits(4.0) == 4  # YAML/CLI floats that are whole numbers are accepted
    x = torch.randn(5)
    assert quantize_weight(x.view(5, 1), None) is not None and quantize_gradient(x, None) is x
