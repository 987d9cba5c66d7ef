"""How fast the analytic systolic model scores subnets, and how that compares with running SCALE-Sim.

Prints (median of ``--repeats`` runs, one process):

* subnets scored per second on the AttentiveNAS space (random archs): end to end
  ``cost(space, arch)`` (the space's memoized sections, one cached subtotal each: what samplers and the
  search call) side by side with the old per-layer path (``cost.score(space.workload(arch))`` +
  ``space.params(arch)``, timed interleaved with it), batched ``score_many`` and the cost model alone on
  precomputed layer lists -- warm (after the space's and the model's tables have filled) and cold (fresh
  tables). The load average is printed with them: on a shared machine the rates scale with it;
* the same cost-model-only rate on a synthetic MobileNetV3-like layer generator (no effnn.nas needed);
* seconds per layer vs SCALE-Sim 3.0.0's recorded wall time over every reference run in the repo (the
  shared 8x8 set, ``tests/data/scalesim/generated.json``, ``multiword.json``), per regime (CALC with
  operands that fit: closed form; CALC spilling and USER bandwidth: SCALE-Sim's memory system replayed)
  and over all rows, both for a single-layer call and per layer of a batch (see :func:`bench_vs_scalesim`);
  ``--scalesim-only`` prints just this table.

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

from effnn.hw import (  # noqa: E402
    ConvLayer,
    SystolicArray,
    build_cost_model,
    read_scalesim_config,
    read_scalesim_topology,
)

SHARED = ROOT / "tests" / "data" / "scalesim" / "shared"
GENERATED = ROOT / "tests" / "data" / "scalesim" / "generated.json"
MULTIWORD = ROOT / "tests" / "data" / "scalesim" / "multiword.json"


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

#: Median single-call ``simulate`` seconds per regime of the generated grid (``argv[1]``), run in a
#: subprocess against whichever ``effnn`` is on its path (both revisions have these helpers).
REPLAY_SNIPPET = """
import json, statistics, sys, time
from effnn.hw.scalesim import reference_array, reference_layers, reference_regime
times = {}
for record in json.load(open(sys.argv[1]))["records"]:
    array, layers = reference_array(record), reference_layers(record)
    best = []
    for _ in range(3):
        start = time.perf_counter()
        array.simulate(layers)
        best.append(time.perf_counter() - start)
    times.setdefault(reference_regime(record), []).append(min(best))
print(json.dumps({regime: statistics.median(t) for regime, t in sorted(times.items())}))
"""


def _require_checkout(baseline: Path) -> None:
    if not (baseline / "effnn" / "hw" / "cost.py").is_file():
        raise SystemExit(f"--baseline {baseline}: not an effnn checkout (no effnn/hw/cost.py); make one with "
                         f"`git worktree add {baseline} main`")


def _run_in(root: Path, snippet: str, *args: str) -> str:
    """The last stdout line of ``snippet`` run with ``root``'s effnn first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", snippet, *args], cwd=root, env=env, capture_output=True,
                          text=True, check=True)
    return proc.stdout.strip().splitlines()[-1]


