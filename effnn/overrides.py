"""Validate a Hydra command line before the run starts, so a typo costs one clear line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from effnn.errors import ConfigError, EffnnError

# Hydra flags that take a value (the value is not an override)
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                     "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}


def split_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """(overrides, config name) from a train.py command line."""
    overrides, config_name, skip = [], None, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            flag, _, value = arg.partition("=")
            if flag in ("--config-name", "-cn"):
                config_name = value or (argv[i + 1] if i + 1 < len(argv) else None)
            skip = flag in _FLAGS_WITH_VALUE and not value and flag not in ("--info", "-i")
            continue
        overrides.append(arg)
    return overrides, config_name


def first_of_sweeps(overrides: Sequence[str]) -> list[str]:
    """Replace each sweep (``a=1,2``, ``choice(...)``) by its first value; drop glob/interval sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob, IntervalSweep

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    out = []
    for o in parsed:
        if not o.is_sweep_override():
            out.append(o.input_line)
            continue
        if isinstance(o.value(), (Glob, IntervalSweep)) or o.value() is None:
            continue
        first = next(iter(o.sweep_string_iterator()), None)
        if first is not None:
            out.append(f"{o.get_key_element()}={first}")
    return out


def check_overrides(argv: Sequence[str], config_dir: str | Path, default_config: str = "config") -> None:
    """Compose the config as Hydra will; raise ConfigError with Hydra's reason on one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides, config_name = split_argv(argv)
    if not overrides:
        return
    try:
        overrides = first_of_sweeps(overrides)
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            compose(config_name=config_name or default_config, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        text = text.split(" Config search path:")[0]
        if "Key '" in text and "not in struct" in text or "Could not override" in text:
            key = text.split("'")[1] if "'" in text else "KEY"
            raise ConfigError(f"unknown config key {key!r}: it is not in the config; to add a new key write "
                              f"+{key}=VALUE, or check the spelling with `python train.py --cfg job`") from err
        raise ConfigError(text) from err


# flags after which Hydra prints help/config instead of running, so required keys are not required
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i"}


def require_keys(argv: Sequence[str], required: Sequence[str], usage: str) -> None:
    """Raise ConfigError naming the missing ``key=`` arguments (a one-line usage instead of Hydra's traceback)."""
    if any(arg.split("=", 1)[0] in INFO_FLAGS for arg in argv):
        return
    given = {arg.split("=", 1)[0].lstrip("+") for arg in split_argv(argv)[0] if "=" in arg}
    missing = [k for k in required if k not in given]
    if missing:
        raise ConfigError(f"missing {' and '.join(f'{k}=' for k in missing)}; usage: {usage}")


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Report an EffnnError as ``error: ...`` on stderr and exit 2: what every effnn CLI does with bad input."""
    try:
        yield
    except EffnnError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
