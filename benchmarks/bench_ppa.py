"""QUIDAM's claim, small: pre-characterised PPA makes a PE-type x bit-width x array x SRAM sweep of one CNN
cheap, and the design space spreads widely (QUIDAM reports > 5x in performance per area and > 35x in
energy). Also the depthwise cycle breakdown of a MobileNetV3-like AttentiveNAS subnet, SCALE-Sim schedule
vs mapped mode.

Each design point prices the CNN (its layers at the PE's bit-width) with every layer on its best EDP
mapping (effnn.hw.mapping). Prints the spreads and the extreme points, writes JSON (atomically).

Usage: python benchmarks/bench_ppa.py [--model resnet18] [--dram ddr3_horowitz] [--out benchmarks/results/ppa.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from effnn.hw import SystolicArray, extract_workload  # noqa: E402
from effnn.hw.mapping import Accelerator, MappedCostModel  # noqa: E402

PE_TYPES = ("int_mac", "bit_serial", "bit_fusion", "shift_add")
BITS = (2, 4, 8, 16)
ARRAYS = (8, 16, 32)
SRAM_KB = (16, 64, 256)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def sweep(layers: list, dram: str = "ddr3_horowitz") -> list[dict]:
    """Every design point's PPA report for ``layers`` run at the PE's bit-width."""
    points = []
    for pe_type, bits, size, kb in itertools.product(PE_TYPES, BITS, ARRAYS, SRAM_KB):
        if pe_type == "shift_add" and bits > 8:
            continue  # power-of-two weights need few bits (SmartDeal/LightNN use <= 8)
        array = SystolicArray(size, size, "ws", kb, kb, kb, dram_bandwidth=16, clock_mhz=500)
        acc = Accelerator.from_array(array, dataflows=("os", "ws", "is"), pe_type=pe_type, weight_bits=bits,
                                     act_bits=bits, dram=dram)
        quantized = [replace(layer, weight_bits=float(bits), act_bits=float(bits), out_bits=float(bits))
                     for layer in layers]
        metrics = MappedCostModel(acc, "edp").score(quantized)
        points.append({"pe_type": pe_type, "bits": bits, "array": size, "sram_kb": kb,
                       **{k: metrics[k] for k in ("area_mm2", "power_mw", "energy", "latency_ms", "edp",
                                                  "gops_per_mm2", "utilization")}})
    return points


def depthwise_breakdown() -> dict:
    """Cycles of depthwise vs other layers of AttentiveNAS's smallest subnet, SCALE-Sim vs mapped mode."""
    from effnn.nas import get_space

    space = get_space("attentivenas")
    layers = space.workload(space.min_arch())
    array = SystolicArray(16, 16, "ws", dram_bandwidth=16)
    acc = Accelerator.from_array(array, dataflows=("os", "ws", "is"))
    out = {}
    for mode in ("scalesim", "mapped"):
        model = MappedCostModel(acc, "latency", mode, array)
        costed = [model.layer_cost(layer) for layer in layers]
        dw = [c for c, layer in zip(costed, layers) if getattr(layer, "depthwise", False)]
        total_cycles = sum(c.cycles for c in costed)
        dw_cycles = sum(c.cycles for c in dw)
        out[mode] = {"total_cycles": total_cycles, "depthwise_cycles": dw_cycles,
                     "depthwise_cycle_share": dw_cycles / total_cycles,
                     "depthwise_mac_share": sum(c.macs for c in dw) / sum(c.macs for c in costed),
                     "depthwise_utilization": 100 * sum(c.macs for c in dw) / (dw_cycles * array.num_pes)}
    return out


def subnet_rate(archs: int = 1000, repeats: int = 5) -> dict:
    """Whole AttentiveNAS subnets scored per second in mapped mode with warm caches (best of ``repeats``)."""
    import random

    from effnn.nas import get_space

    space = get_space("attentivenas")
    model = MappedCostModel(Accelerator.from_array(SystolicArray(16, 16, "ws", dram_bandwidth=16),
                                                   dataflows=("os", "ws", "is")), "edp")
    rng = random.Random(0)
    sample = [space.sample(rng) for _ in range(archs)]
    start = time.perf_counter()
    for arch in sample:
        model(space, arch)
    cold = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for arch in sample:
            model(space, arch)
        rates.append(archs / (time.perf_counter() - start))
    return {"archs": archs, "cold_seconds": cold, "warm_subnets_per_s": max(rates),
            "warm_subnets_per_s_median": sorted(rates)[len(rates) // 2], "layer_shapes": model.mapper.cache_size,
            "load_average": os.getloadavg()[0]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dram", default="ddr3_horowitz", help="DRAM energy table (ddr3_horowitz, lpddr4_accelergy)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ppa.json"))
    args = parser.parse_args(argv)
    from effnn.models import create_model

    layers = extract_workload(create_model(args.model, num_classes=1000), (1, 3, 224, 224))
    start = time.perf_counter()
    points = sweep(layers, args.dram)
    seconds = time.perf_counter() - start
    perf = [p["gops_per_mm2"] for p in points]
    energy = [p["energy"] for p in points]
    result = {"model": args.model, "dram": args.dram, "points": len(points), "seconds": seconds,
              "perf_per_area_spread": max(perf) / min(perf), "energy_spread": max(energy) / min(energy),
              "best_perf_per_area": max(points, key=lambda p: p["gops_per_mm2"]),
              "worst_perf_per_area": min(points, key=lambda p: p["gops_per_mm2"]),
              "lowest_energy": min(points, key=lambda p: p["energy"]),
              "highest_energy": max(points, key=lambda p: p["energy"]),
              "depthwise_breakdown": depthwise_breakdown(), "subnet_rate": subnet_rate(), "sweep": points}
    write_json(Path(args.out), result)
    print(f"{len(points)} design points of {args.model} in {seconds:.1f} s")
    print(f"performance per area spread {result['perf_per_area_spread']:.1f}x (QUIDAM: > 5x), "
          f"energy spread {result['energy_spread']:.1f}x (QUIDAM: > 35x)")
    for key in ("best_perf_per_area", "worst_perf_per_area", "lowest_energy", "highest_energy"):
        p = result[key]
        print(f"  {key}: {p['pe_type']} {p['bits']}b {p['array']}x{p['array']} {p['sram_kb']} kB -> "
              f"{p['gops_per_mm2']:.3g} GOPS/mm^2, {p['energy']:.4g} uJ, {p['area_mm2']:.3g} mm^2")
    for mode, row in result["depthwise_breakdown"].items():
        print(f"  AttentiveNAS min subnet, {mode}: depthwise {100 * row['depthwise_mac_share']:.1f} % of MACs, "
              f"{100 * row['depthwise_cycle_share']:.1f} % of {row['total_cycles']:,.0f} cycles, "
              f"utilization {row['depthwise_utilization']:.1f} %")
    rate = result["subnet_rate"]
    print(f"  AttentiveNAS subnets in mapped mode, warm caches: {rate['warm_subnets_per_s']:,.0f}/s best, "
          f"{rate['warm_subnets_per_s_median']:,.0f}/s median (one core, load average {rate['load_average']:.1f}; "
          f"cold: {rate['archs']} subnets, {rate['layer_shapes']} layer shapes mapped, "
          f"in {rate['cold_seconds']:.1f} s)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
