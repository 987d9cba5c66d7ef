"""``tools/search.py search.method=differentiable``: config -> tables -> gradient search -> exact evaluation -> files.

The discretised results of every lambda (argmax and the most frequent late samples) are evaluated exactly
-- accuracy after BN (and activation-range) recalibration on the validation split, costs from the
systolic model on the whole workload -- and go into the same Pareto archive and output files as the
evolutionary search's (pareto.csv, archs/*.yaml with bits and accelerator, pareto.png, TensorBoard).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from effnn.config import DifferentiableConfig, validated
from effnn.errors import ConfigError
from effnn.io import atomic_directory, atomic_write_text
from effnn.nas.precision import BitsSpace, BitsWorkload, StageBits, StagePrecision
from effnn.nas.space import Arch, SearchSpace
from effnn.search.candidate import Candidate
from effnn.search.costs import SubnetCosts
from effnn.search.diff_cost import ExpectedCost, network_decisions
from effnn.search.differentiable import DifferentiableSearch, DifferentiableSettings, JointChoice, RunRecord
from effnn.search.evaluator import SubnetAccuracy
from effnn.search.hardware import Accelerator, HardwareSpace
from effnn.search.pareto import Objective, ParetoArchive
from effnn.search.report import ARCH_FILE_PREFIX, pareto_figure, pareto_rows, save_figure, write_pareto_csv


def settings_from_config(node: Any) -> DifferentiableSettings:
    """``search.differentiable`` (validated against ``DifferentiableConfig``) as settings."""
    cfg = node if isinstance(node, DifferentiableConfig) else validated(DifferentiableConfig, node,
                                                                       "search.differentiable")
    data = {k: getattr(cfg, k) for k in DifferentiableConfig.__dataclass_fields__}
    data["lambdas"] = tuple(data["lambdas"])
    return DifferentiableSettings(**data)


def bits_space_from_config(search: DictConfig, num_stages: int) -> BitsSpace | None:
    """The ``search.bits`` block (enabled, weight/act choices) when the config has one and it is on."""
    bits = search.get("bits") if isinstance(search, DictConfig) else None
    if bits is None or not bool(bits.get("enabled", False)):
        return None
    try:
        return BitsSpace(num_stages, tuple(bits.get("weight_choices", (4, 8))), tuple(bits.get("act_choices", (4, 8))))
    except ValueError as err:
        raise ConfigError(f"search.bits: {err}") from err


class JointEvaluator:
    """Exact metrics of a :class:`JointChoice`: accuracy (at its bits) and costs on its accelerator."""

    def __init__(self, accuracy: SubnetAccuracy, costs: SubnetCosts, precision: StagePrecision | None = None,
                 hardware: HardwareSpace | None = None) -> None:
        self.accuracy, self.costs, self.precision, self.hardware = accuracy, costs, precision, hardware
        self.workload = BitsWorkload(costs.space)
        self._acc: dict[tuple[Arch, StageBits | None], float] = {}

    def acc(self, arch: Arch, bits: StageBits | None) -> float:
        """Top-1 (%) after BN recalibration; at ``bits``, activation ranges are re-estimated in the same
        training-mode passes (``StagePrecision.reset_activation_ranges``)."""
        key = (arch, bits)
        if key not in self._acc:
            if bits is None or self.precision is None:
                self._acc[key] = float(self.accuracy(arch))
            else:
                with self.precision.use(bits):
                    self.precision.reset_activation_ranges()
                    self.accuracy.recalibrate(arch)
                    self._acc[key] = float(self.accuracy.accuracy(arch))
        return self._acc[key]

    def cost(self, arch: Arch, bits: StageBits | None, hardware: Accelerator | None) -> dict[str, float]:
        """macs, params, latency_ms, energy, edp of the whole workload (plus PEs and area in a co-search)."""
        space = self.costs.space
        sections = (self.workload.sections(arch, bits, self.costs.num_classes, self.costs.in_chans)
                    if bits is not None else space.workload_sections(arch, self.costs.num_classes, self.costs.in_chans))
        scored = self.costs.cost_model(hardware).score_sections(sections)
        out = {m: float(scored[m]) for m in ("macs", "params", "latency_ms", "energy", "edp")}
        if hardware is not None and self.hardware is not None:
            out["pes"] = float(hardware.num_pes)
            out["area_mm2"] = float(self.hardware.area_mm2(hardware))
        return out

    def __call__(self, choice: JointChoice) -> dict[str, float]:
        return {"acc": self.acc(choice.arch, choice.bits), **self.cost(choice.arch, choice.bits, choice.hardware)}


def section_costs_fn(costs: SubnetCosts) -> Callable[[Accelerator | None, Sequence[Any]],
                                                      tuple[list[float], list[float]]]:
    """Latency and energy of each section on an accelerator: one vectorised ``score_many`` per accelerator."""
    def section_costs(acc: Accelerator | None, sections: Sequence[Any]) -> tuple[list[float], list[float]]:
        scored = costs.cost_model(acc).score_many([s.layers for s in sections])
        return [m["latency_ms"] for m in scored], [m["energy"] for m in scored]

    return section_costs


def build_expected_cost(space: SearchSpace, costs: SubnetCosts, bits: BitsSpace | None,
                        hardware: HardwareSpace | None) -> ExpectedCost:
    accelerators = list(hardware.feasible()) if hardware is not None else [None]
    return ExpectedCost(space, network_decisions(space, bits), accelerators, section_costs_fn(costs),
                        costs.num_classes, costs.in_chans, bits)


def candidates_of(records: Sequence[RunRecord]) -> list[JointChoice]:
    """Every run's argmax and frequent samples, first occurrence first."""
    return list(dict.fromkeys(c for r in records for c in (r.argmax, *r.frequent)))


