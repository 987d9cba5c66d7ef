"""effnn training entry point: ``python train.py +recipe=alphanet [key=value ...]`` (Hydra; ``-m`` sweeps)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from effnn.cli import hydra_app
from effnn.errors import EffnnError

log = logging.getLogger("effnn")


def main(cfg: DictConfig) -> float | None:
    """Train as configured; in a sweep a failed trial is logged and scored NaN so the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from effnn.pipeline import optimized_value, train  # heavy (torch, lightning): only once a run starts

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return optimized_value(cfg, train(cfg))  # errors reach effnn.cli's one-line hook
    try:
        return optimized_value(cfg, train(cfg))
    except EffnnError as err:
        log.error("trial failed: %s", err)
    except Exception:
        log.exception("trial failed; the sweep goes on and records NaN for it")
    return math.nan


if __name__ == "__main__":
    hydra_app(Path(__file__).resolve().parent / "conf", "config", main, "python train.py +recipe=NAME [key=value ...]")
