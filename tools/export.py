"""Export a subnet of a trained supernet: ``python tools/export.py ckpt=PATH arch=ARCH.yaml out=DIR``.

Writes the BN-recalibrated static model (state dict, torch.export program, ONNX) after checking that the
static model, the program, the ONNX model and the supernet at that arch agree to ``atol`` on a batch, and
reports its latency/energy on the ``hardware`` group. Options: ``conf/export.yaml``. Bad input prints one
``error:`` line and exits with status 2.
"""

from pathlib import Path

from effnn.cli import hydra_app


def main(cfg):  # noqa: ANN001, ANN201 -- Hydra's task
    from effnn.export.app import run_export  # heavy (torch): only once the config composed

    return run_export(cfg)


if __name__ == "__main__":
    hydra_app(Path(__file__).resolve().parents[1] / "conf", "export", main)
