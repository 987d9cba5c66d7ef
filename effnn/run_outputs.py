"""What a training run leaves besides checkpoints: the final summary, ``metrics.json``, TensorBoard hparams;
and no directory at all when it failed before its first checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from effnn.callbacks.progress import format_metrics, summary_metrics
from effnn.io import atomic_write_json

log = logging.getLogger("effnn")


def discard_failed_run(cfg: DictConfig) -> None:
    """Delete this single run's directory if the run failed before writing any checkpoint (sweeps keep it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    out = Path(HydraConfig.get().runtime.output_dir)
    if out.is_dir() and not any(out.rglob("*.ckpt")) and not (out / "metrics.json").exists():
        log.error("run failed before its first checkpoint; removing its directory %s", out)
        shutil.rmtree(out, ignore_errors=True)


def report_final(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """A short summary line (the metrics that matter), every metric in ``metrics.json``, hparams in TensorBoard."""
    summary = summary_metrics(metrics)
    out = Path(trainer.default_root_dir)
    everything = {k: v for k, v in sorted(metrics.items()) if "/" in k and not k.startswith("lr-")}
    atomic_write_json(out / "metrics.json", everything)
    log.info("final: %s (all %d metrics in %s)", format_metrics(summary), len(everything), out / "metrics.json")
    params = flat_hparams(cfg)
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # the hparams tab pairs the config with these metrics
            logger.log_hyperparams(params, metrics={f"hparams/{k}": v for k, v in summary.items()})
            logger.finalize("success")
        else:
            logger.log_hyperparams(params)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """Scalar config values under dotted keys (model, data, trainer, seed), for TensorBoard's hparams tab."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node

    for key in ("seed", "model", "data", "trainer"):
        node = cfg.get(key)
        walk(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node, key)
    return flat
