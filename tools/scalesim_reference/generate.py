"""Run the real SCALE-Sim 3.0.0 on a grid of small layers and configs and record every metric it reports.

The grid covers the regimes effnn's systolic model must reproduce (issue 12): SRAMs that hold the operands
and SRAMs that spill (1 kB .. 1 MB), CALC and USER interface bandwidth (1..16 words/cycle), square,
non-square and 1xN arrays, the three dataflows, depthwise (``DP``) layers, strides that do not divide
``H - R``, an RGB stem, 5x5 kernels and GEMMs. Layers are small so the whole grid runs in ~10-15 CPU
minutes: SCALE-Sim simulates every element, effnn's model does not.

Needs SCALE-Sim in its own venv (it crashes with numpy >= 2)::

    python -m venv /tmp/ss && /tmp/ss/bin/pip install scalesim "numpy<2" "pandas<2.3"
    /tmp/ss/bin/python tools/scalesim_reference/generate.py --out tests/data/scalesim/generated.json

The output is one JSON file: the generator's settings and one record per (layer, dataflow, config), each
with the exact topology row and config run and SCALE-Sim's reported values (summed over a DP layer's
per-channel sub-layers). It is written atomically (temp file + rename) and an existing file is only
replaced with ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

#: (name, topology row after the name, gemm?). Conv rows: H, W, R, S, C, filters, stride (pre-padded
#: ifmap, SCALE-Sim has no padding field); GEMM rows: M, N, K.
LAYERS: tuple[tuple[str, tuple[int, ...], bool], ...] = (
    ("stem_rgb_s2", (16, 16, 3, 3, 3, 8, 2), False),       # RGB stem, (H - R) % s != 0
    ("conv3x3", (10, 10, 3, 3, 8, 16, 1), False),
    ("conv3x3_s3", (11, 11, 3, 3, 4, 8, 3), False),        # odd stride, (H - R) % s != 0
    ("pw", (8, 8, 1, 1, 16, 24, 1), False),
    ("conv5x5", (9, 9, 5, 5, 4, 8, 1), False),
    ("DPdw3x3", (10, 10, 3, 3, 6, 1, 1), False),           # depthwise: one sub-layer per channel
    ("DPdw3x3_s2", (11, 11, 3, 3, 4, 2, 2), False),        # depthwise, multiplier 2, stride 2
    ("mbv3_expand1x1", (14, 14, 1, 1, 24, 72, 1), False),  # MobileNetV3 expansion shape
    ("DPmbv3_dw5x5_s2", (17, 17, 5, 5, 4, 1, 2), False),  # MobileNetV3 5x5 depthwise, stride 2
    ("gemm_32_24_40", (32, 24, 40), True),
    ("gemm_64_8_16", (64, 8, 16), True),
)

#: (id, rows, cols, SRAM kB for ifmap/filter/ofmap, bandwidth: "CALC" or words per cycle)
CONFIGS: tuple[tuple[str, int, int, int, str | int], ...] = (
    ("8x8_64k_calc", 8, 8, 64, "CALC"),
    ("4x16_1k_calc", 4, 16, 1, "CALC"),
    ("16x4_2k_calc", 16, 4, 2, "CALC"),
    ("1x16_8k_calc", 1, 16, 8, "CALC"),
    ("8x8_1024k_calc", 8, 8, 1024, "CALC"),
    ("8x8_1k_bw1", 8, 8, 1, 1),
    ("8x8_64k_bw1", 8, 8, 64, 1),
    ("4x16_2k_bw4", 4, 16, 2, 4),
    ("16x4_64k_bw16", 16, 4, 64, 16),
    ("1x16_1k_bw2", 1, 16, 1, 2),
    ("32x32_4k_calc", 32, 32, 4, "CALC"),
    ("1x32_64k_bw8", 1, 32, 64, 8),
    ("8x8_4k_bw16", 8, 8, 4, 16),
    ("16x16_1k_bw1", 16, 16, 1, 1),
)

#: Single runs outside the grid: (layer, config, dataflow). SCALE-Sim's USER mode is not monotone in the
#: work: with 8 kB buffers at 2 words/cycle, 23 input channels take ~2x the cycles of 26.
SPOT_RUNS: tuple[tuple[tuple[str, tuple[int, ...], bool], tuple, str], ...] = tuple(
    ((f"conv3x3_c{c}", (12, 12, 3, 3, c, 8, 1), False), ("8x8_8k_bw2", 8, 8, 8, 2), "is")
    for c in (20, 23, 26, 29))

#: Operands wider or narrower than SCALE-Sim's one-byte word (``--multiword``): (effnn config: id, rows,
#: cols, SRAM kB, bandwidth in bytes/cycle or "CALC"; operand bits (act, weight, out)). Each is run as
#: SCALE-Sim with words of the operand's width (docs/hardware.md, *Operand widths*): per operand an SRAM
#: of ``kB * 8 / bits`` kB and ``bandwidth * 8 / bits`` words per cycle.
MULTIWORD_CONFIGS: tuple[tuple[tuple, tuple[int, int, int]], ...] = (
    (("mw16_8x8_2k_bw4", 8, 8, 2, 4), (16, 16, 16)),          # 16-bit on bytes: 1 kB, 2 words/cycle
    (("mw16_4x16_4k_calc", 4, 16, 4, "CALC"), (16, 16, 16)),  # spills a 2 kB-equivalent SRAM
    (("mw16_8x8_64k_calc", 8, 8, 64, "CALC"), (16, 16, 16)),  # fits: the closed form's first fill
    (("mwa16w8_8x8_2k_bw4", 8, 8, 2, 4), (16, 8, 16)),        # mixed: 16-bit activations, 8-bit weights
    (("mww4_16x4_1k_bw1", 16, 4, 1, 1), (8, 4, 8)),           # 4-bit weights: 2 per byte
)
MULTIWORD_LAYERS = ("conv3x3", "DPdw3x3_s2", "gemm_32_24_40")

CFG_TEMPLATE = """[general]
run_name = {run_name}

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {ikb}
FilterSramSzkB: {fkb}
OfmapSramSzkB: {okb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth : {obw}
Dataflow : {dataflow}
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {ibw}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {fbw}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False
"""

#: SCALE-Sim report columns -> record keys (summed over sub-layers unless noted in ``_MERGE``)
COMPUTE = ("total_cycles_incl_prefetch", "compute_cycles", "stall_cycles", "overall_util",
           "mapping_efficiency", "compute_util")
DETAIL = ("sram_ifmap_start", "sram_ifmap_stop", "sram_reads_ifmap", "sram_filter_start", "sram_filter_stop",
          "sram_reads_filter", "sram_ofmap_start", "sram_ofmap_stop", "sram_writes_ofmap",
          "dram_ifmap_start", "dram_ifmap_stop", "dram_reads_ifmap", "dram_filter_start", "dram_filter_stop",
          "dram_reads_filter", "dram_ofmap_start", "dram_ofmap_stop", "dram_writes_ofmap")


def _rows(path: Path) -> list[list[float]]:
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return [[float(x) for x in row[1:] if x.strip()] for row in rows if row]


def run_case(layer: tuple[str, tuple[int, ...], bool], config: tuple, dataflow: str, work: Path,
             bits: tuple[int, int, int] = (8, 8, 8)) -> dict:
    """One SCALE-Sim run; the per-sub-layer report rows are kept (``sublayers``) and summed. ``bits``
    (act, weight, out) other than bytes run SCALE-Sim with words of those widths (``MULTIWORD_CONFIGS``)."""
    from scalesim.scale_sim import scalesim

    name, values, gemm = layer
    cid, rows, cols, kb, bw = config
    user = bw != "CALC"
    sizes = [kb * 8 / b for b in bits]
    bandwidths = [bw * 8 / b if user else 10 for b in bits]
    if any(v != int(v) for v in sizes + bandwidths):
        raise ValueError(f"{cid} with {bits}-bit operands is not a whole SCALE-Sim config: {sizes} kB, "
                         f"{bandwidths} words/cycle")
    (ikb, fkb, okb), (ibw, fbw, obw) = [int(v) for v in sizes], [int(v) for v in bandwidths]
    cfg = work / "run.cfg"
    cfg.write_text(CFG_TEMPLATE.format(run_name="ref", rows=rows, cols=cols, ikb=ikb, fkb=fkb, okb=okb,
                                       dataflow=dataflow, ibw=ibw, fbw=fbw, obw=obw,
                                       mode="USER" if user else "CALC"))
    header = ("Layer, M, N, K,\n" if gemm else
              "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
              "Strides,\n")
    row = f"{name}, " + ", ".join(str(v) for v in values) + ","
    topo = work / "topo.csv"
    topo.write_text(header + row + "\n")
    layout = work / "layout.csv"
    layout.write_text("Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, "
                      "Filter Height Intraline Factor, Filter Width Intraline Factor, Channel Intraline "
                      "Factor, Num Filter Intraline Factor, IFMAP Height Intraline Order, IFMAP Width "
                      "Intraline Order, Channel Intraline Order, IFMAP Height Interline Order, IFMAP Width "
                      "Interline Order, Channel Interline Order, Num Filter Intraline Order, Channel "
                      "Intraline Order, Filter Height Intraline Order, Filter Width Intraline Order, Num "
                      "Filter Interline Order, Channel Interline Order, Filter Height Interline Order, "
                      "Filter Width Interline Order,\n")
    out = work / "out"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                       layout=str(layout), input_type_gemm=gemm)
        sim.run_scale(top_path=str(out))
    wall = time.perf_counter() - start
    reports = out / "ref"
    compute = _rows(reports / "COMPUTE_REPORT.csv")
    detail = _rows(reports / "DETAILED_ACCESS_REPORT.csv")
    subs = [dict(zip(COMPUTE, c)) | dict(zip(DETAIL, d)) for c, d in zip(compute, detail)]
    record = {
        "id": f"{cid}_{dataflow}_{name}", "layer": name, "gemm": gemm, "topology_row": row,
        "config": cid, "rows": rows, "cols": cols, "sram_kb": kb, "bandwidth": bw, "dataflow": dataflow,
        "sublayers": len(subs), "wall_seconds": round(wall, 3),
    }
    if bits != (8, 8, 8):
        record["operand_bits"] = {"act": bits[0], "weight": bits[1], "out": bits[2]}
        record["scalesim_sram_kb"] = [ikb, fkb, okb]
        record["scalesim_bandwidth"] = [ibw, fbw, obw] if user else "CALC"
    for key in COMPUTE[:3] + DETAIL[2::3]:
        record[key] = int(sum(s[key] for s in subs))
    for key in COMPUTE[3:]:  # percentages: SCALE-Sim's per-sub-layer values (identical sub-layers)
        record[key] = [s[key] for s in subs]
    record["per_sublayer"] = subs
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--only", default="", help="comma-separated config ids to run (default: all)")
    parser.add_argument("--multiword", action="store_true",
                        help="run MULTIWORD_CONFIGS (operands other than one byte) instead of the grid")
    args = parser.parse_args()
    if args.out.exists() and not args.force:
        sys.exit(f"{args.out} exists; pass --force to replace it")
    try:
        import numpy
        import scalesim  # noqa: F401
    except ImportError as err:
        sys.exit(f"SCALE-Sim is not importable ({err}); run this with the venv's python, see the docstring")
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for config, bits in MULTIWORD_CONFIGS if args.multiword else ():
            for layer in (entry for entry in LAYERS if entry[0] in MULTIWORD_LAYERS):
                for dataflow in ("os", "ws", "is"):
                    work = Path(tmp) / f"{config[0]}_{layer[0]}_{dataflow}"
                    work.mkdir()
                    records.append(run_case(layer, config, dataflow, work, bits))
                    print(f"{records[-1]['id']}: {records[-1]['wall_seconds']:.2f} s", flush=True)
        for config in configs if not args.multiword else ():
            for layer in LAYERS:
                for dataflow in ("os", "ws", "is"):
                    work = Path(tmp) / f"{config[0]}_{layer[0]}_{dataflow}"
                    work.mkdir()
                    records.append(run_case(layer, config, dataflow, work))
                    print(f"{records[-1]['id']}: {records[-1]['wall_seconds']:.2f} s", flush=True)
        for layer, config, dataflow in SPOT_RUNS if not (args.only or args.multiword) else ():
            work = Path(tmp) / f"spot_{config[0]}_{layer[0]}_{dataflow}"
            work.mkdir()
            records.append(run_case(layer, config, dataflow, work))
            print(f"{records[-1]['id']}: {records[-1]['wall_seconds']:.2f} s", flush=True)
    from importlib.metadata import version
    data = {"generator": "tools/scalesim_reference/generate.py",
            "scalesim": version("scalesim"), "numpy": numpy.__version__,
            "word_bytes": 1, "records": records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp_name, args.out)
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
