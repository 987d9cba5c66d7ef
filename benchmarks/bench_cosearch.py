"""Joint (network, bits, accelerator) co-search vs sequential design, and evolutionary vs differentiable search.

On one switchable-precision supernet (tiny32 space, digits, per-stage 4/8-bit weights and activations) and one
small accelerator space (rows, cols, dataflow, filter SRAM, PE type; SCALE-Sim schedules, PPA-model costs):

* **joint**: the evolutionary search over (arch, bits, accelerator) triples;
* **sequential**: the same search over (arch, bits) on the fixed 16x16 int_mac array (8-bit PEs), then the
  best accelerator of the space for each of its Pareto points (the "design the network, then the chip" flow);
  same settings, so the same number of accuracy evaluations (reported);
* **differentiable**: ``effnn.search.differentiable`` (a lambda sweep), its results evaluated exactly;
* **joint at equal wall time**: the joint evolutionary search run for as many generations as fit in the
  differentiable search's wall time (tables + steps + exact evaluation), stopped after the generation that
  crosses it.

Reported: each Pareto front (acc vs EDP), the EDP each front needs to reach each accuracy level (iso-accuracy),
accuracy evaluations and evaluations per second. Every arm starts from a fresh evaluator (no shared caches).

    python benchmarks/bench_cosearch.py [--ckpt CKPT] [--json benchmarks/results/cosearch.json]
    python benchmarks/bench_cosearch.py --ckpt CKPT --bn-modes --steps 30   # bn_mode=train vs recalibrate

Without ``--ckpt`` a supernet is trained first (train.py, alphanet recipe with ``model.precision`` at 4/8
bits, 3 epochs: about 3 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from effnn.data import DigitsDataModule  # noqa: E402
from effnn.hw import SystolicArray  # noqa: E402
from effnn.io import atomic_write_json  # noqa: E402
from effnn.search.costs import SubnetCosts, best_accelerator  # noqa: E402
from effnn.search.differentiable import DifferentiableSearch, DifferentiableSettings  # noqa: E402
from effnn.search.differentiable_app import (  # noqa: E402
    JointEvaluator,
    build_expected_cost,
    candidates_of,
    evaluate_all,
)
from effnn.search.evaluator import SubnetAccuracy, fixed_batches  # noqa: E402
from effnn.search.evolution import EvolutionarySearch, SearchSettings  # noqa: E402
from effnn.search.hardware import AreaModel, HardwareSpace  # noqa: E402
from effnn.search.pareto import Objective, ParetoArchive  # noqa: E402
from effnn.search.supernet_checkpoint import load_supernet_checkpoint  # noqa: E402

OBJECTIVES = ("acc", "edp")


def train_checkpoint(directory: Path) -> Path:
    """A 3-epoch switchable-precision supernet on digits (train.py, as a user would train one)."""
    cmd = [sys.executable, str(ROOT / "train.py"), "+recipe=alphanet", "model.precision={weight_choices:[4,8],"
           "act_choices:[4,8]}", "trainer.max_epochs=3", f"paths.output_dir={directory}"]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)
    return directory / "checkpoints" / "last.ckpt"


class Setup:
    """What every arm shares: the supernet, its bits space, data batches, costs and the accelerator space."""

    def __init__(self, ckpt: Path) -> None:
        self.loaded = load_supernet_checkpoint(ckpt)
        self.space, self.bits = self.loaded.space, self.loaded.bits_space
        dm = DigitsDataModule(batch_size=64, resolution=32)
        dm.setup("fit")
        self.train_set, self.val = dm.train_set, list(dm.val_dataloader())
        self.calib = fixed_batches(dm.train_set, 4, 64, 0)
        array = SystolicArray(16, 16, "os")
        # fixed preset: 16x16 int_mac PEs, 8 bits wide; co-searched PEs are as wide as a candidate's widest bits
        self.costs = SubnetCosts(self.space, 10, 3, array, default_bits=8, fixed_design_bits=(8, 8),
                                 co_design_bits=(4, 4))
        self.hardware = HardwareSpace(array, [8, 16], [8, 16], ["os", "ws"], [16], [16, 64], [16],
                                      pe_type=["int_mac", "bit_serial"],
                                      area_model=AreaModel(weight_bits=4, act_bits=4))

    def accuracy(self) -> SubnetAccuracy:
        """A fresh evaluator (no cache shared between arms)."""
        return SubnetAccuracy(self.loaded.supernet, self.calib, self.val, channels_last=True,
                              precision=self.loaded.precision)


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pareto front of (acc, edp) points: higher accuracy, lower EDP; sorted by accuracy."""
    archive = ParetoArchive(tuple(Objective.named(n) for n in OBJECTIVES))
    for i, (acc, edp) in enumerate(points):
        archive.add(i, {"acc": acc, "edp": edp})
    return sorted((m["acc"], m["edp"]) for _, m in archive.entries())


