"""What ``tools/search.py`` does, as functions: config -> supernet, data, costs, search -> output files.

Distributed runs go through Lightning Fabric (``devices=N``; ``strategy`` ddp, gloo on CPU): every rank
loads the supernet and runs the same search, the accuracy evaluations are split over ranks, and rank 0
writes the files.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from effnn.config import SearchConfig, validated
from effnn.errors import ConfigError
from effnn.hw import CostModel, build_cost_model
from effnn.nas.precision import BitsSpace
from effnn.nas.space import SearchSpace
from effnn.runtime import build_datamodule, set_threads
from effnn.search.candidate import Candidate
from effnn.search.costs import HARDWARE_METRICS, SELECTION_METRICS, SubnetCosts, best_accelerator
from effnn.search.distributed import Ranks
from effnn.search.evaluator import SubnetAccuracy, fixed_batches
from effnn.search.evolution import EvolutionarySearch, SearchObserver, SearchResult, SearchSettings
from effnn.search.hardware import DEFAULT_PE_TYPE, AreaModel, HardwareSpace
from effnn.search.observers import ObserverGroup, RichProgress, TensorBoardScalars
from effnn.search.report import pareto_figure, pareto_rows, save_figure, write_arch_files, write_pareto_csv
from effnn.search.supernet_checkpoint import SupernetCheckpoint, load_supernet_checkpoint

STATE_FILE = "search_state.json"
#: everything a search writes into its out= directory (besides Hydra's .hydra/)
SEARCH_OUTPUTS = (STATE_FILE, "pareto.csv", "pareto.png", "archs", "tensorboard")


def launch(cfg: DictConfig) -> L.Fabric:
    """Start the Fabric processes (one per device) and return this process's Fabric."""
    devices = int(cfg.get("devices", 1))
    if devices < 1:
        raise ConfigError(f"devices={devices} must be >= 1")
    set_threads(cfg.get("threads"))
    fabric = L.Fabric(accelerator=cfg.get("accelerator", "cpu"), devices=devices,
                      strategy="ddp" if devices > 1 else "auto")
    fabric.launch()
    return fabric


def settings_from_config(search: DictConfig | SearchConfig) -> SearchSettings:
    """The search's settings from its structured config (``effnn.config.SearchConfig``, validated by Hydra)."""
    cfg = search if isinstance(search, SearchConfig) else validated(SearchConfig, search, "search")
    nested = {"predictor": cfg.predictor.enabled, "prescreen_factor": cfg.predictor.prescreen_factor,
              "predictor_min_points": cfg.predictor.min_points}
    same_name = {f.name: getattr(cfg, f.name) for f in fields(SearchSettings) if f.name not in nested}
    return SearchSettings(**same_name, **nested)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def hardware_model(hardware: Any) -> CostModel:
    """The cost model of the top-level ``hardware`` group: the accelerator train.py logs hw/* metrics on."""
    plain = _plain(hardware)
    if isinstance(plain, Mapping) and "ppa" in plain:  # read by preset_ppa; the search prices with the PPA model
        plain = {k: v for k, v in plain.items() if k != "ppa"}
    try:
        return build_cost_model(plain)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"hardware: {err}") from err


def preset_ppa(hardware: Any) -> dict[str, Any]:
    """The fixed preset's silicon: its ``ppa:`` block (pe_type, weight_bits, act_bits, tech), else int_mac PEs
    as wide as its ``default_bits``."""
    plain = _plain(hardware) or {}
    bits = int(float(plain.get("default_bits", 16.0)))
    ppa = dict(plain.get("ppa") or {}) if isinstance(plain, Mapping) else {}
    return {"pe_type": str(ppa.get("pe_type", DEFAULT_PE_TYPE)), "weight_bits": int(ppa.get("weight_bits", bits)),
            "act_bits": int(ppa.get("act_bits", bits)), "tech": ppa.get("tech")}


def bits_space_from_config(cfg: DictConfig, loaded: SupernetCheckpoint) -> BitsSpace | None:
    """``search.bits`` as a ``BitsSpace`` (None when disabled); one-line errors for a checkpoint that was not
    trained with precision or choices it was not trained at."""
    bits_cfg = cfg.search.get("bits") or {}
    if not bits_cfg.get("enabled", False):
        return None
    trained = getattr(loaded, "bits_space", None)
    if getattr(loaded, "precision", None) is None:
        raise ConfigError(f"search.bits.enabled=true but {cfg.ckpt} was not trained with precision (no quantizers); "
                          f"train a switchable-precision supernet with `python train.py +recipe=alphanet_quant`, "
                          f"or drop search.bits.enabled")
    try:
        space = BitsSpace(loaded.space.num_stages, tuple(bits_cfg.get("weight_choices") or ()),
                          tuple(bits_cfg.get("act_choices") or ()))
    except ValueError as err:
        raise ConfigError(f"search.bits: {err}") from err
    if trained is not None:
        extra = sorted({*(set(space.weight_choices) - set(trained.weight_choices)),
                        *(set(space.act_choices) - set(trained.act_choices))})
        if extra:
            raise ConfigError(f"search.bits choices {extra} were not trained (the checkpoint knows weights "
                              f"{list(trained.weight_choices)}, activations {list(trained.act_choices)}); search "
                              f"within them or retrain with those model.precision choices")
    return space


