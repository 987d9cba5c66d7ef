"""Joint (arch, bits, accelerator) search: accuracy at bits, prefix reuse keyed by bits, costs at bits on the
candidate's PE type and mapping, budgets at the candidate's PE widths, exact resume with the new genes."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from search_support import digits, micro_space, trained_supernet

from effnn.errors import ConfigError
from effnn.hw import SystolicArray
from effnn.hw import mapping as hw_mapping
from effnn.nas.bn_calibration import recalibrate_bn
from effnn.nas.precision import BitsSpace, StageBits, StagePrecision
from effnn.nas.supernet import resize_to
from effnn.search import SearchSettings, SubnetAccuracy, SubnetCosts, best_accelerator, fixed_batches, top1_accuracy
from effnn.search.candidate import Candidate
from effnn.search.evolution import EvolutionarySearch
from effnn.search.hardware import Accelerator, AreaModel, HardwareSpace
from effnn.search.report import pareto_rows

SPACE = micro_space()
BITS = BitsSpace(SPACE.num_stages, (4, 8), (4, 8))
BASE = SystolicArray(8, 8, "os", clock_mhz=500.0, dram_bandwidth=16)


def _quantized() -> tuple[torch.nn.Module, StagePrecision]:
    net = trained_supernet()
    return net, StagePrecision(net)


def _keys(count: int, seed: int = 0) -> list[tuple]:
    """(arch, bits) pairs the way a search meets them: mutants sharing prefixes, the same arch at other bits."""
    rng = random.Random(seed)
    base = SPACE.sample(rng)
    keys = [(SPACE.mutate(base, 0.2, rng), BITS.sample(rng)) for _ in range(count)]
    arch = keys[0][0]
    keys += [(arch, BITS.max_bits()), (arch, BITS.min_bits()), (arch, None), keys[1]]
    bits = keys[2][1]
    keys.append((arch, replace(bits, weight=(bits.weight[0], bits.weight[1], 12 - bits.weight[2]))))
    return keys


def test_accuracy_at_bits_is_recalibrated_quantized_evaluation() -> None:
    """SubnetAccuracy(arch, bits) = set bits, forget activation ranges, recalibrate BN + ranges, evaluate:
    written out by hand here with the library's pieces, on another copy of the supernet."""
    dm = digits()
    calib = fixed_batches(dm.train_set, 2, 64, seed=0)
    val = list(dm.val_dataloader())
    net, precision = _quantized()
    accuracy = SubnetAccuracy(net, calib, val, reuse_mb=0, precision=precision)
    ref_net, ref_precision = _quantized()
    for arch, bits in _keys(3)[:4]:
        ref_precision.set(bits)
        for q in ref_precision.quantizers():
            q.running_range.zero_()
            q.initialized.zero_()
        ref_net.set_arch(arch)
        size = arch.resolution
        recalibrate_bn(ref_net, calib, len(calib), forward=lambda b, size=size: ref_net(resize_to(b[0], size)),
                       sync_distributed=False)
        assert accuracy(arch, bits) == top1_accuracy(ref_net, val, arch.resolution)
    # the precision changes what is measured: 4-bit weights and activations everywhere differ from 8-bit
    arch = SPACE.max_arch()
    assert accuracy(arch, BITS.min_bits()) != accuracy(arch, BITS.max_bits())
    with pytest.raises(ValueError, match="quantized supernet"):
        SubnetAccuracy(trained_supernet(), calib, val)(arch, BITS.max_bits())


