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
import statistics
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
        model = MappedCostModel(acc, "edp")
        metrics = model.score(quantized)
        dram_uj = sum(model.layer_cost(layer).dram_pj for layer in quantized) * 1e-6  # cached per shape
        points.append({"pe_type": pe_type, "bits": bits, "array": size, "sram_kb": kb,
                       **{k: metrics[k] for k in ("area_mm2", "power_mw", "energy", "latency_ms", "edp",
                                                  "gops_per_mm2", "utilization")},
                       "dram_energy": dram_uj, "onchip_energy": metrics["energy"] - dram_uj})
    return points


def channel_spread_bound(layer: object, rows: int, cols: int) -> float:
    """Cycles of a depthwise layer when ``cols`` channels share the array side by side (ws, one column and
    ``R x S`` rows each), every round streaming the M output pixels once plus one array fill: the schedule a
    channel-spread mapping allows, independent of the mapper."""
    m, _, k = layer.gemm  # type: ignore[attr-defined]
    rounds = -(-layer.groups // cols)  # type: ignore[attr-defined]
    return rounds * -(-k // rows) * (m + 2 * rows + cols - 2)


def compulsory_transfer(layer: object, words_per_cycle: float, word_bits: int) -> float:
    """Cycles to move a layer's ifmap, weights and ofmap once each over their own DRAM interfaces (``SystolicArray``'s
    per-operand bandwidth): no schedule can beat it when the layer is DRAM-bound."""
    bw = words_per_cycle * word_bits
    ifmap = layer.in_h * layer.in_w * layer.in_ch * layer.act_bits  # type: ignore[attr-defined]
    ofmap = layer.out_h * layer.out_w * layer.out_ch * layer.out_bits  # type: ignore[attr-defined]
    return max(ifmap, layer.params * layer.stored_weight_bits, ofmap) / bw  # type: ignore[attr-defined]


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
    dw_layers = [layer for layer in layers if getattr(layer, "depthwise", False)]
    dw_macs = sum(layer.macs for layer in dw_layers)
    compute = [channel_spread_bound(layer, array.rows, array.cols) for layer in dw_layers]
    with_dram = [max(c, compulsory_transfer(layer, 16, array.word_bits)) for c, layer in zip(compute, dw_layers)]
    free = MappedCostModel(Accelerator.from_array(array.with_(dram_bandwidth=None), dataflows=("os", "ws", "is")),
                           "latency")
    free_cycles = sum(free.layer_cost(layer).cycles for layer in dw_layers)
    for key, cycles in (("channel_spread_bound", sum(compute)), ("channel_spread_dram_bound", sum(with_dram)),
                        ("mapped_unlimited_dram", free_cycles)):
        out[key] = {"depthwise_cycles": cycles, "depthwise_utilization": 100 * dw_macs / (cycles * array.num_pes)}
    return out


def preset_table(layers: list) -> dict:
    """Each hardware preset's ``ppa:`` block priced (effnn.hw.mapping.cost_model_for_preset): area, peak power,
    and ``layers`` (ResNet-18) at the PE's own bit-width on EDP-best mappings over os/ws/is; plus full-size
    Eyeriss-like and TPU-v1-like arrays for the published chips (docs/hardware_ppa.md)."""
    from effnn.hw import hardware_preset, hardware_preset_names
    from effnn.hw.mapping import cost_model_for_preset
    from effnn.hw.ppa import AcceleratorPPA

    out = {}
    for name in hardware_preset_names():
        block = hardware_preset(name).get("ppa")
        if block is None:
            continue
        model = cost_model_for_preset(name, dataflows=("os", "ws", "is"), objective="edp")
        ppa = model.acc.ppa
        bits = float(ppa.weight_bits)
        metrics = model.score([replace(layer, weight_bits=bits, act_bits=bits, out_bits=bits) for layer in layers])
        out[name] = {"models": block["models"], **ppa.describe(), "clock_mhz": ppa.clock_mhz,
                     "sram_kb": [ppa.ifmap_sram_kb, ppa.filter_sram_kb, ppa.ofmap_sram_kb],
                     "workload_bits": bits, **{f"workload_{k}": metrics[k] for k in
                                               ("power_mw", "energy", "latency_ms", "gops_per_mm2")}}
    # the published chips' own configurations in the model (Eyeriss JSSC 2017: 12 x 14 16-bit PEs, 108 kB
    # global buffer, 200 MHz; TPU v1 ISCA 2017: 256 x 256 8-bit MACs, 24 MiB unified buffer, 700 MHz)
    for name, acc in (("eyeriss_like", AcceleratorPPA(12, 14, "int_mac", 16, 16, 36, 36, 36, 200)),
                      ("tpu_v1_like", AcceleratorPPA(256, 256, "int_mac", 8, 8, 8192, 8192, 8192, 700))):
        out[name] = {**acc.describe(), "clock_mhz": acc.clock_mhz}
    return out


def subnet_rate(archs: int = 1000, repeats: int = 7) -> dict:
    """Whole AttentiveNAS subnets scored per second in mapped mode with warm caches (median and best of
    ``repeats`` rounds over the same ``archs`` random subnets)."""
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
    rates, cpu_rates = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for arch in sample:
            model(space, arch)
        rates.append(archs / (time.perf_counter() - start))
        cpu_rates.append(archs / (time.process_time() - cpu))
    return {"archs": archs, "cold_seconds": cold, "warm_subnets_per_s": max(rates),
            "warm_subnets_per_s_median": statistics.median(rates), "rounds": rates,
            # subnets per second of CPU time this process got: the one-core rate when the core is shared
            "warm_subnets_per_cpu_s_median": statistics.median(cpu_rates), "cpu_rounds": cpu_rates,
            "layer_shapes": model.mapper.cache_size,
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
    onchip = [p["onchip_energy"] for p in points]
    result = {"model": args.model, "dram": args.dram, "points": len(points), "seconds": seconds,
              "perf_per_area_spread": max(perf) / min(perf), "energy_spread": max(energy) / min(energy),
              "onchip_energy_spread": max(onchip) / min(onchip),
              "lowest_onchip_energy": min(points, key=lambda p: p["onchip_energy"]),
              "highest_onchip_energy": max(points, key=lambda p: p["onchip_energy"]),
              "best_perf_per_area": max(points, key=lambda p: p["gops_per_mm2"]),
              "worst_perf_per_area": min(points, key=lambda p: p["gops_per_mm2"]),
              "lowest_energy": min(points, key=lambda p: p["energy"]),
              "highest_energy": max(points, key=lambda p: p["energy"]),
              "depthwise_breakdown": depthwise_breakdown(), "presets": preset_table(layers),
              "subnet_rate": subnet_rate(), "sweep": points}
    write_json(Path(args.out), result)
    print(f"{len(points)} design points of {args.model} in {seconds:.1f} s")
    print(f"performance per area spread {result['perf_per_area_spread']:.1f}x (QUIDAM: > 5x), "
          f"energy spread {result['energy_spread']:.1f}x (QUIDAM: > 35x), on-chip energy (without DRAM) "
          f"spread {result['onchip_energy_spread']:.1f}x")
    for key in ("best_perf_per_area", "worst_perf_per_area", "lowest_energy", "highest_energy",
                "lowest_onchip_energy", "highest_onchip_energy"):
        p = result[key]
        print(f"  {key}: {p['pe_type']} {p['bits']}b {p['array']}x{p['array']} {p['sram_kb']} kB -> "
              f"{p['gops_per_mm2']:.3g} GOPS/mm^2, {p['energy']:.4g} uJ ({p['onchip_energy']:.4g} on chip), "
              f"{p['area_mm2']:.3g} mm^2")
    for mode in ("scalesim", "mapped"):
        row = result["depthwise_breakdown"][mode]
        print(f"  AttentiveNAS min subnet, {mode}: depthwise {100 * row['depthwise_mac_share']:.1f} % of MACs, "
              f"{100 * row['depthwise_cycle_share']:.1f} % of {row['total_cycles']:,.0f} cycles, "
              f"utilization {row['depthwise_utilization']:.1f} %")
    for key in ("channel_spread_bound", "channel_spread_dram_bound", "mapped_unlimited_dram"):
        row = result["depthwise_breakdown"][key]
        print(f"  {key}: depthwise {row['depthwise_cycles']:,.0f} cycles, utilization "
              f"{row['depthwise_utilization']:.1f} %")
    for name, row in result["presets"].items():
        work = (f", ResNet-18 at {row['workload_bits']:g} b: {row['workload_power_mw']:.4g} mW, "
                f"{row['workload_energy']:.4g} uJ" if "workload_bits" in row else "")
        print(f"  preset {name}: {row['rows']}x{row['cols']} {row['pe_type']} "
              f"{row['weight_bits']}x{row['act_bits']} b, area {row['area_mm2']:.3g} mm^2, "
              f"peak {row['peak_power_mw']:.4g} mW{work}")
    rate = result["subnet_rate"]
    print(f"  AttentiveNAS subnets in mapped mode, warm caches: {rate['warm_subnets_per_s']:,.0f}/s best, "
          f"{rate['warm_subnets_per_s_median']:,.0f}/s median wall-clock, {rate['warm_subnets_per_cpu_s_median']:,.0f} "
          f"per CPU-second median (one core, load average {rate['load_average']:.1f}; "
          f"cold: {rate['archs']} subnets, {rate['layer_shapes']} layer shapes mapped, "
          f"in {rate['cold_seconds']:.1f} s)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
