"""The systolic model against real SCALE-Sim 3.0.0 outputs: exact cycles and SRAM counts, DRAM within 5%.

Two reference sets: the shared one (``shared/reference/scalesim``: 8x8 arrays, 64 kB SRAMs, 13 layers x 3
dataflows) and ``test_hw_scalesim_extra.json`` (non-square 4x16/16x4 arrays, 8 kB SRAMs that force DRAM
re-reads, depthwise with a channel multiplier, 5x3 kernels, GEMMs), generated with the same simulator.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from effnn.hw import SystolicArray, read_scalesim_config, read_scalesim_topology

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "scalesim"
EXTRA = Path(__file__).with_name("test_hw_scalesim_extra.json")
needs_shared = pytest.mark.skipif(not (SHARED / "results_8x8.csv").is_file(),
                                  reason=f"shared SCALE-Sim reference not found at {SHARED}")


def _active_half(sram_kb: float) -> float:
    """Words SCALE-Sim's active half-buffer holds: 50 sets of floor(words / 100) (its set granularity)."""
    return math.floor(sram_kb * 1024 / 100) * 50


def _shared_rows() -> list[dict[str, str]]:
    if not (SHARED / "results_8x8.csv").is_file():
        return []
    with open(SHARED / "results_8x8.csv") as f:
        return list(csv.DictReader(f))


def _check_dram(name: str, ours: int, ref: float, footprint: float, sram_kb: float) -> None:
    if footprint <= _active_half(sram_kb):
        assert ours == pytest.approx(ref, rel=0.05), f"{name}: DRAM {ours} vs SCALE-Sim {ref}"


@needs_shared
@pytest.mark.parametrize("row", _shared_rows(), ids=lambda r: f"{r['layer']}-{r['dataflow']}")
def test_shared_reference_row(row: dict[str, str]) -> None:
    array = read_scalesim_config(SHARED / "configs" / f"calc64k_8x8_{row['dataflow']}.cfg")
    layers = read_scalesim_topology(SHARED / "topologies" / f"{row['layer']}.csv", gemm=row["kind"] == "gemm")
    assert len(layers) == 1
    cost = array.simulate(layers)[0]
    assert cost.macs == int(row["macs"])
    assert cost.compute_cycles == int(row["compute_cycles"])
    assert cost.stall_cycles == int(row["stall_cycles"]) == 0  # CALC bandwidth never stalls
    assert cost.sram_reads_ifmap == int(row["sram_ifmap_reads"])
    assert cost.sram_reads_filter == int(row["sram_filter_reads"])
    assert cost.sram_writes_ofmap == int(row["sram_ofmap_writes"])
    assert cost.overall_util == pytest.approx(float(row["overall_util_pct"]), abs=1e-3)
    assert cost.mapping_efficiency == pytest.approx(float(row["mapping_eff_pct"]), abs=1e-3)
    assert cost.compute_util == pytest.approx(float(row["compute_util_pct"]), abs=1e-3)
    if row["kind"] == "gemm":
        m, n, k = (int(row[f"gemm_{x}"]) for x in "MNK")
        footprints = (m * k, k * n, m * n)
    else:
        # per (sub-)layer: SCALE-Sim runs each channel of a depthwise layer on its own
        c = 1 if row["kind"] == "depthwise" else int(row["in_ch_C"])
        f = int(row["num_filt_M"])
        footprints = (int(row["scalesim_ifmap_h"]) * int(row["scalesim_ifmap_w"]) * c,
                      int(row["filt_r"]) * int(row["filt_s"]) * c * f,
                      int(row["out_h"]) * int(row["out_w"]) * f)
    kb = float(row["ifmap_sram_kB"])
    _check_dram("ifmap", cost.dram_reads_ifmap, float(row["dram_ifmap_reads"]), footprints[0], kb)
    _check_dram("filter", cost.dram_reads_filter, float(row["dram_filter_reads"]), footprints[1], kb)
    # every ofmap element (or partial sum, for ws/is) reaches DRAM once; SCALE-Sim's drain over-counts <0.1%
    assert cost.dram_writes_ofmap == pytest.approx(float(row["dram_ofmap_writes"]), rel=0.05)


def _extra_cases() -> list[dict]:
    return json.loads(EXTRA.read_text())["cases"]


