"""Export a subnet of a trained supernet: ``python tools/export.py ckpt=PATH arch=ARCH.yaml out=DIR``.

Writes the BN-recalibrated static model (state dict, torch.export program, ONNX) after checking that the
static model, the program, the ONNX model and the supernet at that arch agree to ``atol`` on a batch.
Options: ``conf/export.yaml``. Bad input (arch outside the checkpoint's space, a checkpoint that is not
a supernet, a corrupt file) prints one ``error:`` line and exits with status 2.
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

REQUIRED = ("ckpt", "arch", "out")
USAGE = "python tools/export.py ckpt=RUN_DIR/checkpoints/last.ckpt arch=SEARCH_DIR/archs/pareto_000.yaml out=DIR"


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from effnn.export.app import run_export  # heavy imports only once the run starts

    with one_line_errors():
        run_export(cfg)


if __name__ == "__main__":
    with one_line_errors():
        require_keys(sys.argv[1:], REQUIRED, USAGE)
        check_overrides(sys.argv[1:], ROOT / "conf", default_config="export")
    main()
