"""Evolutionary search of a trained supernet: ``python tools/search.py ckpt=PATH out=DIR [key=value ...]``.

See ``conf/search.yaml`` and ``conf/search/evolution.yaml`` for every option and docs/search_export.md
for a walk-through. Bad input (missing/corrupt checkpoint, not a supernet, impossible constraints)
prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from effnn.overrides import check_overrides, one_line_errors, require_keys  # noqa: E402

REQUIRED = ("ckpt", "out")
USAGE = "python tools/search.py ckpt=RUN_DIR/checkpoints/last.ckpt out=DIR [search.objectives=[acc,macs]] ..."


@hydra.main(version_base="1.3", config_path="../conf", config_name="search")
def main(cfg: DictConfig) -> None:
    from effnn.search.app import run_search  # heavy imports only once the run starts

    with one_line_errors():
        run_search(cfg)


if __name__ == "__main__":
    with one_line_errors():
        require_keys(sys.argv[1:], REQUIRED, USAGE)
        check_overrides(sys.argv[1:], ROOT / "conf", default_config="search")
    main()
