"""``tools/search.py search.method=differentiable``: config -> tables -> gradient search -> exact evaluation -> files.

The discretised results of every lambda (argmax and the most frequent late samples) are evaluated exactly
-- accuracy after BN (and activation-range) recalibration on the validation split, costs from the
systolic model on the whole workload -- and go into the same Pareto archive and output files as the
evolutionary search's (pareto.csv, archs/*.yaml with bits and accelerator, pareto.png, TensorBoard).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from effnn.config import DifferentiableConfig, validated
from effnn.errors import ConfigError
from effnn.hw import mapping as hw_mapping
from effnn.nas.precision import BitsSpace, StageBits
from effnn.nas.space import Arch, SearchSpace
from effnn.search.candidate import Candidate
from effnn.search.costs import SubnetCosts, candidate_budget_ok
from effnn.search.diff_cost import ExpectedCost, SectionCosts, network_decisions
from effnn.search.differentiable import DifferentiableSearch, DifferentiableSettings, RunRecord
from effnn.search.hardware import Accelerator, HardwareSpace
from effnn.search.pareto import Objective, ParetoArchive
from effnn.search.report import pareto_figure, pareto_rows, save_figure, write_arch_files, write_pareto_csv


def settings_from_config(node: Any) -> DifferentiableSettings:
    """``search.differentiable`` (validated against ``DifferentiableConfig``) as settings."""
    cfg = node if isinstance(node, DifferentiableConfig) else validated(DifferentiableConfig, node,
                                                                       "search.differentiable")
    data = {k: getattr(cfg, k) for k in DifferentiableConfig.__dataclass_fields__}
    data["lambdas"] = tuple(data["lambdas"])
    return DifferentiableSettings(**data)


class JointEvaluator:
    """Exact metrics of a candidate, as the evolutionary search computes them: accuracy at its bits (BN and
    activation ranges recalibrated) and the PPA costs of its whole workload on its accelerator."""

    def __init__(self, accuracy: Callable[..., float], costs: SubnetCosts, hardware: HardwareSpace | None = None
                 ) -> None:
        self.accuracy, self.costs, self.hardware = accuracy, costs, hardware
        self._acc: dict[tuple[Arch, StageBits | None], float] = {}

    def __call__(self, cand: Candidate) -> dict[str, float]:
        if cand.key not in self._acc:
            self._acc[cand.key] = float(self.accuracy(cand.arch) if cand.bits is None
                                        else self.accuracy(cand.arch, cand.bits))
        metrics = {"acc": self._acc[cand.key], **self.costs(cand.arch, cand.hardware, cand.bits)}
        if self.hardware is not None and cand.hardware is not None:
            metrics["pes"] = float(cand.hardware.num_pes)
            metrics.setdefault("area_mm2", self.hardware.area_mm2(cand.hardware))
        return metrics


def section_costs_fn(costs: SubnetCosts) -> SectionCosts:
    """Latency and energy of each section alone on an accelerator with PEs ``pe_bits`` wide (None: the
    cost model's own widths), from the same cost models the exact evaluation uses. SCALE-Sim-mode
    accelerators price all the sections' layers in one vectorised ``scalesim_layers`` call (one layer at a
    time through the cost model is ~1000x slower); mapped modes go through the model's mapper cache."""
    def section_costs(acc: Accelerator | None, pe_bits: tuple[int, int] | None, sections: Sequence[Any]
                      ) -> tuple[list[float], list[float]]:
        model = costs.cost_model(acc, pe_bits or costs.pe_bits(acc, None))
        if model.mode != "scalesim":
            scored = [model.score_sections([s]) for s in sections]
            return [m["latency_ms"] for m in scored], [m["energy"] for m in scored]
        unique: dict[Any, Any] = {}  # layers by shape and bits (names differ between slots of equal shape)
        keys = [[replace(layer, name="") for layer in sec.layers] for sec in sections]
        for sec, sec_keys in zip(sections, keys):
            for layer, key in zip(sec.layers, sec_keys):
                unique.setdefault(key, layer)
        priced = dict(zip(unique, hw_mapping.scalesim_layers(model.array, model.acc, list(unique.values()))))
        lat, energy = [], []
        for sec_keys in keys:
            report = hw_mapping.totals([priced[k] for k in sec_keys], model.acc)
            lat.append(report["latency_ms"])
            energy.append(report["energy"])
        return lat, energy

    return section_costs