def test_prefix_reuse_keys_by_bits_and_stays_identical() -> None:
    """Reuse on and off give identical accuracies in any order -- the same arch at other bits, bits differing
    only in the last stage (a shared prefix at equal bits is reused, the rest is not) -- and identical state."""
    dm = digits()
    calib = fixed_batches(dm.train_set, 2, 64, seed=1)
    val = list(dm.val_dataloader())
    net, precision = _quantized()
    reused = SubnetAccuracy(net, calib, val, reuse_mb=64, precision=precision)
    assert reused.reuse is not None
    scratch_net, scratch_precision = _quantized()
    scratch = SubnetAccuracy(scratch_net, calib, val, reuse_mb=0, precision=scratch_precision)
    keys = _keys(6)
    forward = [reused(a, b) for a, b in keys]
    backward = [scratch(a, b) for a, b in reversed(keys)][::-1]
    assert forward == backward
    assert reused.reuse.reused_segments > 0
    reused(*keys[0])
    scratch(*keys[0])
    a, b = net.state_dict(), scratch_net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_costs_at_bits_on_the_candidates_pe_and_mapping() -> None:
    """Costs = the PPA model on the candidate's array with its PE type designed for its widest bits, every layer
    at its stage's bits (closed-form reference: the workload's layers rewritten by hand)."""
    costs = SubnetCosts(SPACE, 10, 3, BASE)
    arch = SPACE.max_arch()
    bits = StageBits((8, 4, 4), (8, 8, 4))
    acc = Accelerator(8, 8, "os", 16.0, 16.0, 16.0, "bit_serial", "latency")
    got = costs(arch, acc, bits)
    layers = []
    for i, section in enumerate(SPACE.workload_sections(arch, 10, 3)):
        stage = section.blocks[0].stage if section.blocks else (0 if i == 0 else SPACE.num_stages - 1)
        w, a = bits.stage(stage)
        layers += [replace(lay, weight_bits=float(w), act_bits=float(a), out_bits=float(a)) for lay in section.layers]
    hw = hw_mapping.Accelerator.from_array(acc.array(BASE), pe_type="bit_serial", weight_bits=8, act_bits=8)
    ref = hw_mapping.MappedCostModel(hw, "latency", "mapped").score(layers)
    for name in ("latency_ms", "energy", "edp", "area_mm2", "power_mw"):
        assert got[name] == pytest.approx(ref[name], rel=1e-12), name
    assert got["power_mw"] == pytest.approx(ref["energy"] / ref["latency_ms"])  # uJ / ms = mW
    # a bit-serial PE streams 4-bit weights in fewer cycles than 8-bit ones; narrower PEs take less silicon
    low = costs(arch, acc, BITS.min_bits())
    high = costs(arch, acc, BITS.max_bits())
    assert low["latency_ms"] < high["latency_ms"] and low["area_mm2"] < high["area_mm2"]
    # the fixed preset: its default_bits price every layer (the leftover fixed: no longer always 16)
    at8 = SubnetCosts(SPACE, 10, 3, BASE, default_bits=8, pe_type="int_mac", fixed_design_bits=(8, 8))
    same = SubnetCosts(SPACE, 10, 3, BASE, default_bits=16, pe_type="int_mac", fixed_design_bits=(8, 8))
    assert at8(arch) == same(arch, None, StageBits.uniform(SPACE.num_stages, 8))
    wide8, wide16 = (SubnetCosts(SPACE, 10, 3, BASE, default_bits=b, fixed_design_bits=(16, 16))(arch)
                     for b in (8, 16))  # the same 16-bit PEs, layers at the preset's default bits
    assert wide8["energy"] != wide16["energy"] and wide8["area_mm2"] == wide16["area_mm2"]
    with pytest.raises(ConfigError, match="whole number"):
        SubnetCosts(SPACE, 10, 3, BASE, default_bits=7.5)


def _fake_accuracy(arch, bits=None) -> float:
    """Cheap, deterministic accuracy that rewards bigger archs and more bits (tests the search, not a net)."""
    base = sum(arch.width) + 5 * sum(arch.depth) + arch.resolution
    return float(base + (0 if bits is None else 2 * sum(bits.weight) + sum(bits.act)))


def _co_search(tmp: Path | None, generations: int, max_area: float) -> EvolutionarySearch:
    hardware = HardwareSpace(BASE, [4, 8], [4, 8], ["os", "ws"], [16], [16], [16], max_area_mm2=max_area,
                             area_model=AreaModel(weight_bits=4, act_bits=4), pe_type=["int_mac", "bit_serial",
                                                                                        "bit_fusion"],
                             mapping=["scalesim", "edp"])
    settings = SearchSettings(objectives=("acc", "edp"), population=6, generations=generations, parents=3,
                              num_mutations=3, num_crossovers=3, seed=3)
    return EvolutionarySearch(SPACE, settings, _fake_accuracy, SubnetCosts(SPACE, 10, 3, BASE), hardware=hardware,
                              bits=BITS, state_path=None if tmp is None else tmp / "state.json")


