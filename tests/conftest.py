"""Shared fixtures: config composition without a Hydra run, and a small CPU thread budget."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from effnn.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# OMP_NUM_THREADS=1 is much faster on a busy shared CPU (two spinning OpenMP threads on two loaded cores)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
register_configs()  # the structured-config schemas the CLIs register (hardware, search, SmartDeal)


def compose_config(overrides: Sequence[str] = (), output_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides as ``train.py`` would (``+recipe=x`` included, see
    effnn.cli.plus_alias), with paths under ``output_dir``."""
    from effnn.cli import plus_alias

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=plus_alias(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.root_dir = str(ROOT)
            cfg.paths.data_dir = str(output_dir / "data")
            cfg.paths.log_dir = str(output_dir / "logs")
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("+recipe=x", "trainer.max_epochs=1")`` -> composed config writing under tmp_path."""

    def _make(*overrides: str) -> DictConfig:
        return compose_config(overrides, output_dir=tmp_path)

    return _make


def run_cli(args: Sequence[str], cwd: Path = ROOT, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a repo script (``train.py``, ``tools/x.py``) in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": full_env.get("OMP_NUM_THREADS", "2")})
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)
