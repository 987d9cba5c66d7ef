"""Cost models: one interface over modules, (space, arch) pairs and layer lists; presets and caching."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from effnn.hw import (
    AnalyticCostModel,
    ConvLayer,
    SystolicArray,
    SystolicCostModel,
    build_cost_model,
    load_energy_table,
)


def test_energy_tables_as_published() -> None:
    eyeriss = load_energy_table("eyeriss_normalized")
    assert (eyeriss.mac, eyeriss.rf, eyeriss.array, eyeriss.sram, eyeriss.dram) == (1, 1, 2, 6, 200)
    horowitz = load_energy_table("horowitz_45nm")
    assert horowitz.unit == "pJ" and "45 nm" in horowitz.source
    assert horowitz.mac == pytest.approx(0.2 + 0.03)  # 8-bit multiply + 8-bit add
    assert horowitz.dram / horowitz.ref_bits * 64 == pytest.approx(2000)  # 2 nJ per 64-bit access


def test_alphanet_a0_through_every_entry_point() -> None:
    """AlphaNet-A0 is 203 MFLOPs (DESIGN.md); the systolic model agrees with itself across entry points."""
    from effnn.nas import get_space

    space = get_space("attentivenas")
    a0 = space.min_arch()
    analytic = AnalyticCostModel()(space, a0)
    assert analytic["macs"] / 1e6 == pytest.approx(203, abs=0.5)
    assert analytic["params"] == space.params(a0)
    model = build_cost_model("systolic_16x16_os")
    metrics = model(space, a0)
    assert metrics["macs"] == analytic["macs"] and metrics["params"] == analytic["params"]
    assert metrics["latency_ms"] == pytest.approx(metrics["cycles"] / (500e6) * 1e3)
    assert metrics["edp"] == pytest.approx(metrics["energy"] * metrics["latency_ms"])
    assert metrics["energy"] == pytest.approx(sum(metrics[f"energy_{lvl}"]
                                                  for lvl in ("mac", "rf", "array", "sram", "dram")))
    assert 0 < metrics["utilization"] <= 100
    # the same workload as a plain layer list, or simulated layer by layer, gives the same totals
    layers = space.workload(a0)
    assert model(layers)["energy"] == pytest.approx(metrics["energy"])
    per_layer = model.array.simulate(layers)
    assert sum(c.total_cycles_incl_prefetch for c in per_layer) == metrics["cycles"]
    assert sum(c.energy for c in per_layer) == pytest.approx(metrics["energy"])
    # bigger subnets cost more on every axis
    big = model(space, space.max_arch())
    assert all(big[k] > metrics[k] for k in ("macs", "latency_ms", "energy", "edp", "dram_accesses"))


def test_module_and_space_agree() -> None:
    """Scoring the static subnet as an nn.Module equals scoring (space, arch) analytically."""
    from effnn.nas import build_supernet, get_space

    space = get_space("tiny32")
    arch = space.max_arch()
    static = build_supernet(space, num_classes=10).extract(arch)
    model = build_cost_model("systolic_32x32_ws")
    from_module = model(static, (1, 3, arch.resolution, arch.resolution))
    from_space = model(space, arch, num_classes=10)
    assert from_module["params"] == sum(p.numel() for p in static.parameters()) == from_space["params"]
    for key in ("macs", "cycles", "energy", "latency_ms", "dram_accesses"):
        assert from_module[key] == pytest.approx(from_space[key]), key


def test_cache_by_shape_not_name() -> None:
    model = SystolicCostModel(SystolicArray(8, 8, "ws", 16, 16, 16, 4))
    layers = [ConvLayer(f"c{i}", 16, 32, 14, 14, 3, 3, pad_h=1, pad_w=1) for i in range(5)]
    first = model(layers)
    assert model.cache_size == 1  # five names, one shape
    renamed = [replace(layer, name=f"other{i}") for i, layer in enumerate(layers)]
    assert model(renamed) == first and model.cache_size == 1
    assert model(layers[:1])["energy"] == pytest.approx(first["energy"] / 5)
    model([replace(layers[0], act_bits=8)])
    assert model.cache_size == 2  # bits are part of the cost
    # a fresh model without any cache computes the same numbers
    assert SystolicCostModel(model.array)(renamed) == first


def test_score_many_equals_score() -> None:
    from effnn.nas import get_space

    space = get_space("attentivenas")
    model = build_cost_model("systolic_16x16_os")
    gen = torch.Generator().manual_seed(0)
    archs = [space.sample(gen) for _ in range(6)]
    batched = model.score_many(space.workload(a) for a in archs)
    fresh = build_cost_model("systolic_16x16_os")
    for arch, metrics in zip(archs, batched):
        single = fresh.score(space.workload(arch))
        assert metrics == pytest.approx(single)


class _MixedBitsSpace:
    """A duck-typed space whose memoized sections mix bit-widths (every other layer 8-bit weights, some
    SmartDeal-like stored bits), to exercise the cost model's per-bit-width grouping."""

    def __init__(self, space) -> None:  # noqa: ANN001 (an effnn.nas.SearchSpace)
        self.space = space
        self._memo: dict[int, object] = {}

    def _convert(self, section) -> object:  # noqa: ANN001
        from types import SimpleNamespace

        found = self._memo.get(id(section))
        if found is None:
            layers = tuple(replace(layer, weight_bits=8, weight_storage_bits=5.25) if i % 2 else layer
                           for i, layer in enumerate(section.layers))
            found = self._memo[id(section)] = SimpleNamespace(layers=layers, params=section.params, keep=section)
        return found

    def workload_sections(self, arch, num_classes: int = 1000) -> list:  # noqa: ANN001
        return [self._convert(s) for s in self.space.workload_sections(arch, num_classes)]

    def workload(self, arch, num_classes: int = 1000) -> list:  # noqa: ANN001
        return [layer for s in self.workload_sections(arch, num_classes) for layer in s.layers]

    def params(self, arch, num_classes: int = 1000) -> int:  # noqa: ANN001
        return self.space.params(arch, num_classes)


