"""BN recalibration + evaluation time per subnet: what each supernet validation and each search step pays.

For the reference archs of the tiny32 space (min, two middle archs, max) on the digits data, one process
times, median of repeats: re-estimating BN statistics on N training batches (the supernet recipe's
``bn_calibration_batches``), extracting the static subnet, and evaluating it on the validation split.
Prints per-subnet milliseconds, subnets/s and the recalibration/evaluation ratio.

    python benchmarks/bench_bn_calibration.py [--quick] [--calib-batches 16] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
for path in (BENCH_DIR, BENCH_DIR.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from claims.supernet import NUM_CLASSES, SPACE, reference_archs  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from effnn.data import DigitsDataModule  # noqa: E402
from effnn.io import atomic_write_json  # noqa: E402
from effnn.nas import build_supernet, get_space, recalibrate_bn, resize_to  # noqa: E402


def measure(calib_batches: int, repeats: int, batch_size: int = 32, seed: int = 0,
            progress: bool = True) -> dict[str, Any]:
    """Median milliseconds of recalibration, extraction and evaluation for each reference arch."""
    if calib_batches <= 0 or repeats <= 0:
        raise ValueError(f"calib_batches ({calib_batches}) and repeats ({repeats}) must be positive")
    torch.manual_seed(seed)
    space = get_space(SPACE)
    net = build_supernet(space, NUM_CLASSES, 3).to(memory_format=torch.channels_last).eval()
    dm = DigitsDataModule(batch_size=batch_size, resolution=max(space.resolutions))
    dm.setup("fit")
    calib_loader = dm.calibration_dataloader()
    calib = [b for _, b in zip(range(calib_batches), calib_loader)]
    if len(calib) < calib_batches:
        raise ValueError(f"the digits training split has only {len(calib)} batches of {batch_size}; "
                         f"use --calib-batches <= {len(calib)}")
    val = list(dm.val_dataloader())
    images = sum(len(y) for _, y in val)
    archs = reference_archs(space)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("BN recalibration + eval", total=len(archs) * repeats)
        for name, arch in archs.items():
            res = arch.resolution

            def prep(x: torch.Tensor, r: int = res) -> torch.Tensor:
                return resize_to(x, r).contiguous(memory_format=torch.channels_last)

            times: dict[str, list[float]] = {"recalibrate": [], "extract": [], "evaluate": []}
            for _ in range(repeats):
                with torch.no_grad(), net.set_arch(arch):
                    t0 = time.perf_counter()
                    recalibrate_bn(net, calib, len(calib), forward=lambda b, p=prep: net(p(b[0])),
                                   sync_distributed=False)
                    t1 = time.perf_counter()
                    static = net.extract(arch).eval()
                    t2 = time.perf_counter()
                    for x, _ in val:
                        static(prep(x)).argmax(1)
                    t3 = time.perf_counter()
                for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                    times[key].append(1000.0 * seconds)
                bar.advance(task)
            med = {k: statistics.median(v) for k, v in times.items()}
            total = sum(med.values())
            rows.append({"name": name, "mmacs": space.macs(arch, NUM_CLASSES) / 1e6, "resolution": res,
                         **{f"{k}_ms": v for k, v in med.items()}, "total_ms": total,
                         "subnets_per_s": 1000.0 / total, "recalibrate_over_evaluate": med["recalibrate"] /
                         med["evaluate"]})
    mean_total = statistics.fmean(r["total_ms"] for r in rows)
    return {
        "space": SPACE, "calib_batches": calib_batches, "batch_size": batch_size, "eval_images": images,
        "repeats": repeats, "threads": torch.get_num_threads(), "archs": rows,
        "ratios": {
            "subnets_per_s (mean over archs)": 1000.0 / mean_total,
            "recalibration / evaluation time (mean)": statistics.fmean(r["recalibrate_over_evaluate"] for r in rows),
            "max arch / min arch time": rows[-1]["total_ms"] / rows[0]["total_ms"],
        },
    }


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"BN recalibration ({result['calib_batches']} batches of {result['batch_size']}) + evaluation "
                    f"({result['eval_images']} images) per subnet, median of {result['repeats']}, "
                    f"{result['threads']} threads")
    for col in ("arch", "MMACs", "recalibrate ms", "extract ms", "evaluate ms", "total ms", "subnets/s"):
        t.add_column(col, justify="right" if col != "arch" else "left")
    for r in result["archs"]:
        t.add_row(r["name"], f"{r['mmacs']:.2f}", f"{r['recalibrate_ms']:.1f}", f"{r['extract_ms']:.1f}",
                  f"{r['evaluate_ms']:.1f}", f"{r['total_ms']:.1f}", f"{r['subnets_per_s']:.2f}")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 2 calibration batches (tests)")
    parser.add_argument("--calib-batches", type=int, default=16,
                        help="training batches per recalibration (default 16, the supernet recipe's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 7)
    calib = 2 if args.smoke else args.calib_batches
    result = measure(calib, repeats)
    console = Console()
    console.print(table(result))
    for name, value in result["ratios"].items():
        console.print(f"{name}: {value:.2f}{'' if 'per_s' in name else 'x'}")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
