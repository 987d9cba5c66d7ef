"""Evolutionary multi-objective search over a supernet's subnets (AlphaNet's search, with a Pareto archive).

Generation 0 is the smallest subnet plus random archs that satisfy the constraints. Each later
generation takes the best ``parents`` of the population, makes children by mutation (each gene resampled
with probability ``mutate_prob``, 0.2) and uniform crossover (each gene from either parent with
probability 0.5), keeps only children inside the constraints, evaluates them, and keeps the best
``population`` of parents and children by non-dominated sorting and crowding distance (NSGA-II's
selection, which reduces to AlphaNet's top-k by accuracy for a single cost bin). Every evaluation
enters a Pareto archive over the objectives.

With a ``BitsSpace`` a candidate also carries per-stage weight/activation bit-widths (genes mutated and
crossed like the arch's), and with a ``HardwareSpace`` an accelerator (array, SRAMs, dataflow, PE type,
mapping): the search is then Auto-NBA's joint (network, bits, accelerator) search, evolutionary. Accuracy
is measured once per (arch, bits); costs are per (arch, accelerator, bits); a co-searched accelerator must
fit the budget with PEs as wide as its candidate's widest bits.

Resumability: generation ``g`` draws its random numbers from a generator seeded with ``(seed, g)``, and
the state after each generation (population, every evaluation, history) is written atomically to
``search_state.json``. A search resumed from generation ``g`` is therefore identical to one that was
never interrupted.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from effnn.errors import CheckpointError, ConfigError
from effnn.io import atomic_write_json
from effnn.nas.precision import BitsSpace, StageBits
from effnn.nas.space import Arch, SearchSpace
from effnn.search.candidate import Candidate
from effnn.search.costs import CostFn, candidate_budget_ok, check_metric_names
from effnn.search.distributed import Ranks, map_over_ranks
from effnn.search.hardware import HardwareSpace
from effnn.search.pareto import Objective, ParetoArchive, rank_by_pareto
from effnn.search.predictor import AccuracyPredictor

STATE_FORMAT = "effnn-search-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class SearchSettings:
    """Knobs of the evolutionary search (``conf/search/evolution.yaml`` documents each)."""

    objectives: tuple[str, ...] = ("acc", "macs")
    constraints: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    population: int = 16
    generations: int = 8
    parents: int = 8
    num_mutations: int = 8
    num_crossovers: int = 8
    mutate_prob: float = 0.2
    seed: int = 0
    max_tries: int = 200
    predictor: bool = False
    prescreen_factor: int = 4
    predictor_min_points: int = 16

    def __post_init__(self) -> None:
        objectives = tuple(self.objectives)
        object.__setattr__(self, "objectives", objectives)
        check_metric_names(objectives, "search.objectives", allow_acc=True)
        if "acc" not in objectives or len(objectives) < 2 or len(set(objectives)) != len(objectives):
            raise ConfigError(f"search.objectives={list(objectives)} must contain 'acc' and at least one "
                              f"cost metric, each once, e.g. [acc,macs]")
        constraints = {}
        for name, bounds in dict(self.constraints).items():
            if bounds is None:
                continue
            check_metric_names([name], "search.constraints", allow_acc=False)
            if isinstance(bounds, str) or len(bounds) != 2:
                raise ConfigError(f"search.constraints.{name}={bounds!r} must be [lo,hi] (null for no bound)")
            lo, hi = (None if b is None else float(b) for b in bounds)
            if lo is not None and hi is not None and lo > hi:
                raise ConfigError(f"search.constraints.{name}=[{lo},{hi}] is empty (lo > hi)")
            constraints[name] = (lo, hi)
        object.__setattr__(self, "constraints", constraints)
        for name in ("population", "parents", "max_tries", "prescreen_factor", "predictor_min_points"):
            if getattr(self, name) < 1:
                raise ConfigError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("generations", "num_mutations", "num_crossovers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"search.{name} must be >= 0, got {getattr(self, name)}")
        if self.parents > self.population:
            raise ConfigError(f"search.parents={self.parents} exceeds search.population={self.population}")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise ConfigError(f"search.mutate_prob must be in [0, 1], got {self.mutate_prob}")

    def fingerprint(self) -> dict[str, Any]:
        """Settings a resumed search must share with the interrupted one (all but ``generations``)."""
        data = asdict(self)
        data.pop("generations")
        data["objectives"] = list(self.objectives)
        data["constraints"] = {k: list(v) for k, v in sorted(self.constraints.items())}
        return data


@dataclass
class GenerationSummary:
    """What one generation did, for progress output, TensorBoard and the state file."""

    generation: int
    new_evaluations: int
    evaluations: int
    archive_size: int
    best_acc: float
    min_costs: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchObserver:
    """Hooks the search calls (progress bars, loggers); the base class does nothing."""

    def on_search_start(self, first_generation: int, last_generation: int) -> None:
        """Called once; generations ``first..last`` (inclusive) are about to run."""

    def on_evaluations_start(self, generation: int, count: int) -> None:
        """This rank is about to evaluate ``count`` subnets."""

    def on_evaluation_done(self, generation: int, done: int) -> None:
        """This rank finished its ``done``-th evaluation of the generation."""

    def on_generation_end(self, summary: GenerationSummary, search: EvolutionarySearch) -> None:
        """Generation done and its state saved."""


@dataclass
class SearchResult:
    """Everything a finished search knows: the archive, every evaluation and the per-generation history."""

    archive: ParetoArchive
    evaluations: dict[Candidate, dict[str, float]]
    population: list[Candidate]
    history: list[GenerationSummary]

    def pareto(self) -> list[tuple[Candidate, dict[str, float]]]:
        return self.archive.entries()  # type: ignore[return-value]


class EvolutionarySearch:
    """Searches ``space`` for candidates trading ``accuracy(arch[, bits])`` against
    ``costs(arch, accelerator, bits)``.

    ``accuracy`` is the expensive part and is split over ``ranks``; everything else runs identically on
    every rank. ``hardware`` adds the accelerator to the genes, ``bits`` the per-stage bit-widths (then
    ``accuracy`` is called as ``accuracy(arch, bits)``). ``state_path`` (written by rank 0 only) makes the
    search resumable.
    """

    def __init__(self, space: SearchSpace, settings: SearchSettings, accuracy: Callable[..., float],
                 costs: CostFn, *, hardware: HardwareSpace | None = None, bits: BitsSpace | None = None,
                 ranks: Ranks | None = None, state_path: str | Path | None = None,
                 context: Mapping[str, Any] | None = None, observer: SearchObserver | None = None) -> None:
        self.space = space
        self.settings = settings
        self.accuracy_fn = accuracy
        self.costs = costs
        self.hardware = hardware
        self.bits = bits
        if bits is not None and bits.num_stages != space.num_stages:
            raise ConfigError(f"the bits space has {bits.num_stages} stages; space {space.name!r} has "
                              f"{space.num_stages}")
        self.ranks = ranks or Ranks.current()
        self.state_path = Path(state_path) if state_path is not None else None
        self.context = dict(context or {})
        self.observer = observer or SearchObserver()
        self.objectives = tuple(Objective.named(n) for n in settings.objectives)
        self.archive = ParetoArchive(self.objectives)
        self.accuracies: dict[tuple[Arch, StageBits | None], float] = {}
        self.evaluations: dict[Candidate, dict[str, float]] = {}
        self.population: list[Candidate] = []
        self.history: list[GenerationSummary] = []
        self.generation = -1  # last completed generation
        self.predictor = AccuracyPredictor(space, bits) if settings.predictor else None

    # ---------------------------------------------------------------------------------------- candidates

    def rng(self, generation: int) -> random.Random:
        """The generator of one generation: a function of (seed, generation) only, so resuming is exact."""
        return random.Random(f"effnn-search:{self.settings.seed}:{generation}")

    def cost(self, candidate: Candidate) -> Mapping[str, float]:
        """The candidate's cost metrics (bits are passed only when searched: plain cost callables keep working)."""
        if candidate.bits is None:
            return self.costs(candidate.arch, candidate.hardware)
        return self.costs(candidate.arch, candidate.hardware, candidate.bits)

    def feasible(self, candidate: Candidate) -> bool:
        """Inside the hardware budget at the candidate's PE widths and every ``[lo, hi]`` constraint (cost
        metrics only, so no accuracy evaluation is needed)."""
        if not candidate_budget_ok(self.hardware, candidate.hardware, candidate.bits):
            return False
        if not self.settings.constraints:
            return True
        metrics = self.cost(candidate)
        for name, (lo, hi) in self.settings.constraints.items():
            value = metrics[name]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                return False
        return True

    def _constraint_hint(self) -> str:
        hw = self.hardware.initial() if self.hardware else None
        lo = self.cost(Candidate(self.space.min_arch(), hw, self.bits.min_bits() if self.bits else None))
        hi = self.cost(Candidate(self.space.max_arch(), hw, self.bits.max_bits() if self.bits else None))
        return "; ".join(f"{n} spans about [{lo[n]:.4g}, {hi[n]:.4g}] in this space"
                         for n in self.settings.constraints)

    def initial_population(self, rng: random.Random) -> list[Candidate]:
        """The smallest subnet at the lowest bits (if it satisfies the constraints) plus random feasible
        candidates."""
        size = self.settings.population
        first = Candidate(self.space.min_arch(), self.hardware.initial() if self.hardware else None,
                          self.bits.min_bits() if self.bits else None)
        members = [first] if self.feasible(first) else []
        tries = 0
        while len(members) < size and tries < self.settings.max_tries * size:
            tries += 1
            cand = Candidate(self.space.sample(rng), self.hardware.sample(rng) if self.hardware else None,
                             self.bits.sample(rng) if self.bits else None)
            if cand not in members and self.feasible(cand):
                members.append(cand)
        if not members:
            raise ConfigError(f"no subnet satisfies search.constraints={dict(self.settings.constraints)} after "
                              f"{tries} random draws; {self._constraint_hint()}")
        return members

    def _mutant(self, parents: Sequence[Candidate], rng: random.Random) -> Candidate:
        p = rng.choice(parents)
        prob = self.settings.mutate_prob
        hw = self.hardware.mutate(p.hardware, prob, rng) if self.hardware else None
        arch = self.space.mutate(p.arch, prob, rng)
        return Candidate(arch, hw, self.bits.mutate(p.bits, prob, rng) if self.bits else None)

    def _crossover(self, parents: Sequence[Candidate], rng: random.Random) -> Candidate:
        a, b = rng.sample(list(parents), 2) if len(parents) > 1 else (parents[0], parents[0])
        hw = self.hardware.crossover(a.hardware, b.hardware, rng) if self.hardware else None
        arch = self.space.crossover(a.arch, b.arch, rng)
        return Candidate(arch, hw, self.bits.crossover(a.bits, b.bits, rng) if self.bits else None)

    def _children(self, parents: Sequence[Candidate], rng: random.Random, factor: int) -> list[Candidate]:
        """New feasible candidates not seen before; each child gets up to ``max_tries`` attempts."""
        seen = set(self.evaluations)
        children: list[Candidate] = []
        for make, count in ((self._mutant, self.settings.num_mutations),
                            (self._crossover, self.settings.num_crossovers)):
            for _ in range(count * factor):
                for _ in range(self.settings.max_tries):
                    child = make(parents, rng)
                    if child not in seen and self.feasible(child):
                        seen.add(child)
                        children.append(child)
                        break
        return children

    def _screening(self) -> bool:
        """Whether to pre-screen this generation: a predictor is on and has enough archs to learn from."""
        return self.predictor is not None and len(self.accuracies) >= self.settings.predictor_min_points

    def _prescreen(self, children: list[Candidate]) -> list[Candidate]:
        """Keep the most promising children by predicted accuracy and true costs (Pareto order)."""
        keep = self.settings.num_mutations + self.settings.num_crossovers
        if self.predictor is None or len(children) <= keep:
            return children
        keys = list(self.accuracies)
        self.predictor.fit(keys, [self.accuracies[k] for k in keys])
        predicted = self.predictor.predict([c.key for c in children])
        vectors = [self.archive.vector({**self.cost(c), "acc": float(p)})
                   for c, p in zip(children, predicted)]
        return [children[i] for i in sorted(rank_by_pareto(vectors)[:keep])]

    def select(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        """The best ``k`` evaluated candidates: non-dominated fronts first, wide-spread points first within."""
        unique = list(dict.fromkeys(candidates))
        order = rank_by_pareto([self.archive.vector(self.evaluations[c]) for c in unique])
        return [unique[i] for i in order[:k]]

    # ---------------------------------------------------------------------------------------- evaluation

    def evaluate(self, candidates: Sequence[Candidate], generation: int) -> int:
        """Metrics of every candidate (accuracy split over ranks, once per (arch, bits)). Returns the number of
        accuracy evaluations."""
        new_keys = list(dict.fromkeys(c.key for c in candidates if c.key not in self.accuracies))
        self.observer.on_evaluations_start(generation, len(self.ranks.share(len(new_keys))))
        accs = map_over_ranks(self._accuracy, new_keys, self.ranks,
                              on_done=lambda k: self.observer.on_evaluation_done(generation, k))
        self.accuracies.update(zip(new_keys, (float(a) for a in accs)))
        for cand in candidates:
            if cand not in self.evaluations:
                metrics = {"acc": self.accuracies[cand.key], **self.cost(cand)}
                if self.hardware is not None:
                    metrics["pes"] = float(cand.hardware.num_pes)
                    metrics.setdefault("area_mm2", self.hardware.area_mm2(cand.hardware))
                self.evaluations[cand] = metrics
                self.archive.add(cand, metrics)
        return len(new_keys)

    def _accuracy(self, key: tuple[Arch, StageBits | None]) -> float:
        arch, bits = key
        return self.accuracy_fn(arch) if bits is None else self.accuracy_fn(arch, bits)

    def step(self, generation: int) -> GenerationSummary:
        """Run one generation (0: the initial population)."""
        rng = self.rng(generation)
        if generation == 0:
            candidates = self.initial_population(rng)
            new = self.evaluate(candidates, generation)
            self.population = self.select(candidates, self.settings.population)
        else:
            parents = self.select(self.population, self.settings.parents)
            if self._screening():
                children = self._prescreen(self._children(parents, rng, self.settings.prescreen_factor))
            else:
                children = self._children(parents, rng, 1)
            new = self.evaluate(children, generation)
            self.population = self.select(self.population + children, self.settings.population)
        self.generation = generation
        summary = self._summary(generation, new)
        self.history.append(summary)
        return summary

    def _summary(self, generation: int, new: int) -> GenerationSummary:
        points = [m for _, m in self.archive.entries()]
        costs = [o.name for o in self.objectives if not o.maximize]
        costs += [n for n in ("latency_ms", "energy", "area_mm2", "power_mw") if n not in costs and n in points[0]]
        return GenerationSummary(generation, new, len(self.accuracies), len(self.archive),
                                 max(m["acc"] for m in points), {n: min(m[n] for m in points) for n in costs})

    def run(self, resume: bool = False) -> SearchResult:
        """Run generations ``0..settings.generations`` (continuing after the saved one when resuming)."""
        if resume:
            self.load_state()
        first, last = self.generation + 1, self.settings.generations
        self.observer.on_search_start(first, last)
        for generation in range(first, last + 1):
            summary = self.step(generation)
            self.save_state()
            self.observer.on_generation_end(summary, self)
        return SearchResult(self.archive, dict(self.evaluations), list(self.population), list(self.history))

    # ---------------------------------------------------------------------------------------- state file

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "settings": self.settings.fingerprint(), "context": self.context,
            "generation": self.generation,
            "population": [c.to_dict() for c in self.population],
            "evaluations": [{"candidate": c.to_dict(), "metrics": m} for c, m in self.evaluations.items()],
            "history": [h.to_dict() for h in self.history],
        }

    def save_state(self) -> None:
        """Write ``search_state.json`` atomically (rank 0), then wait so no rank runs ahead of the file."""
        if self.state_path is not None and self.ranks.is_main:
            atomic_write_json(self.state_path, self.state_dict())
        self.ranks.barrier()

    def load_state(self) -> bool:
        """Restore from ``state_path`` if it exists; False (fresh start) if there is none yet."""
        if self.state_path is None or not self.state_path.exists():
            return False
        path = self.state_path
        try:
            state = json.loads(path.read_text())
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format is {state.get('format')!r}, not {STATE_FORMAT!r}")
            evaluations = [(Candidate.from_dict(e["candidate"]), {k: float(v) for k, v in e["metrics"].items()})
                           for e in state["evaluations"]]
            population = [Candidate.from_dict(c) for c in state["population"]]
            history = [GenerationSummary(**h) for h in state["history"]]
            generation = int(state["generation"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is corrupt ({err}); delete it to start over or pass resume=false") \
                from err
        self._check_compatible(state.get("settings", {}), state.get("context", {}))
        for cand, metrics in evaluations:
            self.space.validate(cand.arch)
            if (cand.bits is not None) != (self.bits is not None) or (cand.bits and not self.bits.contains(cand.bits)):
                raise ConfigError(f"cannot resume {path}: its candidates' bits ({cand.bits_json() or 'none'}) do not "
                                  f"match search.bits; use the same settings or a new out= directory")
            self.accuracies.setdefault(cand.key, metrics["acc"])
            self.evaluations[cand] = metrics
            self.archive.add(cand, metrics)
        self.population, self.history, self.generation = population, history, generation
        return True

    def _check_compatible(self, settings: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        ours = self.settings.fingerprint()
        diff = [f"{k}: saved {settings.get(k)!r}, now {ours[k]!r}" for k in ours if settings.get(k) != ours[k]]
        diff += [f"{k}: saved {context.get(k)!r}, now {v!r}" for k, v in self.context.items()
                 if context.get(k) != v]
        if diff:
            raise ConfigError(f"cannot resume {self.state_path}: it was written with other settings "
                              f"({'; '.join(diff)}); use the same settings or a new out= directory")

