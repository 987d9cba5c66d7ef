"""Checkpoint I/O that never leaves a truncated file: write beside the target, fsync, rename over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from effnn.errors import CheckpointError
from effnn.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """A SIGKILL during ``save_checkpoint`` leaves the previous ``last.ckpt`` intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location)


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` with one-line errors for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location or "cpu", weights_only=False)
    except Exception as err:  # zip/pickle errors differ by torch version; all mean the same to a user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({first}); "
                              f"use another checkpoint (e.g. the best epoch_*.ckpt beside it)") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict'); "
                              f"pass a .ckpt written by effnn's train.py")
    return ckpt
