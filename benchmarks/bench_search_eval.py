"""Search evaluations per second: from-scratch recalibration + evaluation vs prefix reuse, side by side.

Runs one evolutionary search (tiny32 space, digits data, the search's default calibration of 8 batches of
64, NHWC, one thread) whose accuracy function evaluates every subnet on two copies of one supernet: from
scratch (``SubnetAccuracy(reuse_mb=0)``, the path before prefix reuse) and with prefix reuse (the
default), alternating which runs first, timing each. Any difference in accuracy fails the script. Prints where a
from-scratch evaluation's time goes (BN recalibration vs evaluation, medians over the archs) and
evaluations per second of both paths with their ratio.

    python benchmarks/bench_search_eval.py [--quick] [--generations 8] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
from effnn.io import atomic_write_json  # noqa: E402
from effnn.nas import build_supernet, get_space  # noqa: E402
from effnn.search import SearchSettings, SubnetAccuracy, fixed_batches  # noqa: E402
from effnn.search.evolution import EvolutionarySearch  # noqa: E402


class SideBySide:
    """The search's accuracy function: evaluates each arch on both paths, alternating which goes first,
    records both wall times and fails on any difference."""

    def __init__(self, scratch: SubnetAccuracy, reused: SubnetAccuracy) -> None:
        self.paths = (scratch, reused)
        self.times: list[tuple[float, float]] = []
        self.archs: list[Any] = []

    def __call__(self, arch: Any) -> float:
        order = (0, 1) if len(self.times) % 2 == 0 else (1, 0)
        seconds, accs = [0.0, 0.0], [0.0, 0.0]
        for i in order:
            start = time.perf_counter()
            accs[i] = self.paths[i](arch)
            seconds[i] = time.perf_counter() - start
        if accs[0] != accs[1]:
            raise SystemExit(f"error: prefix reuse changed the accuracy of {arch}: {accs[1]} vs {accs[0]}")
        self.times.append((seconds[0], seconds[1]))
        self.archs.append(arch)
        return accs[0]


def run_search(scratch: SubnetAccuracy, reused: SubnetAccuracy, settings: SearchSettings) -> SideBySide:
    space = scratch.supernet.space
    both = SideBySide(scratch, reused)
    search = EvolutionarySearch(space, settings, both, lambda arch, hw: {"macs": float(space.macs(arch, 10))})
    search.run()
    return both


def profile_scratch(accuracy: SubnetAccuracy, archs: list[Any], limit: int = 24) -> tuple[float, float]:
    """Median milliseconds of recalibration and of evaluation for the first ``limit`` archs."""
    recal, evaluate = [], []
    for arch in archs[:limit]:
        t0 = time.perf_counter()
        accuracy.recalibrate(arch)
        t1 = time.perf_counter()
        accuracy.accuracy(arch)
        recal.append(t1 - t0)
        evaluate.append(time.perf_counter() - t1)
    return 1e3 * statistics.median(recal), 1e3 * statistics.median(evaluate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 generations instead of 8")
    parser.add_argument("--smoke", action="store_true", help="1 generation of 4 children (CI)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--reuse-mb", type=float, default=512.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generations = 1 if args.smoke else 3 if args.quick else args.generations
    population, children = (8, 2) if args.smoke else (16, 8)
    settings = SearchSettings(objectives=("acc", "macs"), population=population, generations=generations,
                              parents=population // 2, num_mutations=children, num_crossovers=children, seed=0)
    space = get_space("tiny32")
    dm = DigitsDataModule(batch_size=64, resolution=max(space.resolutions))
    dm.setup("fit")
    calib = fixed_batches(dm.train_set, 8, 64, seed=0)
    val = list(dm.val_dataloader())
    # live blocks (no zero-init last BN gamma), as in a trained supernet; timing does not depend on the weights
    weights = build_supernet(space, 10, 3, zero_init_last_bn=False).state_dict()

    def accuracy(reuse_mb: float) -> SubnetAccuracy:
        net = build_supernet(space, 10, 3)
        net.load_state_dict(weights)
        return SubnetAccuracy(net, calib, val, channels_last=True, reuse_mb=reuse_mb)

    scratch_acc, reused_acc = accuracy(0.0), accuracy(args.reuse_mb)
    both = run_search(scratch_acc, reused_acc, settings)
    recal_ms, eval_ms = profile_scratch(scratch_acc, both.archs)
    n = len(both.times)
    t_scratch, t_reuse = sum(t for t, _ in both.times), sum(t for _, t in both.times)
    stats = reused_acc.reuse
    result = {
        "evaluations": n, "generations": generations, "identical_results": True,
        "scratch_evals_per_s": n / t_scratch, "reuse_evals_per_s": n / t_reuse,
        "speedup": t_scratch / t_reuse,
        "scratch_recalibration_ms": recal_ms, "scratch_evaluation_ms": eval_ms,
        "recalibration_over_evaluation": recal_ms / eval_ms,
        "segments_reused": stats.reused_segments, "segments_computed": stats.computed_segments,
        "cache_mb": stats.cache.bytes / 2 ** 20, "threads": torch.get_num_threads(),
    }
    table = Table(title=f"search evaluations, tiny32 on digits ({n} subnets, {generations} generations, 1 thread)")
    table.add_column("path")
    table.add_column("evaluations/s", justify="right")
    table.add_row("from scratch (before)", f"{result['scratch_evals_per_s']:.2f}")
    table.add_row("prefix reuse (now)", f"{result['reuse_evals_per_s']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"from scratch, per subnet: recalibration {recal_ms:.1f} ms, evaluation {eval_ms:.1f} ms "
                  f"(recalibration / evaluation {recal_ms / eval_ms:.2f}x)")
    console.print(f"segments reused {stats.reused_segments}, computed {stats.computed_segments}; "
                  f"activation cache {result['cache_mb']:.0f} MB")
    console.print(f"prefix reuse / from scratch speedup: {result['speedup']:.2f}x; identical accuracies on all "
                  f"{n} subnets")
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
