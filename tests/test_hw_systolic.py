"""Closed-form sanity of the systolic model: bounds, monotonicity, energy accounting, bit-width scaling."""

from __future__ import annotations

import random

import pytest

from effnn.hw import ConvLayer, EnergyTable, GemmLayer, SystolicArray, load_energy_table
from effnn.hw.energy import ARRAY_HOPS_PER_MAC, RF_ACCESSES_PER_MAC


def _random_layers(n: int, seed: int) -> list[ConvLayer]:
    rng = random.Random(seed)
    layers = []
    for i in range(n):
        k = rng.choice((1, 3, 5))
        size = rng.randint(k, 40)
        cin = rng.choice((3, 8, 16, 24, 64, 96))
        depthwise = rng.random() < 0.3
        cout = cin if depthwise else rng.choice((8, 16, 40, 128))
        layers.append(ConvLayer(f"l{i}", cin, cout, size, size, k, k, rng.choice((1, 2)), rng.choice((1, 2)),
                                k // 2, k // 2, groups=cin if depthwise else 1))
    return layers


ARRAYS = [SystolicArray(r, c, df, kb, kb, kb, bw)
          for (r, c) in ((8, 8), (4, 16), (32, 32)) for df in ("os", "ws", "is")
          for kb, bw in ((64, None), (8, 4.0))]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.rows}x{a.cols}-{a.dataflow}-{a.ifmap_sram_kb}k")
def test_bounds(array: SystolicArray) -> None:
    for cost in array.simulate(_random_layers(40, seed=array.rows * 7 + len(array.dataflow))):
        assert 0 < cost.overall_util <= 100 and 0 < cost.mapping_efficiency <= 100
        assert 0 < cost.compute_util <= 100
        # a MAC needs one PE for one cycle: cycles x PEs bound the work from above
        assert cost.macs <= cost.compute_cycles * array.num_pes
        assert cost.stall_cycles >= 0 and cost.total_cycles == cost.compute_cycles + cost.stall_cycles
        # DRAM traffic is at least one read of every operand element; in CALC mode at most one per SRAM
        # access (in USER mode SCALE-Sim counts whole prefetch lines and re-prefetches its ring window,
        # so it reports more DRAM than SRAM reads in 101 of the 264 USER reference runs)
        assert 1 <= cost.dram_reads_filter
        if array.dram_bandwidth is None:
            assert cost.dram_reads_filter <= cost.sram_reads_filter
        assert cost.energy == pytest.approx(sum(cost.energy_breakdown.values()))
        # SCALE-Sim's total incl. prefetch: the first fill, compute and stalls, the ofmap's final drain
        assert cost.total_cycles_incl_prefetch >= cost.total_cycles + cost.prefetch_cycles > cost.total_cycles
        assert cost.latency_s == pytest.approx(cost.total_cycles_incl_prefetch / (array.clock_mhz * 1e6))
        if array.dram_bandwidth is None:
            assert cost.stall_cycles == 0


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("field", ["out_ch", "in_ch", "in_h", "batch"])
@pytest.mark.parametrize("bandwidth", [None, 4])
def test_cycles_monotone_in_work(dataflow: str, field: str, bandwidth: float | None) -> None:
    """More filters, channels, pixels or images never take fewer compute cycles or SRAM reads; in CALC mode
    (no stalls) never fewer compute-plus-stall cycles or less energy either. SCALE-Sim's USER mode is not monotone in
    the work (see ``test_user_mode_is_not_monotone`` in test_hw_scalesim.py), so neither is the model."""
    array = SystolicArray(8, 8, dataflow, 16, 16, 16, dram_bandwidth=bandwidth)
    base = {"name": "x", "in_ch": 8, "out_ch": 8, "in_h": 12, "in_w": 12, "kernel_h": 3, "kernel_w": 3,
            "batch": 1}
    previous = None
    for value in range(base[field], base[field] + 40, 3):
        cost = array.simulate([ConvLayer(**{**base, field: value})])[0]
        if previous is not None:
            assert cost.compute_cycles >= previous.compute_cycles
            reads = cost.sram_reads_ifmap + cost.sram_reads_filter
            assert reads >= previous.sram_reads_ifmap + previous.sram_reads_filter
            if bandwidth is None:
                # (not total_cycles_incl_prefetch: its ofmap drain tail depends on when the last drain
                # during compute fired, which SCALE-Sim ties to the buffer's fill level)
                assert cost.total_cycles >= previous.total_cycles
                assert cost.energy > previous.energy
        previous = cost


def test_single_fold_closed_form() -> None:
    """A GEMM that exactly fills the array is one fold: T + fill/drain cycles, 100% mapped."""
    m, n, k = 8, 16, 50
    layer = GemmLayer("g", m=m, n=n, k=k)
    os_cost = SystolicArray(8, 16, "os").simulate([layer])[0]
    # os: T=K streaming steps, R cycles to shift the results out, C-1 of skew; counted from 0
    assert os_cost.compute_cycles == k + 8 + 16 - 2 - 1
    assert os_cost.mapping_efficiency == 100.0
    ws_cost = SystolicArray(50, 16, "ws").simulate([GemmLayer("g", m=7, n=16, k=50)])[0]
    # ws: R cycles to load weights, then 2R-1 + T(=M) to stream, C-1 skew
    assert ws_cost.compute_cycles == 7 + 2 * 50 + 16 - 2 - 1
    assert ws_cost.overall_util == pytest.approx(100 * 7 * 16 * 50 / (ws_cost.compute_cycles * 50 * 16))


def test_energy_matches_hand_count() -> None:
    """Energy = accesses x per-access energy, recomputed here from the reported counts and the table."""
    table = EnergyTable("t", mac=1.5, rf=0.7, array=1.1, sram=5.0, dram=100.0, ref_bits=8, unit="pJ")
    array = SystolicArray(8, 8, "ws", 64, 64, 64, energy_table=table)
    layer = ConvLayer("c", 16, 32, 10, 10, 3, 3, pad_h=1, pad_w=1, weight_bits=8, act_bits=8, out_bits=8)
    c = array.simulate([layer])[0]
    expected = (c.macs * (table.mac + RF_ACCESSES_PER_MAC * table.rf + ARRAY_HOPS_PER_MAC * table.array)
                + table.sram * (c.sram_reads_ifmap + c.sram_reads_filter + c.sram_writes_ofmap
                                + c.dram_reads_ifmap + c.dram_reads_filter + c.dram_writes_ofmap)
                + table.dram * (c.dram_reads_ifmap + c.dram_reads_filter + c.dram_writes_ofmap))
    assert c.energy == pytest.approx(expected)
    # everything fits: DRAM reads each real ifmap element once (padding is never fetched) and each weight once
    assert c.dram_reads_ifmap == 16 * 10 * 10 and c.dram_reads_filter == 32 * 16 * 9


def test_bit_width_scaling() -> None:
    """MAC energy scales with w_bits x a_bits, data movement with bits, and narrow operands fit more."""
    table = load_energy_table("eyeriss_normalized")  # quoted at 16 bits
    array = SystolicArray(16, 16, "os", 16, 16, 16, dram_bandwidth=8, word_bits=8, energy_table=table)

    def cost(bits: float, **extra: float) -> object:
        return array.simulate([ConvLayer("c", 64, 64, 14, 14, 3, 3, pad_h=1, pad_w=1, weight_bits=bits,
                                         act_bits=bits, out_bits=bits, **extra)])[0]

    c16, c8, c4 = cost(16), cost(8), cost(4)
    assert c8.energy_breakdown["mac"] == pytest.approx(c16.energy_breakdown["mac"] / 4)
    assert c4.energy_breakdown["mac"] == pytest.approx(c16.energy_breakdown["mac"] / 16)
    assert c8.energy_breakdown["rf"] == pytest.approx(c16.energy_breakdown["rf"] / 2)
    # compute is bit-independent; 16 kB holds 8192 16-bit weights (< 36864 needed) but all 4-bit ones
    assert c16.compute_cycles == c8.compute_cycles == c4.compute_cycles
    assert c16.dram_reads_ifmap > c4.dram_reads_ifmap == 64 * 14 * 14
    assert c16.energy > c8.energy > c4.energy
    # narrower words move faster over the same DRAM interface: fewer stall and fill cycles
    assert c16.stall_cycles + c16.prefetch_cycles > c4.stall_cycles + c4.prefetch_cycles
    # mixed precision: 4-bit weights, 8-bit activations -> MAC energy x (4*8)/(16*16)
    mixed = array.simulate([ConvLayer("c", 64, 64, 14, 14, 3, 3, pad_h=1, pad_w=1, weight_bits=4,
                                      act_bits=8, out_bits=8)])[0]
    assert mixed.energy_breakdown["mac"] == pytest.approx(c16.energy_breakdown["mac"] * 32 / 256)


def test_bandwidth_stalls() -> None:
    """Stalls appear when DRAM cannot keep up, grow as bandwidth shrinks, vanish in CALC mode."""
    layer = ConvLayer("fc", 1024, 1000, 1, 1)  # weights-bound: 1M weights, 1K outputs
    stalls = [SystolicArray(16, 16, "os", 64, 64, 64, bw).simulate([layer])[0].stall_cycles
              for bw in (1, 2, 8, 64, 1e6)]
    assert stalls == sorted(stalls, reverse=True) and stalls[0] > 0 and stalls[-1] == 0
    assert SystolicArray(16, 16, "os").simulate([layer])[0].stall_cycles == 0
    # at 1 word/cycle the weights alone need ~1M cycles of transfer: stall ~ transfer - compute
    c = SystolicArray(16, 16, "os", 64, 64, 64, 1).simulate([layer])[0]
    assert c.compute_cycles + c.stall_cycles + c.prefetch_cycles == pytest.approx(2 * 1024 * 1000, rel=0.05)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rows": 0, "cols": 8}, "rows must be a positive integer"),
    ({"rows": 8, "cols": 8.5}, "cols must be a positive integer"),
    ({"rows": 8, "cols": 8, "dataflow": "rs"}, "dataflow must be one of"),
    ({"rows": 8, "cols": 8, "ifmap_sram_kb": 0}, "ifmap_sram_kb must be a positive number"),
    ({"rows": 8, "cols": 8, "filter_sram_kb": 0.01}, "holds fewer than 100 words"),
    ({"rows": 8, "cols": 8, "dram_bandwidth": -1}, "dram_bandwidth must be a positive"),
    ({"rows": 8, "cols": 8, "dram_bandwidth": (1, 2)}, "triple"),
    ({"rows": 8, "cols": 8, "energy_table": "nope"}, "unknown energy table 'nope'"),
])
def test_invalid_arrays_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SystolicArray(**kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['colums'\]"):
        SystolicArray.from_dict({"rows": 8, "colums": 8})
    array = SystolicArray.from_dict({"rows": 8.0, "cols": 4, "dram_bandwidth": "CALC",
                                     "energy_table": {"name": "x", "mac": 1, "rf": 1, "array": 1, "sram": 1,
                                                      "dram": 1}})
    assert (array.rows, array.dram_bandwidth, array.energy_table.name) == (8, None, "x")
