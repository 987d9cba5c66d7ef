"""Fake quantizers: affine min/max rounding with straight-through gradients, and gradient quantization.

One formula serves weights, activations and gradients (as in the CPT/FracTrain code): a range
``[lo, hi]`` is split into ``2**bits - 1`` steps, ``scale = (hi - lo) / (2**bits - 1)``, and a value maps
to ``lo + scale * round((x - lo) / scale)``. Only the range and the rounding differ:

- weights: one range per output channel (row of the flattened weight), deterministic rounding;
- activations: one range per tensor, given by the caller (batch min/max in training, an EMA in eval);
- gradients: the error arriving at a layer output, one range per tensor, stochastic rounding.

Bit-widths are plain Python ints read at call time, so changing them every step costs nothing and needs
no rebuild; ranges stay tensors, so no call synchronizes with the device.
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import FunctionCtx

MIN_SCALE = 1e-8  # a constant tensor (hi == lo) would otherwise divide by zero


def check_bits(bits: int | None, what: str = "bits") -> int | None:
    """Validate a bit-width: an int in [1, 32] or None; 32 and None both mean full precision (-> None)."""
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int):
        if isinstance(bits, float) and bits.is_integer():
            bits = int(bits)
        else:
            raise ValueError(f"{what} must be an integer bit-width in [1, 32] (or None for full precision), "
                             f"got {bits!r}")
    if not 1 <= bits <= 32:
        raise ValueError(f"{what} must be in [1, 32] (32 or None = full precision), got {bits}")
    return None if bits == 32 else bits


def fake_quantize(x: torch.Tensor, bits: int, lo: torch.Tensor, hi: torch.Tensor,
                  stochastic: bool = False) -> torch.Tensor:
    """Affine fake quantization of ``x`` onto ``2**bits`` levels spanning ``[lo, hi]`` (broadcastable).

    Values outside the range are clamped to it. Stochastic rounding is ``floor(q + u)``, ``u ~ U[0, 1)``,
    which is unbiased: its expectation is ``q``. Returns a new tensor; ``x`` is not modified.
    """
    levels = float(2 ** bits - 1)
    scale = ((hi - lo) / levels).clamp_min(MIN_SCALE)
    q = (x - lo).div_(scale).clamp_(0.0, levels)
    if stochastic:
        q.add_(torch.rand_like(q)).floor_().clamp_(max=levels)
    else:
        q.round_()
    return q.mul_(scale).add_(lo)


def channel_range(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel (dim 0) min and max of ``w``, shaped to broadcast against ``w``."""
    lo, hi = torch.aminmax(w.detach().flatten(1), dim=1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return lo.view(shape), hi.view(shape)


class _QuantizeSTE(torch.autograd.Function):
    """Forward: fake-quantize with a given range; backward: pass the gradient straight through."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, bits: int, lo: torch.Tensor,  # type: ignore[override]
                hi: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, bits, lo, hi)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        return grad, None, None, None


def _stochastic_gradient(grad: torch.Tensor, bits: int) -> torch.Tensor:
    lo, hi = torch.aminmax(grad)
    return fake_quantize(grad, bits, lo, hi, stochastic=True)


def quantize_weight(w: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Weights per output channel, deterministic rounding, straight-through gradient (None: unchanged)."""
    if bits is None:
        return w
    lo, hi = channel_range(w)
    return _QuantizeSTE.apply(w, bits, lo, hi)


def quantize_activation(x: torch.Tensor, bits: int | None, lo: torch.Tensor,
                        hi: torch.Tensor) -> torch.Tensor:
    """Activations with one given range (0-dim ``lo``/``hi``), straight-through gradient (None: unchanged)."""
    if bits is None:
        return x
    return _QuantizeSTE.apply(x, bits, lo, hi)


def quantize_gradient(x: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Identity in forward; in backward, quantize the gradient w.r.t. ``x`` to ``bits`` (None: unchanged).

    Implemented as a tensor hook rather than an identity autograd function: it costs no copy, and a
    following in-place op (``ReLU(inplace=True)``) stays legal; the hook still receives the gradient
    w.r.t. ``x`` as it was produced (before the in-place op). ``bits`` is captured now, so a schedule may
    change the bit-width before backward runs.
    """
    if bits is None or not x.requires_grad:
        return x
    x.register_hook(functools.partial(_stochastic_gradient, bits=bits))
    return x


__all__ = ["MIN_SCALE", "channel_range", "check_bits", "fake_quantize", "quantize_activation",
           "quantize_gradient", "quantize_weight"]
