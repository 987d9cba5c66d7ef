"""What ``train.py`` does, as a function: config -> datamodule, module, callbacks, loggers, trainer -> fit/test."""

from __future__ import annotations

import errno
import logging
import math
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from effnn.callbacks.progress import one_copy_of_each_line
from effnn.errors import CheckpointError, ConfigError, EffnnError
from effnn.lit.checkpoint_io import load_checkpoint_file
from effnn.preflight import check_config
from effnn.run_outputs import discard_failed_run, report_final

log = logging.getLogger("effnn")


def build(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose bad-value errors name the config entry, in one line.

    A constructor's ValueError/TypeError (a bit-width out of range, a negative batch size) is a config
    mistake, so it becomes a ConfigError instead of a Hydra traceback.
    """
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, EffnnError):
            raise cause from err
        if isinstance(cause, (ValueError, TypeError)):
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise ConfigError(f"bad value in {where} ({node.get('_target_')}): {first}") from err
        raise


def instantiate_group(cfg: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers) that has a ``_target_``."""
    if not cfg:
        return []
    objects = []
    for name, sub in cfg.items():
        if isinstance(sub, DictConfig) and "_target_" in sub:
            objects.append(build(sub, f"{group}.{name}"))
        elif sub is not None:
            raise ConfigError(f"config entry {group}.{name} has no _target_; each entry must name the class to build")
    return objects


def check_checkpoint(path: str, model: L.LightningModule) -> None:
    """Fail in one line before training if the checkpoint is unreadable or does not fit the model."""
    ckpt = load_checkpoint_file(path)
    own = model.state_dict()
    theirs = ckpt["state_dict"]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    mismatched = [k for k in own if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)]
    from effnn.callbacks.nonfinite import non_finite_tensors

    bad = non_finite_tensors(theirs)
    if bad:  # a diverged run's weights (saved before effnn stopped such runs): training on them cannot recover
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({len(bad)} tensors, e.g. {bad[0]}); "
                              f"resume from an earlier checkpoint of that run, with a lower learning rate")
    if missing or unexpected or mismatched:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if v]
        raise CheckpointError(f"checkpoint {path} does not fit this model/config: {'; '.join(parts)}; "
                              f"resume with the same recipe and model settings it was trained with")


def _as_float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) as configured; return every logged metric as floats.

    A full disk is reported in one line; a run that fails before its first checkpoint leaves no run
    directory behind (README: "pick your RUN" must not pick it).
    """
    one_copy_of_each_line()
    check_config(cfg)  # before data/model setup: a bad value costs a second, not a minute
    try:
        return _fit_and_test(cfg)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            discard_failed_run(cfg)
            raise EffnnError(f"cannot write {err.filename or 'the run outputs'}: {err.strerror}; free some space "
                             f"or point EFFNN_LOG_DIR (or hydra.run.dir) at another disk") from err
        discard_failed_run(cfg)
        raise
    except BaseException:
        discard_failed_run(cfg)
        raise


def _fit_and_test(cfg: DictConfig) -> dict[str, float]:
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule: L.LightningDataModule = build(cfg.data, "data")
    model: L.LightningModule = build(cfg.model, "model")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_checkpoint(ckpt_path, model)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), "logger")
    if not loggers:  # nothing to log learning rates to; LearningRateMonitor would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({k: _as_float(v) for k, v in trainer.callback_metrics.items()})
    if cfg.get("test", True):
        ckpt = None if cfg.get("train", True) else ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=trainer.is_global_zero)
        metrics.update({k: _as_float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        report_final(cfg, trainer, metrics)
    return metrics


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The metric a sweeper optimizes; NaN when the trial produced none (so sweeps go on)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get(name, math.nan)
    if name not in metrics:
        log.warning("optimized_metric %r was not logged; known metrics: %s", name, sorted(metrics))
    return value
