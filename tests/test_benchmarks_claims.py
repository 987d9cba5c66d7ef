"""The benchmark machinery: claim arithmetic against closed forms and published numbers, config composition
of every planned run, output parsing, and one real (tiny) claim reproduction through worker processes."""

from __future__ import annotations

import itertools
import random
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from claims import CLAIMS, get_budget, run_claims  # noqa: E402
from claims.precision import cpt_expected_saving  # noqa: E402
from claims.runner import RunSpec, compose_run_config, run_specs, summary_stats  # noqa: E402
from claims.supernet import (  # noqa: E402
    front_area,
    gene_fraction_arch,
    pareto_archs,
    pareto_front,
    reference_archs,
)
from speed import extract_ratios, parse_ratios  # noqa: E402

from effnn.nas import get_space  # noqa: E402
from effnn.precision.schedules import cyclic_bits, cyclic_period, schedule_saving  # noqa: E402


@pytest.mark.parametrize(("q_min", "q_max", "g", "published"), [(3, 8, 8, 36.67), (3, 6, 6, 30.05), (4, 8, 8, 30.1),
                                                                  (4, 6, 6, 20.7)])
def test_cpt_saving_formula_reproduces_the_papers_numbers(q_min: int, q_max: int, g: int, published: float) -> None:
    # CPT's CIFAR schedule: 64,000 iterations in 32 cycles
    assert 100 * cpt_expected_saving(64_000, 32, q_min, q_max, g) == pytest.approx(published, abs=0.05)


@pytest.mark.parametrize("steps", [7, 195, 585, 1000])
def test_cpt_saving_formula_matches_effnn_schedule(steps: int) -> None:
    """Two independent implementations of the schedule (numpy here, effnn.precision's) agree for short runs."""
    period = cyclic_period(steps, 32)
    bits = [cyclic_bits(i, period, 3, 8) for i in range(steps)]
    assert cpt_expected_saving(steps) == pytest.approx(schedule_saving(bits, 8, 8, 8), abs=1e-12)


def _brute_front(points: list[tuple[float, float]]) -> set[tuple[float, float]]:
    return {p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)}


def test_pareto_front_and_area_match_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(20):
        points = list({(round(rng.uniform(0, 10), 2), round(rng.uniform(0, 100), 1)) for _ in range(25)})
        front = pareto_front(points)
        assert set(front) == _brute_front(points)
        assert [c for c, _ in front] == sorted(c for c, _ in front)
        # area = mean over a fine cost grid of the best accuracy reachable at that cost
        grid = np.linspace(0, 10, 200_001)[:-1] + 2.5e-5
        best = [max((a for c, a in points if c <= x), default=0.0) for x in grid[::50]]
        assert front_area(front, 0, 10) == pytest.approx(float(np.mean(best)), abs=0.3)
    with pytest.raises(ValueError, match="empty"):
        front_area([(1.0, 50.0)], 2.0, 2.0)


def test_summary_stats_is_mean_and_sample_std() -> None:
    vals = [97.4, 96.3, 98.1]
    s = summary_stats(vals)
    assert s["mean"] == pytest.approx(np.mean(vals))
    assert s["std"] == pytest.approx(np.std(vals, ddof=1))
    assert summary_stats([1.0])["std"] is None and summary_stats([])["mean"] is None


def test_reference_archs_are_ordered_subnets_of_the_space() -> None:
    space = get_space("tiny32")
    assert gene_fraction_arch(space, 0.0) == space.min_arch()
    assert gene_fraction_arch(space, 1.0) == space.max_arch()
    macs = [space.macs(a, 10) for a in reference_archs(space).values()]
    assert macs == sorted(macs) and len(set(macs)) == 4
    archs = pareto_archs(space, 15)
    assert len(archs) == 15 and len(set(archs.values())) == 15
    assert archs == pareto_archs(space, 15)  # every run evaluates the same archs
    with pytest.raises(ValueError, match="fraction"):
        gene_fraction_arch(space, 1.5)


def test_run_keys_identify_configs() -> None:
    a = RunSpec("cpt", ("trainer.max_epochs=5",), 0)
    assert a.key == RunSpec("cpt", ("trainer.max_epochs=5",), 0, weight=9.0).key
    keys = {RunSpec("cpt", o, s).key for o, s in itertools.product([(), ("trainer.max_epochs=5",)], [0, 1])}
    assert len(keys) == 4


