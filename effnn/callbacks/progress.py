"""Readable progress wherever stdout goes: a terminal gets the rich bar, a pipe/file/SLURM log gets one line
every ``every_s`` seconds, and ``train.log`` gets one line of metrics per epoch plus a short final summary."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar

log = logging.getLogger("effnn")

#: The metrics a reader looks for first, in this order (others stay in TensorBoard/CSV).
SUMMARY_KEYS = ("val/acc", "test/acc", "val/loss", "test/loss", "train/loss_epoch", "train/acc")
SUMMARY_PREFIXES = ("hw/", "cost/", "smartdeal/storage_ratio", "test/acc_")


def stdout_is_terminal() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _value(v: Any) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


def epoch_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Epoch-level metrics (no per-step duplicates, no learning-rate monitors), sorted by name."""
    return {k: _value(v) for k, v in sorted(metrics.items())
            if "/" in k and not k.endswith("_step") and not k.startswith("lr-")}


def summary_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The few metrics that matter for a final line: accuracies, losses, hardware cost, storage."""
    chosen = {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}
    chosen.update({k: v for k, v in sorted(metrics.items()) if k.startswith(SUMMARY_PREFIXES)})
    return chosen


def format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class TerminalProgressBar(RichProgressBar):
    """Lightning's rich progress bar, switched off when stdout is not a terminal: piped, a rich bar prints
    nothing until the run ends and then a screenful of redraws; ``TextProgress`` reports instead."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not stdout_is_terminal():
            self.disable()
        super().setup(trainer, pl_module, stage)


class TextProgress(Callback):
    """One log line every ``every_s`` seconds of training when stdout is not a terminal (``always``: also on one)."""

    def __init__(self, every_s: float = 30.0, always: bool = False) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s={every_s} must be > 0")
        self.every_s = every_s
        self.always = always
        self._enabled = False
        self._start = self._last = 0.0
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enabled = trainer.is_global_zero and (self.always or not stdout_is_terminal())
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < self.every_s:
            return
        self._last = now
        log.info(self.line(trainer, batch_idx, now - self._start))

    def line(self, trainer: L.Trainer, batch_idx: int, elapsed: float) -> str:
        """``epoch 2/10 batch 30/39 step 108 | 3.1 steps/s | eta 2m05s | train/loss=0.73``."""
        done = trainer.global_step - self._start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        per_epoch = trainer.num_training_batches
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"batch {batch_idx + 1}/{per_epoch}", f"step {trainer.global_step}", f"{rate:.2f} steps/s"]
        if trainer.max_epochs and trainer.max_epochs > 0 and isinstance(per_epoch, int) and rate > 0:
            left = (trainer.max_epochs - trainer.current_epoch) * per_epoch - (batch_idx + 1)
            eta = int(left / rate)
            parts.append(f"eta {eta // 60}m{eta % 60:02d}s")
        loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        if loss is not None:
            parts.append(f"train/loss={_value(loss):.4g}")
        return " | ".join(parts)


class EpochSummary(Callback):
    """``epoch N: key=value ...`` after every training epoch (validation included), into ``train.log``."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = epoch_metrics(trainer.callback_metrics)
            log.info("epoch %d/%d: %s", trainer.current_epoch + 1, trainer.max_epochs, format_metrics(metrics))


def one_copy_of_each_line() -> None:
    """Drop the console handlers ``import lightning`` adds to its own loggers when the root logger already
    has handlers (Hydra's console + train.log), so every Lightning INFO line is printed once, not twice."""
    if not logging.getLogger().hasHandlers():
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
