"""Read SCALE-Sim's own ``.cfg`` and topology ``.csv`` files, so its users can cross-check our numbers.

Only the parsing lives here; the model is :class:`effnn.hw.systolic.SystolicArray`. SCALE-Sim conventions
reproduced (see ``docs/hardware.md``):

* conv topologies have no padding column: the ifmap size given is already padded;
* their output size is SCALE-Sim's ``ceil((H - R + s) / s)``, not PyTorch's ``floor((H - R) / s) + 1``: when
  ``(H - R) % s != 0`` the last window runs off the bottom/right edge and reads only the pixels inside
  it (the rest are never fetched). Here such a layer gets ``pad_h_end``/``pad_w_end`` of the missing
  rows/columns; PyTorch modules keep PyTorch's convention (``effnn.hw.workload``);
* a conv layer whose name contains ``DP`` (case-sensitive) is depthwise: SCALE-Sim runs one single-channel
  conv per channel, each with ``Num Filter`` filters; here it is one ``ConvLayer`` with ``groups=C``;
* GEMM topologies (``-i gemm``) list ``M, N, K`` (ofmap rows, filters, reduction);
* one stride applies to both directions; a word is one byte (SCALE-Sim's ``word_size = 1``);
* in ``USER`` bandwidth mode SCALE-Sim feeds the ifmap and filter SRAMs at the ``[layout]`` section's
  ``IfmapSRAMBankBandwidth`` / ``FilterSRAMBankBandwidth`` and only drains the ofmap at ``Bandwidth``;
  ``CALC`` mode sizes the bandwidth so nothing stalls.

SCALE-Sim itself drops the last field of every row (it expects a trailing comma); we accept rows with or
without it.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
from pathlib import Path

from effnn.hw.energy import EnergyTable
from effnn.hw.layers import ConvLayer, GemmLayer, Layer
from effnn.hw.systolic import DATAFLOWS, SystolicArray

SCALESIM_WORD_BITS = 8
#: ``SystolicArray.replay_limit`` of arrays built from SCALE-Sim configs: replay every layer SCALE-Sim
#: itself could run in reasonable time, so a cross-check gets SCALE-Sim's exact numbers.
SCALESIM_REPLAY_LIMIT = 1 << 24


def read_scalesim_config(path: str | os.PathLike, *, clock_mhz: float = 1000.0,
                         energy_table: str | EnergyTable = "eyeriss_normalized",
                         replay_limit: int = SCALESIM_REPLAY_LIMIT) -> SystolicArray:
    """A :class:`SystolicArray` equivalent to a SCALE-Sim config (SCALE-Sim has no clock or energy)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SCALE-Sim config {path} does not exist")
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as err:
        raise ValueError(f"{path}: not a SCALE-Sim config ({err})") from err

    def get(section: str, key: str, fallback: str | None = None) -> str:
        try:
            return parser.get(section, key).strip()
        except (configparser.NoSectionError, configparser.NoOptionError) as err:
            if fallback is not None:
                return fallback
            raise ValueError(f"{path}: missing [{section}] {key} (a SCALE-Sim config needs it)") from err

    def get_int(section: str, key: str, fallback: str | None = None) -> int:
        text = get(section, key, fallback)
        try:
            value = int(text)
        except ValueError as err:
            raise ValueError(f"{path}: [{section}] {key} = {text!r} is not an integer") from err
        if value <= 0:
            raise ValueError(f"{path}: [{section}] {key} = {value} must be positive")
        return value

    arch = "architecture_presets"
    dataflow = get(arch, "Dataflow").lower()
    if dataflow not in DATAFLOWS:
        raise ValueError(f"{path}: [{arch}] Dataflow = {dataflow!r}; SCALE-Sim supports {DATAFLOWS}")
    mode = get("run_presets", "InterfaceBandwidth", "CALC").upper()
    if mode not in ("CALC", "USER"):
        raise ValueError(f"{path}: [run_presets] InterfaceBandwidth = {mode!r}; use USER or CALC")
    bandwidth: tuple[float, float, float] | None = None
    if mode == "USER":
        text = get(arch, "Bandwidth")
        try:
            ofmap_bw = int(text.split(",")[0])
        except ValueError as err:
            raise ValueError(f"{path}: [{arch}] Bandwidth = {text!r} is not an integer") from err
        # SCALE-Sim 3.0.0 quirk: the ifmap/filter DRAM interfaces run at the [layout] bank bandwidths
        bandwidth = (float(get_int("layout", "IfmapSRAMBankBandwidth", "10")),
                     float(get_int("layout", "FilterSRAMBankBandwidth", "10")), float(ofmap_bw))
        if ofmap_bw <= 0:
            raise ValueError(f"{path}: [{arch}] Bandwidth = {ofmap_bw} must be positive")
    sparsity = get("sparsity", "SparsitySupport", "false").lower()
    if sparsity == "true":
        raise ValueError(f"{path}: [sparsity] SparsitySupport = true is not modelled; set it to false")
    return SystolicArray(
        rows=get_int(arch, "ArrayHeight"), cols=get_int(arch, "ArrayWidth"), dataflow=dataflow,
        ifmap_sram_kb=get_int(arch, "IfmapSramSzkB"), filter_sram_kb=get_int(arch, "FilterSramSzkB"),
        ofmap_sram_kb=get_int(arch, "OfmapSramSzkB"), dram_bandwidth=bandwidth, clock_mhz=clock_mhz,
        word_bits=SCALESIM_WORD_BITS, energy_table=energy_table,
        name=get("general", "run_name", path.stem), replay_limit=replay_limit,
    )


