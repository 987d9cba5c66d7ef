"""Model factory: effnn's own small-image models by name, anything else from timm (never pretrained downloads)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import MappingProxyType

import torch.nn as nn

from effnn.errors import ConfigError
from effnn.models.resnet_cifar import CifarResNet, SmallCNN

MODELS: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType({
    "small_cnn": SmallCNN,
    "cifar_resnet8": partial(CifarResNet, depth=8),
    "cifar_resnet14": partial(CifarResNet, depth=14),
    "cifar_resnet20": partial(CifarResNet, depth=20),
    "cifar_resnet38": partial(CifarResNet, depth=38),
    "cifar_resnet74": partial(CifarResNet, depth=74),
})


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``name`` from effnn's models, else from timm, with a classifier of ``num_classes`` outputs."""
    if pretrained:
        raise ConfigError("pretrained=True would download weights, which effnn never does at run time; "
                          "load a local checkpoint instead (ckpt_path=... or timm's pretrained_cfg_overlay file=...)")
    if name in MODELS:
        return MODELS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"unknown model {name!r}: effnn models are {', '.join(list_models())}; "
                          f"any timm model name also works (timm.list_models())")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


__all__ = ["MODELS", "CifarResNet", "SmallCNN", "create_model", "list_models"]
