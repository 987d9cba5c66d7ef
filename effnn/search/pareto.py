"""Pareto dominance, non-dominated sorting and crowding distance, and the archive a search keeps.

Objectives are named metrics with a direction (accuracy is maximized, every cost minimized). Internally
every objective is turned into a value to minimize, so the dominance test is a single comparison.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAXIMIZED_METRICS = frozenset({"acc"})


@dataclass(frozen=True)
class Objective:
    """One axis of the trade-off: a metric name and whether larger is better."""

    name: str
    maximize: bool

    @classmethod
    def named(cls, name: str) -> Objective:
        """Accuracy is maximized, every other metric (a cost) minimized."""
        return cls(name, name in MAXIMIZED_METRICS)

    def minimized(self, value: float) -> float:
        return -value if self.maximize else value


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True if ``a`` is no worse than ``b`` everywhere and better somewhere (all values minimized)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of ``points`` grouped into fronts (front 0 is the Pareto set), NSGA-II's fast sort."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    counts = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                counts[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                counts[i] += 1
    fronts = [[i for i in range(n) if counts[i] == 0]]
    while fronts[-1]:
        nxt = []
        for i in fronts[-1]:
            for j in dominated_by[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    nxt.append(j)
        fronts.append(sorted(nxt))
    return fronts[:-1]


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within its front: boundary points get infinity."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for prev, cur, nxt in zip(order, order[1:], order[2:]):
            dist[cur] += (points[nxt][m] - points[prev][m]) / (hi - lo)
    return dist


def rank_by_pareto(points: Sequence[Sequence[float]]) -> list[int]:
    """All indices, best first: by front, then by decreasing crowding distance (NSGA-II selection order)."""
    order: list[int] = []
    for front in nondominated_sort(points):
        crowd = crowding_distance([points[i] for i in front])
        order += [i for _, i in sorted(zip(crowd, front), key=lambda t: (-t[0], t[1]))]
    return order


class ParetoArchive:
    """The non-dominated set of everything evaluated so far, over the given objectives.

    Entries are ``(key, metrics)`` pairs; ``key`` is any hashable candidate (an arch, or an arch and an
    accelerator). Points with equal objective vectors do not dominate each other, so all are kept.
    """

    def __init__(self, objectives: Sequence[Objective]) -> None:
        if not objectives:
            raise ValueError("a Pareto archive needs at least one objective")
        self.objectives = tuple(objectives)
        self._entries: dict[Hashable, dict[str, float]] = {}

    def vector(self, metrics: Mapping[str, float]) -> tuple[float, ...]:
        """The metrics as a vector to minimize, in objective order."""
        missing = [o.name for o in self.objectives if o.name not in metrics]
        if missing:
            raise KeyError(f"metrics lack objective(s) {missing}; got {sorted(metrics)}")
        return tuple(o.minimized(float(metrics[o.name])) for o in self.objectives)

    def add(self, key: Hashable, metrics: Mapping[str, float]) -> bool:
        """Insert unless dominated; drop entries it dominates. Returns whether it entered the archive."""
        if key in self._entries:
            return True
        v = self.vector(metrics)
        if any(math.isnan(x) for x in v):
            return False
        for other in self._entries.values():
            if dominates(self.vector(other), v):
                return False
        self._entries = {k: m for k, m in self._entries.items() if not dominates(v, self.vector(m))}
        self._entries[key] = dict(metrics)
        return True

    def update(self, items: Iterable[tuple[Hashable, Mapping[str, float]]]) -> int:
        """Add many; returns how many entered."""
        return sum(self.add(k, m) for k, m in items)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def entries(self) -> list[tuple[Hashable, dict[str, float]]]:
        """The Pareto points sorted by the first objective (best first), ties by the next ones."""
        return sorted(self._entries.items(), key=lambda kv: self.vector(kv[1]))
