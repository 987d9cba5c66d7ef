"""The evolutionary search on closed-form accuracies: constraints, Pareto archive, resume, predictor, co-search.

Accuracy here is a known function of the genes (a OneMax-style count of genes equal to a target arch), so
the right answers are computable by brute force over the micro space's 512 subnets.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from search_support import micro_space

from effnn.errors import CheckpointError, ConfigError
from effnn.hw import SystolicArray
from effnn.nas import Arch
from effnn.search import (
    Accelerator,
    EvolutionarySearch,
    HardwareSpace,
    Objective,
    SearchSettings,
    SubnetCosts,
    best_accelerator,
)

SPACE = micro_space()
TARGET = Arch(16, (8, 8, 16, 16, 48), (1, 2, 1), (3, 5, 3), (1, 3, 2))
SMALL = dict(population=12, generations=6, parents=6, num_mutations=6, num_crossovers=6)


def onemax(arch: Arch) -> float:
    """50 + 3 per gene equal to TARGET's: one optimum (TARGET, 95%), additive in the genes."""
    return 50.0 + 3.0 * sum(a == b for a, b in zip(arch.genes(), TARGET.genes()))


def all_archs() -> list[Arch]:
    choices = list(SPACE.choices().values())
    n = SPACE.num_stages
    return [Arch(g[0], g[1:n + 3], g[n + 3:2 * n + 3], g[2 * n + 3:3 * n + 3], g[3 * n + 3:])
            for g in itertools.product(*choices)]


def make_search(costs: SubnetCosts | None = None, **kw) -> EvolutionarySearch:
    state_path = kw.pop("state_path", None)
    hardware = kw.pop("hardware", None)
    settings = SearchSettings(**{**SMALL, **kw})
    costs = costs or SubnetCosts(SPACE, 10, 3, hardware_metrics=False)
    return EvolutionarySearch(SPACE, settings, onemax, costs, hardware=hardware, state_path=state_path)


def test_space_is_small_enough_for_brute_force() -> None:
    archs = all_archs()
    assert len(archs) == len(set(archs)) == 512
    assert all(SPACE.contains(a) for a in archs) and TARGET in archs


def test_generation_zero_is_min_arch_plus_feasible_randoms() -> None:
    costs = SubnetCosts(SPACE, 10, 3, hardware_metrics=False)
    result = make_search(costs, generations=0).run()
    first = list(result.evaluations)
    assert first[0].arch == SPACE.min_arch() and len(first) == SMALL["population"]
    macs = sorted(costs(a)["macs"] for a in all_archs())
    lo, hi = macs[100], macs[400]
    result = make_search(costs, constraints={"macs": [lo, hi]}).run()
    assert all(lo <= m["macs"] <= hi for m in result.evaluations.values())
    assert SPACE.min_arch() not in {c.arch for c in result.evaluations}  # below lo, so not seeded


def test_archive_is_the_pareto_set_of_everything_evaluated() -> None:
    result = make_search(seed=3).run()
    assert result.archive.objectives == (Objective("acc", True), Objective("macs", False))
    minimized = {c: (-m["acc"], m["macs"]) for c, m in result.evaluations.items()}
    front = {c for c, v in minimized.items()
             if not any(all(x <= y for x, y in zip(w, v)) and w != v for w in minimized.values())}
    assert {c for c, _ in result.pareto()} == front
    for cand, metrics in result.pareto():  # metrics are the closed form and the analytic cost
        assert metrics["acc"] == onemax(cand.arch) and metrics["macs"] == SPACE.macs(cand.arch, 10)


def test_evolution_beats_random_search_on_onemax() -> None:
    """Random search with the same ~84 evaluations finds the optimum with p ~ 84/512 per seed; evolution
    (mutation 0.2, uniform crossover) must find it in most seeds and never lose the best point."""
    found = 0
    for seed in range(6):
        result = make_search(seed=seed).run()
        best = [h.best_acc for h in result.history]
        assert best == sorted(best)
        assert len(result.evaluations) <= SMALL["population"] + 6 * 12
        found += TARGET in {c.arch for c in result.evaluations}
    assert found >= 4


def test_predictor_prescreening_finds_the_optimum_sooner() -> None:
    """The ridge predictor is exact for an additive accuracy, so pre-screened children are better."""
    mean_child_acc = {}
    for predictor in (False, True):
        accs = []
        for seed in range(4):
            result = make_search(seed=seed, predictor=predictor, predictor_min_points=12).run()
            children = list(result.evaluations.values())[SMALL["population"]:]
            accs.append(sum(m["acc"] for m in children) / len(children))
            if predictor:
                assert TARGET in {c.arch for c in result.evaluations}
                assert all(h.new_evaluations <= 12 for h in result.history)
        mean_child_acc[predictor] = sum(accs) / len(accs)
    assert mean_child_acc[True] > mean_child_acc[False] + 0.5