def _fields(row: str) -> list[str]:
    parts = [p.strip() for p in row.split(",")]
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def read_scalesim_topology(path: str | os.PathLike, gemm: bool = False,
                           bits: float = SCALESIM_WORD_BITS) -> list[Layer]:
    """The layers of a SCALE-Sim topology file (conv, or ``M, N, K`` rows with ``gemm=True``).

    ``bits`` is the operand width given to every layer (SCALE-Sim's one-byte word by default).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SCALE-Sim topology {path} does not exist")
    return parse_scalesim_topology(path.read_text(), gemm=gemm, bits=bits, source=str(path))


def parse_scalesim_topology(text: str, gemm: bool = False, bits: float = SCALESIM_WORD_BITS,
                            source: str = "<topology>") -> list[Layer]:
    """:func:`read_scalesim_topology` on the file's text (``source`` names it in errors)."""
    path = source
    lines = text.splitlines()
    layers: list[Layer] = []
    want = ("name, M, N, K" if gemm
            else "name, IFMAP H, IFMAP W, filter H, filter W, channels, filters, stride")
    for lineno, raw in enumerate(lines[1:], start=2):  # SCALE-Sim always skips the first (header) line
        if not raw.strip():
            continue
        parts = _fields(raw)
        n_int = 3 if gemm else 7
        if len(parts) not in (n_int + 1, n_int + 2):
            raise ValueError(f"{path}:{lineno}: expected {n_int + 1} fields ({want}) and an optional "
                             f"sparsity ratio, got {len(parts)}: {raw.strip()!r}"
                             + ("" if gemm else "; is this a GEMM topology (use --gemm)?"))
        name = parts[0]
        try:
            values = [int(p) for p in parts[1:n_int + 1]]
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: layer {name!r} has a non-integer size in "
                             f"{raw.strip()!r}") from err
        if any(v <= 0 for v in values):
            raise ValueError(f"{path}:{lineno}: layer {name!r} has a non-positive size in {raw.strip()!r}")
        if len(parts) == n_int + 2 and parts[-1].replace(" ", "") not in ("1:1", ""):
            raise ValueError(f"{path}:{lineno}: layer {name!r} has sparsity ratio {parts[-1]!r}; sparse "
                             f"layers are not modelled (use 1:1)")
        try:
            if gemm:
                m, n, k = values
                layers.append(GemmLayer(name, m=m, n=n, k=k, weight_bits=bits, act_bits=bits, out_bits=bits))
            else:
                h, w, r, s, c, filters, stride = values
                groups = c if "DP" in name else 1
                if r > h or s > w:
                    raise ValueError(f"layer {name!r}: kernel larger than the padded input ({h}x{w})")
                layers.append(ConvLayer(name, in_ch=c, out_ch=filters * groups, in_h=h, in_w=w, kernel_h=r,
                                        kernel_w=s, stride_h=stride, stride_w=stride, groups=groups,
                                        weight_bits=bits, act_bits=bits, out_bits=bits,
                                        pad_h_end=-(h - r) % stride, pad_w_end=-(w - s) % stride))
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from err
    if not layers:
        raise ValueError(f"{path}: no layers (the first line is the header; rows follow it)")
    return layers


