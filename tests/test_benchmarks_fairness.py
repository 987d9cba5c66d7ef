"""The supernet claims compare like with like: same optimizer and LR, arch sampling seeded by the run seed,
and a no-KD arm, read from the configs the runs actually compose."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from claims import get_budget  # noqa: E402
from claims.runner import compose_run_config  # noqa: E402
from claims.supernet import _standalone_spec, _supernet_spec, plan_kd  # noqa: E402


def test_standalone_archs_train_with_the_supernets_optimizer_and_lr(tmp_path: Path) -> None:
    budget = get_budget("smoke")
    supernet = compose_run_config(_supernet_spec("alpha", budget, 0), tmp_path / "s")
    alone = compose_run_config(_standalone_spec("min", budget, 0), tmp_path / "a")
    for key in ("lr", "momentum", "nesterov", "weight_decay", "_target_"):
        assert alone.model.optimizer[key] == supernet.model.optimizer[key], key
    assert alone.model.optimizer.lr == 0.05
    assert alone.model.scheduler.warmup_epochs == supernet.model.scheduler.warmup_epochs
    assert alone.model.label_smoothing == supernet.model.label_smoothing == 0.1


def test_arch_sampling_follows_the_run_seed_and_the_no_kd_arm_is_planned(tmp_path: Path) -> None:
    budget = get_budget("smoke")
    seeds = [compose_run_config(_supernet_spec("alpha", budget, s), tmp_path / str(s)).model.sampler.seed
             for s in (0, 1, 2)]
    assert seeds == [0, 1, 2]
    specs = plan_kd(budget, [0])
    kd = {compose_run_config(s, tmp_path / f"kd{i}").model.kd_loss.name for i, s in enumerate(specs)}
    assert kd == {"alpha", "kl", "none"}
