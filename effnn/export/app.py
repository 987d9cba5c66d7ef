"""What ``tools/export.py`` does: checkpoint + arch file -> verified static subnet in an output directory."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from effnn.errors import ConfigError
from effnn.export.artifact import read_arch_bits, read_arch_file
from effnn.export.exporter import ExportResult, export_subnet
from effnn.export.quantized import check_bits_fit, parse_bits
from effnn.hw import build_cost_model
from effnn.io import refuse_overwrite
from effnn.nas.precision import BitsWorkload, StageBits
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


def resolve_bits(cfg: DictConfig, loaded: SupernetCheckpoint) -> StageBits | None:
    """The bits to export at: ``bits=`` (a YAML/JSON mapping) if given, else the arch file's ``bits:`` key,
    else None (full precision); checked against the checkpoint (one-line errors)."""
    value = cfg.get("bits")
    bits = parse_bits(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value, "bits")
    spec = str(cfg.arch)
    if bits is None and spec not in NAMED_ARCHS:
        bits = read_arch_bits(spec)
    if bits is not None:
        check_bits_fit(bits, loaded.precision, loaded.bits_space, str(cfg.ckpt))
    return bits


def hardware_costs(cfg: DictConfig, loaded: SupernetCheckpoint, arch: Arch,
                   bits: StageBits | None = None) -> dict[str, float]:
    """Latency and energy of the exported subnet on the ``hardware`` group (train.py's and the search's),
    priced at ``bits`` when the export is quantized (the search's ``BitsWorkload``)."""
    hardware = cfg.get("hardware")
    if hardware is None:
        return {}
    try:
        model = build_cost_model(OmegaConf.to_container(hardware, resolve=True))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hardware: {err}") from err
    name = hardware.get("name") or model.name
    if bits is None:
        workload = loaded.space.workload(arch, loaded.num_classes, loaded.in_chans)
    else:
        workload = BitsWorkload(loaded.space).layers(arch, bits, loaded.num_classes, loaded.in_chans)
    scored = model.score(workload)
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
    bits = resolve_bits(cfg, loaded)
    device = torch.device("cuda" if cfg.get("accelerator") == "gpu" and torch.cuda.is_available() else "cpu")
    loaded.supernet.to(device)
    dm = build_datamodule(cfg.data, loaded.num_classes, loaded.in_chans)
    calib = cfg.calibration
    batches = fixed_batches(dm.train_set, int(calib.batches), int(calib.batch_size), int(calib.seed))
    verify_x = next(iter(dm.val_dataloader()))[0][: int(cfg.verify_batch_size)]
    splits = {"val": list(dm.val_dataloader()), "test": list(dm.test_dataloader())} if cfg.evaluate else None
    result = export_subnet(loaded, arch, batches, Path(cfg.out), verify_batch=verify_x, atol=float(cfg.atol),
                           weights_format=str(cfg.weights_format), program=str(cfg.program), onnx=bool(cfg.onnx),
                           opset=int(cfg.opset), eval_splits=splits, overwrite=overwrite, bits=bits,
                           precision=loaded.precision, bits_space=loaded.bits_space,
                           channels_last=bool(cfg.get("channels_last", False)))
    title = f"exported {cfg.arch}" + ("" if bits is None else f" at bits {bits.to_dict()}")
    table = Table(title=f"{title} -> {result.directory}")
    table.add_column("check")
    table.add_column("value", justify="right")
    for name, diff in result.max_abs_diff.items():
        table.add_row(f"max |diff| {name}", f"{diff:.2e}")
    if "onnx_samples_within_atol" in result.checks:
        table.add_row("ONNX samples within atol (quantized: top-1 checked)", result.checks["onnx_samples_within_atol"])
    for name, acc in result.accuracy.items():
        table.add_row(name, f"{acc:.2f}%")
    for name, value in hardware_costs(cfg, loaded, arch, bits).items():
        table.add_row(name, f"{value:.4g}")
    console.print(table)
    console.print(f"files: {', '.join(result.files.values())}, export.json")
    return result
