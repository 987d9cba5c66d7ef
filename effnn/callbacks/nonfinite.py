"""Stop a diverged run with one line, before it can write non-finite weights over a good checkpoint.

Works for any LightningModule (automatic or manual optimization): ``on_before_backward`` sees every
loss, ``on_train_batch_end`` checks the parameters after the step, and ``on_save_checkpoint`` refuses
to save a state dict with a NaN/Inf. The error names the step and the likely cause (learning rate,
precision). When a precision ``NonFiniteGuard`` is active it skips a few bad low-precision steps by
design, so non-finite losses are tolerated for ``patience`` consecutive steps there; non-finite weights
never are.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from effnn.errors import EffnnError


class NonFiniteError(EffnnError, FloatingPointError):
    """Training produced a NaN/Inf loss or weight."""


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or Inf."""
    names = [k for k, t in tensors.items() if torch.is_floating_point(t)]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(tensors[k]).all() for k in names]).cpu().tolist()
    return [k for k, ok in zip(names, flags) if not ok]


def _has_precision_guard(trainer: L.Trainer) -> bool:
    from effnn.precision.guard import NonFiniteGuard

    return any(isinstance(cb, NonFiniteGuard) for cb in trainer.callbacks)


class StopOnNonFinite(Callback):
    """Raise ``NonFiniteError`` (one line: step, cause, fix) as soon as the loss or the weights go non-finite."""

    def __init__(self, patience: int = 20, check_weights_every: int = 1) -> None:
        if patience < 1 or check_weights_every < 1:
            raise ValueError(f"patience={patience} and check_weights_every={check_weights_every} must be >= 1")
        self.patience = patience
        self.check_weights_every = check_weights_every
        self._bad_losses = 0
        self._tolerate = 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._bad_losses = 0
        self._tolerate = self.patience if _has_precision_guard(trainer) else 1

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            self._bad_losses = 0
            return
        self._bad_losses += 1
        if self._bad_losses >= self._tolerate:
            raise NonFiniteError(self._message(trainer, f"the loss is {float(loss.detach().float().sum())}"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.check_weights_every:
            return
        bad = non_finite_tensors(dict(pl_module.named_parameters()))
        if bad:
            raise NonFiniteError(self._message(trainer, f"{len(bad)} weight tensors are non-finite (e.g. {bad[0]})"))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(self._message(trainer, f"{len(bad)} tensors of the checkpoint are non-finite "
                                                        f"(e.g. {bad[0]}); it was not written"))

    @staticmethod
    def _message(trainer: L.Trainer, what: str) -> str:
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups if "lr" in g]
        lr = f"model.optimizer.lr (now {lrs[0]:g})" if lrs else "the learning rate"
        return (f"training diverged at global step {trainer.global_step} (epoch {trainer.current_epoch}): {what}; "
                f"the checkpoints on disk are from before; likely cause: {lr} is too high, or the precision "
                f"(trainer.precision={trainer.precision}, low-bit quantization) is too low for this model: "
                f"lower the learning rate or raise the precision and train again")
