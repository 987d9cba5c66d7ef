"""Hardware presets' ``ppa:`` blocks: validated by the schema, read by tools/hwcost.py and
effnn.hw.mapping.cost_model_for_preset, and priced with the PE each preset cites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from effnn.hw import ConvLayer, build_cost_model, hardware_preset, hardware_preset_names
from effnn.hw.mapping import cost_model_for_preset, scalesim_layers
from effnn.hw.ppa import AcceleratorPPA, load_tech, pe_cost, preset_ppa_fields
from tests.conftest import compose_config

#: the PE each preset models, from the designs cited beside its block (Eyeriss 16-bit, TPU v1 8-bit)
EXPECTED = {"systolic_16x16_os": ("int_mac", 16, "Eyeriss"), "systolic_32x32_ws": ("int_mac", 8, "TPU v1"),
            "scalesim_8x8_os_calc": ("int_mac", 16, "Eyeriss")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_array_preset_has_a_cited_ppa_block(name: str) -> None:
    spec = hardware_preset(name)
    pe_type, bits, design = EXPECTED[name]
    assert design in spec["ppa"]["models"]
    assert preset_ppa_fields(spec["ppa"]) == {"pe_type": pe_type, "weight_bits": bits, "act_bits": bits,
                                              "dram": "ddr3_horowitz", "tech": "horowitz_45nm"}
    assert build_cost_model(name).name == name  # the block does not disturb the SCALE-Sim cost model


def test_only_the_analytic_preset_has_no_array_and_no_ppa() -> None:
    without = [n for n in hardware_preset_names() if "ppa" not in hardware_preset(n)]
    assert without == ["analytic"] and "array" not in hardware_preset("analytic")


def test_hydra_composes_the_ppa_block(tmp_path: Path) -> None:
    cfg = compose_config(["hardware=systolic_32x32_ws"], output_dir=tmp_path)
    assert cfg.hardware.ppa.weight_bits == 8 and cfg.hardware.ppa.pe_type == "int_mac"


@pytest.mark.parametrize(("block", "message"), [
    ({"pe_typ": "int_mac"}, "unknown hardware.ppa option 'pe_typ'"),
    ({"weight_bits": "eight"}, "bad value for hardware.ppa.weight_bits"),
    ({"pe_type": "tpu"}, "hardware.ppa.pe_type: unknown PE type 'tpu'"),
    ({"dram": "hbm2"}, "hardware.ppa: unknown DRAM kind 'hbm2'"),
    ({"act_bits": 0}, "weight_bits and act_bits must be positive"),
])
def test_bad_ppa_blocks_fail_with_one_line(block: dict, message: str) -> None:
    spec = {**hardware_preset("systolic_16x16_os"), "ppa": block}
    with pytest.raises(ValueError, match=message):
        build_cost_model(spec)


def test_cost_model_for_preset_uses_the_block() -> None:
    model = cost_model_for_preset("systolic_32x32_ws")
    ppa = model.acc.ppa
    assert (ppa.rows, ppa.pe_type, ppa.weight_bits, ppa.act_bits, ppa.clock_mhz) == (32, "int_mac", 8, 8, 700)
    assert model.acc.dataflows == ("ws",)
    # TPU v1: a 16-bit operand runs at half speed, both 16-bit at quarter speed (int_mac passes)
    layer = ConvLayer("c", 64, 64, 14, 14, 3, 3, pad_h=1, pad_w=1)  # 16-bit, effnn's default width
    wide, narrow = model.layer_cost(layer), model.layer_cost(ConvLayer(
        "c", 64, 64, 14, 14, 3, 3, pad_h=1, pad_w=1, weight_bits=8, act_bits=8, out_bits=8))
    assert wide.compute_cycles > 3 * narrow.compute_cycles
    other = cost_model_for_preset("systolic_32x32_ws", pe_type="bit_fusion")
    assert other.acc.ppa.pe_type == "bit_fusion" and other.acc.ppa.weight_bits == 8
    with pytest.raises(ValueError, match="kind: analytic"):
        cost_model_for_preset("analytic")


def test_scalesim_mode_stretches_compute_by_the_pes_cycles_per_mac() -> None:
    model = cost_model_for_preset("systolic_16x16_os", mode="scalesim", pe_type="bit_serial", weight_bits=8,
                                  act_bits=8)
    layer = ConvLayer("c", 32, 32, 14, 14, 3, 3, pad_h=1, pad_w=1, weight_bits=8, act_bits=6, out_bits=8)
    (counts,) = model.array.simulate([layer])
    (got,) = scalesim_layers(model.array, model.acc, [layer])
    assert got.compute_cycles == counts.compute_cycles * 6  # Stripes: one activation bit per cycle
    assert got.cycles == counts.total_cycles_incl_prefetch + 5 * counts.compute_cycles  # SCALE-Sim total + stretch


def test_hwcost_reports_the_presets_area_and_power(capsys: pytest.CaptureFixture[str]) -> None:
    import effnn.hw.app as tool

    topo = Path(__file__).resolve().parent / "data" / "scalesim" / "shared" / "topologies"
    csv = sorted(topo.glob("*.csv"))[0]
    assert tool.main(["-t", str(csv), "--hardware", "systolic_32x32_ws", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ppa = report["ppa"]
    assert "TPU v1" in ppa["models"]
    # independent of the CLI: 1024 8x8 int MAC PEs + SRAMs of 256/256/128 kB from the cited 45 nm fits
    t = load_tech()
    area = 1024 * pe_cost("int_mac", 8, 8).area_um2 * 1e-6 + sum(t.sram(kb).area_mm2 for kb in (256, 256, 128))
    assert ppa["accelerator"]["area_mm2"] == pytest.approx(area)
    ref = AcceleratorPPA(32, 32, "int_mac", 8, 8, 256, 256, 128, 700)
    assert ppa["accelerator"]["peak_power_mw"] == pytest.approx(ref.peak_power_mw())
    schedule = ppa["scalesim_schedule"]
    assert schedule["power_mw"] == pytest.approx(schedule["energy"] / schedule["latency_ms"])
    assert tool.main(["-t", str(csv), "--hardware", "systolic_32x32_ws"]) == 0
    assert "PPA (int_mac 8x8 b PEs at 45 nm; models TPU v1" in capsys.readouterr().out
    cfg = topo.parent / "configs" / "calc64k_8x8_os.cfg"
    assert tool.main(["-c", str(cfg), "-t", str(csv), "--json"]) == 0  # a SCALE-Sim config carries no PPA
    assert "ppa" not in json.loads(capsys.readouterr().out)


def test_hwcost_rejects_a_bad_ppa_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import effnn.hw.app as tool

    spec = {**hardware_preset("systolic_16x16_os"), "name": "mine", "ppa": {"pe_type": "tpu"}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    topo = sorted((Path(__file__).resolve().parent / "data" / "scalesim" / "shared" / "topologies").glob("*.csv"))
    assert tool.main(["-t", str(topo[0]), "--hardware", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hardware.ppa.pe_type: unknown PE type 'tpu'" in err[0]
