"""What ``tools/export.py`` does: checkpoint + arch file -> verified static subnet in an output directory."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from effnn.errors import ConfigError
from effnn.export.artifact import read_arch_file
from effnn.export.exporter import ExportResult, export_subnet
from effnn.io import refuse_overwrite
from effnn.nas.space import Arch, SearchSpace
from effnn.search.app import build_datamodule, set_threads
from effnn.search.evaluator import fixed_batches
from effnn.search.supernet_checkpoint import load_supernet_checkpoint

NAMED_ARCHS = ("min", "max")


def resolve_arch(spec: str, space: SearchSpace) -> Arch:
    """``min``/``max`` (the space's smallest/largest subnet) or an arch YAML file, checked against ``space``."""
    arch = {"min": space.min_arch, "max": space.max_arch}[spec]() if spec in NAMED_ARCHS else read_arch_file(spec)
    try:
        return space.validate(arch)
    except ValueError as err:
        raise ConfigError(f"arch {spec} is outside the checkpoint's search space {space.name!r}: {err}") from err


def run_export(cfg: DictConfig, console: Console | None = None) -> ExportResult:
    console = console or Console(stderr=True)
    set_threads(cfg.get("threads"))
    overwrite = bool(cfg.get("overwrite", False))
    refuse_overwrite(cfg.out, "an export", overwrite)  # in a second, before loading anything
    loaded = load_supernet_checkpoint(cfg.ckpt)
    arch = resolve_arch(str(cfg.arch), loaded.space)
    device = torch.device("cuda" if cfg.get("accelerator") == "gpu" and torch.cuda.is_available() else "cpu")
    loaded.supernet.to(device)
    dm = build_datamodule(cfg, loaded)
    calib = cfg.calibration
    batches = fixed_batches(dm.train_set, int(calib.batches), int(calib.batch_size), int(calib.seed))
    verify_x = next(iter(dm.val_dataloader()))[0][: int(cfg.verify_batch_size)]
    splits = {"val": list(dm.val_dataloader()), "test": list(dm.test_dataloader())} if cfg.evaluate else None
    result = export_subnet(loaded, arch, batches, Path(cfg.out), verify_batch=verify_x, atol=float(cfg.atol),
                           weights_format=str(cfg.weights_format), program=str(cfg.program), onnx=bool(cfg.onnx),
                           opset=int(cfg.opset), eval_splits=splits, overwrite=overwrite)
    table = Table(title=f"exported {cfg.arch} -> {result.directory}")
    table.add_column("check")
    table.add_column("value", justify="right")
    for name, diff in result.max_abs_diff.items():
        table.add_row(f"max |diff| {name}", f"{diff:.2e}")
    for name, acc in result.accuracy.items():
        table.add_row(name, f"{acc:.2f}%")
    console.print(table)
    console.print(f"files: {', '.join(result.files.values())}, export.json")
    return result
