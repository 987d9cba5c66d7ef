"""Run-time helpers the command-line apps share (search, export): thread budget, a checked datamodule."""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
import torch

from effnn.errors import ConfigError


def set_threads(threads: int | None) -> None:
    """Intra-op threads per process (None: torch's default). Subnet evaluations are many small ops, so extra
    threads buy little, and on a busy machine spinning OpenMP threads make them many times slower (20x
    measured with 2 threads on 2 shared cores); parallelize over processes (``devices=N``) instead."""
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads={threads} must be >= 1 (or null for torch's default)")
        torch.set_num_threads(int(threads))


def build_datamodule(data_cfg: Any, num_classes: int, in_chans: int) -> L.LightningDataModule:
    """The configured datamodule (set up for fitting), checked against a model's classes and input channels."""
    dm = hydra.utils.instantiate(data_cfg)
    if getattr(dm, "num_classes", num_classes) != num_classes:
        raise ConfigError(f"the model has {num_classes} classes but data has {dm.num_classes}; pass the "
                          f"data config it was trained with (e.g. data=digits)")
    if getattr(dm, "in_chans", in_chans) != in_chans:
        raise ConfigError(f"the model takes {in_chans} input channels but data has {dm.in_chans}; set "
                          f"data.in_chans={in_chans}")
    dm.setup("fit")
    return dm
