"""Fine-tune an exported subnet with ``train.py``: ``python train.py model=exported model.path=DIR``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.optim import Optimizer

from effnn.errors import ConfigError
from effnn.export.artifact import load_exported, read_meta
from effnn.lit.classifier import ClassifierModule
from effnn.nas.supernet import resize_to


class ResizeInput(nn.Module):
    """Resize images to ``resolution`` before ``model``: a subnet runs at the resolution it was searched at,
    whatever resolution the datamodule produces (a no-op when they match)."""

    def __init__(self, model: nn.Module, resolution: int) -> None:
        super().__init__()
        self.model = model
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(resize_to(x, self.resolution))


def exported_classifier(path: str, num_classes: int, optimizer: Callable[..., Optimizer],
                        scheduler: dict[str, Any] | None = None, label_smoothing: float = 0.0,
                        resize: bool = True) -> ClassifierModule:
    """A ``ClassifierModule`` around ``load_exported(path)`` (in train mode, weights and BN stats kept).

    A quantized export is refused: its stored weights are already on the quantization grid and its
    activation ranges are fixed, so plain gradient steps would leave the grid it was verified on.
    """
    if read_meta(path).get("quantization") is not None:
        raise ConfigError(f"{path} is a quantized export (inference only); fine-tune the switchable-precision "
                          f"supernet (+recipe=alphanet_quant) and export again, or export without bits")
    model = load_exported(path).train()
    if model.num_classes != num_classes:
        raise ConfigError(f"the exported model at {path} has {model.num_classes} classes but data has {num_classes}; "
                          f"fine-tune on the data it was exported for")
    net = ResizeInput(model, model.arch.resolution) if resize else model
    return ClassifierModule(net, optimizer, num_classes, scheduler, label_smoothing)
