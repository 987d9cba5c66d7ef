"""Optimizer parameter groups and the per-iteration warmup + cosine LR used by every effnn module.

The parameter groups are timm's (``timm.optim.param_groups_weight_decay``). The schedule is a torch
``LambdaLR`` rather than timm's ``CosineLRScheduler``, for what timm's schedulers lack here: they are not
torch ``LRScheduler`` objects, so Lightning neither steps them (automatic optimization needs a custom
``lr_scheduler_step``) nor checks them, and their per-update stepping needs the update count passed in by
hand (``step_update(num_updates)``) in both the automatic (classifier) and the manual (supernet sandwich)
loops. ``LambdaLR`` steps itself, saves/restores with the checkpoint, and the factor below is one function.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn as nn
from timm.optim import param_groups_weight_decay
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """timm's weight-decay groups: conv/linear weights decay; norm parameters and biases (every 1-D tensor,
    so elastic/dynamic norm layers too) do not, as AlphaNet trains."""
    return param_groups_weight_decay(model, weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup from ~0 to 1, then cosine down to ``min_lr_ratio``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: nn.Module, optimizer: Callable[..., Optimizer]) -> Optimizer:
    """Instantiate a partial optimizer (from Hydra, ``_partial_: true``) over the no-decay-aware groups."""
    param = inspect.signature(optimizer).parameters.get("weight_decay")
    weight_decay = 0.0 if param is None or param.default is inspect.Parameter.empty else float(param.default)
    return optimizer(param_groups(model, weight_decay))


def build_scheduler(opt: Optimizer, total_steps: int, steps_per_epoch: float, warmup_epochs: float = 0.0,
                    min_lr_ratio: float = 0.0) -> LambdaLR:
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    return LambdaLR(opt, warmup_cosine(total_steps, warmup_steps, min_lr_ratio))


def trainable(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [p for p in params if p.requires_grad]


def configure_warmup_cosine(module: L.LightningModule, net: nn.Module, optimizer: Callable[..., Optimizer],
                            scheduler_cfg: dict) -> dict:
    """What every effnn LightningModule's ``configure_optimizers`` returns: no-decay-aware groups, and a
    per-step warmup+cosine schedule sized from the trainer's real step count."""
    opt = build_optimizer(net, optimizer)
    total = int(module.trainer.estimated_stepping_batches)
    per_epoch = total / max(1, module.trainer.max_epochs or 1)
    sched = build_scheduler(opt, total, per_epoch, **scheduler_cfg)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
