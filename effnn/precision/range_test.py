"""CPT's precision range test: raise the forward precision step by step and find where training starts to learn.

Training begins at ``start_bits`` and gains one bit every ``steps_per_bit`` steps up to ``max_bits``. The
training accuracy of every step is recorded (from the model's output and the batch labels), and
``q_min`` is the first precision whose accuracy (mean over the second half of its steps, when the layers
have adapted to it) beats the baseline by ``min_gain``; the baseline is the larger of chance (1 / number
of classes) and the accuracy over the first half of the first precision's steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from effnn.precision.callbacks import PrecisionCallback, precision_root
from effnn.precision.quantizers import check_bits
from effnn.precision.swap import QuantizationConfig


@dataclass
class RangeTestResult:
    """Per-step record of a range test and the q_min it implies."""

    bits: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    num_classes: int | None = None
    level_accuracy: dict[int, float] = field(default_factory=dict)
    baseline: float | None = None
    q_min: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"q_min": self.q_min, "baseline": self.baseline, "num_classes": self.num_classes,
                "level_accuracy": {str(k): v for k, v in self.level_accuracy.items()},
                "bits": self.bits, "accuracy": self.accuracy, "loss": self.loss}


def find_q_min(bits: Sequence[int], accuracy: Sequence[float], num_classes: int | None,
               min_gain: float = 0.05) -> tuple[int | None, dict[int, float], float]:
    """(q_min, mean accuracy over the second half of each precision's steps, baseline). See module doc."""
    if len(bits) != len(accuracy) or not bits:
        raise ValueError(f"need one accuracy per step, got {len(bits)} bit-widths and {len(accuracy)} accuracies")
    levels: dict[int, list[float]] = {}
    for b, a in zip(bits, accuracy):
        levels.setdefault(int(b), []).append(float(a))
    first = levels[int(bits[0])]
    head = first[: max(1, len(first) // 2)]
    chance = 1.0 / num_classes if num_classes else 0.0
    baseline = max(chance, sum(head) / len(head))
    level_acc = {b: sum(v[len(v) // 2:]) / len(v[len(v) // 2:]) for b, v in levels.items()}
    q_min = next((b for b in sorted(level_acc) if level_acc[b] >= baseline + min_gain), None)
    return q_min, level_acc, baseline


class PrecisionRangeTest(PrecisionCallback):
    """Raises forward precision by one bit every ``steps_per_bit`` steps and records training accuracy."""

    def __init__(self, start_bits: int = 2, max_bits: int = 8, steps_per_bit: int = 20, grad_bits: int | None = 8,
                 min_gain: float = 0.05,
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        start, top = check_bits(start_bits, "start_bits"), check_bits(max_bits, "max_bits")
        if start is None or top is None or start > top:
            raise ValueError(f"need 1 <= start_bits <= max_bits < 32, got {start_bits} and {max_bits}")
        if steps_per_bit <= 0:
            raise ValueError(f"steps_per_bit must be positive, got {steps_per_bit}")
        self.start_bits, self.max_bits, self.steps_per_bit = start, top, steps_per_bit
        self.grad_bits = check_bits(grad_bits, "grad_bits")
        self.min_gain = min_gain
        self.result = RangeTestResult()
        self._targets: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._hook: RemovableHandle | None = None
        super().__init__(top, (top, self.grad_bits), quantization)

    @property
    def total_steps(self) -> int:
        """Steps needed to visit every precision from start_bits to max_bits."""
        return (self.max_bits - self.start_bits + 1) * self.steps_per_bit

    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        return min(self.max_bits, self.start_bits + trainer.global_step // self.steps_per_bit), self.grad_bits

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook = precision_root(pl_module).register_forward_hook(self._capture)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.result.q_min, self.result.level_accuracy, self.result.baseline = find_q_min(
            self.result.bits, self.result.accuracy, self.result.num_classes, self.min_gain)

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training and self._logits is None and isinstance(output, torch.Tensor) and output.dim() == 2:
            self._logits = output.detach()  # first forward of the step (the max subnet in a sandwich step)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._logits = None
        labels = batch[1] if isinstance(batch, list | tuple) and len(batch) > 1 else None
        self._targets = labels if isinstance(labels, torch.Tensor) else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._logits is None or self._targets is None:
            raise RuntimeError("precision range test needs (inputs, labels) batches and a model returning logits")
        state = self._require_state()
        self.result.num_classes = int(self._logits.shape[1])
        self.result.bits.append(state.effective_fwd_bits)
        self.result.accuracy.append(float((self._logits.argmax(1) == self._targets).float().mean()))
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self.result.loss.append(float(loss) if isinstance(loss, torch.Tensor) else float("nan"))


__all__ = ["PrecisionRangeTest", "RangeTestResult", "find_q_min"]
