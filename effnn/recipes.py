"""Recipe lookup: ``+recipe=NAME`` selects ``recipes/NAME.yaml``; unknown names fail in one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from effnn.errors import ConfigError


def available_recipes(recipes_dir: str | Path) -> list[str]:
    """Recipe names users can select (files starting with ``_`` are bases for other recipes)."""
    return sorted(p.stem for p in Path(recipes_dir).glob("*.yaml") if not p.stem.startswith("_"))


def requested_recipes(argv: Sequence[str]) -> list[str]:
    """Recipe names named on a Hydra command line (``+recipe=a``, ``recipe=a,b``); glob sweeps are skipped."""
    names: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") != "recipe" or key.startswith("~"):
            continue
        value = value.strip()
        if value.startswith(("glob(", "choice(", "range(", "interval(")):
            inner = value[value.index("(") + 1:value.rindex(")")] if value.startswith("choice(") else ""
            names += [v.strip().strip("'\"") for v in inner.split(",") if v.strip()]
            continue
        names += [v.strip().strip("'\"") for v in value.split(",") if v.strip()]
    return names


def check_recipes(argv: Sequence[str], recipes_dir: str | Path) -> None:
    """Raise ConfigError naming the unknown recipe and listing the available ones."""
    known = available_recipes(recipes_dir)
    all_names = {p.stem for p in Path(recipes_dir).glob("*.yaml")}
    for name in requested_recipes(argv):
        if name not in all_names:
            raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(known)}")