def edp_at(points: list[tuple[float, float]], acc: float) -> float | None:
    """The least EDP among points at least ``acc`` accurate (None: the front never gets there)."""
    ok = [e for a, e in points if a >= acc]
    return min(ok) if ok else None


def evolution(setup: Setup, settings: SearchSettings, hardware: HardwareSpace | None,
              seconds: float | None = None) -> tuple[EvolutionarySearch, float]:
    """Run the evolutionary search (all generations, or until ``seconds`` of wall time are used)."""
    accuracy = setup.accuracy()
    search = EvolutionarySearch(setup.space, settings, accuracy, setup.costs, hardware=hardware, bits=setup.bits)
    start = time.perf_counter()
    for generation in range(settings.generations + 1):
        search.step(generation)
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
    return search, time.perf_counter() - start


def sequential_front(setup: Setup, search: EvolutionarySearch) -> list[tuple[float, float]]:
    """Each Pareto (arch, bits) of the fixed-array search on its best accelerator of the space (EDP)."""
    points = []
    for cand, metrics in search.archive.entries():
        _, hw_metrics = best_accelerator(setup.costs, cand.arch, setup.hardware, "edp", bits=cand.bits)
        points.append((metrics["acc"], hw_metrics["edp"]))
    return front(points)


def differentiable(setup: Setup, steps: int, lambdas: tuple[float, ...]) -> tuple[list[Any], dict[str, float]]:
    start = time.perf_counter()
    cost = build_expected_cost(setup.space, setup.costs, setup.bits, setup.hardware)
    tables = time.perf_counter() - start
    settings = DifferentiableSettings(steps=steps, lambdas=lambdas, batch_size=64, lr=0.05)
    search = DifferentiableSearch(setup.loaded.supernet, setup.train_set, settings, cost,
                                  precision=setup.loaded.precision, bits_space=setup.bits, hardware=setup.hardware)
    records = search.run()
    optimise = time.perf_counter() - start - tables
    evaluator = JointEvaluator(setup.accuracy(), setup.costs, setup.hardware)
    archive, evaluations = evaluate_all(candidates_of(records), evaluator, OBJECTIVES, {}, setup.hardware)
    total = time.perf_counter() - start
    points = [(m["acc"], m["edp"]) for m in evaluations.values()]
    return front(points), {"tables_s": tables, "optimise_s": optimise, "evaluate_s": total - tables - optimise,
                           "total_s": total, "evaluations": len(evaluations)}