@pytest.mark.parametrize("space_name", ["attentivenas", "tiny32"])
def test_section_path_is_bit_identical_to_the_layer_path(space_name: str) -> None:
    """cost(space, arch) scores the space's memoized sections, one cached subtotal each; it must give
    exactly (==, not approx) what scoring the flat layer list gives, in any layer order, with mixed
    bit-widths, and after the identity caches overflow and restart."""
    import random

    from effnn.nas import get_space

    space = get_space(space_name)
    gen = torch.Generator().manual_seed(1)
    archs = [space.sample(gen) for _ in range(200)]
    sections_model, layers_model = build_cost_model("systolic_16x16_os"), build_cost_model("systolic_16x16_os")
    shuffled_model = build_cost_model("systolic_16x16_os")
    shuffled_model.identity_cache_size = sections_model.identity_cache_size = 50
    order = random.Random(0)
    for arch in archs:
        fast = sections_model(space, arch, num_classes=10)
        layers = space.workload(arch, num_classes=10)
        slow = layers_model.score(layers)
        slow["params"] = float(space.params(arch, num_classes=10))
        assert fast == slow
        shuffled = shuffled_model(order.sample(layers, len(layers)))
        assert shuffled == {**slow, "params": shuffled["params"]}
    mixed = _MixedBitsSpace(space)
    for arch in archs[:50]:
        layers = mixed.workload(arch, num_classes=10)
        assert len({(layer.weight_bits, layer.stored_weight_bits) for layer in layers}) == 2
        slow = layers_model.score(layers)
        slow["params"] = float(space.params(arch, num_classes=10))
        assert sections_model(mixed, arch, num_classes=10) == slow
    analytic = AnalyticCostModel()
    assert analytic(space, archs[0]) == {"macs": float(space.macs(archs[0])), "params": float(space.params(archs[0]))}


def test_build_cost_model_inputs_and_errors() -> None:
    assert isinstance(build_cost_model("analytic"), AnalyticCostModel)
    array = SystolicArray(4, 4)
    assert build_cost_model(array).array is array
    custom = build_cost_model({"kind": "systolic", "name": "mine",
                               "array": {"rows": 4, "cols": 8, "energy_table": "horowitz_45nm"}})
    assert custom.name == "mine" and custom.array.cols == 8 and custom.units["energy"] == "pJ"
    with pytest.raises(ValueError, match="unknown hardware preset 'tpu'; available"):
        build_cost_model("tpu")
    with pytest.raises(ValueError, match=r"unknown keys \['arrays'\]"):
        build_cost_model({"kind": "systolic", "arrays": {}})
    with pytest.raises(ValueError, match="kind must be 'analytic' or 'systolic'"):
        build_cost_model({"kind": "gpu"})
    with pytest.raises(ValueError, match="needs its input shape"):
        AnalyticCostModel()(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="cannot score a int"):
        AnalyticCostModel()(3)