def build_accuracy(cfg: DictConfig, loaded: SupernetCheckpoint, device: torch.device) -> SubnetAccuracy:
    """Accuracy on the validation split (never test) after BN (and activation-range) recalibration on fixed
    training batches."""
    dm = build_datamodule(cfg.data, loaded.num_classes, loaded.in_chans)
    calib = cfg.search.calibration
    batches = fixed_batches(dm.train_set, int(calib.batches), int(calib.batch_size), int(cfg.search.seed))
    return SubnetAccuracy(loaded.supernet, batches, dm.val_dataloader(), device,
                          channels_last=bool(cfg.search.get("channels_last", False)),
                          reuse_mb=float(calib.get("reuse_mb", 0.0)), precision=getattr(loaded, "precision", None))


def needs_hardware_metrics(settings: SearchSettings, co_search: bool) -> bool:
    names = set(settings.objectives) | set(settings.constraints)
    return co_search or bool(names & set(HARDWARE_METRICS))


def best_hardware_per_subnet(result: SearchResult, costs: SubnetCosts, hardware: HardwareSpace,
                             metric: str) -> dict[Candidate, tuple[Any, dict[str, float]]]:
    """For each Pareto point, the accelerator in the hardware space that minimizes ``metric`` for its arch at
    its bits."""
    tried: dict[Any, list] = {}
    for cand in result.evaluations:
        tried.setdefault(cand.key, []).append(cand.hardware)
    return {cand: best_accelerator(costs, cand.arch, hardware, metric, tried.get(cand.key, ()), bits=cand.bits)
            for cand, _ in result.pareto()}


def write_outputs(out: Path, result: SearchResult, search: EvolutionarySearch,
                  best_hw: Mapping[Candidate, Any] | None, tensorboard: TensorBoardScalars | None) -> None:
    entries = result.pareto()
    rows = pareto_rows(entries, best_hw)
    write_pareto_csv(out / "pareto.csv", rows)
    write_arch_files(out / "archs", entries, best_hw)
    fig = pareto_figure(result.evaluations, entries, search.objectives)
    save_figure(fig, out / "pareto.png")
    if tensorboard is not None:
        tensorboard.add_figure(fig, search.generation)
    import matplotlib.pyplot as plt

    plt.close(fig)


def print_summary(console: Console, result: SearchResult, search: EvolutionarySearch, out: Path) -> None:
    table = Table(title=f"Pareto archive ({len(result.archive)} of {len(result.evaluations)} evaluated)")
    names = [o.name for o in search.objectives]
    table.add_column("name")
    for n in names:
        table.add_column(n, justify="right")
    for i, (_, m) in enumerate(result.pareto()):
        table.add_row(f"pareto_{i:03d}", *(f"{m[n]:.4g}" for n in names))
    console.print(table)
    console.print(f"wrote {out}/pareto.csv, archs/, pareto.png, tensorboard/ and {STATE_FILE}")


def build_costs(cfg: DictConfig, settings: SearchSettings, space: SearchSpace, num_classes: int,
                in_chans: int, bits: BitsSpace | None = None) -> tuple[SubnetCosts, HardwareSpace | None]:
    """The subnet costs on the ``hardware`` group's accelerator (train.py's), and the co-search space.

    Latency/energy/EDP/area/power are always reported when the accelerator has them (microseconds per arch),
    priced by the PPA model with the preset's PE type (its ``ppa:`` block) at its ``default_bits`` unless bits
    are searched. In a co-search with bits, the budget pre-filter prices PEs at the narrowest bit choices
    (each candidate is then checked at its own widest bits).
    """
    hw_cfg = cfg.search.hardware
    co_search = bool(hw_cfg.co_search)
    model = hardware_model(cfg.hardware)
    array = getattr(model, "array", None)
    if array is None and needs_hardware_metrics(settings, co_search):
        raise ConfigError(f"hardware={model.name} has no accelerator for latency/energy objectives or a co-search; "
                          f"pick a systolic preset, e.g. hardware=systolic_16x16_os")
    if co_search and hw_cfg.metric not in SELECTION_METRICS:
        raise ConfigError(f"search.hardware.metric={hw_cfg.metric!r} must be one of {', '.join(SELECTION_METRICS)}")
    ppa = preset_ppa(cfg.hardware)
    area = dict(_plain(hw_cfg.area) or {})
    hardware = None
    if co_search:
        if bits is not None:
            area.update(weight_bits=bits.weight_choices[0], act_bits=bits.act_choices[0])
        hardware = HardwareSpace.from_config(array, _plain(hw_cfg.space), _plain(hw_cfg.budget), area)
    area_model = hardware.area_model if hardware is not None else AreaModel()
    costs = SubnetCosts(space, num_classes, in_chans, array, hardware_metrics=array is not None,
                        default_bits=float(cfg.hardware.get("default_bits", 16.0)), pe_type=ppa["pe_type"],
                        fixed_design_bits=(ppa["weight_bits"], ppa["act_bits"]), tech=ppa["tech"],
                        co_design_bits=(area_model.weight_bits, area_model.act_bits), co_tech=area_model.tech)
    return costs, hardware


