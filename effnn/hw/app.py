"""``tools/hwcost.py``: cost of a network on a systolic-array accelerator (analytic SCALE-Sim), per layer and in total.

Workload, one of:
  -t TOPOLOGY.csv [--gemm]            a SCALE-Sim topology (conv rows, or M,N,K rows with --gemm)
  --space NAME --arch ARCH.yaml       a subnet of a search space (e.g. attentivenas), no module built
  --exported DIR                      a subnet exported by tools/export.py (effnn.export.load_exported)
  --model NAME [--input-shape ...]    an effnn or timm model, traced once
Hardware, one of:
  -c ARCH.cfg                         a SCALE-Sim config (array, SRAMs, dataflow, CALC/USER bandwidth)
  --hardware NAME|FILE.yaml           a preset of the `hardware` group, effnn/conf/hardware/NAME.yaml (default:
                                      systolic_16x16_os, as train.py and tools/search.py), or such a file

PPA and mappings (effnn.hw.ppa, effnn.hw.mapping):
  --mapping best|scalesim [--objective edp|energy|latency] [--pe-type int_mac] [--pe-bits 16,16]
      per-layer mappings (best: each layer's optimum over the dataflows in --dataflows; scalesim: the one
      fixed schedule) and area_mm2, power_mw, latency_ms, energy (uJ), EDP (uJ*ms), GOPS/mm^2
  --search random|annealing|genetic|gradient [--budget 1000]
      find each layer's mapping with that search instead of exhaustively (gradient: Mind Mappings)
  Example: python tools/hwcost.py --model resnet18 --input-shape 1,3,224,224 --hardware systolic_16x16_os \
      --mapping best --objective edp

Prints a table, or with --json one object ``{"hardware", "layers": [...], "total": {...}}``; every layer
has name, macs, compute_cycles, stall_cycles, total_cycles, overall_util, mapping_efficiency, sram_reads
{ifmap, filter}, sram_writes {ofmap}, dram_reads {ifmap, filter}, dram_writes {ofmap}, energy, latency_s.
Example: python tools/hwcost.py -c cfg/scale.cfg -t topologies/resnet18.csv --json
Bad input prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effnn.config import DEFAULT_HARDWARE
from effnn.errors import EffnnError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    work = parser.add_argument_group("workload")
    work.add_argument("-t", "--topology", help="SCALE-Sim topology CSV")
    work.add_argument("--gemm", action="store_true", help="the topology lists M, N, K (SCALE-Sim -i gemm)")
    work.add_argument("--space", help="search space name (effnn.nas.list_spaces())")
    work.add_argument("--arch", help="arch YAML (AlphaNet keys, e.g. from tools/search.py)")
    work.add_argument("--exported", help="directory written by tools/export.py")
    work.add_argument("--model", help="effnn or timm model name")
    work.add_argument("--input-shape", default="1,3,224,224",
                      help="N,C,H,W for --model (default 1,3,224,224)")
    work.add_argument("--num-classes", type=int, default=None,
                      help="classes of --space/--model (default: the space's own, e.g. 10 for tiny32 "
                           "and 1000 for attentivenas; 1000 for --model)")
    hw = parser.add_argument_group("hardware")
    hw.add_argument("-c", "--config", help="SCALE-Sim config (.cfg)")
    hw.add_argument("--hardware", help=f"preset name or a YAML file like effnn/conf/hardware/*.yaml "
                                       f"(default {DEFAULT_HARDWARE})")
    hw.add_argument("--dataflow", choices=("os", "ws", "is"), help="override the dataflow")
    hw.add_argument("--clock-mhz", type=float, help="override the clock (SCALE-Sim configs: default 1000)")
    hw.add_argument("--energy-table", help="energy table name (effnn.hw.energy_table_names())")
    ppa = parser.add_argument_group("PPA and mappings")
    ppa.add_argument("--mapping", choices=("best", "scalesim"),
                     help="price with the PPA model: each layer's best mapping, or the SCALE-Sim schedule")
    ppa.add_argument("--objective", choices=("edp", "energy", "latency"), default="edp",
                     help="what --mapping best minimises per layer (default edp)")
    ppa.add_argument("--pe-type", choices=("int_mac", "bit_serial", "bit_fusion", "shift_add"),
                     help="processing element (default: the preset's ppa.pe_type, else int_mac)")
    ppa.add_argument("--pe-bits", help="PE weight,activation bits (default: the preset's, else 16,16)")
    ppa.add_argument("--search", choices=("exhaustive", "random", "annealing", "genetic", "gradient"),
                     default="exhaustive", help="how --mapping best searches each layer's mappings "
                                                "(default exhaustive, the optimum)")
    ppa.add_argument("--budget", type=int, default=1000,
                     help="cost evaluations per layer for --search other than exhaustive (default 1000)")
    ppa.add_argument("--dataflows", default="os,ws,is",
                     help="dataflows the accelerator supports for --mapping best (default os,ws,is)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    sources = [name for name in ("topology", "space", "exported", "model") if getattr(args, name)]
    if len(sources) != 1:
        parser.error("give exactly one workload: -t TOPOLOGY.csv, --space NAME --arch ARCH.yaml, "
                     "--exported DIR or --model NAME")
    if bool(args.space) != bool(args.arch):
        parser.error("--space and --arch go together")
    if args.gemm and not args.topology:
        parser.error("--gemm applies to a SCALE-Sim topology (-t)")
    if args.config and args.hardware:
        parser.error("give either -c SCALE-Sim config or --hardware, not both")
    if not args.mapping and (args.pe_type or args.pe_bits):
        parser.error("--pe-type and --pe-bits price a --mapping; add --mapping best or --mapping scalesim")
    if args.search != "exhaustive" and args.mapping != "best":
        parser.error("--search chooses how --mapping best searches; add --mapping best")
    if args.budget <= 0:
        parser.error(f"--budget must be a positive number of evaluations, got {args.budget}")
    return args


def load_array(args: argparse.Namespace) -> Any:
    """The SystolicArray the command line asks for."""
    import yaml

    from effnn.hw import build_cost_model, read_scalesim_config
    from effnn.hw.cost import SystolicCostModel

    if args.config:
        array = read_scalesim_config(args.config, clock_mhz=args.clock_mhz or 1000.0,
                                     energy_table=args.energy_table or "eyeriss_normalized")
    else:
        spec: Any = args.hardware or DEFAULT_HARDWARE
        if spec.endswith((".yaml", ".yml")):
            path = Path(spec)
            if not path.is_file():
                raise EffnnError(f"hardware file {path} does not exist")
            spec = yaml.safe_load(path.read_text())
            if not isinstance(spec, dict):
                raise EffnnError(f"hardware file {path} must be a mapping like effnn/conf/hardware/*.yaml")
            spec.pop("defaults", None)
        model = build_cost_model(spec)
        if not isinstance(model, SystolicCostModel):
            raise EffnnError(f"hardware {args.hardware!r} is not a systolic array (kind: analytic); "
                             f"per-layer costs need one, e.g. --hardware systolic_16x16_os")
        array = model.array
    changes: dict[str, Any] = {}
    if args.dataflow:
        changes["dataflow"] = args.dataflow
    if args.clock_mhz and not args.config:
        changes["clock_mhz"] = args.clock_mhz
    if args.energy_table and not args.config:
        changes["energy_table"] = args.energy_table
    return array.with_(**changes) if changes else array


def load_workload(args: argparse.Namespace) -> tuple[list, dict[str, Any]]:
    """(layers, extra totals such as params) of the workload the command line names."""
    from effnn.hw import extract_workload, read_scalesim_topology

    if args.topology:
        return read_scalesim_topology(args.topology, gemm=args.gemm), {}
    if args.space:
        from effnn.export import read_arch_file
        from effnn.nas import get_space

        space = get_space(args.space)
        arch = space.validate(read_arch_file(args.arch))
        classes = args.num_classes or space.num_classes
        return (space.workload(arch, classes),
                {"params": space.params(arch, classes), "arch": arch.to_dict(), "num_classes": classes})
    if args.exported:
        from effnn.export import load_exported
        from effnn.export.artifact import read_meta

        model = load_exported(args.exported)
        meta = read_meta(args.exported)
        shape = (1, int(meta["in_chans"]), model.arch.resolution, model.arch.resolution)
        return (extract_workload(model, shape),
                {"params": sum(p.numel() for p in model.parameters()), "arch": model.arch.to_dict()})
    from effnn.models import create_model

    try:
        shape = tuple(int(s) for s in args.input_shape.split(","))
    except ValueError as err:
        raise EffnnError(f"--input-shape must be comma-separated integers like 1,3,224,224, got "
                         f"{args.input_shape!r}") from err
    if len(shape) < 2:
        raise EffnnError(f"--input-shape needs at least N,C, got {args.input_shape!r}")
    model = create_model(args.model, num_classes=args.num_classes or 1000, in_chans=shape[1])
    return extract_workload(model, shape), {"params": sum(p.numel() for p in model.parameters())}


def _preset_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The hardware preset (or preset-style file) the command line names; ``{}`` for a SCALE-Sim config."""
    import yaml

    from effnn.hw import hardware_preset

    spec: Any = {}
    if args.hardware and args.hardware.endswith((".yaml", ".yml")):
        spec = yaml.safe_load(Path(args.hardware).read_text()) or {}
    elif not args.config:
        spec = hardware_preset(args.hardware or DEFAULT_HARDWARE)
    return spec if isinstance(spec, dict) else {}


