"""Precision schedules and training-cost accounting, as plain functions and small stateful objects.

CPT (Fu et al., ICLR 2021) cycles the forward precision with a cosine per iteration::

    T    = int(total_iters / num_cycles)
    b(i) = rint(q_min + 0.5 (q_max - q_min) (1 - cos(pi (i mod T) / T)))

with round-half-even ``rint``. Training cost per MAC is counted as in both papers' code, averaging the
forward pass (``b*b``), the error backward (``b*g``) and the weight-gradient pass (``b*g``):
``(b^2 + 2 b g) / 3``. Over CPT's CIFAR schedule (64,000 iterations, 32 cycles, so T = 2000) this
gives the published savings vs static ``q_max``: 36.67% (3-8/8), 30.05% (3-6/6), 30.1% (4-8/8),
20.7% (4-6/6).

FracTrain's PFQ (Fu et al., NeurIPS 2020) moves to the next precision stage at a "turning point" of the
training loss: keep the last ``history`` (5) window-averaged losses and switch when all ``history - 1``
differences to the newest, divided by the loss scale (mean of the first 10 window losses), are <= eps.
After a switch, eps *= decay and the history restarts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FULL_PRECISION_BITS = 32


def cyclic_period(total_steps: int, num_cycles: int) -> int:
    """CPT's cycle length ``int(total / num_cycles)`` (at least 1 step)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if num_cycles <= 0:
        raise ValueError(f"num_cycles must be positive, got {num_cycles}")
    return max(1, int(total_steps / num_cycles))


def cyclic_bits(step: int, period: int, q_min: int, q_max: int) -> int:
    """CPT's cosine precision at iteration ``step`` (0-based) of cycles ``period`` long."""
    phase = (step % period) / period
    return int(round(q_min + 0.5 * (q_max - q_min) * (1.0 - math.cos(math.pi * phase))))  # round-half-even


def bitops_per_mac(fwd_bits: int | None, grad_bits: int | None) -> float:
    """Relative cost of one MAC over forward, error backward and weight gradient: (b^2 + 2bg) / 3."""
    b = FULL_PRECISION_BITS if fwd_bits is None else fwd_bits
    g = FULL_PRECISION_BITS if grad_bits is None else grad_bits
    return (b * b + 2 * b * g) / 3.0


def schedule_saving(fwd_bits: Sequence[int], grad_bits: int | Sequence[int], ref_fwd_bits: int,
                    ref_grad_bits: int | None = None) -> float:
    """Fractional BitOPs saving of a per-step schedule vs a static ``(ref_fwd_bits, ref_grad_bits)`` run."""
    if not fwd_bits:
        raise ValueError("empty schedule")
    grads = [grad_bits] * len(fwd_bits) if isinstance(grad_bits, int) else list(grad_bits)
    if len(grads) != len(fwd_bits):
        raise ValueError(f"{len(fwd_bits)} forward bit-widths but {len(grads)} gradient bit-widths")
    ref_g = grads[0] if ref_grad_bits is None else ref_grad_bits
    cost = sum(bitops_per_mac(b, g) for b, g in zip(fwd_bits, grads))
    return 1.0 - cost / (len(fwd_bits) * bitops_per_mac(ref_fwd_bits, ref_g))


@dataclass
class BitOpsMeter:
    """Accumulates training cost per step and the cost of a static reference precision over the same steps.

    ``relative`` is cost-so-far / reference-cost-so-far (``train/rel_bitops``); ``saving`` = 1 - relative.
    ``macs`` weights a step (e.g. several forward/backward passes in a supernet step); ratios are
    unaffected when every step has the same weight.
    """

    ref_fwd_bits: int | None
    ref_grad_bits: int | None
    cost: float = 0.0
    ref_cost: float = 0.0
    steps: int = 0

    def update(self, fwd_bits: int | None, grad_bits: int | None, macs: float = 1.0) -> None:
        """Count one step trained at ``fwd_bits``/``grad_bits`` (all layers alike)."""
        self.add(bitops_per_mac(fwd_bits, grad_bits), macs)

    def add(self, cost_per_mac: float, macs: float = 1.0) -> None:
        """Count one step of known average cost per MAC (e.g. DFQ's mix of per-sample precisions)."""
        self.cost += macs * cost_per_mac
        self.ref_cost += macs * bitops_per_mac(self.ref_fwd_bits, self.ref_grad_bits)
        self.steps += 1

    @property
    def relative(self) -> float:
        return self.cost / self.ref_cost if self.ref_cost else 1.0

    @property
    def saving(self) -> float:
        return 1.0 - self.relative

    def state_dict(self) -> dict[str, Any]:
        return {"cost": self.cost, "ref_cost": self.ref_cost, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cost, self.ref_cost = float(state["cost"]), float(state["ref_cost"])
        self.steps = int(state["steps"])


@dataclass
class LossPlateau:
    """FracTrain's turning-point indicator over a stream of window-averaged training losses.

    ``update(loss)`` returns True at a turning point: the last ``history`` losses are known and every
    ``|L_i - L_newest| / scale`` (i over the older ``history - 1``) is <= ``eps``. ``scale`` is the mean of
    the first ``scale_windows`` losses of the run. A turning point multiplies ``eps`` by ``decay`` and
    clears the history, so the next stage needs ``history`` fresh windows.
    """

    eps: float = 0.05
    decay: float = 0.3
    history: int = 5
    scale_windows: int = 10
    losses: list[float] = field(default_factory=list)
    scale_sum: float = 0.0
    scale_count: int = 0
    last_diffs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"eps decay must be in (0, 1], got {self.decay}")
        if self.history < 2:
            raise ValueError(f"history must be >= 2 windows (one difference), got {self.history}")

    @property
    def scale(self) -> float:
        return self.scale_sum / self.scale_count if self.scale_count else 1.0

    def update(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return False  # a skipped/non-finite window says nothing about convergence
        if self.scale_count < self.scale_windows:
            self.scale_sum += loss
            self.scale_count += 1
        self.losses = (self.losses + [loss])[-self.history:]
        if len(self.losses) < self.history:
            return False
        newest, scale = self.losses[-1], self.scale or 1.0
        self.last_diffs = [abs(old - newest) / abs(scale) for old in self.losses[:-1]]
        if all(d <= self.eps for d in self.last_diffs):
            self.eps *= self.decay
            self.losses = []
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "losses": list(self.losses), "scale_sum": self.scale_sum,
                "scale_count": self.scale_count, "last_diffs": list(self.last_diffs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eps = float(state["eps"])
        self.losses = [float(v) for v in state["losses"]]
        self.scale_sum = float(state["scale_sum"])
        self.scale_count = int(state["scale_count"])
        self.last_diffs = [float(v) for v in state.get("last_diffs", [])]


__all__ = ["FULL_PRECISION_BITS", "BitOpsMeter", "LossPlateau", "bitops_per_mac", "cyclic_bits",
           "cyclic_period", "schedule_saving"]
