"""The precision recipes and the range-test tool, end to end through the real configs and CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest

from effnn.pipeline import train
from effnn.precision import (
    CyclicPrecision,
    DynamicFractionalQuantization,
    NonFiniteGuard,
    ProgressiveFractionalQuantization,
    StaticPrecision,
)
from effnn.precision.range_test import PrecisionRangeTest, find_q_min
from tests.conftest import run_cli

RECIPES = {
    "cpt": CyclicPrecision,
    "static8": StaticPrecision,
    "fractrain_pfq": ProgressiveFractionalQuantization,
    "fractrain_dfq": DynamicFractionalQuantization,
    "alphanet_cpt": CyclicPrecision,
}
QUICK = ("trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false",
         "logger=csv")


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_composes_its_precision_callback_and_guard(make_cfg, recipe: str) -> None:
    cfg = make_cfg(f"+recipe={recipe}")
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None]
    kinds = {type(c) for c in callbacks}
    assert RECIPES[recipe] in kinds and NonFiniteGuard in kinds
    assert cfg.data._target_.endswith("DigitsDataModule")
    if recipe in ("cpt", "static8"):  # CPT and its baseline differ only in the precision callback
        other = make_cfg("+recipe=static8" if recipe == "cpt" else "+recipe=cpt")
        assert cfg.model == other.model and cfg.trainer == other.trainer and cfg.data == other.data


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_trains_a_few_steps_and_logs_its_cost(make_cfg, recipe: str) -> None:
    metrics = train(make_cfg(f"+recipe={recipe}", *QUICK))
    assert metrics["train/skipped_steps"] == 0
    assert 0 < metrics["train/rel_bitops"] <= 1.0
    assert 0 <= metrics["test/acc"] <= 1
    if recipe == "fractrain_dfq":
        assert 0 < metrics["dfq/rel_cost"] < 1 and metrics["dfq/target"] == pytest.approx(0.015)
    else:
        assert metrics["precision/grad_bits"] in (6, 8)


@pytest.mark.slow
def test_cpt_matches_static8_accuracy_with_less_bitops(make_cfg) -> None:
    """The issue's done-when at a shorter schedule (8 epochs): CPT 3-8/8 within 1 point of static 8-bit."""
    common = ("trainer.max_epochs=8", "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false",
              "logger=none")
    static = train(make_cfg("+recipe=static8", *common))
    cpt = train(make_cfg("+recipe=cpt", *common))
    assert static["test/acc"] > 0.95
    assert abs(cpt["test/acc"] - static["test/acc"]) <= 0.01, (cpt["test/acc"], static["test/acc"])
    assert 1 - cpt["train/rel_bitops"] > 0.30  # BitOPs saving vs static 8/8


def test_find_q_min_picks_the_first_precision_that_learns() -> None:
    bits = [2] * 6 + [3] * 6 + [4] * 6
    acc = [0.1, 0.12, 0.08, 0.1, 0.11, 0.09] + [0.1, 0.12, 0.13, 0.3, 0.35, 0.4] + [0.5] * 6
    q_min, levels, baseline = find_q_min(bits, acc, num_classes=10, min_gain=0.05)
    assert baseline == pytest.approx(0.1)  # max(chance, mean of the first half of 2-bit steps)
    assert levels[2] == pytest.approx(0.1) and levels[3] == pytest.approx(0.35)
    assert q_min == 3
    assert find_q_min(bits, [0.1] * 18, 10)[0] is None
    with pytest.raises(ValueError, match="one accuracy per step"):
        find_q_min(bits, acc[:3], 10)


def test_range_test_raises_precision_step_by_step() -> None:
    prt = PrecisionRangeTest(start_bits=2, max_bits=4, steps_per_bit=5)
    assert prt.total_steps == 15
    from types import SimpleNamespace

    assert [prt.bits_for_step(SimpleNamespace(global_step=s))[0] for s in (0, 4, 5, 14, 20)] == [2, 2, 3, 4, 4]
    with pytest.raises(ValueError, match="start_bits"):
        PrecisionRangeTest(start_bits=6, max_bits=4)


@pytest.mark.slow
def test_precision_range_test_cli_writes_plot_and_q_min(tmp_path: Path) -> None:
    res = run_cli(["tools/precision_range_test.py", "+recipe=cpt", "+prt.steps_per_bit=12", "+prt.max_bits=5",
                   "data.resolution=16", f"hydra.run.dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "prt.json").read_text())
    assert len(out["bits"]) == 48 and out["bits"][0] == 2 and out["bits"][-1] == 5
    assert out["q_min"] is None or 2 <= out["q_min"] <= 5
    assert f'"q_min": {json.dumps(out["q_min"])}' in res.stdout
    assert (tmp_path / "prt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_precision_range_test_cli_rejects_unknown_options(tmp_path: Path) -> None:
    res = run_cli(["tools/precision_range_test.py", "+recipe=cpt", "+prt.step_per_bit=3",
                   f"hydra.run.dir={tmp_path}"])
    assert res.returncode == 2
    assert "step_per_bit" in res.stderr and "steps_per_bit" in res.stderr
