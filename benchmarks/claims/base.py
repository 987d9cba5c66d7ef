"""What a claim is: the runs it needs for a budget, and how their results become a verdict and a table."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from claims.runner import RunResult, RunSpec, available_recipes, summary_stats


@dataclass(frozen=True)
class Budget:
    """How long each kind of run trains. ``smoke`` only proves the machinery; ``quick`` fits in ~10 minutes
    on 2 idle CPU cores with one seed; ``full`` is the reproduction reported in docs/benchmarks.md."""

    name: str
    precision_epochs: int
    smartdeal_epochs: int
    smartdeal_dense_epochs: int
    supernet_epochs: int
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    calib_batches: int = 16
    pareto_archs: int = 24
    default_seeds: tuple[int, ...] = (0,)

    def limit_overrides(self) -> tuple[str, ...]:
        out = []
        if self.limit_train_batches is not None:
            out.append(f"++trainer.limit_train_batches={self.limit_train_batches}")
        if self.limit_eval_batches is not None:
            out += [f"++trainer.limit_val_batches={self.limit_eval_batches}",
                    f"++trainer.limit_test_batches={self.limit_eval_batches}"]
        return tuple(out)


BUDGETS: Mapping[str, Budget] = {
    "smoke": Budget("smoke", precision_epochs=1, smartdeal_epochs=2, smartdeal_dense_epochs=1,
                    supernet_epochs=1, limit_train_batches=2, limit_eval_batches=2, calib_batches=2,
                    pareto_archs=3),
    # ~400 CPU-seconds of training: ~4 minutes on 2 idle cores with 2 jobs, leaving room for the speed benchmarks
    "quick": Budget("quick", precision_epochs=6, smartdeal_epochs=8, smartdeal_dense_epochs=4,
                    supernet_epochs=3, calib_batches=8, pareto_archs=12),
    # ~2,000 CPU-seconds of training: ~20 minutes on 2 idle cores with 2 jobs
    "full": Budget("full", precision_epochs=10, smartdeal_epochs=10, smartdeal_dense_epochs=5,
                   supernet_epochs=8, calib_batches=16, pareto_archs=40, default_seeds=(0, 1, 2)),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


Results = Mapping[RunSpec, RunResult]


@dataclass(frozen=True)
class Claim:
    """One published claim reproduced at small scale.

    ``plan(budget, seeds)`` lists the runs; ``summarize(budget, seeds, results)`` turns them into a dict with
    ``table`` (columns + formatted rows), ``data`` (raw numbers), ``criterion`` (what "held" means) and
    ``held`` (True/False, None when undecidable). ``recipes`` are the recipes the claim needs: if one does
    not exist yet the claim reports "not available yet" instead of a number.
    """

    key: str
    number: int
    title: str
    published: str
    recipes: tuple[str, ...]
    plan: Callable[[Budget, Sequence[int]], list[RunSpec]]
    summarize: Callable[[Budget, Sequence[int], Results], dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def missing_recipes(self) -> list[str]:
        have = available_recipes()
        return [r for r in self.recipes if r not in have]


def accuracy_stats(results: Results, specs: Sequence[RunSpec], metric: str = "test/acc") -> dict[str, Any]:
    """Mean/std in percent of ``metric`` over the seeds' runs that succeeded."""
    return summary_stats([100.0 * results[s].metric(metric) for s in specs if results[s].ok])


def value_stats(values: Sequence[float]) -> dict[str, Any]:
    return summary_stats(values)


def fmt_stats(stats: Mapping[str, Any], digits: int = 2, suffix: str = "") -> str:
    """``97.41 ± 0.32`` (or the single value, or ``n/a``)."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    text = f"{stats['mean']:.{digits}f}{suffix}"
    if stats.get("std") is not None:
        text += f" ± {stats['std']:.{digits}f}"
    return text


def failed_runs(results: Results, specs: Sequence[RunSpec]) -> list[str]:
    return [f"{s.describe()}: {results[s].error} (log: {results[s].log_path})" for s in specs if not results[s].ok]


def within_noise(a: Mapping[str, Any], b: Mapping[str, Any], floor: float) -> bool:
    """True when mean ``a`` is not worse than mean ``b`` by more than max(floor, std a, std b)."""
    tol = max(floor, a.get("std") or 0.0, b.get("std") or 0.0)
    return a["mean"] >= b["mean"] - tol