def _preset_ppa(args: argparse.Namespace) -> dict[str, Any]:
    """PPA fields a hardware preset may carry under ``ppa:`` (pe_type, weight_bits, act_bits, dram, tech),
    overridden by ``--pe-type`` / ``--pe-bits``."""
    from effnn.hw.ppa import preset_ppa_fields

    found = preset_ppa_fields(_preset_spec(args).get("ppa"))
    if args.pe_type:
        found["pe_type"] = args.pe_type
    if args.pe_bits:
        try:
            w, a = (int(b) for b in args.pe_bits.split(","))
        except ValueError as err:
            raise EffnnError(f"--pe-bits must be two integers like 8,8, got {args.pe_bits!r}") from err
        found.update(weight_bits=w, act_bits=a)
    return found


def preset_ppa_report(args: argparse.Namespace, array: Any, layers: list) -> dict[str, Any] | None:
    """Area and power of the preset's ``ppa:`` block (None without one): the silicon, its peak power and the
    PPA model's pricing of this workload's SCALE-Sim schedule (the schedule the main report shows)."""
    from effnn.hw.mapping import Accelerator, scalesim_layers, totals

    block = _preset_spec(args).get("ppa")
    if block is None:
        return None
    acc = Accelerator.from_array(array, **_preset_ppa(args))
    return {"models": block.get("models", ""), "accelerator": acc.ppa.describe(),
            "scalesim_schedule": totals(scalesim_layers(array, acc, layers), acc)}


