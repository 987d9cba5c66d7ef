"""The pieces ``quantize_model`` attaches to a layer: a weight parametrization and an input/output quantizer.

They work on any module that keeps its kernel in a ``.weight`` Parameter and takes the activation as its
first positional argument: ``nn.Conv2d``/``nn.Linear``, and the supernet's elastic ops. Those slice their
full-size weight inside ``forward`` and apply the parametrization to the active slice themselves
(``effnn.nas.ops.active_slice``), so per-output-channel ranges cover only what the subnet uses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from effnn.precision.quantizers import quantize_activation, quantize_gradient, quantize_weight
from effnn.precision.state import PrecisionState


class WeightFakeQuant(nn.Module):
    """``torch.nn.utils.parametrize`` parametrization: ``layer.weight`` reads as its quantized value.

    The trained fp32 weight stays the Parameter (``parametrizations.weight.original``, the same object,
    so an optimizer built earlier keeps working); the straight-through estimator sends its gradient there.
    """

    def __init__(self, state: PrecisionState, fixed_bits: int | None = None) -> None:
        super().__init__()
        self.state = state
        self.fixed_bits = fixed_bits  # FracTrain DFQ: weights at a fixed width while activations vary

    def bits(self) -> int | None:
        """Weight bit-width now: ``fixed_bits`` while the layer is quantized at all, else full precision.
        (With a separate weight state, ``state`` is that state: its ``fwd_bits`` is the weight width.)"""
        if self.state.fwd_bits is None:
            return None
        return self.fixed_bits if self.fixed_bits is not None else self.state.fwd_bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return quantize_weight(weight, self.bits())


class LayerQuantizer(nn.Module):
    """Quantizes a layer's input activation (forward pre-hook) and the error at its output (forward hook).

    Activation range: the batch min/max in training, also folded into an EMA (``momentum`` weight on the
    old value, 0.9 as in CPT/FracTrain) that evaluation uses. The EMA lives in buffers, so checkpoints
    carry it; updates skip non-finite batch ranges so one bad step cannot poison evaluation.
    """

    running_range: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, state: PrecisionState, momentum: float = 0.9, quantize_input: bool = True,
                 quantize_grad: bool = True) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"activation range momentum must be in [0, 1), got {momentum}")
        self.state = state
        self.momentum = momentum
        self.quantize_input = quantize_input
        self.quantize_grad = quantize_grad
        self.weight_bits: int | None = None  # fixed weight width (DFQ); None: the forward bits
        self.weight_state: PrecisionState | None = None  # weights' own state (per-stage precision search)
        self.register_buffer("running_range", torch.zeros(2))  # EMA of (min, max)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._handles: list[RemovableHandle] = []

    def attach(self, layer: nn.Module) -> None:
        """Register the hooks on ``layer`` (the layer owns this quantizer as ``layer.quantizer``)."""
        if self.quantize_input:
            self._handles.append(layer.register_forward_pre_hook(self._pre_hook))
        if self.quantize_grad:
            self._handles.append(layer.register_forward_hook(self._post_hook))

    def detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def running_min(self) -> torch.Tensor:
        return self.running_range[0]

    @property
    def running_max(self) -> torch.Tensor:
        return self.running_range[1]

    def _range(self, x: torch.Tensor) -> torch.Tensor:
        """(min, max) to quantize ``x`` with; in training also folds the batch range into the EMA."""
        batch = torch.stack(torch.aminmax(x.detach())).to(self.running_range.dtype)
        if self.training:
            with torch.no_grad():  # a handful of 2-element ops, no device sync
                finite = torch.isfinite(batch).all()
                ema = torch.where(self.initialized, torch.lerp(batch, self.running_range, self.momentum), batch)
                self.running_range.copy_(torch.where(finite, ema, self.running_range))
                self.initialized.logical_or_(finite)
            return batch
        # evaluation: the EMA range, or the batch range if this layer never saw a training batch
        return torch.where(self.initialized, self.running_range, batch)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The input activation at the current forward bit-width (unchanged at full precision)."""
        bits = self.state.fwd_bits
        if bits is None or not torch.is_floating_point(x):
            return x
        lo, hi = self._range(x).to(x.dtype)
        return quantize_activation(x, bits, lo, hi)

    def _pre_hook(self, layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        return (self.quantize(args[0]), *args[1:])

    def _post_hook(self, layer: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if isinstance(output, torch.Tensor) and torch.is_grad_enabled():
            return quantize_gradient(output, self.state.grad_bits)
        return None

    def hw_bits(self) -> dict[str, int] | None:
        """Operand widths for ``effnn.hw`` workload extraction (read per trace, so it follows schedules);
        None at full precision, where the hardware model's default width applies."""
        bits = self.state.fwd_bits
        if self.weight_state is not None:
            weight = self.weight_state.fwd_bits
            out = {} if weight is None else {"weight": weight}
            if bits is not None and self.quantize_input:
                out["act"] = bits
            return out or None
        if bits is None:
            return None
        weight = bits if self.weight_bits is None else self.weight_bits
        return {"weight": weight, "act": bits} if self.quantize_input else {"weight": weight}

    def extra_repr(self) -> str:
        return (f"momentum={self.momentum}, quantize_input={self.quantize_input}, "
                f"quantize_grad={self.quantize_grad}")


__all__ = ["LayerQuantizer", "WeightFakeQuant"]
