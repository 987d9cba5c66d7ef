"""effnn.hw.mapping.cost_model_for: the PE type and widths set the silicon, every layer is priced at its own
bit-widths (bit-serial cycles, Bit Fusion throughput, int-MAC operand gating), checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effnn.hw.layers import ConvLayer, GemmLayer
from effnn.hw.mapping import DATAFLOWS, ORDERS, LayerShape, MappedCostModel, cost_model_for, evaluate_mappings
from effnn.hw.ppa import AcceleratorPPA, load_tech
from effnn.hw.systolic import SystolicArray

ARRAY = SystolicArray(16, 16, "ws", dram_bandwidth=16)


def _conv(bits: int, name: str = "c") -> ConvLayer:
    return ConvLayer(name, 64, 64, 28, 28, 3, 3, pad_h=1, pad_w=1, weight_bits=bits, act_bits=bits, out_bits=bits)


def _compute_cycles(model: MappedCostModel, layer: ConvLayer) -> float:
    """Compute cycles of one fixed ws mapping (whole-layer tiles, K innermost) of ``layer``."""
    s = LayerShape.of(layer)
    one = np.ones(1, dtype=np.int64)
    cost = evaluate_mappings(s, model.acc, one * DATAFLOWS.index("ws"), one, one * s.m, one * s.n, one * s.k,
                             one * ORDERS.index("mnk"))
    return float(cost["compute_cycles"][0])


def test_cost_model_for_builds_the_named_pe() -> None:
    model = cost_model_for(ARRAY, pe_type="bit_fusion", weight_bits=8, act_bits=8)
    assert isinstance(model, MappedCostModel) and model.mode == "mapped" and model.name == "mapped:edp"
    expected = AcceleratorPPA(16, 16, "bit_fusion", 8, 8, 64, 64, 64, ARRAY.clock_mhz)
    assert model.acc.ppa.area_mm2() == pytest.approx(expected.area_mm2())
    assert model.acc.dataflows == ("ws",)
    ref = cost_model_for(ARRAY, pe_type="int_mac", weight_bits=8, act_bits=8, mode="scalesim", objective="energy")
    assert ref.mode == "scalesim" and ref.array is ARRAY


def test_bit_serial_cycles_scale_with_the_layers_activation_bits() -> None:
    model = cost_model_for(ARRAY, pe_type="bit_serial", weight_bits=8, act_bits=8)
    c8, c4 = _compute_cycles(model, _conv(8)), _compute_cycles(model, _conv(4))
    # ws: rounds x row folds x col folds x (M x cycles per MAC + fill); M = 784, K = 576 -> 36 row folds,
    # N = 64 -> 4 col folds; Stripes: cycles per MAC = activation bits
    folds = math.ceil(576 / 16) * math.ceil(64 / 16)
    assert c8 - c4 == folds * 784 * (8 - 4)
    assert c8 == folds * (784 * 8 + 2 * 16 + 16 - 2)
    assert model.layer_cost(_conv(4)).cycles < model.layer_cost(_conv(8)).cycles


def test_bit_fusion_throughput_scales_with_fused_bricks() -> None:
    model = cost_model_for(ARRAY, pe_type="bit_fusion", weight_bits=8, act_bits=8)
    folds = math.ceil(576 / 16) * math.ceil(64 / 16)
    # Bit Fusion: a w x a MAC fuses ceil(w/2) ceil(a/2) of 16 BitBricks -> 1, 1/4, 1/16 cycles per MAC
    for bits, per_mac in ((8, 1.0), (4, 0.25), (2, 1 / 16)):
        assert _compute_cycles(model, _conv(bits)) == pytest.approx(folds * (784 * per_mac + 2 * 16 + 16 - 2))
    assert model.layer_cost(_conv(2)).cycles < model.layer_cost(_conv(4)).cycles < model.layer_cost(_conv(8)).cycles


def test_int_mac_energy_per_mac_shrinks_with_the_layers_bits() -> None:
    model = cost_model_for(ARRAY, pe_type="int_mac", weight_bits=8, act_bits=8)
    t = load_tech()
    acc_bits = 8 + 8 + 16  # the accumulator keeps the PE's design width (TPU: 8b x 8b into 32 bits)
    for bits in (8, 4, 2):
        layer = _conv(bits)
        got = model.layer_cost(layer)
        gated = t.mult(bits, bits)[0] + t.add(acc_bits)[0] + t.reg_energy_bit * (2 * bits + acc_bits)
        assert got.mac_pj == pytest.approx(layer.macs * gated)
    # same cycles (one pass each) and strictly less MAC energy as the bits shrink
    assert _compute_cycles(model, _conv(4)) == _compute_cycles(model, _conv(8))
    assert model.layer_cost(_conv(4)).mac_pj < model.layer_cost(_conv(8)).mac_pj
    # a 16-bit layer on the 8-bit PE takes 2 x 2 full-width passes
    wide = model.layer_cost(_conv(16))
    full = t.mult(8, 8)[0] + t.add(acc_bits)[0] + t.reg_energy_bit * (16 + acc_bits)
    assert wide.mac_pj == pytest.approx(_conv(16).macs * 4 * full)


def test_mixed_precision_workload_sums_its_layers() -> None:
    model = cost_model_for(ARRAY, pe_type="bit_serial", weight_bits=8, act_bits=8, objective="energy")
    layers = [_conv(8, "a"), _conv(4, "b"), GemmLayer("fc", 1, 10, 1024, weight_bits=6, act_bits=6, out_bits=6)]
    total = model.score(layers)
    parts = [model.layer_cost(layer) for layer in layers]
    assert total["cycles"] == pytest.approx(sum(p.cycles for p in parts))
    assert total["dynamic_energy"] == pytest.approx(sum(p.dyn_pj for p in parts) * 1e-6)
    uniform = model.score([_conv(8, "a"), _conv(8, "b"), GemmLayer("fc", 1, 10, 1024, weight_bits=8, act_bits=8,
                                                                   out_bits=8)])
    assert total["latency_ms"] < uniform["latency_ms"] and total["energy"] < uniform["energy"]


@pytest.mark.parametrize("bad", [0, -4, 4.5, True, "8"])
def test_cost_model_for_rejects_bad_bits(bad: object) -> None:
    with pytest.raises(ValueError, match="weight_bits must be a positive integer"):
        cost_model_for(ARRAY, pe_type="int_mac", weight_bits=bad, act_bits=8)  # type: ignore[arg-type]


def test_cost_model_for_rejects_unknown_pe_type() -> None:
    with pytest.raises(ValueError, match="unknown pe_type 'tpu'"):
        cost_model_for(ARRAY, pe_type="tpu", weight_bits=8, act_bits=8)
