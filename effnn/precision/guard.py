"""Skip optimizer steps whose loss or gradients are not finite, so low precision never writes NaN/Inf.

Works for any LightningModule, automatic or manual optimization: Lightning calls
``on_before_backward`` for every backward and ``on_before_optimizer_step`` just before each
``optimizer.step``. A bad step has all its gradients set to None (so SGD/Adam leave the parameters and
their momentum untouched) and the module's buffers (BN running stats and counters, activation ranges)
restored from a snapshot taken at the start of the batch, since the bad forward already updated them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer


def grads_finite(optimizer: Optimizer) -> bool:
    """True when every gradient the optimizer would apply is finite (one device sync)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)  # one fused reduction per tensor, no per-tensor sync
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


class NonFiniteGuard(Callback):
    """Skip and count steps with a non-finite loss or gradient; logs ``train/skipped_steps``."""

    def __init__(self, restore_buffers: bool = True, warn: bool = True) -> None:
        self.restore_buffers = restore_buffers
        self.warn = warn
        self.skipped_steps = 0
        self._loss_finite = True
        self._snapshot: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._loss_finite = True
        if self.restore_buffers:
            self._buffers = list(pl_module.buffers())
            self._snapshot = [b.detach().clone() for b in self._buffers]

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            self._loss_finite = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Optimizer) -> None:
        if self._loss_finite and grads_finite(optimizer):
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._snapshot)
        self.skipped_steps += 1
        self._loss_finite = True
        if self.warn:
            rank_zero_warn(f"skipped optimizer step at global step {trainer.global_step}: non-finite "
                           f"loss or gradient ({self.skipped_steps} skipped so far)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        pl_module.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        self._snapshot, self._buffers = [], []

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])


__all__ = ["NonFiniteGuard", "grads_finite"]
