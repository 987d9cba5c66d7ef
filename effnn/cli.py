"""The one exception hook of effnn's Hydra command lines: bad input is one ``error:`` line and exit status 2.

``train.py``, ``tools/search.py`` and ``tools/export.py`` are thin: each calls :func:`hydra_app` with its
config and task. Hydra itself parses the command line, composes the config and validates it against the
structured configs of :mod:`effnn.config`; this module only turns the exception Hydra (or OmegaConf, or
effnn) raises into one line that names the fix. Nothing here parses overrides by hand.

``+recipe=NAME`` is accepted as an alias of ``recipe=NAME``: ``recipe`` is a defaults-list group
(``recipe: null``, as lightning-hydra-template's ``experiment``), for which Hydra rejects the ``+`` form,
while every effnn document and user habit writes ``+recipe=``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from effnn.errors import ConfigError, EffnnError

#: groups that are selected in the defaults list as ``group: null`` but that users write as ``+group=NAME``
PLUS_ALIASED_GROUPS = ("recipe",)


def plus_alias(argv: Sequence[str]) -> list[str]:
    """``+recipe=x`` -> ``recipe=x`` (the group already has a ``null`` slot in the defaults list)."""
    out = []
    for arg in argv:
        key = arg.partition("=")[0]
        out.append(arg[1:] if key.startswith("+") and key[1:] in PLUS_ALIASED_GROUPS else arg)
    return out


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _missing_option(err: Any) -> str:
    """``group=name`` that is not a config file: name the group and list its (non-base) options."""
    group, _, name = str(err.missing_cfg_file or "").rpartition("/")
    options = ", ".join(o for o in (err.options or []) if not o.startswith("_"))
    if not group:
        return f"{_first_line(str(err))}; check the name with `--help`"
    return f"unknown {group} {name!r}; available: {options}"


def describe(err: BaseException, usage: str = "") -> str | None:
    """One line for an input error (None: not an input error, let it raise)."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import (
        ConfigKeyError,
        InterpolationToMissingValueError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    chain = list(_chain(err))
    for e in chain:
        if isinstance(e, EffnnError):
            return str(e)
        if isinstance(e, MissingConfigException):
            return _missing_option(e)
        if isinstance(e, (MissingMandatoryValue, InterpolationToMissingValueError)):
            key = str(e).rsplit(":", 1)[-1].strip() if isinstance(e, InterpolationToMissingValueError) \
                else getattr(e, "full_key", "") or "?"
            return f"missing {key}=; usage: {usage}" if usage else f"missing {key}=; set it on the command line"
        if isinstance(e, ValidationError):
            key = getattr(e, "full_key", "") or "?"
            return f"bad value for {key}: {_first_line(str(e))}; see `--cfg job` for the expected types"
    for e in chain:
        if "Could not append to config. An item is already at" in str(e):
            key = str(e).split("'")[1] if "'" in str(e) else "KEY"
            return f"{key!r} is already in the config; set it without the +: {key}=VALUE"
        if isinstance(e, ConfigKeyError) or "Could not override" in str(e):
            text = " ".join(str(x) for x in chain)
            key = text.split("'")[1] if "'" in text else "KEY"
            return (f"unknown config key {key!r}: it is not in the config; to add a new key write "
                    f"+{key}=VALUE, or check the spelling with `--cfg job`")
    for e in chain:
        if isinstance(e, (ConfigCompositionException, HydraException, OmegaConfBaseException)):
            return _first_line(str(e)).split(" Config search path:")[0]
    return None


@contextmanager
def one_line_errors(usage: str = "") -> Iterator[None]:
    """Report an input error (effnn's, Hydra's, OmegaConf's) as ``error: ...`` on stderr and exit 2."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 -- re-raised unless it is an input error
        line = describe(err, usage)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


class RequiredKeys(Callback):
    """Hydra callback (``hydra.callbacks`` of ``conf/search.yaml``, ``conf/export.yaml``): before Hydra makes
    the run directory (which may be ``${out}``), name every top-level ``???`` key the command line left out,
    in one line with the tool's usage."""

    def __init__(self, usage: str = "") -> None:
        super().__init__()
        self.usage = usage

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        missing = [key for key in config if key != "hydra" and OmegaConf.is_missing(config, key)]
        if missing:  # Hydra turns a callback's exception into a warning, so exit here, as the hook does
            with one_line_errors():
                raise ConfigError(f"missing {' and '.join(f'{k}=' for k in missing)}; usage: {self.usage}")


def hydra_app(config_dir: str | Path, config_name: str, task: Callable[[Any], Any], usage: str = "") -> Any:
    """Run ``task(cfg)`` under ``@hydra.main`` with effnn's structured configs and one-line errors.

    The hook sits at two places because Hydra has two: errors while composing (unknown key, wrong type,
    unknown recipe) leave ``hydra.main`` -- ``HYDRA_FULL_ERROR=1`` makes Hydra re-raise them instead of
    printing its multi-line report -- and errors of the task itself are reported inside the job, before
    Hydra logs "Error executing job". Genuine bugs keep their full traceback.
    """
    import hydra

    from effnn.config import register_configs

    register_configs()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv[1:] = plus_alias(sys.argv[1:])

    @functools.wraps(task)  # Hydra names the job after the task's file (train.log, ...)
    def job(cfg: Any) -> Any:
        with one_line_errors(usage):
            return task(cfg)

    app = hydra.main(version_base="1.3", config_path=str(Path(config_dir).resolve()), config_name=config_name)(job)
    with one_line_errors(usage):
        return app()
