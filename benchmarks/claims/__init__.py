"""The six small-scale claim reproductions of ``benchmarks/run_all.py``, runnable one by one.

``run_claim("cpt", quick=True)`` reproduces one claim and returns its summary dict; ``run_claims`` runs
several at once, sharing the training runs they have in common. Import with ``benchmarks/`` on
``sys.path`` (run_all.py does this).
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from claims.base import BUDGETS, Budget, Claim, get_budget
from claims.precision import CPT_CLAIM, FRACTRAIN_CLAIM
from claims.runner import RunResult, RunSpec, run_specs
from claims.smartdeal import SMARTDEAL_CLAIM
from claims.supernet import ATTENTIVE_CLAIM, KD_CLAIM, STANDALONE_CLAIM

CLAIMS: Mapping[str, Claim] = {c.key: c for c in (KD_CLAIM, ATTENTIVE_CLAIM, STANDALONE_CLAIM, CPT_CLAIM,
                                                  FRACTRAIN_CLAIM, SMARTDEAL_CLAIM)}


def _header(claim: Claim, budget: Budget, seeds: Sequence[int]) -> dict[str, Any]:
    return {"claim": claim.number, "key": claim.key, "title": claim.title, "published": claim.published,
            "budget": budget.name, "seeds": list(seeds)}


def run_claims(keys: Sequence[str], budget: Budget | str = "quick", seeds: Sequence[int] | None = None,
               jobs: int = 1, work_dir: Path | None = None, progress: bool = True,
               isolate: bool = True, fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Reproduce the claims ``keys``; each gets ``status`` ok / partial (some runs failed) / failed /
    not available (a recipe it needs does not exist yet), plus its summary when there is one.
    ``isolate=False`` trains in this process instead of worker processes; ``fresh=True`` retrains runs whose
    results are already stored in ``work_dir`` (see ``run_specs``)."""
    unknown = [k for k in keys if k not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claims {unknown}; known: {', '.join(CLAIMS)}")
    budget = get_budget(budget) if isinstance(budget, str) else budget
    seeds = tuple(budget.default_seeds if seeds is None else seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="effnn-claims-"))
    chosen = [CLAIMS[k] for k in keys]
    runnable = [c for c in chosen if not c.missing_recipes()]
    plans = {c.key: c.plan(budget, seeds) for c in runnable}
    results: dict[RunSpec, RunResult] = run_specs([s for p in plans.values() for s in p], work_dir, jobs,
                                                  progress=progress, isolate=isolate, fresh=fresh)
    out: dict[str, dict[str, Any]] = {}
    for claim in chosen:
        entry = _header(claim, budget, seeds)
        missing = claim.missing_recipes()
        if missing:
            entry.update(status="not available yet",
                         reason=f"recipes not in the repo yet: {', '.join(missing)}")
            out[claim.key] = entry
            continue
        specs = plans[claim.key]
        entry["train_time_s"] = sum(results[s].wall_s for s in dict.fromkeys(specs) if results[s].ok)
        entry["runs"] = [{"run": s.describe(), "key": s.key, "ok": results[s].ok, "wall_s": results[s].wall_s,
                          "error": results[s].error} for s in dict.fromkeys(specs)]
        if all(not results[s].ok for s in specs):
            entry.update(status="failed", reason=f"every run failed; first: {results[specs[0]].error} "
                                                  f"(log: {results[specs[0]].log_path})")
            out[claim.key] = entry
            continue
        try:
            entry.update(claim.summarize(budget, seeds, results))
            entry["status"] = "partial" if entry.get("failures") else "ok"
        except Exception as err:  # noqa: BLE001 - report the broken summary, keep the other claims
            entry.update(status="failed", reason=f"summary failed: {type(err).__name__}: {err}",
                         traceback=traceback.format_exc())
        out[claim.key] = entry
    return out


def run_claim(key: str, quick: bool = True, seeds: Sequence[int] | None = None, jobs: int = 1,
              work_dir: Path | None = None) -> dict[str, Any]:
    """One claim with the quick (1 seed, few epochs) or full (3 seeds) budget."""
    return run_claims([key], "quick" if quick else "full", seeds, jobs, work_dir)[key]


__all__ = ["BUDGETS", "CLAIMS", "Budget", "Claim", "RunSpec", "get_budget", "run_claim", "run_claims"]
