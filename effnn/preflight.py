"""Checks that run before any heavy setup, so a bad value or an unusable output directory costs one line.

``Preflight`` is a Hydra callback (``conf/hydra/default.yaml``): its ``on_run_start`` runs after Hydra
composed the config but before it creates the run directory and before torch or Lightning are imported.
``check_config`` is also called by ``effnn.pipeline.train`` (sweep jobs, direct calls).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from effnn.errors import ConfigError, EffnnError

#: trainer keys that must be whole numbers (Lightning raises a TypeError deep inside otherwise), and their minimum
INT_TRAINER_KEYS = {"max_epochs": -1, "min_epochs": 0, "max_steps": -1, "check_val_every_n_epoch": 1,
                    "accumulate_grad_batches": 1, "num_nodes": 1, "log_every_n_steps": 0,
                    "num_sanity_val_steps": -1}
#: below this much free space an output directory is refused: a checkpoint would not fit
MIN_FREE_BYTES = 16 << 20
#: what marks a directory as already holding a training run
RUN_MARKERS = ("checkpoints", "train.log", "tensorboard", "csv", "metrics.json")


def _int_value(key: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"trainer.{key}={value!r} must be a whole number >= {minimum} "
                          f"(e.g. trainer.{key}={max(minimum, 1)})")
    if value < minimum:
        extra = " (-1: no limit)" if minimum == -1 else ""
        raise ConfigError(f"trainer.{key}={value} must be >= {minimum}{extra}")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for trainer values Lightning would reject late or misuse silently."""
    trainer = cfg.get("trainer") or {}
    for key, minimum in INT_TRAINER_KEYS.items():
        if key in trainer:
            _int_value(key, OmegaConf.select(cfg, f"trainer.{key}", throw_on_missing=False), minimum)
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if cfg.get("train", True) and cfg.get("test", True) and epochs == 0 and steps in (None, -1, 0):
        raise ConfigError("trainer.max_epochs=0 trains nothing and would then test an untrained model; set "
                          "trainer.max_epochs>=1, or test a checkpoint with train=false ckpt_path=PATH")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_output_dir(directory: str | os.PathLike, resume_from: str | None = None) -> None:
    """Raise EffnnError when ``directory`` cannot take a run: read-only, (nearly) full, or already holding
    another run (two runs in one directory interleave checkpoints, logs and event files).

    Resuming in place (``resume_from`` inside ``directory``) is allowed.
    """
    path = Path(directory).absolute()
    base = _existing_ancestor(path)
    try:  # a real write: os.access says yes to root on a read-only mount
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise EffnnError(f"cannot write the run directory {path}: {base} is not writable ({err.strerror}); point "
                         f"EFFNN_LOG_DIR (or hydra.run.dir) at a writable directory") from err
    free = shutil.disk_usage(base).free
    if free < MIN_FREE_BYTES:
        raise EffnnError(f"only {free >> 20} MiB free on the disk of {base}; free some space or point EFFNN_LOG_DIR "
                         f"(or hydra.run.dir) at another disk")
    if path.is_dir():
        held = sorted(m for m in RUN_MARKERS if (path / m).exists())
        inside = resume_from is not None and Path(resume_from).absolute().is_relative_to(path)
        if held and not inside:
            raise EffnnError(f"{path} already holds a run ({', '.join(held)}); two runs in one directory mix their "
                             f"checkpoints and logs: leave hydra.run.dir unset (a new timestamped directory) or "
                             f"choose an empty one")


class Preflight(Callback):
    """Hydra callback: ``check_config`` and ``check_output_dir`` before Hydra creates the run directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_config(config)
            run_dir = OmegaConf.select(config, "hydra.run.dir", throw_on_missing=False)
            check_output_dir(run_dir, config.get("ckpt_path"))
        except EffnnError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
