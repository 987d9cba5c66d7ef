"""The one object quantized layers read their bit-widths from, so schedules change bits without rebuilding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from effnn.precision.quantizers import check_bits

_UNSET = object()


@dataclass
class PrecisionState:
    """Current forward (weights and activations) and gradient bit-widths; None means full precision.

    Every layer instrumented by one ``quantize_model`` call holds a reference to the same instance, so a
    callback sets ``state.fwd_bits = 4`` once per step and the whole model follows. It is plain Python
    (not a tensor, not a global): setting it costs nothing and never recompiles or re-traces anything.
    """

    fwd_bits: int | None = None
    grad_bits: int | None = None

    def __post_init__(self) -> None:
        self.set(self.fwd_bits, self.grad_bits)

    def set(self, fwd_bits: int | None, grad_bits: int | None) -> None:
        """Validate and set both bit-widths (32 or None = full precision)."""
        self.fwd_bits = check_bits(fwd_bits, "fwd_bits")
        self.grad_bits = check_bits(grad_bits, "grad_bits")

    @contextmanager
    def override(self, fwd_bits: int | None | object = _UNSET,
                 grad_bits: int | None | object = _UNSET) -> Iterator[PrecisionState]:
        """Temporarily use other bit-widths (e.g. evaluation precision, or one DFQ candidate)."""
        saved = (self.fwd_bits, self.grad_bits)
        self.set(saved[0] if fwd_bits is _UNSET else fwd_bits,  # type: ignore[arg-type]
                 saved[1] if grad_bits is _UNSET else grad_bits)  # type: ignore[arg-type]
        try:
            yield self
        finally:
            self.fwd_bits, self.grad_bits = saved

    @property
    def effective_fwd_bits(self) -> int:
        """Forward bits for cost accounting (full precision counts as 32)."""
        return 32 if self.fwd_bits is None else self.fwd_bits

    @property
    def effective_grad_bits(self) -> int:
        """Gradient bits for cost accounting (full precision counts as 32)."""
        return 32 if self.grad_bits is None else self.grad_bits


__all__ = ["PrecisionState"]
