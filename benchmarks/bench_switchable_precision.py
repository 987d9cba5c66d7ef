"""Switchable-precision supernet (recipe alphanet_quant): accuracy of the same subnets at fp32, w8a8 and w4a4.

Issue 14's done-when: the subnets of ``python train.py +recipe=alphanet_quant`` at 4 and 8 bits are within 1
point of the same subnet at 8 bits / fp32. For the reference archs of the tiny32 space (min, two middle archs
with genes at 1/3 and 2/3 of their choices, max) this loads the checkpoint with
``effnn.search.load_supernet_checkpoint`` (quantized, as the search and the export see it), re-estimates BN
statistics and activation ranges of each (arch, precision) on the same fixed training batches, and measures
top-1 accuracy (percent) on the digits validation split. Prints the table and the gaps (w8a8 - fp32,
w4a4 - w8a8) and writes them as JSON.

    python benchmarks/bench_switchable_precision.py [--ckpt RUN/checkpoints/last.ckpt] [--calib-batches 16]
        [--json benchmarks/results/switchable_precision.json] [-- train.py overrides ...]

Without ``--ckpt`` it first trains the recipe (``python train.py +recipe=alphanet_quant`` plus any overrides
after ``--``) into a fresh directory and measures its ``last.ckpt``, recording the training wall time.
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

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for path in (BENCH_DIR, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from claims.supernet import reference_archs  # noqa: E402

from effnn.data import DigitsDataModule  # noqa: E402
from effnn.io import atomic_write_json  # noqa: E402
from effnn.nas.switchable import bits_label, recalibrate_precision  # noqa: E402
from effnn.search import fixed_batches, load_supernet_checkpoint, top1_accuracy  # noqa: E402

DEFAULT_JSON = BENCH_DIR / "results" / "switchable_precision.json"
TARGET_POINTS = 1.0  # issue 14: within 1 point


def train_recipe(out_dir: Path, overrides: list[str]) -> tuple[Path, float]:
    """Run ``train.py +recipe=alphanet_quant`` into ``out_dir``; its last checkpoint and the wall seconds."""
    cmd = [sys.executable, str(ROOT / "train.py"), "+recipe=alphanet_quant", f"paths.output_dir={out_dir}",
           "logger=csv", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return out_dir / "checkpoints" / "last.ckpt", time.perf_counter() - start


def measure(ckpt: Path, calib_batches: int, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Accuracy (percent) of each reference arch at fp32 and every ladder precision, and the gaps."""
    loaded = load_supernet_checkpoint(ckpt)
    if loaded.precision is None:
        raise SystemExit(f"{ckpt} is not a switchable-precision checkpoint (train it with +recipe=alphanet_quant)")
    precision, net, space = loaded.precision, loaded.supernet, loaded.space
    dm = DigitsDataModule(batch_size=batch_size, resolution=max(space.resolutions))
    dm.setup("fit")
    calib = fixed_batches(dm.train_set, calib_batches, batch_size, seed)  # the same for every subnet
    val = list(dm.val_dataloader())
    levels = [None, *(b for b in loaded.settings.ladder if set(b.weight) != {32})]
    rows: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for name, arch in reference_archs(space).items():
        rows[name] = {}
        for bits in levels:
            recalibrate_precision(precision, arch, bits, calib, len(calib), sync_distributed=False)
            rows[name][bits_label(bits)] = top1_accuracy(net, val, arch.resolution)
    seconds = time.perf_counter() - start
    labels = [bits_label(b) for b in levels]
    gaps = {name: {f"{hi}_minus_{lo}": round(acc[hi] - acc[lo], 3) for hi, lo in zip(labels[1:], labels[:-1])}
            for name, acc in rows.items()}
    return {"checkpoint": str(ckpt), "precision": dict(loaded.hyper_parameters.get("precision") or {}),
            "precisions": labels, "calib_batches": len(calib), "calib_batch_size": batch_size,
            "val_images": sum(len(y) for _, y in val), "accuracy_percent": rows, "gaps_points": gaps,
            "max_abs_gap_points": max(abs(v) for g in gaps.values() for v in g.values()),
            "target_points": TARGET_POINTS, "eval_seconds": round(seconds, 2),
            "archs": {n: a.to_dict() for n, a in reference_archs(space).items()}}


def print_table(result: dict[str, Any]) -> None:
    labels = result["precisions"]
    gap_names = list(next(iter(result["gaps_points"].values())))
    print(f"{'subnet':<10}" + "".join(f"{lab:>9}" for lab in labels) + "".join(f"{g:>18}" for g in gap_names))
    for name, acc in result["accuracy_percent"].items():
        gaps = result["gaps_points"][name]
        print(f"{name:<10}" + "".join(f"{acc[lab]:>9.2f}" for lab in labels)
              + "".join(f"{gaps[g]:>+18.2f}" for g in gap_names))
    print(f"largest |gap| {result['max_abs_gap_points']:.2f} points (target <= {result['target_points']})")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a +recipe=alphanet_quant checkpoint (default: train one)")
    parser.add_argument("--calib-batches", type=int, default=16, help="training batches for BN + ranges")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_seconds = None
    if args.ckpt is None:
        run_dir = Path(tempfile.mkdtemp(prefix="alphanet_quant_"))
        args.ckpt, train_seconds = train_recipe(run_dir, overrides)
    result = measure(args.ckpt, args.calib_batches)
    result.update({"train_overrides": overrides, "train_wall_seconds": train_seconds,
                   "command": "python benchmarks/bench_switchable_precision.py " + " ".join(sys.argv[1:])})
    print_table(result)
    atomic_write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
