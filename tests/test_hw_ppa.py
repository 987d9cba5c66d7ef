"""effnn.hw.ppa against the published numbers its tables cite (Horowitz ISSCC 2014, CACTI via Accelergy,
Bit Fusion's composition, Stripes' bit-serial timing) and the closed forms of the cost report."""

from __future__ import annotations

import math
from importlib import resources

import pytest
import yaml

from effnn.hw.ppa import PE_TYPES, AcceleratorPPA, PowerLaw, load_tech, pe_cost, summarize

# Horowitz, ISSCC 2014, 45 nm 0.9 V (typed here from the paper, independently of ppa_tables.yaml)
H14_MULT = {8: (0.2, 282), 32: (3.1, 3495)}
H14_ADD = {8: (0.03, 36), 32: (0.1, 137)}
H14_SRAM_64B = {8: 10.0, 32: 20.0, 1024: 100.0}
H14_DRAM_64B = (1300.0, 2600.0)


def test_tables_ship_with_a_source_for_every_section() -> None:
    text = resources.files("effnn.hw").joinpath("ppa_tables.yaml").read_text()
    data = yaml.safe_load(text)
    assert "horowitz_45nm" in data
    for tag in ("[H14]", "[AL]", "[CACTI]", "[BF]", "[TPU]"):
        assert text.count(tag) >= 2, f"{tag} is defined and cited"


def test_operators_reproduce_horowitz_points() -> None:
    t = load_tech("horowitz_45nm")
    assert t.node_nm == 45
    for bits, (energy, area) in H14_MULT.items():
        e, a, _ = t.mult(bits, bits)
        assert e == pytest.approx(energy, rel=1e-9) and a == pytest.approx(area, rel=1e-9)
    for bits, (energy, area) in H14_ADD.items():
        e, a, _ = t.add(bits)
        assert e == pytest.approx(energy, rel=1e-9) and a == pytest.approx(area, rel=1e-9)
    # multiplier cost grows ~ with the product of operand widths, adders ~ linearly (DESIGN.md section 7)
    assert 0.9 < t.mult_energy.exponent < 1.1
    assert 0.8 < t.add_energy.exponent < 1.05


def test_sram_fits_published_capacity_curves() -> None:
    t = load_tech("horowitz_45nm")
    for kb, energy in H14_SRAM_64B.items():
        assert t.sram(kb).read_pj == pytest.approx(energy, rel=0.05)  # 3-point log-log fit
    assert t.sram(16).read_pj_per_bit * 64 == pytest.approx(t.sram(16, width_bits=32).read_pj * 2)
    big = t.sram(128)  # CACTI 45 nm via Accelergy: 16384 x 64 b, 1162549 um^2, leak 0.003351 pJ/ns
    assert big.area_mm2 == pytest.approx(1.162549, rel=1e-9)
    assert big.leakage_mw == pytest.approx(0.003351, rel=1e-9)
    assert big.write_pj / big.read_pj == pytest.approx(26.121552 / 32.342452, rel=1e-3)
    areas = [t.sram(kb).area_mm2 for kb in (4, 16, 64, 256)]
    assert areas == sorted(areas)


def test_dram_energy_is_inside_the_published_range() -> None:
    t = load_tech("horowitz_45nm")
    assert t.dram_pj_per_bit("ddr3_horowitz") * 64 == pytest.approx(sum(H14_DRAM_64B) / 2)
    assert t.dram_pj_per_bit("lpddr4_accelergy") == pytest.approx(512 / 64)
    with pytest.raises(ValueError, match="unknown DRAM kind"):
        t.dram_pj_per_bit("hbm9")


def test_int_mac_agrees_with_accelergy_intmac() -> None:
    """Independent tool: Accelergy's 45 nm intmac (8-bit multiplier + 16-bit adder) costs 0.315 pJ."""
    t = load_tech("horowitz_45nm")
    ours = t.mult(8, 8)[0] + t.add(16)[0]
    assert 0.75 < ours / 0.315 < 1.25


def test_pe_types_follow_their_published_timing() -> None:
    for bits in (2, 4, 8):
        # Bit Fusion: a Fusion Unit of 16 BitBricks forms 16 / (ceil(w/2) ceil(a/2)) fused PEs
        _, cycles = pe_cost("bit_fusion", 8, 8).run(bits, bits)
        assert cycles == pytest.approx(math.ceil(bits / 2) ** 2 / 16)
        # Stripes: one activation bit per cycle
        assert pe_cost("bit_serial", 8, 8).run(8, bits)[1] == bits
    assert pe_cost("bit_fusion", 8, 8).run(16, 16)[1] == 4  # 2 x 2 passes of the 8x8 fusion
    assert pe_cost("int_mac", 8, 8).run(16, 8)[1] == 2  # a 16-bit weight takes two passes of an 8-bit PE
    e8 = pe_cost("int_mac", 8, 8).run(8, 8)[0]
    e4 = pe_cost("int_mac", 4, 4).run(4, 4)[0]
    assert e4 < e8
    # power-of-two weights: a shifter replaces the multiplier
    assert pe_cost("shift_add", 8, 8).run(8, 8)[0] < e8
    assert pe_cost("shift_add", 8, 8).area_um2 < pe_cost("int_mac", 8, 8).area_um2
    with pytest.raises(ValueError, match="unknown PE type"):
        pe_cost("analog", 8, 8)
    assert set(PE_TYPES) == {"int_mac", "bit_serial", "bit_fusion", "shift_add"}


def test_accelerator_area_is_pes_plus_srams() -> None:
    acc = AcceleratorPPA(16, 8, "int_mac", 8, 8, 32, 64, 16)
    t = load_tech("horowitz_45nm")
    expected = 128 * pe_cost("int_mac", 8, 8).area_um2 * 1e-6 + sum(t.sram(kb).area_mm2 for kb in (32, 64, 16))
    assert acc.area_mm2() == pytest.approx(expected)
    bigger = AcceleratorPPA(16, 8, "int_mac", 8, 8, 64, 64, 16)
    assert bigger.area_mm2() > acc.area_mm2() and bigger.leakage_mw() > acc.leakage_mw()
    energy, _ = acc.pe.run(8, 8)
    assert acc.peak_power_mw() == pytest.approx(128 * energy * 1000 * 1e-3 + acc.leakage_mw())
    with pytest.raises(ValueError, match="unknown pe_type"):
        AcceleratorPPA(4, 4, pe_type="fpga")


def test_summary_adds_leakage_over_the_latency() -> None:
    r = summarize(dynamic_pj=2e6, cycles=1e6, macs=5e8, clock_mhz=500, area_mm2=2.0, leakage_mw=10.0)
    assert r["latency_ms"] == pytest.approx(2.0)
    assert r["energy"] == pytest.approx(2.0 + 10.0 * 2.0)  # uJ: dynamic + mW * ms
    assert r["power_mw"] == pytest.approx(r["energy"] / 2.0)
    assert r["edp"] == pytest.approx(r["energy"] * 2.0)
    assert r["gops_per_mm2"] == pytest.approx(2 * 5e8 / 2e-3 / 1e9 / 2.0)


def test_power_law_fit_is_exact_through_two_points() -> None:
    law = PowerLaw.fit([2, 8], [3, 48])
    assert law(2) == pytest.approx(3) and law(8) == pytest.approx(48) and law.exponent == pytest.approx(2)
    with pytest.raises(ValueError):
        PowerLaw.fit([4, 4], [1, 2])