def prepare_output_dir(out: Path, resume: bool, overwrite: bool, is_main: bool = True) -> None:
    """Refuse to mix two searches in one directory: ``resume=true`` needs a saved state, a fresh search needs a
    directory without search outputs unless ``overwrite=true``, which deletes the old outputs first."""
    held = [name for name in SEARCH_OUTPUTS if (out / name).exists()]
    if resume:
        if not (out / STATE_FILE).exists():
            raise ConfigError(f"resume=true but {out} has no {STATE_FILE} to continue from; drop resume=true to "
                              f"start a new search there, or pass the out= of the search to resume")
        return
    if held and not overwrite:
        raise ConfigError(f"{out} already holds a search ({', '.join(held)}); pass resume=true to continue it, "
                          f"overwrite=true to replace it, or choose a new out= directory")
    if held and is_main:
        for name in held:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_search(cfg: DictConfig, console: Console | None = None) -> SearchResult:
    """Run (or resume) the search configured by ``conf/search.yaml`` and write its outputs on rank 0."""
    method = str(cfg.search.get("method", "evolution"))
    if method == "differentiable":
        from effnn.search.differentiable_app import run_differentiable

        return run_differentiable(cfg, console)  # type: ignore[return-value]
    if method != "evolution":
        raise ConfigError(f"search.method={method!r}; choose evolution or differentiable")
    fabric = launch(cfg)
    ranks = Ranks(fabric.global_rank, fabric.world_size)
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    prepare_output_dir(out, bool(cfg.resume), bool(cfg.get("overwrite", False)), ranks.is_main)
    settings = settings_from_config(cfg.search)
    loaded = load_supernet_checkpoint(cfg.ckpt)
    space = loaded.space
    hw_cfg = cfg.search.hardware
    bits = bits_space_from_config(cfg, loaded)
    costs, hardware = build_costs(cfg, settings, space, loaded.num_classes, loaded.in_chans, bits)
    accuracy = build_accuracy(cfg, loaded, fabric.device)
    context = {"ckpt": str(Path(cfg.ckpt).resolve()), "space": space.name, "data": _plain(cfg.data),
               "calibration": _plain(cfg.search.calibration),
               "bits": None if bits is None else {"weight": list(bits.weight_choices), "act": list(bits.act_choices)},
               "hardware": _plain(hw_cfg) if hardware is not None else None,
               "array": _plain(cfg.hardware) if costs.hardware_metrics else None}
    console = console or Console(stderr=True)
    tensorboard = TensorBoardScalars(out / "tensorboard") if ranks.is_main and cfg.get("tensorboard", True) else None
    observers: list[SearchObserver] = [o for o in (tensorboard,) if o is not None]
    if ranks.is_main and cfg.get("progress", True):
        observers.append(RichProgress(console))
    observers.extend(hydra.utils.instantiate(spec) for spec in (cfg.get("observers") or {}).values())
    search = EvolutionarySearch(space, settings, accuracy, costs, hardware=hardware, bits=bits, ranks=ranks,
                                state_path=state_path, context=context, observer=ObserverGroup(*observers))
    try:
        result = search.run(resume=bool(cfg.resume))
    finally:
        for o in observers:
            if isinstance(o, RichProgress):
                o.close()
    if ranks.is_main:
        best_hw = (best_hardware_per_subnet(result, costs, hardware, str(hw_cfg.metric))
                   if hardware is not None else None)
        write_outputs(out, result, search, best_hw, tensorboard)
        if tensorboard is not None:
            tensorboard.close()
        print_summary(console, result, search, out)
    ranks.barrier()
    return result