@pytest.mark.parametrize("case", _extra_cases(), ids=lambda c: c["id"])
def test_generated_reference_case(case: dict, tmp_path: Path) -> None:
    topology = tmp_path / "layer.csv"
    topology.write_text(case["topology"] + "\n")
    kb = case["sram_kb"]
    array = SystolicArray(case["rows"], case["cols"], case["dataflow"], kb, kb, kb)
    cost = array.simulate(read_scalesim_topology(topology, gemm=case["gemm"]))[0]
    for key in ("compute_cycles", "stall_cycles", "sram_reads_ifmap", "sram_reads_filter",
                "sram_writes_ofmap"):
        assert getattr(cost, key) == case[key], key
    layer = read_scalesim_topology(topology, gemm=case["gemm"])[0]
    m, n, k = layer.gemm  # per group: SCALE-Sim runs each depthwise channel as its own layer
    ifmap = m * k if case["gemm"] else layer.in_h * layer.in_w * (layer.in_ch // layer.groups)
    _check_dram("ifmap", cost.dram_reads_ifmap, case["dram_reads_ifmap"], ifmap, kb)
    _check_dram("filter", cost.dram_reads_filter, case["dram_reads_filter"], k * n, kb)
    assert cost.dram_writes_ofmap == pytest.approx(case["dram_writes_ofmap"], rel=0.05)


def test_generated_references_cover_spilling_operands() -> None:
    """The extra set exercises both sides of the fit rule, so the 5% check above is not vacuous."""
    spilling = [c for c in _extra_cases()
                if c["sram_kb"] == 8 and c["dram_reads_ifmap"] > c["sram_reads_ifmap"] / 2]
    assert len(spilling) >= 5
    assert {c["dataflow"] for c in _extra_cases()} == {"os", "ws", "is"}


def test_scalesim_conventions(tmp_path: Path) -> None:
    """DP naming makes a depthwise layer; rows with or without the trailing comma parse the same."""
    topo = tmp_path / "t.csv"
    topo.write_text("Layer name, H, W, R, S, C, M, Stride,\n"
                    "DPconv, 10, 10, 3, 3, 8, 2, 1,\n"
                    "plain, 10, 10, 3, 3, 8, 4, 2\n")
    dw, plain = read_scalesim_topology(topo)
    assert dw.depthwise and dw.groups == 8 and dw.out_ch == 16 and dw.gemm == (64, 2, 9)
    assert not plain.depthwise and (plain.out_h, plain.out_w) == (4, 4) and plain.gemm == (16, 4, 72)


@pytest.mark.parametrize(("text", "match"), [
    ("hdr\nconv1, 10, 10, 3, 3, 8,\n", r"t\.csv:2: expected 8 fields"),
    ("hdr\nok, 10, 10, 3, 3, 8, 4, 1,\nbad, 10, x, 3, 3, 8, 4, 1,\n",
     r"t\.csv:3: layer 'bad' has a non-integer"),
    ("hdr\nzero, 10, 10, 3, 3, 0, 4, 1,\n", r"t\.csv:2: layer 'zero' has a non-positive size"),
    ("hdr\nbig, 2, 2, 3, 3, 8, 4, 1,\n", r"t\.csv:2: .*kernel larger than the padded input"),
    ("hdr\n", r"no layers"),
])
def test_malformed_topology_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    topo = tmp_path / "t.csv"
    topo.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_scalesim_topology(topo)


CONFIG = """[general]
run_name = t
[architecture_presets]
ArrayHeight: 8
ArrayWidth: 4
IfmapSramSzkB: 64
FilterSramSzkB: 32
OfmapSramSzkB: 16
Dataflow : ws
Bandwidth : 5
[layout]
IfmapSRAMBankBandwidth: 7
FilterSRAMBankBandwidth: 9
[run_presets]
InterfaceBandwidth: USER
"""


def test_config_fields_and_user_bandwidth(tmp_path: Path) -> None:
    cfg = tmp_path / "a.cfg"
    cfg.write_text(CONFIG)
    array = read_scalesim_config(cfg)
    assert (array.rows, array.cols, array.dataflow) == (8, 4, "ws")
    assert (array.ifmap_sram_kb, array.filter_sram_kb, array.ofmap_sram_kb) == (64, 32, 16)
    # SCALE-Sim 3.0.0 feeds ifmap/filter at the [layout] bank bandwidths, drains the ofmap at Bandwidth
    assert array.dram_bandwidth == (7.0, 9.0, 5.0)
    cfg.write_text(CONFIG.replace("USER", "CALC"))
    assert read_scalesim_config(cfg).dram_bandwidth is None


@pytest.mark.parametrize(("old", "new", "match"), [
    ("ArrayHeight: 8", "ArrayHeight: 0", "ArrayHeight = 0 must be positive"),
    ("IfmapSramSzkB: 64", "IfmapSramSzkB: -1", "IfmapSramSzkB = -1 must be positive"),
    ("FilterSramSzkB: 32", "FilterSramSzkB: big", "is not an integer"),
    ("Dataflow : ws", "Dataflow : rs", "Dataflow = 'rs'"),
    ("ArrayWidth: 4\n", "", r"missing \[architecture_presets\] ArrayWidth"),
])
def test_bad_config_values_raise(tmp_path: Path, old: str, new: str, match: str) -> None:
    cfg = tmp_path / "a.cfg"
    cfg.write_text(CONFIG.replace(old, new))
    with pytest.raises(ValueError, match=match):
        read_scalesim_config(cfg)


def test_missing_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_scalesim_config(tmp_path / "missing.cfg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_scalesim_topology(tmp_path / "missing.csv")
