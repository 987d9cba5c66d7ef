"""The contract between effnn's LightningModules and the callbacks that act on them.

1. The trained network is the attribute ``.net`` (an ``nn.Module``). Precision callbacks quantize it,
   SmartDeal converts it, exports read it. :func:`network_of` is the one place that looks it up.
2. ``training_step`` returns the batch's training loss (a tensor, or a mapping with ``"loss"``), also under
   manual optimization; Lightning hands it to ``Callback.on_train_batch_end`` as ``outputs``, and
   :func:`training_loss` reads it from there. No callback reads a logged metric by its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from effnn.errors import ConfigError

NETWORK_ATTR = "net"


def network_of(pl_module: nn.Module) -> nn.Module:
    """The network a LightningModule trains (its ``.net``); a one-line error for modules without one."""
    net = getattr(pl_module, NETWORK_ATTR, None)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{type(pl_module).__name__} has no `.net` network; effnn callbacks act on "
                          f"`pl_module.net` (see effnn/lit/network.py): store the model as self.net")
    return net


def training_loss(outputs: Any) -> torch.Tensor | None:
    """The (detached) loss a ``training_step`` returned, as ``on_train_batch_end`` receives it; None when
    the step returned none (Lightning skips such steps)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"].detach()
    return None
