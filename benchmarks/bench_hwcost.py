"""How fast the analytic systolic model scores subnets, and how that compares with running SCALE-Sim.

Prints (median of ``--repeats`` runs, one process):

* subnets scored per second on the AttentiveNAS space (random archs): end to end
  ``cost(space, arch)`` (the space's memoized sections, one cached subtotal each: what samplers and the
  search call) side by side with the old per-layer path (``cost.score(space.workload(arch))`` +
  ``space.params(arch)``, timed interleaved with it), batched ``score_many`` and the cost model alone on
  precomputed layer lists -- warm (after the space's and the model's tables have filled) and cold (fresh
  tables). The load average is printed with them: on a shared machine the rates scale with it;
* the same cost-model-only rate on a synthetic MobileNetV3-like layer generator (no effnn.nas needed);
* seconds per layer vs SCALE-Sim 3.0.0's recorded wall time: the shared reference layers (8x8, 64 kB,
  CALC: every operand fits, closed form) and the generated grid (``tests/data/scalesim/generated.json``:
  spilling SRAMs and USER bandwidth, SCALE-Sim's memory system replayed), median of the per-layer ratios.

With ``--baseline DIR`` (a checkout of another revision, e.g. ``git worktree add /tmp/base main``) it also
times warm ``cost(space, arch)`` of this checkout and of ``DIR`` in alternating subprocesses (``--rounds``
each) and prints both rates and the median per-round ratio, so a change is compared with the previous
code on the same machine at the same load.

Usage: ``python benchmarks/bench_hwcost.py [--archs 5000] [--repeats 5] [--hardware systolic_16x16_os]
[--baseline DIR --rounds 5]``
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from effnn.hw import ConvLayer, SystolicArray, build_cost_model, read_scalesim_topology  # noqa: E402

SHARED = ROOT / "tests" / "data" / "scalesim" / "shared"
GENERATED = ROOT / "tests" / "data" / "scalesim" / "generated.json"


#: Warm ``cost(space, arch)`` rate, run in a subprocess against whichever ``effnn`` is on its path.
WARM_SNIPPET = """
import json, random, statistics, sys, time
from effnn.hw import build_cost_model
from effnn.nas import get_space
n, repeats, hardware = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
space, rng = get_space("attentivenas"), random.Random(0)
model = build_cost_model(hardware)
for arch in [space.sample(rng) for _ in range(n)]:
    model(space, arch)
fresh = [space.sample(rng) for _ in range(n)]
rates = []
for _ in range(repeats):
    start = time.perf_counter()
    for arch in fresh:
        model(space, arch)
    rates.append(n / (time.perf_counter() - start))