def test_every_planned_run_composes(tmp_path: Path) -> None:
    """Each run a claim plans is a valid config: recipe, deletions/additions and the standalone subnet."""
    plans = {s for c in CLAIMS.values() if not c.missing_recipes() for s in c.plan(get_budget("quick"), (3,))}
    assert plans
    for spec in plans:
        cfg = compose_run_config(spec, tmp_path)
        assert cfg.seed == 3 and not cfg.logger
        assert cfg.callbacks.model_checkpoint is None
        assert (cfg.callbacks.last_checkpoint is not None) == spec.keep_checkpoint


def test_standalone_subnet_config_builds_the_arch(tmp_path: Path) -> None:
    import hydra
    from claims.supernet import _standalone_spec

    spec = _standalone_spec("mid_small", get_budget("quick"), 0)
    cfg = compose_run_config(spec, tmp_path)
    module = hydra.utils.instantiate(cfg.model)
    space = get_space("tiny32")
    arch = reference_archs(space)["mid_small"]
    assert module.net.net.arch == arch
    # the analytic parameter count of the arch (effnn.nas.space) equals the built network's
    assert sum(p.numel() for p in module.net.parameters()) == space.params(arch, 10)
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_ratio_parsing_from_printed_output() -> None:
    text = ("\x1b[1msupernet max / static: 1.08x\x1b[0m\n"
            "│ sandwich step / 4 static subnets │  12.1 ms │ 0.93x │\n"
            "8-bit step / fp32 step = 2.5 x\nnot a ratio: 12 ms\n"
            "per layer: ours 3.1 us; SCALE-Sim 2.0 s\n-> 12,345x (uncached) / 40,000.5x (cached) faster\n")
    assert parse_ratios(text) == {"supernet max / static": 1.08, "sandwich step / 4 static subnets": 0.93,
                                  "8-bit step / fp32 step": 2.5, "per layer (uncached)": 12345.0,
                                  "per layer (cached)": 40000.5}
    assert extract_ratios({"ratios": {"a": 2.0}, "other_ratio": 3}) == {"a": 2.0}
    nested = {"layers": [{"name": "conv1", "speedup": 5.0}], "wall_ms": 3}
    assert extract_ratios(nested) == {"layers.conv1.speedup": 5.0}


def test_cpt_claim_runs_end_to_end(tmp_path: Path) -> None:
    """A real (tiny) CPT reproduction: fp32, static 8/8 and CPT runs trained through effnn.pipeline; the BitOPs
    saving effnn's callback counted equals the saving of the paper's formula for the run's step count."""
    entry = run_claims(["cpt"], "smoke", (0,), work_dir=tmp_path, progress=False, isolate=False)["cpt"]
    assert entry["status"] == "ok", entry
    data = entry["data"]
    assert data["total_steps"] == [get_budget("smoke").limit_train_batches * get_budget("smoke").precision_epochs]
    assert data["saving_pct"]["mean"] == pytest.approx(data["expected_saving_pct"][0], abs=1e-6)
    for name in ("fp32", "static8", "cpt"):
        acc = data["accuracy"][name]["mean"]
        assert 0.0 <= acc <= 100.0
    assert entry["held"] in (True, False)
    # a second call reuses the stored results instead of training again (no worker is even started)
    again = run_claims(["cpt"], "smoke", (0,), work_dir=tmp_path, progress=False)["cpt"]
    assert again["data"] == data
    assert statistics.fmean(r["wall_s"] for r in again["runs"]) == pytest.approx(
        statistics.fmean(r["wall_s"] for r in entry["runs"]))


def test_failed_run_is_reported_with_its_log(tmp_path: Path) -> None:
    bad = RunSpec("cpt", ("trainer.max_epochs=1", "model.optimizer.lr=-1"), 0)
    result = run_specs([bad], tmp_path, progress=False, isolate=False)[bad]
    assert not result.ok and "learning rate" in result.error.lower()
    assert "Traceback" in Path(result.log_path).read_text()


def test_stored_results_are_reused_unless_fresh(tmp_path: Path) -> None:
    spec = RunSpec("cpt", ("trainer.max_epochs=1", "model.optimizer.lr=-1"), 0)
    stored = tmp_path / "runs" / spec.key / "result.json"
    stored.parent.mkdir(parents=True)
    stored.write_text('{"metrics": {"test/acc": 0.5}, "wall_s": 1.0}')
    assert run_specs([spec], tmp_path, progress=False, isolate=False)[spec].metric("test/acc") == 0.5
    other = tmp_path / "runs" / "unrelated-run" / "result.json"
    other.parent.mkdir()
    other.write_text("{}")
    again = run_specs([spec], tmp_path, progress=False, isolate=False, fresh=True)[spec]
    assert not again.ok and not stored.exists()  # retrained (and this config fails)
    assert other.exists()  # runs of other claims are left alone
