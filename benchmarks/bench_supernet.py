"""Supernet overhead vs static subnets, measured side by side in one run (medians of interleaved repeats).

(a) supernet forward+backward at the largest arch / the extracted static model's forward+backward
(b) one sandwich step (4 subnets' forward+backward through ``sandwich_backward``, clip, one SGD step)
    / the sum of the 4 extracted static subnets' own training steps (forward, backward, SGD step)

Targets: (a) <= 1.05, (b) <= 1.10.   python benchmarks/bench_supernet.py [--space tiny32 --batch-size 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from effnn.io import atomic_write_json
from effnn.nas import AlphaDivergence, LabelSmoothingCrossEntropy, build_supernet, get_space, resize_to
from effnn.nas.sandwich import sandwich_backward

TARGETS = {"a": 1.05, "b": 1.10}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="tiny32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="NCHW tensors (the training default is channels_last)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    space = get_space(args.space)
    net = build_supernet(space, args.num_classes).to(memory_format=fmt)
    g = torch.Generator().manual_seed(args.seed)
    archs = [space.max_arch(), space.sample(g), space.sample(g), space.min_arch()]
    statics = [net.extract(a).to(memory_format=fmt).train() for a in archs]
    res0 = max(space.resolutions)
    x = torch.randn(args.batch_size, 3, res0, res0)
    y = torch.randint(0, args.num_classes, (args.batch_size,))

    def prepare(t: torch.Tensor, resolution: int) -> torch.Tensor:
        return resize_to(t, resolution).contiguous(memory_format=fmt)

    inputs = [prepare(x, a.resolution) for a in archs]
    ce, kd = LabelSmoothingCrossEntropy(0.1), AlphaDivergence()
    net_opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    static_opts = [torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m in statics]

    def fwd_bwd(model: nn.Module, inp: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(inp), y).backward()

    def supernet_max() -> None:
        net.set_arch(archs[0])
        fwd_bwd(net, inputs[0])

    def sandwich_step() -> None:
        net_opt.zero_grad(set_to_none=True)
        sandwich_backward(net, archs, x, y, ce, kd, prepare=prepare)
        torch.nn.utils.clip_grad_value_(net.parameters(), 1.0)
        net_opt.step()

    def static_step(i: int) -> None:
        static_opts[i].zero_grad(set_to_none=True)
        ce(statics[i](inputs[i]), y).backward()
        torch.nn.utils.clip_grad_value_(statics[i].parameters(), 1.0)
        static_opts[i].step()

    samples: dict[str, list[float]] = {"super_max": [], "static_max": [], "sandwich": [], "static_sum": []}
    with Progress(transient=True) as progress:
        task = progress.add_task("timing", total=args.warmup + args.repeats)
        for rep in range(args.warmup + args.repeats):
            # interleaved, so machine load drifts hit both sides alike
            times = {"super_max": timed(supernet_max),
                     "static_max": timed(lambda: fwd_bwd(statics[0], inputs[0])),
                     "sandwich": timed(sandwich_step),
                     "static_sum": sum(timed(lambda i=i: static_step(i)) for i in range(len(archs)))}
            if rep >= args.warmup:
                for k, v in times.items():
                    samples[k].append(v)
            progress.advance(task)

    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {"a": med["super_max"] / med["static_max"], "b": med["sandwich"] / med["static_sum"]}
    console = Console()
    table = Table(title=f"supernet vs static, space={args.space}, batch={args.batch_size}, "
                        f"threads={args.threads}, {'channels_last' if args.channels_last else 'NCHW'}, "
                        f"median of {args.repeats}")
    for col in ("measure", "supernet ms", "static ms", "ratio", "target"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    table.add_row("(a) fwd+bwd, largest arch", f"{med['super_max'] * 1e3:.1f}",
                  f"{med['static_max'] * 1e3:.1f}", f"{ratios['a']:.3f}", f"<= {TARGETS['a']}")
    table.add_row("(b) sandwich step vs 4 static steps", f"{med['sandwich'] * 1e3:.1f}",
                  f"{med['static_sum'] * 1e3:.1f}", f"{ratios['b']:.3f}", f"<= {TARGETS['b']}")
    console.print(table)
    for key, target in TARGETS.items():
        verdict = "meets" if ratios[key] <= target else "MISSES"
        console.print(f"({key}) ratio {ratios[key]:.3f} {verdict} the target {target}")
    if args.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        atomic_write_json(args.json, {"args": settings, "archs": [a.to_dict() for a in archs],
                                      "median_s": med, "ratios": ratios})


if __name__ == "__main__":
    main()