def feasible(metrics: Mapping[str, float], constraints: Mapping[str, tuple[float | None, float | None]]) -> bool:
    return all((lo is None or metrics[n] >= lo) and (hi is None or metrics[n] <= hi)
               for n, (lo, hi) in constraints.items())


def evaluate_all(choices: Sequence[JointChoice], evaluator: Callable[[JointChoice], dict[str, float]],
                 objectives: Sequence[str], constraints: Mapping[str, Any]
                 ) -> tuple[ParetoArchive, dict[JointChoice, dict[str, float]]]:
    """Exact metrics of every choice and the Pareto archive of those inside the constraints."""
    archive = ParetoArchive(tuple(Objective.named(n) for n in objectives))
    evaluations = {}
    for choice in choices:
        metrics = evaluator(choice)
        evaluations[choice] = metrics
        if feasible(metrics, constraints):
            archive.add(choice, metrics)
    return archive, evaluations


def write_joint_outputs(out: Path, archive: ParetoArchive, evaluations: Mapping[JointChoice, Mapping[str, float]],
                        objectives: Sequence[str]) -> list[tuple[JointChoice, dict[str, float]]]:
    """pareto.csv (with a ``bits`` column), archs/pareto_NNN.yaml (AlphaNet keys + ``bits`` + ``hardware`` +
    ``metrics``) and pareto.png, each written atomically, in the evolutionary search's layout."""
    entries = archive.entries()
    rows = pareto_rows([(Candidate(c.arch, c.hardware), m) for c, m in entries])
    for row, (choice, _) in zip(rows, entries):
        if choice.bits is not None:
            row["bits"] = json.dumps(choice.bits.to_dict(), separators=(",", ":"))
    write_pareto_csv(out / "pareto.csv", rows)
    with atomic_directory(out / "archs", "arch files", overwrite=True) as tmp:
        for i, (choice, metrics) in enumerate(entries):
            data: dict[str, Any] = choice.arch.to_dict()
            if choice.bits is not None:
                data["bits"] = choice.bits.to_dict()
            data["metrics"] = {k: float(v) for k, v in metrics.items()}
            if choice.hardware is not None:
                data["hardware"] = choice.hardware.to_dict()
            atomic_write_text(tmp / f"{ARCH_FILE_PREFIX}{i:03d}.yaml", yaml.safe_dump(data, sort_keys=False))
    fig = pareto_figure(evaluations, entries, tuple(Objective.named(n) for n in objectives))
    save_figure(fig, out / "pareto.png")
    return entries  # type: ignore[return-value]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class _Progress:
    """A rich bar over all runs' steps (the CLI's progress=true)."""

    def __init__(self, console: Any, total: int) -> None:
        from rich.progress import Progress

        self.progress = Progress(console=console, transient=True)
        self.task = self.progress.add_task("differentiable search", total=total)
        self.progress.start()

    def __call__(self, run: int, step: int, record: Mapping[str, float]) -> None:
        self.progress.update(self.task, advance=1,
                             description=f"run {run}: ce {record['ce']:.3f} cost {record['cost']:.4g}")

    def close(self) -> None:
        self.progress.stop()