def test_joint_search_respects_budget_at_the_pe_width_and_resumes_exactly(tmp_path: Path) -> None:
    costs = SubnetCosts(SPACE, 10, 3, BASE)
    small = Accelerator(8, 8, "os", 16.0, 16.0, 16.0, "bit_fusion", "edp")
    # a budget between an 8-bit and a 4-bit design of the same accelerator: only narrow candidates fit
    lo = costs(SPACE.min_arch(), small, BITS.min_bits())["area_mm2"]
    hi = costs(SPACE.min_arch(), small, BITS.max_bits())["area_mm2"]
    budget = (lo + hi) / 2
    full = _co_search(tmp_path / "a", 3, budget).run()
    assert full.history[-1].generation == 3
    kinds = {(c.hardware.pe_type, c.hardware.mapping) for c in full.evaluations}
    assert len(kinds) > 1 and all(c.bits is not None and BITS.contains(c.bits) for c in full.evaluations)
    for cand, metrics in full.evaluations.items():
        assert metrics["area_mm2"] <= budget
        assert metrics == {"acc": _fake_accuracy(cand.arch, cand.bits), "pes": float(cand.hardware.num_pes),
                           **costs(cand.arch, cand.hardware, cand.bits)}
    assert {"power_mw", "area_mm2"} <= set(full.history[-1].min_costs)

    (tmp_path / "b").mkdir()
    _co_search(tmp_path / "b", 1, budget).run()  # "killed" after generation 1: its state is on disk
    resumed = _co_search(tmp_path / "b", 3, budget).run(resume=True)
    assert list(resumed.evaluations.items()) == list(full.evaluations.items())
    assert resumed.pareto() == full.pareto()
    assert (tmp_path / "b" / "state.json").read_text() == (tmp_path / "a" / "state.json").read_text()

    rows = pareto_rows(full.pareto())
    assert all(r["bits"].startswith('{"weight":') and r["pe_type"] and r["mapping"] for r in rows)
    best, metrics = best_accelerator(costs, SPACE.max_arch(), _co_search(None, 0, budget).hardware, "edp",
                                     bits=BITS.min_bits())
    feasible = [a for a in _co_search(None, 0, budget).hardware.feasible()
                if costs(SPACE.max_arch(), a, BITS.min_bits())["area_mm2"] <= budget]
    assert metrics["edp"] == min(costs(SPACE.max_arch(), a, BITS.min_bits())["edp"] for a in feasible)


def test_state_and_candidates_round_trip_the_new_genes() -> None:
    cand = Candidate(SPACE.max_arch(), Accelerator(8, 8, "ws", 16.0, 16.0, 16.0, "bit_serial", "energy"),
                     StageBits((4, 8, 4), (8, 8, 4)))
    assert Candidate.from_dict(cand.to_dict()) == cand
    old = {"arch": SPACE.min_arch().to_dict(), "hardware": {"rows": 8, "cols": 8, "dataflow": "os", "ifmap_sram_kb": 16,
                                                          "filter_sram_kb": 16, "ofmap_sram_kb": 16}}
    legacy = Candidate.from_dict(old)  # written before pe_type/mapping/bits were genes
    assert legacy.bits is None and (legacy.hardware.pe_type, legacy.hardware.mapping) == ("int_mac", "scalesim")
    with pytest.raises(ConfigError, match="allowed mappings: scalesim, edp, energy, latency"):
        HardwareSpace(BASE, [8], [8], ["os"], [16], [16], [16], mapping=["fastest"])
    with pytest.raises(ConfigError, match="allowed pe_types"):
        HardwareSpace(BASE, [8], [8], ["os"], [16], [16], [16], pe_type=["tpu"])


def test_bits_search_on_the_fixed_preset_with_the_predictor() -> None:
    """Bits searched without a co-search: costs at the candidate's bits on the fixed array (PEs keep the
    preset's widths), and the ridge predictor, fit on (arch, bits) one-hot genes, is exact for an accuracy
    additive in those genes."""
    from effnn.search import AccuracyPredictor

    rng = random.Random(0)
    keys = [(SPACE.sample(rng), BITS.sample(rng)) for _ in range(60)]
    predictor = AccuracyPredictor(SPACE, BITS, alpha=1e-6).fit(keys, [_fake_accuracy(*k) for k in keys])
    fresh = [(SPACE.sample(rng), BITS.sample(rng)) for _ in range(10)]
    assert predictor.predict(fresh) == pytest.approx([_fake_accuracy(*k) for k in fresh], abs=1e-3)
    with pytest.raises(ValueError, match="pass \\(arch, bits\\) pairs"):
        predictor.predict([SPACE.min_arch()])

    costs = SubnetCosts(SPACE, 10, 3, BASE, fixed_design_bits=(8, 8))
    settings = SearchSettings(objectives=("acc", "energy"), population=6, generations=2, parents=3,
                              num_mutations=3, num_crossovers=3, seed=1, predictor=True, predictor_min_points=6)
    result = EvolutionarySearch(SPACE, settings, _fake_accuracy, costs, bits=BITS).run()
    assert len({c.bits for c in result.evaluations}) > 3
    for cand, metrics in result.evaluations.items():
        assert cand.hardware is None and metrics["energy"] == costs(cand.arch, None, cand.bits)["energy"]
        assert metrics["area_mm2"] == costs(SPACE.min_arch())["area_mm2"]  # one fixed accelerator
    arch = SPACE.max_arch()
    assert costs(arch, None, BITS.min_bits())["energy"] != costs(arch, None, BITS.max_bits())["energy"]
