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

from effnn.errors import ConfigError, EffnnError  # noqa: E402
from effnn.overrides import check_overrides, split_argv  # noqa: E402

INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i"}
REQUIRED = ("ckpt", "out")


def check_required(argv: list[str]) -> None:
    """ckpt= and out= are mandatory; say so in one line instead of Hydra's traceback."""
    if any(arg.split("=", 1)[0] in INFO_FLAGS for arg in argv):
        return
    given = {arg.split("=", 1)[0].lstrip("+") for arg in split_argv(argv)[0] if "=" in arg}
    missing = [k for k in REQUIRED if k not in given]
    if missing:
        raise ConfigError(f"missing {' and '.join(f'{k}=' for k in missing)}; usage: python tools/search.py "
                          f"ckpt=RUN_DIR/checkpoints/last.ckpt out=DIR [search.objectives=[acc,macs]] ...")


@hydra.main(version_base="1.3", config_path="../conf", config_name="search")
def main(cfg: DictConfig) -> None:
    from effnn.search.app import run_search  # heavy imports only once the run starts

    try:
        run_search(cfg)
    except EffnnError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    try:
        check_required(sys.argv[1:])
        check_overrides(sys.argv[1:], ROOT / "conf", default_config="search")
    except EffnnError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
