"""Per-stage precision of a supernet (effnn.nas.precision): bits genes, quantized forward, priced workload."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from effnn.hw.workload import extract_workload
from effnn.nas import Supernet, get_space
from effnn.nas.precision import BitsSpace, BitsWorkload, StageBits, StagePrecision


@pytest.fixture(scope="module")
def space():
    return get_space("tiny32")


def test_stage_bits_round_trip_and_validation(space):
    n = space.num_stages
    bits = StageBits((4,) * n, (8,) * n)
    assert StageBits.from_dict(bits.to_dict()) == bits
    assert StageBits.uniform(n, 32).weight == (32,) * n
    with pytest.raises(ValueError, match="one entry per stage"):
        StageBits((4,) * n, (8,) * (n - 1))
    with pytest.raises(ValueError, match=r"\[1, 32\]"):
        StageBits((0,) * n, (8,) * n)
    with pytest.raises(ValueError, match="exactly 'weight' and 'act'"):
        StageBits.from_dict({"weight": [4] * n})


def test_bits_space_sampling_stays_inside(space):
    bs = BitsSpace(space.num_stages, (8, 4, 4), (4, 8, 32))
    assert bs.weight_choices == (4, 8) and bs.act_choices == (4, 8, 32)
    assert bs.size() == 6 ** space.num_stages
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        a, b = bs.sample(rng), bs.sample(torch.Generator().manual_seed(rng.randrange(1000)))
        for bits in (a, b, bs.mutate(a, 0.5, rng), bs.crossover(a, b, rng)):
            assert bs.contains(bits)
            seen.update(bits.genes())
    assert seen == {4, 8, 32}
    assert bs.mutate(a, 0.0, rng) == a
    with pytest.raises(ValueError, match="outside the space"):
        bs.validate(StageBits.uniform(space.num_stages, 2))


def test_stage_precision_switches_each_stage(space):
    torch.manual_seed(0)
    net = Supernet(space, num_classes=10).eval()
    reference = copy.deepcopy(net)
    sp = StagePrecision(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))  # full precision: the plain supernet, bit for bit
        n = space.num_stages
        low = StageBits((2,) * n, (2,) * n)
        with sp.use(low):
            out_low = net(x)
        assert sp.bits is None and torch.equal(net(x), reference(x))
        assert not torch.allclose(out_low, reference(x), atol=1e-3)
        # one stage's weights at 2 bits: its convs hold at most 2**2 levels per output channel (affine),
        # every other stage's weights are untouched
        bits = StageBits((32,) * (n - 1) + (2,), (32,) * n)
        sp.set(bits)
        last_block = net.blocks[net.stage_blocks[-1][0]]
        w = last_block.conv_pwl.weight
        assert max(len(torch.unique(row)) for row in w.reshape(w.shape[0], -1)) <= 4
        first_block = net.blocks[net.stage_blocks[0][0]]
        assert torch.equal(first_block.conv_dw.weight,
                           reference.blocks[reference.stage_blocks[0][0]].conv_dw.weight)
        sp.set(None)


def test_module_workload_bits_match_the_analytic_workload(space):
    """The bit-widths the hardware model reads from the quantized module (hw_bits) equal what
    BitsWorkload assigns to the same subnet's layers, layer by layer."""
    torch.manual_seed(0)
    net = Supernet(space, num_classes=10).eval()
    sp = StagePrecision(net)
    rng = random.Random(3)
    bs = BitsSpace(space.num_stages, (2, 4, 8), (4, 6, 8))
    bw = BitsWorkload(space)
    for _ in range(3):
        arch, bits = space.sample(rng), bs.sample(rng)
        net.set_arch(arch)
        sp.set(bits)
        traced = extract_workload(net, (1, 3, arch.resolution, arch.resolution))
        analytic = bw.layers(arch, bits, num_classes=10)
        assert [(l.weight_bits, l.act_bits) for l in traced] == [(l.weight_bits, l.act_bits) for l in analytic]
        assert [l.macs for l in traced] == [l.macs for l in analytic]
    # memoized: the same (arch, bits) gives the same section objects (cost models cache by identity)
    assert all(a is b for a, b in zip(bw.sections(arch, bits, 10), bw.sections(arch, bits, 10)))