def replay_against(baseline: Path, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Per regime of the generated grid: (this checkout's median single-call seconds, the baseline's,
    median over alternating rounds of baseline / this) -- the replay speed-up on the same machine."""
    import json

    _require_checkout(baseline)
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    for _ in range(rounds):
        ours.append(json.loads(_run_in(ROOT, REPLAY_SNIPPET, str(GENERATED))))
        theirs.append(json.loads(_run_in(baseline, REPLAY_SNIPPET, str(GENERATED))))
    return {regime: (statistics.median(o[regime] for o in ours), statistics.median(t[regime] for t in theirs),
                     statistics.median(t[regime] / o[regime] for o, t in zip(ours, theirs)))
            for regime in ours[0]}


def bench_against(baseline: Path, hardware: str, n_archs: int, repeats: int, rounds: int
                  ) -> tuple[float, float, float]:
    """(this checkout's median warm rate, the baseline's, median over rounds of their ratio), measured in
    alternating subprocesses so both see the same machine load."""
    _require_checkout(baseline)
    ours, theirs = [], []
    for _ in range(rounds):
        for root, out in ((ROOT, ours), (baseline, theirs)):
            out.append(float(_run_in(root, WARM_SNIPPET, str(n_archs), str(repeats), hardware)))
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


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of one call of ``run`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_rows() -> list[tuple[str, SystolicArray, list, float]]:
    """Every SCALE-Sim reference run in the repo as (regime, array, its one layer, SCALE-Sim's recorded
    wall seconds): the shared 8x8 set, the generated grid and the multi-word runs."""
    import json

    from effnn.hw.scalesim import reference_array, reference_layers, reference_regime

    out = []
    with open(SHARED / "results_8x8.csv") as f:
        for row in csv.DictReader(f):
            layers = read_scalesim_topology(SHARED / "topologies" / f"{row['layer']}.csv",
                                            gemm=row["kind"] == "gemm")
            array = read_scalesim_config(SHARED / "configs" / f"calc64k_8x8_{row['dataflow']}.cfg")
            regime = "CALC-spill" if array.spills(layers).any() else "CALC-fit"
            out.append((f"shared {regime}", array, layers, float(row["wall_seconds"])))
    for path, label in ((GENERATED, "generated"), (MULTIWORD, "multi-word")):
        for record in json.loads(path.read_text())["records"]:
            out.append((f"{label} {reference_regime(record)}", reference_array(record),
                        reference_layers(record), float(record["wall_seconds"])))
    return out


def bench_vs_scalesim(repeats: int) -> list[tuple[str, int, float, float, float, float, float]]:
    """Per regime and over all reference rows: (what, rows, our median seconds per layer in a single
    call, ours per layer in a batch, SCALE-Sim's median seconds, median over rows of SCALE-Sim's time /
    ours single, / ours batched).

    *Single call*: ``array.simulate([layer])`` alone, so the numpy set-up of the closed form is paid by
    one layer. *In a batch*: how effnn prices a network -- the rows that share an array (one SCALE-Sim
    config and dataflow: 11 layers in the generated grid) go through one closed-form call
    (``replay_limit=0``), each charged its share, plus the row's own replay, measured as its single call
    minus the same call without replay (none for rows whose operands fit: the closed form is exact there).
    Nothing is cached between calls."""
    rows = reference_rows()
    closed = [array.with_(replay_limit=0) for _, array, _, _ in rows]
    single = [_median_seconds(lambda a=array, x=layers: a.simulate(x), repeats) for _, array, layers, _ in rows]
    single_closed = [_median_seconds(lambda a=a0, x=row[2]: a.simulate(x), repeats) for a0, row in zip(closed, rows)]
    groups: dict[tuple, list[int]] = {}
    for i, (_, array, _, _) in enumerate(rows):
        key = (array.rows, array.cols, array.dataflow, array.ifmap_sram_kb, array.filter_sram_kb,
               array.ofmap_sram_kb, array.dram_bandwidth)
        groups.setdefault(key, []).append(i)
    batched = [0.0] * len(rows)
    for members in groups.values():
        layers = [layer for i in members for layer in rows[i][2]]
        share = _median_seconds(lambda a=closed[members[0]], x=layers: a.simulate(x), repeats) / len(layers)
        for i in members:
            replay = 0.0 if rows[i][0].endswith("CALC-fit") else max(0.0, single[i] - single_closed[i])
            batched[i] = share + replay
    out = []
    kinds = sorted({what for what, _, _, _ in rows})
    for kind in kinds + ["all reference rows"]:
        idx = [i for i, row in enumerate(rows) if kind == "all reference rows" or row[0] == kind]
        out.append((kind, len(idx), statistics.median(single[i] for i in idx),
                    statistics.median(batched[i] for i in idx), statistics.median(rows[i][3] for i in idx),
                    statistics.median(rows[i][3] / single[i] for i in idx),
                    statistics.median(rows[i][3] / batched[i] for i in idx)))
    return out


def print_subnet_rates(args: argparse.Namespace, console: Console) -> None:
    """The subnets-per-second table (and, with ``--baseline``, the alternating-rounds comparison)."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=5000, help="random archs per timed run (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--hardware", default="systolic_16x16_os", help="hardware preset (conf/hardware)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another effnn checkout to time warm cost(space, arch) against")
    parser.add_argument("--rounds", type=int, default=5, help="alternating subprocess rounds for --baseline")
    parser.add_argument("--scalesim-only", action="store_true",
                        help="only the per-layer comparison with SCALE-Sim's recorded wall time")
    args = parser.parse_args()
    console = Console()
    console.width = max(console.width, 140)
    if not args.scalesim_only:
        print_subnet_rates(args, console)
    if args.baseline is not None:
        for regime, (ours, theirs, ratio) in replay_against(args.baseline.resolve(), args.rounds).items():
            console.print(f"single-call simulate, generated {regime}: this checkout {ours * 1e6:,.0f} us, "
                          f"{args.baseline} {theirs * 1e6:,.0f} us -> median ratio {ratio:.2f}x faster")
    table = Table(title="seconds per layer vs SCALE-Sim 3.0.0's recorded wall time (median over rows; ratio = "
                        "median of per-row SCALE-Sim / effnn)")
    for col in ("reference rows", "rows", "effnn single call", "effnn in a batch", "SCALE-Sim",
                "x faster (single)", "x faster (batch)"):
        table.add_column(col, justify="left" if col == "reference rows" else "right")
    for what, n, single, batched, theirs, r_single, r_batch in bench_vs_scalesim(args.repeats):
        table.add_row(what, str(n), f"{single * 1e6:,.0f} us", f"{batched * 1e6:,.0f} us", f"{theirs:.3f} s",
                      f"{r_single:,.0f}x", f"{r_batch:,.0f}x")
    console.print(table)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"load average after the per-layer timing: {load}")


if __name__ == "__main__":
    main()
