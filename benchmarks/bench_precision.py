"""Fake-quantized training step vs fp32: the overhead effnn's precision hooks add to every training step.

One process builds the same model twice (identical weights), quantizes one with ``quantize_model`` at
8-bit weights/activations (and 8-bit errors), and times full training steps (forward, backward, SGD step)
on the same batch, alternating the variants each repeat; reports medians and the ratios. Target for the
8-bit W/A/G step: <= 1.5x the fp32 step.

    python benchmarks/bench_precision.py [--model cifar_resnet20] [--batch-size 128] [--resolution 32]
        [--repeats 9] [--device cpu|cuda] [--quick | --smoke] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
for path in (BENCH_DIR, BENCH_DIR.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from effnn.io import atomic_write_json  # noqa: E402
from effnn.models import create_model  # noqa: E402
from effnn.precision import quantize_model  # noqa: E402

#: name -> (forward bits, gradient bits); None = full precision
VARIANTS: dict[str, tuple[int | None, int | None]] = {
    "fp32": (None, None),
    "8-bit W/A": (8, None),
    "8-bit W/A/G": (8, 8),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def measure(model_name: str = "cifar_resnet20", batch_size: int = 128, resolution: int = 32, repeats: int = 9,
            warmup: int = 2, device: str = "cpu", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Median seconds per training step of each variant, and each variant's ratio to fp32."""
    if repeats <= 0 or batch_size <= 0:
        raise ValueError(f"repeats ({repeats}) and batch size ({batch_size}) must be positive")
    dev = torch.device(device)
    torch.manual_seed(seed)
    base = create_model(model_name, num_classes=10).to(dev).train()
    x = torch.randn(batch_size, 3, resolution, resolution, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    steps = {}
    for name, (fwd, grad) in VARIANTS.items():
        model = copy.deepcopy(base)
        if fwd is not None:
            quantize_model(model).set(fwd, grad)
        steps[name] = make_step(model, x, y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("training steps", total=(warmup + repeats) * len(order))
        for r in range(warmup + repeats):
            for name in order if r % 2 == 0 else reversed(order):  # alternate to cancel drift
                _sync(dev)
                t0 = time.perf_counter()
                steps[name]()
                _sync(dev)
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
                bar.advance(task)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "model": model_name, "batch_size": batch_size, "resolution": resolution, "device": str(dev),
        "threads": torch.get_num_threads(), "repeats": repeats,
        "step_ms": {name: 1000.0 * v for name, v in med.items()},
        "ratios": {f"{name} step / fp32 step": med[name] / med["fp32"] for name in med if name != "fp32"},
        "target": {"8-bit W/A/G step / fp32 step": 1.5},
    }


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"training step, {result['model']}, batch {result['batch_size']} at {result['resolution']} px, "
                    f"{result['device']} ({result['threads']} threads), median of {result['repeats']}")
    t.add_column("variant")
    t.add_column("ms / step", justify="right")
    t.add_column("vs fp32", justify="right")
    for name, ms in result["step_ms"].items():
        ratio = ms / result["step_ms"]["fp32"]
        t.add_row(name, f"{ms:.1f}", f"{ratio:.2f}x")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar_resnet20", help="effnn or timm model name")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant (default 9)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, batch 16, ResNet-8 (tests)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    repeats = args.repeats or (1 if args.smoke else 5 if args.quick else 9)
    model, batch = ("cifar_resnet8", 16) if args.smoke else (args.model, args.batch_size)
    result = measure(model, batch, args.resolution, repeats, warmup=1 if args.smoke else 2, device=args.device)
    console = Console()
    console.print(table(result))
    for name, value in result["ratios"].items():
        console.print(f"{name}: {value:.2f}x")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