def _tensorboard(out: Path, records: Sequence[RunRecord], fig: Any) -> None:
    """Per-run curves (ce, cost, tau per step) under search_diff/lambda_<value>, and the Pareto figure."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=0)
    for r in records:
        for t, h in enumerate(r.history):
            for k, v in h.items():
                writer.add_scalar(f"search_diff/lambda_{r.lam:g}/{k}", v, t)
    writer.add_figure("search/pareto", fig, 0, close=False)
    writer.close()


def run_differentiable(cfg: DictConfig, console: Any = None) -> list[tuple[JointChoice, dict[str, float]]]:
    """``tools/search.py search.method=differentiable``: search, evaluate exactly, write the outputs."""
    from rich.console import Console

    from effnn.search import app
    from effnn.search.supernet_checkpoint import load_supernet_checkpoint
    from effnn.runtime import build_datamodule

    fabric = app.launch(cfg)
    if fabric.world_size > 1:
        raise ConfigError("search.method=differentiable runs on one process; drop devices=")
    out = Path(cfg.out)
    app.prepare_output_dir(out, bool(cfg.resume), bool(cfg.get("overwrite", False)))
    search_settings = app.settings_from_config(cfg.search)
    settings = settings_from_config(cfg.search.differentiable)
    loaded = load_supernet_checkpoint(cfg.ckpt)
    costs, hardware = app.build_costs(cfg, search_settings, loaded.space, loaded.num_classes, loaded.in_chans)
    if not costs.hardware_metrics:
        raise ConfigError("search.method=differentiable prices latency/energy on an accelerator; pick a systolic "
                          "hardware preset, e.g. hardware=systolic_16x16_os")
    bits = bits_space_from_config(cfg.search, loaded.space.num_stages)
    precision = getattr(loaded, "precision", None) or (StagePrecision(loaded.supernet) if bits else None)
    accuracy = app.build_accuracy(cfg, loaded, fabric.device)
    dm = build_datamodule(cfg.data, loaded.num_classes, loaded.in_chans)
    context = {"ckpt": str(Path(cfg.ckpt).resolve()), "space": loaded.space.name, "data": _plain(cfg.data),
               "bits": None if bits is None else [list(bits.weight_choices), list(bits.act_choices)],
               "hardware": _plain(cfg.search.hardware) if hardware is not None else None,
               "array": _plain(cfg.hardware)}
    console = console or Console(stderr=True)
    progress = (_Progress(console, settings.steps * len(settings.lambdas))
                if cfg.get("progress", True) else None)
    search = DifferentiableSearch(loaded.supernet, dm.train_set, settings,
                                  build_expected_cost(loaded.space, costs, bits, hardware),
                                  precision=precision if bits else None, bits_space=bits, hardware=hardware,
                                  calib_batches=accuracy.calib_batches, state_path=out / app.STATE_FILE,
                                  context=context, on_step=progress)
    try:
        records = search.run(resume=bool(cfg.resume))
    finally:
        if progress is not None:
            progress.close()
    evaluator = JointEvaluator(accuracy, costs, precision if bits else None, hardware)
    archive, evaluations = evaluate_all(candidates_of(records), evaluator, search_settings.objectives,
                                        search_settings.constraints)
    entries = write_joint_outputs(out, archive, evaluations, search_settings.objectives)
    if cfg.get("tensorboard", True):
        import matplotlib.pyplot as plt

        fig = pareto_figure(evaluations, entries, tuple(Objective.named(n) for n in search_settings.objectives))
        _tensorboard(out, records, fig)
        plt.close(fig)
    console.print(f"differentiable search: {len(records)} runs, {len(evaluations)} candidates evaluated exactly, "
                  f"{len(entries)} on the Pareto front; wrote {out}/pareto.csv, archs/, pareto.png, tensorboard/, "
                  f"{app.STATE_FILE}")
    return entries


__all__ = ["JointEvaluator", "build_expected_cost", "bits_space_from_config", "candidates_of", "evaluate_all",
           "run_differentiable", "settings_from_config", "write_joint_outputs"]
