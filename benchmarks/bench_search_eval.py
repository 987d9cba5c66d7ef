"""Search evaluations per second: from-scratch recalibration + evaluation vs prefix reuse, with bits off and on.

Runs one evolutionary search (tiny32 space, digits data, the search's default calibration of 8 batches of
64, NHWC, one thread) whose accuracy function evaluates every subnet on two copies of one supernet: from
scratch (``SubnetAccuracy(reuse_mb=0)``, the path before prefix reuse) and with prefix reuse (the
default), alternating which runs first, timing each. Any difference in accuracy fails the script. Then the
same with precision searched: the supernet quantized per stage (``StagePrecision``, as a switchable-precision
checkpoint loads), bits genes from {4, 8} per stage for weights and activations, each evaluation resetting
activation ranges and recalibrating BN + ranges at the candidate's bits. Prints where a from-scratch
evaluation's time goes (BN recalibration vs evaluation, medians over the archs) and evaluations per second
of every path, bits off and on side by side.

    python benchmarks/bench_search_eval.py [--quick] [--generations 8] [--json OUT.json] [--no-bits]
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
from effnn.nas.precision import BitsSpace, StagePrecision  # noqa: E402
from effnn.search import SearchSettings, SubnetAccuracy, fixed_batches  # noqa: E402
from effnn.search.evolution import EvolutionarySearch  # noqa: E402


class SideBySide:
    """The search's accuracy function: evaluates each arch on both paths, alternating which goes first,
    records both wall times and fails on any difference."""

    def __init__(self, scratch: SubnetAccuracy, reused: SubnetAccuracy) -> None:
        self.paths = (scratch, reused)
        self.times: list[tuple[float, float]] = []
        self.archs: list[Any] = []

    def __call__(self, arch: Any, bits: Any = None) -> float:
        order = (0, 1) if len(self.times) % 2 == 0 else (1, 0)
        seconds, accs = [0.0, 0.0], [0.0, 0.0]
        for i in order:
            start = time.perf_counter()
            accs[i] = self.paths[i](arch, bits)
            seconds[i] = time.perf_counter() - start
        if accs[0] != accs[1]:
            raise SystemExit(f"error: prefix reuse changed the accuracy of {arch} at {bits}: {accs[1]} vs {accs[0]}")
        self.times.append((seconds[0], seconds[1]))
        self.archs.append((arch, bits))
        return accs[0]


def run_search(scratch: SubnetAccuracy, reused: SubnetAccuracy, settings: SearchSettings,
               bits: BitsSpace | None = None) -> SideBySide:
    space = scratch.supernet.space
    both = SideBySide(scratch, reused)
    search = EvolutionarySearch(space, settings, both, lambda arch, hw, b=None: {"macs": float(space.macs(arch, 10))},
                                bits=bits)
    search.run()
    return both


def measure(space: Any, weights: dict, calib: list, val: list, settings: SearchSettings, reuse_mb: float,
            bits: BitsSpace | None) -> dict[str, Any]:
    """One side-by-side search (bits searched when ``bits`` is given): evaluations/s of both paths."""

    def accuracy(mb: float) -> SubnetAccuracy:
        net = build_supernet(space, 10, 3)
        net.load_state_dict(weights)
        precision = StagePrecision(net) if bits is not None else None  # ranges are re-estimated per evaluation
        return SubnetAccuracy(net, calib, val, channels_last=True, reuse_mb=mb, precision=precision)

    scratch_acc, reused_acc = accuracy(0.0), accuracy(reuse_mb)
    if reused_acc.reuse is None:
        raise SystemExit("error: prefix reuse does not support this supernet")
    both = run_search(scratch_acc, reused_acc, settings, bits)
    recal_ms, eval_ms = profile_scratch(scratch_acc, both.archs)
    n = len(both.times)
    t_scratch, t_reuse = sum(t for t, _ in both.times), sum(t for _, t in both.times)
    stats = reused_acc.reuse
    return {
        "evaluations": n, "identical_results": True,
        "scratch_evals_per_s": n / t_scratch, "reuse_evals_per_s": n / t_reuse,
        "speedup": t_scratch / t_reuse,
        "scratch_recalibration_ms": recal_ms, "scratch_evaluation_ms": eval_ms,
        "recalibration_over_evaluation": recal_ms / eval_ms,
        "segments_reused": stats.reused_segments, "segments_computed": stats.computed_segments,
        "cache_mb": stats.cache.bytes / 2 ** 20,
    }


def profile_scratch(accuracy: SubnetAccuracy, archs: list[Any], limit: int = 24) -> tuple[float, float]:
    """Median milliseconds of recalibration and of evaluation for the first ``limit`` (arch, bits)."""
    recal, evaluate = [], []
    for arch, bits in archs[:limit]:
        t0 = time.perf_counter()
        accuracy.recalibrate(arch, bits)
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
    parser.add_argument("--no-bits", action="store_true", help="only the full-precision search")
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
    modes = {"bits_off": None}
    if not args.no_bits:
        modes["bits_on"] = BitsSpace(space.num_stages, (4, 8), (4, 8))
    result: dict[str, Any] = {"generations": generations, "threads": torch.get_num_threads()}
    for name, bits in modes.items():
        result[name] = measure(space, weights, calib, val, settings, args.reuse_mb, bits)
    table = Table(title=f"search evaluations/s, tiny32 on digits ({generations} generations, 1 thread)")
    for col in ("bits", "subnets", "from scratch", "prefix reuse", "speedup", "recalib. ms", "eval ms"):
        table.add_column(col, justify="right")
    for name, r in ((k, result[k]) for k in modes):
        table.add_row("searched {4,8}" if name == "bits_on" else "off (full precision)", str(r["evaluations"]),
                      f"{r['scratch_evals_per_s']:.2f}", f"{r['reuse_evals_per_s']:.2f}", f"{r['speedup']:.2f}x",
                      f"{r['scratch_recalibration_ms']:.1f}", f"{r['scratch_evaluation_ms']:.1f}")
    console = Console()
    console.print(table)
    if "bits_on" in result:
        on, off = result["bits_on"], result["bits_off"]
        result["bits_on_over_off_reuse"] = on["reuse_evals_per_s"] / off["reuse_evals_per_s"]
        result["bits_on_over_off_scratch"] = on["scratch_evals_per_s"] / off["scratch_evals_per_s"]
        console.print(f"bits on / off evaluations per second: {result['bits_on_over_off_reuse']:.2f}x with prefix "
                      f"reuse, {result['bits_on_over_off_scratch']:.2f}x from scratch; identical accuracies on "
                      f"every path")
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