def mapped_report(args: argparse.Namespace, array: Any, layers: list) -> dict[str, Any]:
    """Per-layer mappings and the PPA totals (``--mapping``)."""
    from effnn.hw.mapping import Accelerator, MappedCostModel, totals

    dataflows = tuple(d.strip() for d in args.dataflows.split(",") if d.strip())
    acc = Accelerator.from_array(array, dataflows=dataflows if args.mapping == "best" else None,
                                 **_preset_ppa(args))
    if args.mapping == "best" and args.search != "exhaustive":
        from effnn.hw.mapping_search import search_layers

        costed = search_layers(layers, acc, args.search, args.objective, args.budget)
    else:
        model = MappedCostModel(acc, args.objective, "mapped" if args.mapping == "best" else "scalesim", array)
        costed = [model.layer_cost(layer) for layer in layers]
    return {"mode": args.mapping, "search": args.search if args.mapping == "best" else None,
            "objective": args.objective, "accelerator": acc.ppa.describe(),
            "models": (_preset_spec(args).get("ppa") or {}).get("models", ""),
            "dataflows": list(acc.dataflows), "layers": [c.as_dict() for c in costed],
            "total": totals(costed, acc)}


def print_mapped(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    acc = report["accelerator"]
    how = f"{report['mode']}, {report['search']}" if report["search"] else report["mode"]
    table = Table(title=f"{acc['rows']}x{acc['cols']} {acc['pe_type']} {acc['weight_bits']}x{acc['act_bits']} b "
                        f"at {acc['node_nm']:g} nm, mapping {how} ({report['objective']})")
    for col in ("layer", "mapping", "MACs", "cycles", "util %", "energy uJ"):
        table.add_column(col, justify="left" if col in ("layer", "mapping") else "right")
    for row in report["layers"]:
        table.add_row(row["name"], row["mapping"], f"{row['macs']:,}", f"{row['cycles']:,.0f}",
                      f"{row['utilization']:.1f}", f"{row['dyn_pj'] * 1e-6:.4g}")
    console = Console()
    console.width = max(console.width, 160)
    console.print(table)
    t = report["total"]
    console.print(f"area {t['area_mm2']:.4g} mm^2, power {t['power_mw']:.4g} mW (leakage {t['leakage_mw']:.3g} mW), "
                  f"latency {t['latency_ms']:.4g} ms, energy {t['energy']:.4g} uJ, EDP {t['edp']:.4g} uJ*ms, "
                  f"{t['gops_per_mm2']:.4g} GOPS/mm^2, utilization {t['utilization']:.1f} %")


def main(argv: list[str]) -> int:
    """Print the cost report the command line asks for; 0 on success, 2 (one ``error:`` line) on bad input."""
    args = parse_args(argv)
    from rich.console import Console

    from effnn.hw.report import report_table, workload_report

    try:
        array = load_array(args)
        layers, extra = load_workload(args)
        report = mapped_report(args, array, layers) if args.mapping else workload_report(array, layers, extra)
        ppa = None if args.mapping else preset_ppa_report(args, array, layers)
    except (EffnnError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.mapping:
        report.update(extra)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_mapped(report)
        return 0
    if ppa is not None:
        report["ppa"] = ppa
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    console = Console()
    console.width = max(console.width, 220)  # the table has 12 columns; do not squeeze it when piped
    hw = report["hardware"]
    bw = hw["dram_bandwidth"]
    dram = "CALC (stall-free)" if bw == "CALC" else "/".join(f"{b:g}" for b in bw) + " words/cycle"
    title = (f"{hw['rows']}x{hw['cols']} {hw['dataflow']} array, SRAM {hw['ifmap_sram_kb']:g}/"
             f"{hw['filter_sram_kb']:g}/{hw['ofmap_sram_kb']:g} kB, DRAM {dram}, {hw['clock_mhz']:g} MHz, "
             f"energy table {hw['energy_table']['name']}")
    console.print(report_table(report, title))
    total = report["total"]
    unit = report["energy_unit"]
    console.print(f"latency {total['latency_ms']:.4g} ms, energy {total['energy']:.4g} {unit}, "
                  f"EDP {total['edp']:.4g} {unit}*ms, utilization {total['overall_util']:.1f} %")
    if ppa is not None:
        acc, t = ppa["accelerator"], ppa["scalesim_schedule"]
        console.print(f"PPA ({acc['pe_type']} {acc['weight_bits']}x{acc['act_bits']} b PEs at {acc['node_nm']:g} nm; "
                      f"models {ppa['models'] or 'no cited design'}): area {acc['area_mm2']:.4g} mm^2, peak power "
                      f"{acc['peak_power_mw']:.4g} mW, {t['power_mw']:.4g} mW on this schedule "
                      f"({t['energy']:.4g} uJ, leakage {acc['leakage_mw']:.3g} mW)")
    return 0