print(json.dumps(statistics.median(rates)))
"""


def bench_against(baseline: Path, hardware: str, n_archs: int, repeats: int, rounds: int
                  ) -> tuple[float, float, float]:
    """(this checkout's median warm rate, the baseline's, median over rounds of their ratio), measured in
    alternating subprocesses so both see the same machine load."""
    if not (baseline / "effnn" / "hw" / "cost.py").is_file():
        raise SystemExit(f"--baseline {baseline}: not an effnn checkout (no effnn/hw/cost.py); make one with "
                         f"`git worktree add {baseline} main`")
    ours, theirs = [], []
    for _ in range(rounds):
        for root, out in ((ROOT, ours), (baseline, theirs)):
            env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
            proc = subprocess.run([sys.executable, "-c", WARM_SNIPPET, str(n_archs), str(repeats), hardware],
                                  cwd=root, env=env, capture_output=True, text=True, check=True)
            out.append(float(proc.stdout.strip().splitlines()[-1]))
    ratios = [a / b for a, b in zip(ours, theirs)]
    print("rounds (this checkout / baseline, subnets/s): "
          + ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in zip(ours, theirs)))
    return statistics.median(ours), statistics.median(theirs), statistics.median(ratios)


def median_rate(run: Callable[[], int], repeats: int) -> float:
    """Median items per second of ``run`` (which returns how many items it processed)."""
    return median_rates([run], repeats)[0]


def median_rates(runs: list[Callable[[], int]], repeats: int) -> list[float]:
    """Median items per second of each of ``runs``, timed interleaved (run 1, run 2, ..., run 1, ...) so a
    change in machine load affects them alike."""
    rates: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, out in zip(runs, rates):
            start = time.perf_counter()
            count = run()
            out.append(count / (time.perf_counter() - start))
    return [statistics.median(r) for r in rates]


def synthetic_mbv3(rng: random.Random) -> list[ConvLayer]:
    """A random MobileNetV3-like network: stem, 15-25 inverted residuals (1x1, depthwise, SE, 1x1), head."""
    res = rng.choice((192, 224, 256, 288))
    size, cin = res // 2, rng.choice((16, 24))
    layers = [ConvLayer("stem", 3, cin, res, res, 3, 3, 2, 2, 1, 1)]
    for i in range(rng.randint(15, 25)):
        cout = rng.choice((16, 24, 32, 40, 64, 72, 112, 120, 128, 192, 216))
        mid = 8 * round(cin * rng.choice((3, 4, 6)) / 8)
        k, stride = rng.choice((3, 5)), 2 if i in (2, 6, 10, 16) and size > 7 else 1
        out = (size - 1) // stride + 1
        layers += [ConvLayer(f"b{i}.pw", cin, mid, size, size),
                   ConvLayer(f"b{i}.dw", mid, mid, size, size, k, k, stride, stride, k // 2, k // 2,
                             groups=mid)]
        if rng.random() < 0.5:
            hidden = max(8, 8 * round(mid / 32))
            layers += [ConvLayer(f"b{i}.se1", mid, hidden, 1, 1), ConvLayer(f"b{i}.se2", hidden, mid, 1, 1)]
        layers.append(ConvLayer(f"b{i}.pwl", mid, cout, out, out))
        size, cin = out, cout
    layers += [ConvLayer("head", cin, 6 * cin, size, size), ConvLayer("mix", 6 * cin, 1792, 1, 1),
               ConvLayer("classifier", 1792, 1000, 1, 1)]
    return layers


def bench_space(hardware: str, n_archs: int, repeats: int, console: Console) -> list[tuple[str, float, str]]:
    from effnn.nas import get_space

    rows = []
    space = get_space("attentivenas")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(n_archs)]
    cold_space, cold_model = get_space("attentivenas"), build_cost_model(hardware)
    start = time.perf_counter()
    for arch in archs[: min(1000, n_archs)]:
        cold_model(cold_space, arch)
    cold_rate = min(1000, n_archs) / (time.perf_counter() - start)
    rows.append(("AttentiveNAS, cold tables, cost(space, arch)", cold_rate,
                 "first 1000 random archs: the space and the model fill their tables"))
    model = build_cost_model(hardware)
    for arch in track(archs, description="warming the space's and the model's tables", console=console):
        model(space, arch)
    fresh = [space.sample(rng) for _ in range(n_archs)]  # new random archs, warm tables

    def end_to_end() -> int:
        for arch in fresh:
            model(space, arch)
        return len(fresh)

    def old_path() -> int:  # what cost(space, arch) did before spaces exposed workload_sections
        for arch in fresh:
            model.score(space.workload(arch))["params"] = float(space.params(arch))
        return len(fresh)

    workloads = [space.workload(arch) for arch in fresh]

    def batched() -> int:
        model.score_many(space.workload(arch) for arch in fresh)
        return len(fresh)

    def cost_only() -> int:
        for layers in workloads:
            model.score(layers)
        return len(workloads)

    def workload_only() -> int:
        for arch in fresh:
            space.workload(arch)
        return len(fresh)

    def sections_only() -> int:
        for arch in fresh:
            space.workload_sections(arch)
        return len(fresh)

    layers_per_arch = statistics.mean(len(w) for w in workloads)
    sections_per_arch = statistics.mean(len(space.workload_sections(a)) for a in fresh)
    new_rate, old_rate = median_rates([end_to_end, old_path], repeats)
    rows.append(("AttentiveNAS, warm, cost(space, arch)", new_rate,
                 f"{sections_per_arch:.0f} sections per arch, one cached subtotal each"))
    rows.append(("AttentiveNAS, warm, old path (layers + params)", old_rate,
                 "score(space.workload(arch)) + space.params(arch), timed interleaved with the row above"))
    rows.append(("AttentiveNAS, warm, score_many(workloads)", median_rate(batched, repeats),
                 "all archs' layers looked up in one batch, then summed per arch"))
    rows.append(("AttentiveNAS, warm, score(layers) only", median_rate(cost_only, repeats),
                 f"cost model alone, {layers_per_arch:.0f} layers per arch"))
    rows.append(("AttentiveNAS, space.workload_sections(arch) only", median_rate(sections_only, repeats),
                 "the space's share of cost(space, arch) (effnn.nas), for reference"))
    rows.append(("AttentiveNAS, space.workload(arch) only", median_rate(workload_only, repeats),
                 "the space's share of the old path"))
    return rows


def bench_synthetic(hardware: str, n_archs: int, repeats: int) -> list[tuple[str, float, str]]:
    rng = random.Random(1)
    nets = [synthetic_mbv3(rng) for _ in range(n_archs)]
    model = build_cost_model(hardware)
    model.score_many(nets)  # fill the per-shape table

    def cost_only() -> int:
        for layers in nets:
            model.score(layers)
        return len(nets)

    per_arch = statistics.mean(len(n) for n in nets)
    return [("synthetic MobileNetV3-like, score(layers)", median_rate(cost_only, repeats),
             f"{per_arch:.0f} layers per net, {model.cache_size} distinct shapes cached")]


def _time_per_case(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of one call of ``run`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_vs_scalesim(repeats: int) -> list[tuple[str, int, float, float, float]]:
    """Per reference set: (what, layers, our median seconds per layer uncached, SCALE-Sim's median seconds
    per layer, median over layers of SCALE-Sim's time / ours)."""
    from effnn.hw.scalesim import reference_array, reference_layers

    out = []
    with open(SHARED / "results_8x8.csv") as f:
        rows = list(csv.DictReader(f))
    cases = [(SystolicArray(8, 8, row["dataflow"]),
              read_scalesim_topology(SHARED / "topologies" / f"{row['layer']}.csv", gemm=row["kind"] == "gemm"),
              float(row["wall_seconds"])) for row in rows]
    import json

    records = json.loads(GENERATED.read_text())["records"]
    grid = [(reference_array(r), reference_layers(r), float(r["wall_seconds"])) for r in records]
    for what, group in (("shared set: 8x8, 64 kB, CALC (operands fit, closed form)", cases),
                        ("generated grid: spilling SRAMs, USER bandwidth (replayed)", grid)):
        ours = [_time_per_case(lambda a=array, x=layers: a.simulate(x), repeats) for array, layers, _ in group]
        theirs = [wall for _, _, wall in group]
        ratios = [t / o for t, o in zip(theirs, ours)]
        out.append((what, len(group), statistics.median(ours), statistics.median(theirs),
                    statistics.median(ratios)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=5000, help="random archs per timed run (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--hardware", default="systolic_16x16_os", help="hardware preset (conf/hardware)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another effnn checkout to time warm cost(space, arch) against")
    parser.add_argument("--rounds", type=int, default=5, help="alternating subprocess rounds for --baseline")
    args = parser.parse_args()
    console = Console()
    console.width = max(console.width, 140)
    rows: list[tuple[str, float, str]] = []
    try:
        rows += bench_space(args.hardware, args.archs, args.repeats, console)
    except ImportError as err:  # effnn.nas absent: the synthetic generator still measures the model
        console.print(f"[yellow]AttentiveNAS space unavailable ({err}); synthetic workloads only[/]")
    rows += bench_synthetic(args.hardware, min(args.archs, 2000), args.repeats)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    table = Table(title=f"subnets scored per second ({args.hardware}, median of {args.repeats}, one process; "
                        f"load average {load} on {os.cpu_count()} CPUs)")
    table.add_column("what")
    table.add_column("subnets/s", justify="right")
    table.add_column("vs 10,000/s target", justify="right")
    table.add_column("note")
    for what, rate, note in rows:
        table.add_row(what, f"{rate:,.0f}", f"{rate / 1e4:.2f}x", note)
    console.print(table)
    for (what, rate, _), (other, base, _) in zip(rows, rows[1:]):
        if what.endswith("warm, cost(space, arch)") and "old path" in other:
            console.print(f"cost(space, arch) vs the old per-layer path: {rate / base:.2f}x")
    if args.baseline is not None:
        ours, theirs, ratio = bench_against(args.baseline.resolve(), args.hardware, min(args.archs, 2000),
                                            args.repeats, args.rounds)
        console.print(f"warm cost(space, arch), {args.rounds} alternating rounds: this checkout {ours:,.0f}/s, "
                      f"{args.baseline} {theirs:,.0f}/s -> median ratio {ratio:.2f}x")
    for what, n, ours, theirs, ratio in bench_vs_scalesim(args.repeats):
        console.print(f"per layer, {what}, {n} layers: ours {ours * 1e6:,.1f} us median uncached, SCALE-Sim "
                      f"3.0.0 {theirs:.3f} s median recorded -> median {ratio:,.0f}x faster")

if __name__ == "__main__":
    main()
