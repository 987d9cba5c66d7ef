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
    work.add_argument("--num-classes", type=int, default=1000,
                      help="classes of --space/--model (default 1000)")
    hw = parser.add_argument_group("hardware")
    hw.add_argument("-c", "--config", help="SCALE-Sim config (.cfg)")
    hw.add_argument("--hardware", help=f"preset name or a YAML file like effnn/conf/hardware/*.yaml "
                                       f"(default {DEFAULT_HARDWARE})")
    hw.add_argument("--dataflow", choices=("os", "ws", "is"), help="override the dataflow")
    hw.add_argument("--clock-mhz", type=float, help="override the clock (SCALE-Sim configs: default 1000)")
    hw.add_argument("--energy-table", help="energy table name (effnn.hw.energy_table_names())")
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
        return (space.workload(arch, args.num_classes),
                {"params": space.params(arch, args.num_classes), "arch": arch.to_dict()})
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
    model = create_model(args.model, num_classes=args.num_classes, in_chans=shape[1])
    return extract_workload(model, shape), {"params": sum(p.numel() for p in model.parameters())}


def main(argv: list[str]) -> int:
    """Print the cost report the command line asks for; 0 on success, 2 (one ``error:`` line) on bad input."""
    args = parse_args(argv)
    from rich.console import Console

    from effnn.hw.report import report_table, workload_report

    try:
        array = load_array(args)
        layers, extra = load_workload(args)
        report = workload_report(array, layers, extra)
    except (EffnnError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
    return 0