def bn_modes(setup: Setup, steps: int) -> dict[str, Any]:
    """The differentiable search on the fixed array with BN in train mode vs recalibrated every step: seconds
    per step and the exact (acc, EDP) of each lambda's argmax."""
    cost = build_expected_cost(setup.space, setup.costs, setup.bits, None)
    out = {}
    for mode in ("train", "recalibrate"):
        settings = DifferentiableSettings(steps=steps, lambdas=(0.0, 1.0), batch_size=64, bn_mode=mode)
        search = DifferentiableSearch(setup.loaded.supernet, setup.train_set, settings, cost,
                                      precision=setup.loaded.precision, bits_space=setup.bits,
                                      calib_batches=setup.calib)
        start = time.perf_counter()
        records = search.run()
        seconds = time.perf_counter() - start
        evaluator = JointEvaluator(setup.accuracy(), setup.costs)
        out[mode] = {"s_per_step": seconds / (2 * steps),
                     "argmax": [{"lambda": r.lam, **{k: evaluator(r.argmax)[k] for k in OBJECTIVES},
                                 "final_ce": r.history[-1]["ce"]} for r in records]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cosearch.json")
    parser.add_argument("--bn-modes", action="store_true", help="only compare bn_mode=train vs recalibrate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or train_checkpoint(Path(tmp) / "supernet")
        setup = Setup(ckpt)
    if args.bn_modes:
        result = bn_modes(setup, args.steps)
        atomic_write_json(args.json.with_name("cosearch_bn_modes.json"), result)
        console.print(result)
        return
    settings = SearchSettings(objectives=OBJECTIVES, population=12, generations=args.generations, parents=6,
                              num_mutations=6, num_crossovers=6, seed=0)
    joint, joint_s = evolution(setup, settings, setup.hardware)
    seq, seq_s = evolution(setup, settings, None)
    joint_front = front([(m["acc"], m["edp"]) for _, m in joint.archive.entries()])
    seq_front = sequential_front(setup, seq)
    diff_front, diff_times = differentiable(setup, args.steps, (0.0, 0.3, 1.0, 3.0))
    unlimited = SearchSettings(**{**settings.__dict__, "generations": 10_000})  # stopped by the wall time
    timed, timed_s = evolution(setup, unlimited, setup.hardware, seconds=diff_times["total_s"])
    timed_front = front([(m["acc"], m["edp"]) for _, m in timed.archive.entries()])
    levels = sorted({a for a, _ in joint_front + seq_front + diff_front + timed_front})
    iso = [{"acc": a, "joint": edp_at(joint_front, a), "sequential": edp_at(seq_front, a),
            "differentiable": edp_at(diff_front, a), "joint_equal_time": edp_at(timed_front, a)} for a in levels]
    arms = {
        "joint_evolution": {"front": joint_front, "seconds": joint_s, "evaluations": len(joint.accuracies)},
        "sequential_evolution": {"front": seq_front, "seconds": seq_s, "evaluations": len(seq.accuracies)},
        "differentiable": {"front": diff_front, "seconds": diff_times["total_s"], **diff_times},
        "joint_evolution_equal_time": {"front": timed_front, "seconds": timed_s,
                                       "evaluations": len(timed.accuracies), "generations": timed.generation + 1},
    }
    for arm in arms.values():
        arm["evaluations_per_s"] = arm["evaluations"] / arm["seconds"]
    report = {"ckpt": str(ckpt), "space": setup.space.name, "bits": [list(setup.bits.weight_choices),
                                                                    list(setup.bits.act_choices)],
              "accelerators": setup.hardware.size(), "settings": {"population": 12, "generations": args.generations,
                                                                  "steps": args.steps},
              "arms": arms, "iso_accuracy_edp": iso}
    atomic_write_json(args.json, report)
    print_report(console, arms, iso)
    console.print(f"wrote {args.json}")


def print_report(console: Console, arms: dict[str, dict[str, Any]], iso: list[dict[str, Any]]) -> None:
    table = Table(title="arms")
    for col in ("arm", "seconds", "acc. evaluations", "eval/s", "front (acc %, EDP uJ*ms)"):
        table.add_column(col)
    for name, arm in arms.items():
        table.add_row(name, f"{arm['seconds']:.1f}", str(arm["evaluations"]), f"{arm['evaluations_per_s']:.2f}",
                      "  ".join(f"({a:.1f}, {e:.3g})" for a, e in arm["front"]))
    console.print(table)
    table = Table(title="least EDP reaching each accuracy (iso-accuracy)")
    for col in ("acc %", "joint", "sequential", "seq/joint", "differentiable", "joint (diff's wall time)"):
        table.add_column(col)
    for row in iso:
        ratio = (f"{row['sequential'] / row['joint']:.2f}" if row["joint"] and row["sequential"] else "-")
        table.add_row(f"{row['acc']:.1f}", *(f"{row[k]:.3g}" if row[k] else "-" for k in ("joint", "sequential")),
                      ratio, *(f"{row[k]:.3g}" if row[k] else "-" for k in ("differentiable", "joint_equal_time")))
    console.print(table)


if __name__ == "__main__":
    main()
