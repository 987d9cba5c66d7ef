"""BN recalibration: re-estimate BatchNorm statistics of one subnet before evaluating it.

Running statistics accumulated while training a supernet mix every subnet that was trained, so they
fit none of them; evaluating a subnet without recalibration is wrong (BigNAS/AttentiveNAS). The fix:
reset the statistics and take a cumulative (equal-weight) average over N training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn as nn
from lightning.pytorch.callbacks import Callback

from effnn.nas.ops import DynamicBatchNorm2d


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """All BatchNorm layers that track running statistics, static and elastic."""
    return [m for m in model.modules()
            if (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats)
            or isinstance(m, DynamicBatchNorm2d)]


def _default_forward(model: nn.Module) -> Callable[[Any], Any]:
    def run(batch: Any) -> Any:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return model(x.to(next(model.parameters()).device))

    return run


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], num_batches: int = 64,
                   forward: Callable[[Any], Any] | None = None, sync_distributed: bool = True) -> int:
    """Reset every BN's running stats and re-estimate them as the average over ``num_batches`` batches.

    ``forward(batch)`` runs the model (default: ``model(batch[0])``); pass one that resizes inputs to the
    arch's resolution for supernets. Under ``torch.distributed`` the estimates are averaged over ranks
    so all ranks evaluate the same model. Training modes and momenta are restored afterwards. Returns the
    number of batches used (fewer than ``num_batches`` if the iterable ran out).
    """
    if num_batches <= 0:
        raise ValueError(f"num_batches must be positive, got {num_batches}")
    layers = bn_layers(model)
    if not layers:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in layers]
    run = forward if forward is not None else _default_forward(model)
    used = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        model.train()
        for batch in batches:
            if used >= num_batches:
                break
            run(batch)
            used += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode
    if used == 0:
        raise ValueError("BN recalibration got no batches; pass a non-empty training loader")
    if sync_distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for m in layers:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(dist.get_world_size())
    return used


def calibration_loader(datamodule: L.LightningDataModule) -> Iterable[Any]:
    """Shuffled training batches: the datamodule's ``calibration_dataloader()`` if it has one."""
    if hasattr(datamodule, "calibration_dataloader"):
        return datamodule.calibration_dataloader()
    return datamodule.train_dataloader()


class BNRecalibration(Callback):
    """Re-estimate BN statistics of ``pl_module`` on ``num_batches`` training batches before each validation
    (and test), for models whose running statistics do not describe the weights being evaluated: subnets
    fine-tuned after export, quantized or decomposed models. ``SupernetModule`` recalibrates each
    evaluated subnet itself and does not need this callback.
    """

    def __init__(self, num_batches: int = 16) -> None:
        if num_batches <= 0:
            raise ValueError(f"num_batches must be positive, got {num_batches}")
        self.num_batches = num_batches

    def _recalibrate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is None:
            raise ValueError("BNRecalibration needs a datamodule to draw training batches from")
        device = pl_module.device
        recalibrate_bn(pl_module, calibration_loader(dm), self.num_batches,
                       forward=lambda batch: pl_module(batch[0].to(device)))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._recalibrate(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._recalibrate(trainer, pl_module)
