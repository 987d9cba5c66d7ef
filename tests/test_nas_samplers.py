"""Samplers: sandwich order, attentive BestUp/WorstUp in cost bins, priors, pluggable costs, RNG sharing."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from effnn.nas import AttentiveSampler, CostPrior, SandwichSampler, UniformSampler, build_sampler, get_space
from effnn.nas.samplers import macs_cost


@pytest.fixture(scope="module")
def space():
    return get_space("attentivenas")


def test_sandwich_is_max_then_middle_then_min(space) -> None:
    sampler = SandwichSampler(space, UniformSampler(space), num_middle=2)
    archs = sampler.archs(torch.Generator().manual_seed(0))
    assert len(archs) == sampler.num_archs == 4
    assert archs[0] == space.max_arch() and archs[-1] == space.min_arch()
    assert all(space.contains(a) for a in archs)


def test_prior_uses_25_mflops_bins_and_matches_sampled_frequencies(space) -> None:
    cost = macs_cost(space)
    prior = CostPrior(space, cost, bin_width=25.0, num_samples=1000, seed=0)
    assert prior.num_bins == math.ceil((cost(space.max_arch()) - cost(space.min_arch())) / 25)
    assert abs(sum(prior.probs) - 1) < 1e-9
    rng = random.Random(99)  # fresh uniform samples follow the estimated prior
    counts = Counter(prior.bin_of(cost(space.sample(rng))) for _ in range(1000))
    mode = max(range(prior.num_bins), key=prior.probs.__getitem__)
    assert abs(counts[mode] / 1000 - prior.probs[mode]) < 4 * math.sqrt(prior.probs[mode] / 1000)
    # drawing bins from the prior reproduces it
    g = torch.Generator().manual_seed(1)
    drawn = Counter(prior.sample_bin(g) for _ in range(2000))
    assert abs(drawn[mode] / 2000 - prior.probs[mode]) < 4 * math.sqrt(prior.probs[mode] / 2000)


def test_attentive_candidates_share_a_cost_bin_and_bestup_keeps_the_lowest_score(space) -> None:
    cost = macs_cost(space)
    sampler = AttentiveSampler(space, cost, k=3, mode="best", bin_width=25.0, prior_samples=500)
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        cands = sampler.candidates(g)
        assert len(cands) == 3
        assert len({sampler.prior.bin_of(cost(a)) for a in cands}) == 1
    scores = [0.7, 0.2, 0.9]
    assert sampler.choose(cands, scores) == cands[1]
    worst = AttentiveSampler(space, cost, k=3, mode="worst", bin_width=25.0, prior_samples=500)
    assert worst.choose(cands, scores) == cands[2]
    # score = cost: BestUp returns the cheapest candidate it was offered
    picked = sampler.sample(torch.Generator().manual_seed(3), score=lambda archs: [cost(a) for a in archs])
    offered = sampler.candidates(torch.Generator().manual_seed(3))
    assert picked == min(offered, key=cost)


def test_cost_is_pluggable(space) -> None:
    def total_depth(arch) -> float:
        return float(sum(arch.depth))

    sampler = AttentiveSampler(space, total_depth, k=2, num_bins=5, prior_samples=300)
    assert sampler.prior.low == sum(space.min_arch().depth)
    cands = sampler.candidates(torch.Generator().manual_seed(4))
    assert len({sampler.prior.bin_of(total_depth(a)) for a in cands}) == 1


def test_identically_seeded_generators_draw_identical_sandwiches(space) -> None:
    """What keeps DDP ranks in step: each rank holds a generator seeded the same way."""
    a = build_sampler(space, "attentive", k=3, prior_samples=300)
    b = build_sampler(space, "attentive", k=3, prior_samples=300)
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)

    def score(archs):
        return [space.macs(x) % 7 for x in archs]

    for _ in range(5):
        assert a.archs(ga, score) == b.archs(gb, score)


def test_bad_sampler_configs_raise(space) -> None:
    with pytest.raises(ValueError, match="mode must be 'best'"):
        AttentiveSampler(space, mode="middle", prior_samples=10)
    with pytest.raises(ValueError, match="needs a score function"):
        AttentiveSampler(space, prior_samples=10).sample(torch.Generator())
    with pytest.raises(ValueError, match="unknown sampler kind"):
        build_sampler(space, "greedy")
    with pytest.raises(ValueError, match="only apply to kind='attentive'"):
        build_sampler(space, "uniform", k=3)
