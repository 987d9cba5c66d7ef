"""Every recipe and every config-group option composes, and builds its datamodule and module."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest

from tests.conftest import CONF_DIR, ROOT, compose_config

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml") if not p.stem.startswith("_"))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem != "default" or group == "callbacks")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_builds(recipe: str, tmp_path: Path) -> None:
    cfg = compose_config([f"+recipe={recipe}"], output_dir=tmp_path)
    assert cfg.trainer.max_epochs >= 1
    dm = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(dm, L.LightningDataModule)
    assert isinstance(module, L.LightningModule)


@pytest.mark.parametrize("group", ["data", "model", "trainer", "callbacks", "logger"])
def test_every_group_option_composes(group: str, tmp_path: Path) -> None:
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
        assert group in cfg


@pytest.mark.parametrize("trainer", ["cpu", "ddp_sim"])
def test_trainer_configs_instantiate_on_cpu(trainer: str, tmp_path: Path) -> None:
    cfg = compose_config([f"trainer={trainer}"], output_dir=tmp_path)
    t = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert t.num_devices == (2 if trainer == "ddp_sim" else 1)


def test_recipe_is_a_defaults_list_group_selected_with_or_without_plus(tmp_path: Path) -> None:
    """``recipe: null`` sits in the defaults list; ``recipe=x`` and the documented ``+recipe=x`` both select it."""
    from effnn.cli import plus_alias

    assert plus_alias(["+recipe=alphanet", "+x=1", "recipe=a"]) == ["recipe=alphanet", "+x=1", "recipe=a"]
    plain = compose_config(["recipe=alphanet"], output_dir=tmp_path)
    assert plain.task_name == "alphanet" and plain.model._target_.endswith("SupernetModule")
    assert compose_config(plus_alias(["+recipe=alphanet"]), output_dir=tmp_path) == plain


def test_base_recipes_are_not_selectable_and_are_shared() -> None:
    """Files starting with ``_`` are bases: every supernet recipe extends one, none is listed as a recipe."""
    bases = sorted(p.stem for p in (ROOT / "recipes").glob("_*.yaml"))
    assert bases and not set(bases) & set(RECIPES)
    users = [r for r in RECIPES if any(f"- {b}" in (ROOT / "recipes" / f"{r}.yaml").read_text() for b in bases)]
    assert len(users) >= 3, users
