"""Every recipe and every config-group option composes, and builds its datamodule and module."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest

from effnn.errors import ConfigError
from effnn.recipes import available_recipes, check_recipes, requested_recipes
from tests.conftest import CONF_DIR, ROOT, compose_config

RECIPES = available_recipes(ROOT / "recipes")


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


def test_recipe_argument_parsing() -> None:
    assert requested_recipes(["+recipe=alphanet", "x=1"]) == ["alphanet"]
    assert requested_recipes(["recipe=a,b"]) == ["a", "b"]
    assert requested_recipes(["+recipe=glob(*,exclude=_*)"]) == []
    with pytest.raises(ConfigError, match="available recipes: .*classification"):
        check_recipes(["+recipe=nope"], ROOT / "recipes")
