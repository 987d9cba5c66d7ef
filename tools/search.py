"""Evolutionary search of a trained supernet: ``python tools/search.py ckpt=PATH out=DIR [key=value ...]``.

See ``conf/search.yaml`` and ``conf/search/evolution.yaml`` for every option and docs/search_export.md
for a walk-through. Latency/energy are computed on the ``hardware`` group (default as train.py's,
``hardware=systolic_32x32_ws`` to change). Bad input prints one ``error:`` line and exits with status 2.
"""

from pathlib import Path

from effnn.cli import hydra_app


def main(cfg):  # noqa: ANN001, ANN201 -- Hydra's task
    from effnn.search.app import run_search  # heavy (torch): only once the config composed

    return run_search(cfg)


if __name__ == "__main__":
    hydra_app(Path(__file__).resolve().parents[1] / "conf", "search", main)
