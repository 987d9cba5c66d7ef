"""Which subnets a supernet step trains: uniform, attentive (BestUp/WorstUp over cost bins), sandwich.

Samplers are pure: all randomness comes from the RNG passed in, so ranks that share a seeded generator
draw the same archs. Attentive sampling needs scores of candidate archs (a minibatch loss); the caller
passes a ``score`` callable that evaluates them (and, under DDP, averages over ranks), so the sampler
never touches a model.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence

import torch

from effnn.nas.space import Arch, Rng, SearchSpace

CostFn = Callable[[Arch], float]
ScoreFn = Callable[[Sequence[Arch]], Sequence[float]]


def macs_cost(space: SearchSpace, num_classes: int = 1000) -> CostFn:
    """Cost in millions of multiply-accumulates (the 'MFLOPs' of the papers)."""
    return lambda arch: space.macs(arch, num_classes) / 1e6


class UniformSampler:
    """Every gene drawn uniformly and independently (BigNAS/OFA)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def sample(self, rng: Rng, score: ScoreFn | None = None) -> Arch:
        return self.space.sample(rng)


class CostPrior:
    """Histogram of a cost over uniformly sampled archs: the prior over cost bins of AttentiveNAS.

    Estimated from ``num_samples`` archs of a private generator seeded with ``seed``, so every process
    builds the same bins without downloading AttentiveNAS's precomputed table.
    """

    def __init__(self, space: SearchSpace, cost: CostFn, *, bin_width: float | None = None,
                 num_bins: int = 20, num_samples: int = 2000, seed: int = 0) -> None:
        if num_samples <= 0 or num_bins <= 0:
            raise ValueError(f"num_samples ({num_samples}) and num_bins ({num_bins}) must be positive")
        low, high = cost(space.min_arch()), cost(space.max_arch())
        if not high > low:
            raise ValueError(f"the cost of the largest arch ({high}) must exceed the smallest's ({low}) "
                             f"to bin costs")
        if bin_width is None:
            bin_width = (high - low) / num_bins
        elif bin_width <= 0:
            raise ValueError(f"bin_width must be positive, got {bin_width}")
        self.low, self.bin_width = low, float(bin_width)
        self.num_bins = max(1, math.ceil((high - low) / self.bin_width + 1e-9))
        rng = random.Random(seed)
        counts = [0] * self.num_bins
        for _ in range(num_samples):
            counts[self.bin_of(cost(space.sample(rng)))] += 1
        total = sum(counts)
        self.probs = [c / total for c in counts]
        self._cumulative = [sum(self.probs[:i + 1]) for i in range(self.num_bins)]

    def bin_of(self, value: float) -> int:
        return min(self.num_bins - 1, max(0, int((value - self.low) / self.bin_width)))

    def bounds(self, index: int) -> tuple[float, float]:
        lo = self.low + index * self.bin_width
        return lo, lo + self.bin_width

    def sample_bin(self, rng: Rng) -> int:
        u = torch.rand(1, generator=rng, dtype=torch.float64).item() if isinstance(rng, torch.Generator) \
            else rng.random()
        return min(self.num_bins - 1, bisect.bisect_right(self._cumulative, u * self._cumulative[-1]))


class AttentiveSampler:
    """AttentiveNAS BestUp-k / WorstUp-k: draw a cost bin from the prior, k archs in that bin, keep the one
    with the lowest (best) or highest (worst) score, where a score is a minibatch loss.

    ``cost`` maps an arch to a float (default: MMACs); any cost model plugs in. Candidates are found by
    rejection sampling, at most ``max_trials`` draws each; if none lands in the bin the closest draw is used.
    """

    def __init__(self, space: SearchSpace, cost: CostFn | None = None, *, k: int = 3, mode: str = "best",
                 bin_width: float | None = None, num_bins: int = 20, prior_samples: int = 2000,
                 max_trials: int = 200, seed: int = 0) -> None:
        if mode not in ("best", "worst"):
            raise ValueError(f"mode must be 'best' (BestUp) or 'worst' (WorstUp), got {mode!r}")
        if k < 1 or max_trials < 1:
            raise ValueError(f"k ({k}) and max_trials ({max_trials}) must be >= 1")
        self.space = space
        self.cost = cost if cost is not None else macs_cost(space)
        self.k, self.mode, self.max_trials = k, mode, max_trials
        self.prior = CostPrior(space, self.cost, bin_width=bin_width, num_bins=num_bins,
                               num_samples=prior_samples, seed=seed)

    def candidates(self, rng: Rng) -> list[Arch]:
        """k archs whose cost falls in one bin drawn from the prior."""
        lo, hi = self.prior.bounds(self.prior.sample_bin(rng))
        centre = 0.5 * (lo + hi)
        out = []
        for _ in range(self.k):
            best, best_gap = None, math.inf
            for _ in range(self.max_trials):
                arch = self.space.sample(rng)
                value = self.cost(arch)
                if lo <= value < hi:
                    best = arch
                    break
                if abs(value - centre) < best_gap:
                    best, best_gap = arch, abs(value - centre)
            out.append(best)
        return out

    def choose(self, candidates: Sequence[Arch], scores: Sequence[float]) -> Arch:
        """The candidate with the lowest score (BestUp) or the highest (WorstUp); ties go to the first."""
        if len(candidates) != len(scores) or not candidates:
            raise ValueError(f"need one score per candidate, got {len(scores)} scores for {len(candidates)}")
        pick = min if self.mode == "best" else max
        return candidates[pick(range(len(scores)), key=lambda i: float(scores[i]))]

    def sample(self, rng: Rng, score: ScoreFn | None = None) -> Arch:
        if score is None:
            raise ValueError("attentive sampling needs a score function (minibatch loss of each candidate)")
        cands = self.candidates(rng)
        return self.choose(cands, score(cands))


Sampler = UniformSampler | AttentiveSampler


class SandwichSampler:
    """The sandwich rule: the largest arch, ``num_middle`` archs from ``middle``, the smallest arch."""

    def __init__(self, space: SearchSpace, middle: Sampler | None = None, num_middle: int = 2) -> None:
        if num_middle < 0:
            raise ValueError(f"num_middle must be >= 0, got {num_middle}")
        self.space = space
        self.middle = middle if middle is not None else UniformSampler(space)
        self.num_middle = num_middle

    @property
    def num_archs(self) -> int:
        return self.num_middle + 2

    def archs(self, rng: Rng, score: ScoreFn | None = None) -> list[Arch]:
        """[max, middle..., min]; the max arch comes first because its logits teach the rest."""
        middle = [self.middle.sample(rng, score) for _ in range(self.num_middle)]
        return [self.space.max_arch(), *middle, self.space.min_arch()]


def build_sampler(space: SearchSpace, kind: str = "uniform", num_middle: int = 2, cost: CostFn | None = None,
                  **attentive_kwargs) -> SandwichSampler:
    """A sandwich sampler whose middle archs are ``uniform`` or ``attentive`` (BestUp/WorstUp)."""
    if kind == "uniform":
        if attentive_kwargs:
            raise ValueError(f"options {sorted(attentive_kwargs)} only apply to kind='attentive'")
        middle: Sampler = UniformSampler(space)
    elif kind == "attentive":
        middle = AttentiveSampler(space, cost, **attentive_kwargs)
    else:
        raise ValueError(f"unknown sampler kind {kind!r}; choose 'uniform' or 'attentive'")
    return SandwichSampler(space, middle, num_middle)