def test_resume_reproduces_an_uninterrupted_search(tmp_path: Path) -> None:
    full = make_search(seed=1, state_path=tmp_path / "full.json").run()
    state = tmp_path / "killed.json"
    make_search(seed=1, generations=2, state_path=state).run()  # as if killed during generation 3
    saved = json.loads(state.read_text())
    assert saved["generation"] == 2 and len(saved["history"]) == 3
    resumed = make_search(seed=1, state_path=state).run(resume=True)
    assert list(resumed.evaluations.items()) == list(full.evaluations.items())
    assert resumed.population == full.population
    assert resumed.pareto() == full.pareto()
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in full.history]


def test_resume_refuses_other_settings_and_corrupt_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    make_search(generations=1, state_path=state).run()
    with pytest.raises(ConfigError, match="mutate_prob: saved 0.2, now 0.5"):
        make_search(mutate_prob=0.5, state_path=state).run(resume=True)
    state.write_text(state.read_text()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        make_search(state_path=state).run(resume=True)


@pytest.mark.parametrize("settings,match", [
    (dict(objectives=("macs", "params")), "must contain 'acc'"),
    (dict(objectives=("acc", "flops")), "unknown metric"),
    (dict(constraints={"acc": [0, 90]}), "unknown metric"),
    (dict(constraints={"macs": [5, 1]}), "is empty"),
    (dict(parents=20), "exceeds search.population"),
    (dict(mutate_prob=1.5), "mutate_prob"),
])
def test_bad_settings_name_the_problem(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SearchSettings(**settings)


def test_impossible_constraints_say_what_is_possible() -> None:
    with pytest.raises(ConfigError, match=r"macs spans about \[1\.0\d+e\+05"):
        make_search(constraints={"macs": [1, 10]}, max_tries=5).run()


def test_co_search_keeps_accelerators_in_budget_and_picks_the_best_per_subnet() -> None:
    base = SystolicArray(16, 16, "ws")
    hardware = HardwareSpace(base, rows=[4, 8, 16, 32], cols=[4, 8, 16, 32], dataflow=["os", "ws", "is"],
                             ifmap_sram_kb=[8, 32], filter_sram_kb=[8, 32], ofmap_sram_kb=[8, 32], max_pes=128)
    feasible = list(hardware.feasible())
    assert feasible and all(a.num_pes <= 128 for a in feasible)
    assert len(feasible) == sum(1 for r, c in itertools.product([4, 8, 16, 32], repeat=2) if r * c <= 128) * 3 * 8
    costs = SubnetCosts(SPACE, 10, 3, base)
    result = make_search(costs, objectives=("acc", "latency_ms"), hardware=hardware, generations=2).run()
    assert all(c.hardware is not None and hardware.contains(c.hardware) for c in result.evaluations)
    assert len({c.hardware for c in result.evaluations}) > 1
    for cand, metrics in result.pareto():
        assert metrics["latency_ms"] == costs(cand.arch, cand.hardware)["latency_ms"]
        best, best_metrics = best_accelerator(costs, cand.arch, hardware, "edp")
        brute = min(costs(cand.arch, a)["edp"] for a in feasible)
        assert best_metrics["edp"] == brute and best_metrics["edp"] <= metrics["edp"]


def test_area_budget_and_bad_hardware_config() -> None:
    base = SystolicArray(16, 16, "ws")
    # area from effnn.hw.ppa: 128 16-bit int MAC PEs + three 16 kB SRAMs
    from effnn.hw.ppa import AcceleratorPPA

    area_128 = AcceleratorPPA(8, 16, "int_mac", 16, 16, 16, 16, 16).area_mm2()
    hw = HardwareSpace(base, [8, 16], [8, 16], ["ws"], [16], [16], [16], max_area_mm2=area_128 * 1.001)
    assert {a.num_pes for a in hw.feasible()} == {64, 128}
    assert hw.area_mm2(Accelerator(8, 16, "ws", 16, 16, 16)) == pytest.approx(area_128)
    power_64 = hw.power_mw(Accelerator(8, 8, "ws", 16, 16, 16))
    capped = HardwareSpace(base, [8, 16], [8, 16], ["ws"], [16], [16], [16], max_power_mw=power_64 * 1.001)
    assert {a.num_pes for a in capped.feasible()} == {64}
    with pytest.raises(ConfigError, match="linear pe_mm2"):
        HardwareSpace.from_config(base, {"rows": [8], "cols": [8], "dataflow": ["ws"], "ifmap_sram_kb": [16],
                                         "filter_sram_kb": [16], "ofmap_sram_kb": [16]}, {}, {"pe_mm2": 0.004})
    with pytest.raises(ConfigError, match="no accelerator fits the budget"):
        HardwareSpace(base, [8], [8], ["ws"], [16], [16], [16], max_pes=32)
    with pytest.raises(ConfigError, match="allowed dataflows"):
        HardwareSpace(base, [8], [8], ["rs"], [16], [16], [16])
