"""effnn training entry point: ``python train.py +recipe=alphanet [key=value ...]`` (Hydra; ``-m`` sweeps)."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from effnn.errors import EffnnError
from effnn.overrides import check_overrides, one_line_errors
from effnn.recipes import check_recipes

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("effnn")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from effnn.pipeline import optimized_value, train  # heavy (torch, lightning): only once a run starts

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except EffnnError as err:
        if sweeping:  # one bad trial must not end the sweep
            log.error("trial failed: %s", err)
            return math.nan
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        if not sweeping:
            raise
        log.exception("trial failed; the sweep goes on and records NaN for it")
        return math.nan
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    with one_line_errors():
        check_recipes(sys.argv[1:], ROOT / "recipes")
        check_overrides(sys.argv[1:], ROOT / "conf")
    main()
