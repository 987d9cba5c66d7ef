"""Mind Mappings' table, small: the EDP that random search, simulated annealing, a genetic algorithm and
gradient search on an MLP surrogate find per CNN layer, at equal evaluation counts and at equal wall time,
relative to the exhaustive optimum (Mind Mappings, ASPLOS 2021, reports gradient search ahead of SA, GA
and RL by 1.40x / 1.76x / 1.29x in EDP at equal steps). Reported whatever the outcome.

The surrogate is trained once on mappings of *other* layers (its cost is offline, as in the paper); the
searched layers come from ResNet-18 and MobileNetV3 (AttentiveNAS's smallest subnet).

Usage: python benchmarks/bench_mapping.py [--evals 200] [--seconds 0.3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_ppa import write_json  # noqa: E402
from effnn.hw import ConvLayer, SystolicArray  # noqa: E402
from effnn.hw.mapping import Accelerator, LayerShape, MappingSpace  # noqa: E402
from effnn.hw.mapping_search import exhaustive, search, train_surrogate  # noqa: E402

SEARCHED = [  # ResNet-18 and MobileNetV3-style layers (name, in, out, size, kernel, stride, groups)
    ("resnet.conv1", 3, 64, 224, 7, 2, 1), ("resnet.layer1", 64, 64, 56, 3, 1, 1),
    ("resnet.layer2", 128, 128, 28, 3, 1, 1), ("resnet.layer3.ds", 128, 256, 28, 1, 2, 1),
    ("resnet.layer4", 512, 512, 7, 3, 1, 1), ("mbv3.dw5x5", 72, 72, 28, 5, 1, 72),
    ("mbv3.pw_expand", 40, 240, 14, 1, 1, 1), ("mbv3.dw3x3", 240, 240, 14, 3, 1, 240),
]
TRAINING = [  # surrogate training layers: other shapes (VGG-, MobileNetV2-like)
    ("vgg.conv2", 64, 128, 112, 3, 1, 1), ("vgg.conv4", 256, 256, 28, 3, 1, 1), ("mbv2.pw", 32, 192, 28, 1, 1, 1),
    ("mbv2.dw", 144, 144, 56, 3, 2, 144), ("mbv2.proj", 384, 64, 14, 1, 1, 1), ("fc.like", 1024, 1000, 1, 1, 1, 1),
    ("vgg.conv5", 512, 512, 14, 3, 1, 1), ("mbv2.dw7", 96, 96, 28, 7, 1, 96),
]
METHODS = ("random", "annealing", "genetic", "gradient")


def conv(spec: tuple) -> ConvLayer:
    name, cin, cout, size, k, stride, groups = spec
    return ConvLayer(name, cin, cout, size, size, k, k, stride, stride, k // 2, k // 2, groups)


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def run(evals: int, seconds: float, seeds: int) -> dict:
    acc = Accelerator.from_array(SystolicArray(16, 16, "ws", dram_bandwidth=16), dataflows=("os", "ws", "is"))
    start = time.perf_counter()
    surrogate = train_surrogate([LayerShape.of(conv(s)) for s in TRAINING], acc, "edp")
    train_s = time.perf_counter() - start
    rows = []
    for spec in SEARCHED:
        space = MappingSpace(LayerShape.of(conv(spec)), acc)
        optimum = exhaustive(space, "edp")
        row = {"layer": spec[0], "space": space.size, "exhaustive_s": optimum.seconds}
        for method in METHODS:
            for budget_kind in ("evals", "time"):
                kwargs = {"budget": evals} if budget_kind == "evals" else {"budget": 10**9, "time_limit_s": seconds}
                found = [search(space, method, "edp", seed=seed, surrogate=surrogate, **kwargs)
                         for seed in range(seeds)]
                row[f"{method}@{budget_kind}"] = statistics.fmean(r.best_value / optimum.best_value for r in found)
                row[f"{method}@{budget_kind}:evals"] = statistics.fmean(r.evaluations for r in found)
        rows.append(row)
    summary = {f"{m}@{b}": geomean([r[f"{m}@{b}"] for r in rows]) for m in METHODS for b in ("evals", "time")}
    return {"evals": evals, "seconds": seconds, "seeds": seeds, "surrogate_train_s": train_s, "layers": rows,
            "geomean_edp_over_optimum": summary}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evals", type=int, default=200, help="true evaluations per search (equal-steps table)")
    parser.add_argument("--seconds", type=float, default=0.3, help="wall time per search (equal-time table)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mapping.json"))
    args = parser.parse_args(argv)
    result = run(args.evals, args.seconds, args.seeds)
    write_json(Path(args.out), result)
    print(f"EDP found / exhaustive optimum (mean of {args.seeds} seeds; 1.00 = optimal); surrogate trained in "
          f"{result['surrogate_train_s']:.1f} s on other layers")
    header = "layer                 space  " + "  ".join(f"{m[:6]:>6}@{b[0]}" for m in METHODS
                                                     for b in ("evals", "time"))
    print(header)
    for row in result["layers"]:
        print(f"{row['layer']:<20} {row['space']:>6}  "
              + "  ".join(f"{row[f'{m}@{b}']:>8.3f}" for m in METHODS for b in ("evals", "time")))
    print(f"{'geomean':<20} {'':>6}  " + "  ".join(f"{result['geomean_edp_over_optimum'][f'{m}@{b}']:>8.3f}"
                                                for m in METHODS for b in ("evals", "time")))
    evals_time = {m: statistics.fmean(r[f"{m}@time:evals"] for r in result["layers"]) for m in METHODS}
    print("evaluations done in the equal-time budget: " + ", ".join(f"{m} {v:.0f}" for m, v in evals_time.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
