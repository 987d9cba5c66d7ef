"""Plain image classification as a LightningModule: any timm or effnn model, picked by config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from effnn.lit.optim import configure_warmup_cosine


class ClassifierModule(L.LightningModule):
    """Cross-entropy training with per-iteration warmup+cosine LR; logs train/loss, val/{loss,acc}, test/acc.

    ``net`` is the model (the attribute precision/decomposition callbacks swap layers in);
    ``optimizer`` is a partial (``_partial_: true``) so parameter groups are built here.
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., Optimizer], num_classes: int,
                 scheduler: dict[str, Any] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_cfg = dict(scheduler or {})
        self.label_smoothing = label_smoothing
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, metric: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        metric(logits, y)
        self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_warmup_cosine(self, self.net, self.optimizer_factory, self.scheduler_cfg)
