"""effnn training entry point: ``python train.py +recipe=alphanet [key=value ...]`` (Hydra; ``-m`` sweeps)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from effnn.errors import EffnnError
from effnn.recipes import check_recipes

ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from effnn.pipeline import optimized_value, train  # heavy (torch, lightning): only once a run starts

    try:
        metrics = train(cfg)
    except EffnnError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    try:
        check_recipes(sys.argv[1:], ROOT / "recipes")
    except EffnnError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
