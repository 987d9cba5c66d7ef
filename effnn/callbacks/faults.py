"""Deterministic fault injection for the kill-and-resume tests: SIGKILL this process at an exact point."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL the training process right after optimizer step ``step`` (no cleanup, like an OOM kill or a
    preempted node), so a test can resume from whatever the run left on disk without sleeps or polling."""

    def __init__(self, step: int) -> None:
        if step < 1:
            raise ValueError(f"step={step} must be >= 1")
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
