"""Pareto dominance, sorting, crowding and the archive, checked against brute force on random points."""

from __future__ import annotations

import math
import random

import pytest

from effnn.search.pareto import (
    Objective,
    ParetoArchive,
    crowding_distance,
    dominates,
    nondominated_sort,
    rank_by_pareto,
)


def brute_force_front(points: list[tuple[float, ...]]) -> set[int]:
    """Indices no other point dominates, by the definition (no shared code with the module)."""
    def better(a, b):  # a dominates b, minimizing
        return all(x <= y for x, y in zip(a, b)) and a != b
    return {i for i, p in enumerate(points) if not any(better(q, p) for q in points)}


def random_points(n: int, dims: int, seed: int, grid: int = 6) -> list[tuple[float, ...]]:
    rng = random.Random(seed)  # a coarse grid produces ties and duplicates on purpose
    return [tuple(float(rng.randrange(grid)) for _ in range(dims)) for _ in range(n)]


def test_dominates_is_strict() -> None:
    assert dominates((1, 2), (1, 3))
    assert not dominates((1, 3), (1, 3))
    assert not dominates((0, 4), (1, 3)) and not dominates((1, 3), (0, 4))


@pytest.mark.parametrize("dims,seed", [(2, 0), (2, 1), (3, 2), (4, 3)])
def test_fronts_match_brute_force_peeling(dims: int, seed: int) -> None:
    points = random_points(60, dims, seed)
    fronts = nondominated_sort(points)
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))
    remaining = list(range(len(points)))
    for front in fronts:  # each front is the Pareto set of what the earlier fronts left
        sub = [points[i] for i in remaining]
        assert set(front) == {remaining[j] for j in brute_force_front(sub)}
        remaining = [i for i in remaining if i not in front]


def test_crowding_distance_closed_form_on_a_line() -> None:
    # points on x + y = 10 at x = 0, 1, 3, 6, 10: interior distance = sum over both axes of (next - prev) / 10
    xs = [0, 1, 3, 6, 10]
    points = [(x, 10 - x) for x in xs]
    dist = crowding_distance(points)
    assert math.isinf(dist[0]) and math.isinf(dist[-1])
    for i in (1, 2, 3):
        assert dist[i] == pytest.approx(2 * (xs[i + 1] - xs[i - 1]) / 10)


def test_rank_by_pareto_orders_fronts_then_spread() -> None:
    points = [(0.0, 10.0), (10.0, 0.0), (5.0, 5.0), (4.0, 6.0), (6.0, 6.0), (9.0, 9.0)]
    order = rank_by_pareto(points)
    assert set(order[:4]) == {0, 1, 2, 3} and order[4:] == [4, 5]
    assert set(order[:2]) == {0, 1}  # boundary points (infinite crowding) first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_archive_equals_brute_force_pareto_set(seed: int) -> None:
    objectives = (Objective.named("acc"), Objective.named("macs"), Objective.named("latency_ms"))
    assert [o.maximize for o in objectives] == [True, False, False]
    archive = ParetoArchive(objectives)
    raw = random_points(80, 3, seed)
    for i, (acc, macs, lat) in enumerate(raw):
        archive.add(i, {"acc": acc, "macs": macs, "latency_ms": lat})
    minimized = [(-a, m, lat) for a, m, lat in raw]
    assert {k for k, _ in archive.entries()} == brute_force_front(minimized)


def test_archive_rejects_nan_and_missing_metrics() -> None:
    archive = ParetoArchive([Objective.named("acc"), Objective.named("macs")])
    assert not archive.add("nan", {"acc": float("nan"), "macs": 1.0})
    with pytest.raises(KeyError, match="macs"):
        archive.add("x", {"acc": 1.0})
    assert len(archive) == 0