# --------------------------------------------------------------------------------------------------------
# Reference records of tools/scalesim_reference/generate.py (tests/data/scalesim/generated.json)

#: What SCALE-Sim reports per layer, by its own meaning; ``total_cycles`` is its COMPUTE_REPORT "Total
#: Cycles" (compute plus stalls, effnn's ``total_cycles``), not effnn's stall-free ``compute_cycles``.
METRIC_PAIRS = ("total_cycles_incl_prefetch", "total_cycles", "stall_cycles", "overall_util",
                "mapping_efficiency", "compute_util", "sram_reads_ifmap", "sram_reads_filter",
                "sram_writes_ofmap", "dram_reads_ifmap", "dram_reads_filter", "dram_writes_ofmap")


def reference_array(record: dict) -> SystolicArray:
    """The :class:`SystolicArray` of a generated reference record (same SRAM size for all three)."""
    kb = record["sram_kb"]
    bw = record["bandwidth"]
    return SystolicArray(record["rows"], record["cols"], record["dataflow"], kb, kb, kb,
                         dram_bandwidth=None if bw == "CALC" else float(bw), word_bits=SCALESIM_WORD_BITS,
                         replay_limit=SCALESIM_REPLAY_LIMIT)


def reference_layers(record: dict) -> list[Layer]:
    """The one layer of a generated reference record, parsed as SCALE-Sim parses its topology row."""
    header = "name, M, N, K" if record["gemm"] else "name, H, W, R, S, C, M, stride"
    layers = parse_scalesim_topology(f"{header}\n{record['topology_row']}\n", gemm=record["gemm"],
                                     source=record["id"])
    bits = record.get("operand_bits")  # multi-word records: SCALE-Sim ran with words of these widths
    if bits:
        layers = [dataclasses.replace(layer, act_bits=bits["act"], weight_bits=bits["weight"],
                                      out_bits=bits["out"]) for layer in layers]
    return layers


def simulate_reference_record(record: dict) -> dict[str, float]:
    """effnn's values of :data:`METRIC_PAIRS` for a reference record."""
    cost = reference_array(record).simulate(reference_layers(record))[0]
    return {key: float(getattr(cost, key)) for key in METRIC_PAIRS}


def scalesim_metrics(record: dict) -> dict[str, float]:
    """SCALE-Sim's values of :data:`METRIC_PAIRS` in a reference record (percentages: first sub-layer)."""
    percent = ("overall_util", "mapping_efficiency", "compute_util")
    out = {key: float(record[key]) for key in METRIC_PAIRS if key not in percent + ("total_cycles",)}
    out["total_cycles"] = float(record["compute_cycles"])
    for key in percent:
        out[key] = float(record[key][0])
    return out


def reference_regime(record: dict) -> str:
    """``USER`` (finite bandwidth), ``CALC-spill`` (an operand outgrows its SRAM's active half, or the
    ofmap its drain threshold) or ``CALC-fit``."""
    if record["bandwidth"] != "CALC":
        return "USER"
    array = reference_array(record)
    return "CALC-spill" if array.spills(reference_layers(record)).any() else "CALC-fit"
