"""Random-number state in checkpoints, so a resumed run continues the uninterrupted run's random stream.

Dropout, augmentations, supernet arch sampling and stochastic rounding all draw from the global RNGs
(torch CPU/CUDA, numpy, Python ``random``). A resumed run used to reseed them with ``seed`` and so drew
different numbers than the uninterrupted run from then on (issue 17.6). ``RestoreRNG`` saves every
generator's state with each checkpoint and puts it back when training starts from that checkpoint.
Data order does not depend on these (``effnn.data.base.EpochShuffle``).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def rng_state() -> dict[str, Any]:
    """The state of every global random generator a training step can draw from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RestoreRNG(Callback):
    """Save the global RNG states in every checkpoint; restore them when a run resumes from one.

    The states are applied in ``on_train_start``, after Lightning has restored the model, optimizer and
    loops and right before the first resumed epoch: the same point of the random stream as in the
    uninterrupted run, where nothing draws between the epoch-end checkpoint and the next epoch.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None
