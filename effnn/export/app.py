"""What ``tools/export.py`` does: checkpoint + arch file -> verified static subnet in an output directory."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from effnn.errors import ConfigError
from effnn.export.artifact import read_arch_file
from effnn.export.exporter import ExportResult, export_subnet
from effnn.hw import build_cost_model
from effnn.io import refuse_overwrite
from effnn.nas.space import Arch, SearchSpace
from effnn.runtime import build_datamodule, set_threads
from effnn.search.evaluator import fixed_batches
from effnn.search.supernet_checkpoint import SupernetCheckpoint, load_supernet_checkpoint

NAMED_ARCHS = ("min", "max")


def resolve_arch(spec: str, space: SearchSpace) -> Arch:
    """``min``/``max`` (the space's smallest/largest subnet) or an arch YAML file, checked against ``space``."""
    arch = {"min": space.min_arch, "max": space.max_arch}[spec]() if spec in NAMED_ARCHS else read_arch_file(spec)
    try:
        return space.validate(arch)
    except ValueError as err:
        raise ConfigError(f"arch {spec} is outside the checkpoint's search space {space.name!r}: {err}") from err


def hardware_costs(cfg: DictConfig, loaded: SupernetCheckpoint, arch: Arch) -> dict[str, float]:
    """Latency and energy of the exported subnet on the ``hardware`` group (train.py's and the search's)."""
    hardware = cfg.get("hardware")
    if hardware is None:
        return {}
    try:
        model = build_cost_model(OmegaConf.to_container(hardware, resolve=True))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hardware: {err}") from err
    name = hardware.get("name") or model.name
    scored = model.score(loaded.space.workload(arch, loaded.num_classes, loaded.in_chans))
    return {f"{metric} on {name}": float(scored[metric]) for metric in ("latency_ms", "energy")
            if metric in scored}


def run_export(cfg: DictConfig, console: Console | None = None) -> ExportResult:
    """Export ``cfg.arch`` of ``cfg.ckpt`` to ``cfg.out`` and print the checks, accuracy and hardware cost."""
    console = console or Console(stderr=True)
    set_threads(cfg.get("threads"))
    overwrite = bool(cfg.get("overwrite", False))
    refuse_overwrite(cfg.out, "an export", overwrite)  # in a second, before loading anything
    loaded = load_supernet_checkpoint(cfg.ckpt)
    arch = resolve_arch(str(cfg.arch), loaded.space)
    device = torch.device("cuda" if cfg.get("accelerator") == "gpu" and torch.cuda.is_available() else "cpu")
    loaded.supernet.to(device)
    dm = build_datamodule(cfg.data, loaded.num_classes, loaded.in_chans)
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
    for name, value in hardware_costs(cfg, loaded, arch).items():
        table.add_row(name, f"{value:.4g}")
    console.print(table)
    console.print(f"files: {', '.join(result.files.values())}, export.json")
    return result
