"""Signed power-of-two rounding, the Q of SmartDeal's W = (mask * Q(Ce)) @ B.

A power-of-two coefficient turns every multiply by Ce into a shift, and it is stored as a sign plus a small
exponent code, which is where SmartDeal's memory saving comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from effnn.errors import ConfigError


@dataclass(frozen=True)
class Pow2Spec:
    """What Q may produce: 0 or +-2^e with ``min_exp <= e <= max_exp``.

    Magnitudes below ``zero_threshold`` become 0 (the paper's element sparsity); larger ones round to the
    nearest power of two *in value* (the midpoint between 2^e and 2^(e+1) is 1.5 * 2^e) and saturate at
    the exponent range, so Q never returns anything that the exponent code cannot store.
    """

    min_exp: int = -8
    max_exp: int = 5
    zero_threshold: float = 2.0**-8

    def __post_init__(self) -> None:
        if self.min_exp > self.max_exp:
            raise ConfigError(f"Pow2Spec: min_exp={self.min_exp} is larger than max_exp={self.max_exp}; "
                              "swap them")
        if not (self.zero_threshold >= 0 and math.isfinite(self.zero_threshold)):
            raise ConfigError(f"Pow2Spec: zero_threshold must be a finite number >= 0, got "
                              f"{self.zero_threshold}")

    @property
    def num_levels(self) -> int:
        """Distinct magnitudes an entry can take: the exponents plus zero."""
        return self.max_exp - self.min_exp + 2

    @property
    def bits_per_entry(self) -> int:
        """Storage of one Ce entry: one sign bit plus an exponent code that also encodes zero."""
        return 1 + math.ceil(math.log2(self.num_levels))


def round_pow2(x: torch.Tensor, spec: Pow2Spec) -> torch.Tensor:
    """Q(x): round each entry to 0 or the nearest signed power of two allowed by ``spec`` (no gradient).

    Only elementwise ops with static control flow (log2, floor, exp2, where), so it traces into
    torch.export / ONNX graphs. ``floor(log2(.))`` can be off by one near exact powers of two in floating
    point, so the power is corrected against the magnitude before choosing between 2^e and 2^(e+1).
    """
    mag = x.abs()
    tiny = torch.finfo(x.dtype).tiny
    p = torch.pow(2.0, torch.floor(torch.log2(mag.clamp_min(tiny))))
    p = torch.where(mag < p, p * 0.5, p)
    p = torch.where(mag >= 2 * p, p * 2, p)
    p = torch.where(mag >= 1.5 * p, p * 2, p)
    p = p.clamp(2.0**spec.min_exp, 2.0**spec.max_exp)
    return torch.where(mag < spec.zero_threshold, torch.zeros_like(x), torch.sign(x) * p)


def round_pow2_ste(x: torch.Tensor, spec: Pow2Spec) -> torch.Tensor:
    """Q(x) in the forward pass, identity gradient to the latent ``x`` (straight-through estimator)."""
    return x + (round_pow2(x, spec) - x).detach()

