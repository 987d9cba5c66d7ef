"""Search spaces and Arch: the published MFLOPs facts, flop_counter cross-checks, validation and genetics."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
import torch.nn as nn
import yaml
from torch.utils.flop_counter import FlopCounterMode

from effnn.hw.layers import ConvLayer
from effnn.nas import Arch, build_supernet, get_space, list_spaces

# AlphaNet's published config of its smallest model, pasted as users would paste it
ALPHANET_A0_YAML = """
resolution: 192
width: [16, 16, 24, 32, 64, 112, 192, 216, 1792]
depth: [1, 3, 3, 3, 3, 3, 1]
kernel_size: [3, 3, 3, 3, 3, 3, 3]
expand_ratio: [1, 4, 4, 4, 4, 6, 6]
"""


@pytest.fixture(scope="module")
def attentivenas():
    return get_space("attentivenas")


def test_alphanet_a0_is_203_mflops_and_the_smallest_subnet(attentivenas) -> None:
    a0 = Arch.from_dict(yaml.safe_load(ALPHANET_A0_YAML))
    assert a0 == attentivenas.min_arch()
    assert abs(attentivenas.macs(a0) / 1e6 - 203) / 203 < 0.01


def test_largest_attentivenas_subnet_is_1939_mflops(attentivenas) -> None:
    big = attentivenas.max_arch()
    assert big.resolution == 288 and big.width[-1] == 1984 and big.depth == (2, 5, 6, 6, 8, 8, 2)
    assert abs(attentivenas.macs(big) / 1e6 - 1939) / 1939 < 0.01


def _counted_macs(model: nn.Module, resolution: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per multiply-accumulate


def test_analytic_macs_match_flop_counter_on_extracted_alphanet_a0(attentivenas) -> None:
    supernet = build_supernet(attentivenas, num_classes=1000)
    a0 = attentivenas.min_arch()
    static = supernet.extract(a0)
    assert _counted_macs(static, a0.resolution) == attentivenas.macs(a0)
    assert sum(p.numel() for p in static.parameters()) == attentivenas.params(a0)


@pytest.mark.slow
def test_analytic_macs_match_flop_counter_on_largest_attentivenas_subnet(attentivenas) -> None:
    supernet = build_supernet(attentivenas, num_classes=1000)
    big = attentivenas.max_arch()
    assert _counted_macs(supernet.extract(big), big.resolution) == attentivenas.macs(big)


def test_workload_matches_extracted_modules_layer_by_layer() -> None:
    space = get_space("tiny32")
    supernet = build_supernet(space, num_classes=10)
    rng = random.Random(0)
    for arch in [space.min_arch(), space.max_arch(), *(space.sample(rng) for _ in range(4))]:
        static = supernet.extract(arch)
        seen: dict[str, tuple] = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n, seen=seen: seen.__setitem__(n, (m, i[0].shape)))
                 for n, m in static.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert _counted_macs(static, arch.resolution) == space.macs(arch, num_classes=10)
        for h in hooks:
            h.remove()
        layers = space.workload(arch, num_classes=10)
        assert [layer.name for layer in layers] == list(seen)  # same layers, in execution order
        for layer in layers:
            module, shape = seen[layer.name]
            assert isinstance(layer, ConvLayer)
            if isinstance(module, nn.Linear):
                assert (layer.in_ch, layer.out_ch) == (module.in_features, module.out_features)
                continue
            assert (layer.in_ch, layer.out_ch, layer.groups) == (module.in_channels, module.out_channels,
                                                                 module.groups)
            assert (layer.kernel_h, layer.stride_h, layer.pad_h) == (module.kernel_size[0], module.stride[0],
                                                                     module.padding[0])
            assert (layer.in_h, layer.in_w) == tuple(shape[-2:])
        assert sum(layer.macs for layer in layers) == space.macs(arch, num_classes=10)
        assert space.params(arch, num_classes=10) == sum(p.numel() for p in static.parameters())


def test_arch_round_trips_through_dict_and_is_hashable() -> None:
    data = yaml.safe_load(ALPHANET_A0_YAML)
    arch = Arch.from_dict(data)
    assert arch.to_dict() == data
    assert isinstance(arch.width, tuple) and hash(arch) == hash(Arch.from_dict(arch.to_dict()))
    assert Arch.from_dict({**data, "name": "a0", "flops": 203}, strict=False) == arch
    with pytest.raises(ValueError, match="unknown keys flops, name"):
        Arch.from_dict({**data, "name": "a0", "flops": 203})
    with pytest.raises(ValueError, match="missing depth"):
        Arch.from_dict({k: v for k, v in data.items() if k != "depth"})
    with pytest.raises(ValueError, match=r"arch.width\[2\] must be an integer"):
        Arch.from_dict({**data, "width": [16, 16, 24.5, 32, 64, 112, 192, 216, 1792]})


def test_validate_names_the_field_and_the_allowed_values(attentivenas) -> None:
    a0 = attentivenas.min_arch().to_dict()
    with pytest.raises(ValueError, match=r"arch.width\[4\]=48 .* allowed values: 64, 72"):
        attentivenas.validate(Arch.from_dict({**a0, "width": [16, 16, 24, 32, 48, 112, 192, 216, 1792]}))
    with pytest.raises(ValueError, match=r"arch.resolution=200 .* allowed values: 192, 224, 256, 288"):
        attentivenas.validate(Arch.from_dict({**a0, "resolution": 200}))
    with pytest.raises(ValueError, match="arch.depth has 6 entries but space 'attentivenas' needs 7"):
        attentivenas.validate(Arch.from_dict({**a0, "depth": [1, 3, 3, 3, 3, 3]}))
    with pytest.raises(ValueError, match="known spaces: alphanet, attentivenas, tiny32"):
        get_space("mobilenet")
    assert "tiny32" in list_spaces()


def test_sampling_is_uniform_per_gene_and_reproducible(attentivenas) -> None:
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    archs = [attentivenas.sample(g1) for _ in range(3000)]
    assert archs[:50] == [attentivenas.sample(g2) for _ in range(50)]
    assert all(attentivenas.contains(a) for a in archs)
    depth5 = Counter(a.depth[4] for a in archs)  # six choices, 500 expected each
    assert set(depth5) == {3, 4, 5, 6, 7, 8}
    assert all(abs(n - 500) < 5 * 500 ** 0.5 for n in depth5.values()), depth5
    assert Counter(a.resolution for a in archs).keys() == {192, 224, 256, 288}


def test_mutation_and_crossover_stay_in_the_space(attentivenas) -> None:
    rng = random.Random(3)
    a, b = attentivenas.min_arch(), attentivenas.max_arch()
    assert attentivenas.mutate(a, 0.0, rng) == a
    changed = [sum(x != y for x, y in zip(a.genes(), attentivenas.mutate(a, 0.2, rng).genes()))
               for _ in range(400)]
    # each gene is redrawn with prob 0.2 and then differs with prob 1 - 1/len(choices)
    expected = sum(0.2 * (1 - 1 / len(c)) for c in attentivenas.choices().values())
    assert abs(sum(changed) / len(changed) - expected) < 0.15 * expected
    child = attentivenas.crossover(a, b, rng)
    assert attentivenas.contains(child)
    assert all(g in (x, y) for g, x, y in zip(child.genes(), a.genes(), b.genes()))
    assert child not in (a, b)  # 29 genes: both parents whole has probability 2^-28
