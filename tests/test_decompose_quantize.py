"""Q, SmartDeal's signed power-of-two rounding, against a brute-force nearest-candidate reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from effnn.decompose.quantize_pow2 import Pow2Spec, round_pow2, round_pow2_ste
from effnn.errors import ConfigError


def reference_q(x: np.ndarray, spec: Pow2Spec) -> np.ndarray:
    """Nearest of {+-2^e : min_exp <= e <= max_exp} by absolute difference (ties to the larger magnitude),
    0 below the threshold: the definition, evaluated by enumeration in float64."""
    candidates = 2.0 ** np.arange(spec.max_exp, spec.min_exp - 1, -1)  # largest first: argmin breaks ties up
    mag = np.abs(x)
    nearest = candidates[np.argmin(np.abs(mag[:, None] - candidates[None, :]), axis=1)]
    return np.where(mag < spec.zero_threshold, 0.0, np.sign(x) * nearest)


@pytest.mark.parametrize("spec", [Pow2Spec(), Pow2Spec(-4, 2, 0.05), Pow2Spec(0, 0, 0.0)])
def test_round_pow2_matches_nearest_candidate(spec: Pow2Spec) -> None:
    gen = torch.Generator().manual_seed(0)
    signs = (torch.rand(4000, generator=gen) - 0.5).sign()
    random = torch.exp2(torch.empty(4000).uniform_(-14, 9, generator=gen)) * signs
    exps = torch.arange(spec.min_exp - 3, spec.max_exp + 4, dtype=torch.float64)
    exact = torch.cat([torch.exp2(exps), 1.5 * torch.exp2(exps), -1.5 * torch.exp2(exps)])  # grid + ties
    x = torch.cat([random.double(), exact, torch.tensor([0.0, spec.zero_threshold, -spec.zero_threshold])])
    got = round_pow2(x.float(), spec).double().numpy()
    want = reference_q(x.float().double().numpy(), spec)
    np.testing.assert_array_equal(got, want)


def test_round_pow2_closed_form_values() -> None:
    spec = Pow2Spec()  # exponents -8..5, zero below 2^-8
    x = torch.tensor([0.3, -0.3, 0.374, 0.375, 0.376, 1.0, 100.0, -1e9, 2**-8, 2**-8 * 0.99, 0.0])
    want = torch.tensor([0.25, -0.25, 0.25, 0.5, 0.5, 1.0, 32.0, -32.0, 2**-8, 0.0, 0.0])
    torch.testing.assert_close(round_pow2(x, spec), want, rtol=0, atol=0)


def test_round_pow2_is_idempotent_on_its_grid_and_exact_in_float64() -> None:
    spec = Pow2Spec(-20, 20, 0.0)
    grid = torch.exp2(torch.arange(-20, 21, dtype=torch.float64))
    for values in (grid, -grid, grid.float()):
        torch.testing.assert_close(round_pow2(values, spec), values, rtol=0, atol=0)


def test_straight_through_gradient_is_identity() -> None:
    x = torch.tensor([0.3, -1.7, 0.001, 7.0], requires_grad=True)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = round_pow2_ste(x, Pow2Spec())
    (y * upstream).sum().backward()
    torch.testing.assert_close(y.detach(), round_pow2(x.detach(), Pow2Spec()))
    torch.testing.assert_close(x.grad, upstream)


def test_bits_per_entry_counts_sign_plus_exponent_code_with_zero() -> None:
    for lo, hi in [(-8, 5), (-1, 0), (-7, 0), (-8, 7), (0, 0)]:
        levels = hi - lo + 2  # exponents + the zero code
        assert Pow2Spec(lo, hi).bits_per_entry == 1 + math.ceil(math.log2(levels))
    assert Pow2Spec(-8, 5).bits_per_entry == 5  # 14 exponents + zero = 15 codes -> 4 bits, + sign


def test_bad_specs_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="min_exp"):
        Pow2Spec(3, -3)
    with pytest.raises(ConfigError, match="zero_threshold"):
        Pow2Spec(zero_threshold=-1.0)
