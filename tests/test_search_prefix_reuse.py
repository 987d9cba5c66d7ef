"""Prefix reuse in subnet evaluation: bit-identical to recalibrating and evaluating from scratch."""

from __future__ import annotations

import random

import pytest
import torch
from search_support import digits, trained_supernet

from effnn.nas import build_supernet, get_space
from effnn.precision import quantize_model
from effnn.search import SearchSettings, SubnetAccuracy, fixed_batches
from effnn.search.evolution import EvolutionarySearch
from effnn.search.prefix_reuse import ActivationCache, PrefixReuse, merge_batches


def _evolution_like_archs(space, count: int, seed: int = 0) -> list:
    """Min, max, random archs, their mutants and crossovers, and a repeat: the shapes a search evaluates."""
    rng = random.Random(seed)
    archs = [space.min_arch(), space.max_arch()]
    while len(archs) < count:
        kind = rng.random()
        if kind < 0.3:
            archs.append(space.sample(rng))
        elif kind < 0.8:
            archs.append(space.mutate(rng.choice(archs), 0.2, rng))
        else:
            archs.append(space.crossover(rng.choice(archs), rng.choice(archs), rng))
    archs.append(archs[3])
    return archs


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_reuse_is_bit_identical_to_from_scratch_evaluation() -> None:
    dm = digits()
    calib = fixed_batches(dm.train_dataloader().dataset, 3, 32, seed=0)
    val = list(dm.val_dataloader())
    reused = SubnetAccuracy(trained_supernet(), calib, val)
    scratch = SubnetAccuracy(trained_supernet(), calib, val, reuse_mb=0)
    assert reused.reuse is not None and scratch.reuse is None
    archs = _evolution_like_archs(reused.supernet.space, 24)
    for arch in archs:
        assert reused(arch) == scratch(arch)
        # the supernet is left in the same state (every BN buffer, active and inactive): export relies on it
        a, b = _state(reused.supernet), _state(scratch.supernet)
        assert all(torch.equal(a[k], b[k]) for k in a), arch
    assert reused.reuse.reused_segments > 0 and reused.reuse.computed_segments > 0


def test_evolutionary_search_on_tiny32_gets_identical_accuracies_and_reuses_work() -> None:
    """The space the search uses on digits, NHWC as the search runs it, a fresh supernet with live blocks
    (no zero-init last BN gamma): a real evolutionary search whose accuracy function runs both paths gets
    equal accuracies for every arch, and at least a quarter of the stem/block computations are reused
    (the share grows with generations: about half in the default 8-generation search)."""
    torch.manual_seed(0)
    space = get_space("tiny32")
    net = build_supernet(space, 10, 3, zero_init_last_bn=False)
    twin = build_supernet(space, 10, 3, zero_init_last_bn=False)
    twin.load_state_dict(net.state_dict())
    dm = digits()
    calib = fixed_batches(dm.train_dataloader().dataset, 2, 32, seed=0)
    val = list(dm.val_dataloader())[:3]
    reused = SubnetAccuracy(net, calib, val, channels_last=True)
    scratch = SubnetAccuracy(twin, calib, val, channels_last=True, reuse_mb=0)

    def both(arch) -> float:
        acc = reused(arch)
        assert acc == scratch(arch), arch
        return acc

    settings = SearchSettings(objectives=("acc", "macs"), population=8, generations=2, parents=4,
                              num_mutations=4, num_crossovers=4, seed=0)
    EvolutionarySearch(space, settings, both, lambda arch, hw: {"macs": float(space.macs(arch, 10))}).run()
    stats = reused.reuse
    assert stats.reused_segments >= 0.25 * (stats.reused_segments + stats.computed_segments)


def test_eval_batches_merge_into_bounded_chunks() -> None:
    batches = [(torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last), torch.arange(4))
               for _ in range(5)]
    one_batch_mb = 4 * 3 * 8 * 8 * 4 / 2 ** 20
    merged = merge_batches(batches, chunk_mb=2.5 * one_batch_mb)
    assert [len(y) for _, y in merged] == [8, 8, 4]
    assert merged[0][0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.cat([x for x, _ in merged]), torch.cat([x for x, _ in batches]))
    with pytest.raises(ValueError, match="eval_chunk_mb"):
        merge_batches(batches, 0)


def test_quantized_supernet_is_evaluated_from_scratch() -> None:
    net = trained_supernet()
    quantize_model(net)
    assert not PrefixReuse.supports(net)
    dm = digits()
    acc = SubnetAccuracy(net, fixed_batches(dm.train_dataloader().dataset, 1, 32, seed=0), dm.val_dataloader())
    assert acc.reuse is None


def test_cache_is_bounded_and_rejects_a_bad_size() -> None:
    cache = ActivationCache(max_mb=1.0)
    block = [torch.zeros(64, 1024)]  # 256 KiB each side
    for key in range(5):
        cache.put_state(key, [torch.zeros(1)])
        cache.put_activations(key, block, block)
    assert cache.bytes <= 2 ** 20
    assert cache.longest_prefix([0]) == 0 and cache.longest_prefix([0, 1, 2, 3, 4]) == 5
    with pytest.raises(ValueError, match="positive size"):
        ActivationCache(max_mb=0)