def build_expected_cost(space: SearchSpace, costs: SubnetCosts, bits: BitsSpace | None,
                        hardware: HardwareSpace | None) -> ExpectedCost:
    accelerators = list(hardware.feasible()) if hardware is not None else [None]
    return ExpectedCost(space, network_decisions(space, bits), accelerators, section_costs_fn(costs),
                        costs.num_classes, costs.in_chans, bits, couple_pe_bits=hardware is not None)


def candidates_of(records: Sequence[RunRecord]) -> list[Candidate]:
    """Every run's argmax and frequent samples, first occurrence first."""
    return list(dict.fromkeys(c for r in records for c in (r.argmax, *r.frequent)))


def feasible(metrics: Mapping[str, float], constraints: Mapping[str, tuple[float | None, float | None]]) -> bool:
    return all((lo is None or metrics[n] >= lo) and (hi is None or metrics[n] <= hi)
               for n, (lo, hi) in constraints.items())


def evaluate_all(candidates: Sequence[Candidate], evaluator: Callable[[Candidate], dict[str, float]],
                 objectives: Sequence[str], constraints: Mapping[str, Any], hardware: HardwareSpace | None = None
                 ) -> tuple[ParetoArchive, dict[Candidate, dict[str, float]]]:
    """Exact metrics of every candidate within the budget (at its own PE widths) and the Pareto archive of
    those inside the constraints."""
    archive = ParetoArchive(tuple(Objective.named(n) for n in objectives))
    evaluations = {}
    for cand in candidates:
        if not candidate_budget_ok(hardware, cand.hardware, cand.bits):
            continue
        metrics = evaluator(cand)
        evaluations[cand] = metrics
        if feasible(metrics, constraints):
            archive.add(cand, metrics)
    return archive, evaluations


def write_joint_outputs(out: Path, archive: ParetoArchive, evaluations: Mapping[Candidate, Mapping[str, float]],
                        objectives: Sequence[str]) -> tuple[list[tuple[Candidate, dict[str, float]]], Any]:
    """pareto.csv, archs/pareto_NNN.yaml (with ``bits`` and ``hardware``) and pareto.png through the
    evolutionary search's writers; returns the entries and the (open) figure."""
    entries = archive.entries()
    write_pareto_csv(out / "pareto.csv", pareto_rows(entries))
    write_arch_files(out / "archs", entries)
    fig = pareto_figure(evaluations, entries, tuple(Objective.named(n) for n in objectives))
    save_figure(fig, out / "pareto.png")
    return entries, fig  # type: ignore[return-value]


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


def run_differentiable(cfg: DictConfig, console: Any = None) -> list[tuple[Candidate, dict[str, float]]]:
    """``tools/search.py search.method=differentiable``: search, evaluate exactly, write the outputs."""
    from rich.console import Console

    from effnn.runtime import build_datamodule
    from effnn.search import app
    from effnn.search.supernet_checkpoint import load_supernet_checkpoint

    fabric = app.launch(cfg)
    if fabric.world_size > 1:
        raise ConfigError("search.method=differentiable runs on one process; drop devices=")
    out = Path(cfg.out)
    app.prepare_output_dir(out, bool(cfg.resume), bool(cfg.get("overwrite", False)))
    search_settings = app.settings_from_config(cfg.search)
    settings = settings_from_config(cfg.search.differentiable)
    loaded = load_supernet_checkpoint(cfg.ckpt)
    bits = app.bits_space_from_config(cfg, loaded)
    costs, hardware = app.build_costs(cfg, search_settings, loaded.space, loaded.num_classes, loaded.in_chans, bits)
    if not costs.hardware_metrics:
        raise ConfigError("search.method=differentiable prices latency/energy on an accelerator; pick a systolic "
                          "hardware preset, e.g. hardware=systolic_16x16_os")
    precision = getattr(loaded, "precision", None)
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
    archive, evaluations = evaluate_all(candidates_of(records), JointEvaluator(accuracy, costs, hardware),
                                        search_settings.objectives, search_settings.constraints, hardware)
    entries, fig = write_joint_outputs(out, archive, evaluations, search_settings.objectives)
    if cfg.get("tensorboard", True):
        _tensorboard(out, records, fig)
    import matplotlib.pyplot as plt

    plt.close(fig)
    console.print(f"differentiable search: {len(records)} runs, {len(evaluations)} candidates evaluated exactly, "
                  f"{len(entries)} on the Pareto front; wrote {out}/pareto.csv, archs/, pareto.png, tensorboard/, "
                  f"{app.STATE_FILE}")
    return entries


__all__ = ["JointEvaluator", "build_expected_cost", "candidates_of", "evaluate_all",
           "run_differentiable", "settings_from_config", "write_joint_outputs"]
