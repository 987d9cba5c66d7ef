"""Reliability: one-line errors for bad input, atomic checkpoints, determinism, sweeps that survive bad trials."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from effnn.errors import CheckpointError
from effnn.io import atomic_write
from effnn.lit.checkpoint_io import load_checkpoint_file
from effnn.pipeline import train
from tests.conftest import run_cli

QUIET = ["callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _one_error_line(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_config_key_points_at_plus_syntax(tmp_path: Path) -> None:
    line = _one_error_line(run_cli(["train.py", "trainer.max_epoch=3", f"hydra.run.dir={tmp_path}"]))
    assert "'trainer.max_epoch'" in line and "+trainer.max_epoch=" in line


def test_plus_on_an_existing_key_says_to_drop_it(tmp_path: Path) -> None:
    line = _one_error_line(run_cli(["train.py", "+trainer.max_epochs=3", f"hydra.run.dir={tmp_path}"]))
    assert "'trainer.max_epochs' is already in the config" in line and "trainer.max_epochs=VALUE" in line


def test_unknown_key_inside_a_sweep_is_caught(tmp_path: Path) -> None:
    line = _one_error_line(run_cli(["train.py", "-m", "model.optimizer.lrr=0.1,0.2", f"hydra.sweep.dir={tmp_path}"]))
    assert "model.optimizer.lrr" in line


def test_wrong_type_names_the_key_and_the_fix(tmp_path: Path) -> None:
    """Structured configs (effnn.config) make Hydra reject a value of the wrong type while composing."""
    line = _one_error_line(run_cli(["train.py", "hardware.array.rows=many", f"hydra.run.dir={tmp_path}"]))
    assert "hardware.array.rows" in line and "'many'" in line and "Integer" in line


def test_unknown_recipe_is_one_line_with_the_list(tmp_path: Path) -> None:
    line = _one_error_line(run_cli(["train.py", "+recipe=alphanett", f"hydra.run.dir={tmp_path}"]))
    assert "'alphanett'" in line and "alphanet," in line and "_supernet" not in line


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"good")

    def dies_halfway(f) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt  # what a kill looks like from inside the writer

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_halfway)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint_file(bad)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_checkpoint_file(foreign)


def test_train_cli_rejects_corrupt_and_mismatched_checkpoint(make_cfg, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    line = _one_error_line(run_cli(["train.py", f"ckpt_path={bad}", "data=synthetic", "logger=none",
                                    "callbacks=none", f"hydra.run.dir={tmp_path / 'r1'}"]))
    assert "corrupt or truncated" in line and str(bad) in line
    # a checkpoint of another model (small_cnn) given to a ResNet-8 run
    train(make_cfg("data=synthetic", "trainer.max_epochs=1", "model.net.name=small_cnn", "test=false", *QUIET))
    other = tmp_path / "checkpoints" / "last.ckpt"
    line = _one_error_line(run_cli(["train.py", f"ckpt_path={other}", "data=synthetic", "logger=none",
                                    "callbacks=none", f"hydra.run.dir={tmp_path / 'r2'}"]))
    assert "does not fit this model" in line


def test_same_seed_same_metrics(make_cfg) -> None:
    overrides = ("data=synthetic", "trainer.max_epochs=2", "logger=none", "callbacks=none",
                 "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
    first = train(make_cfg(*overrides))
    second = train(make_cfg(*overrides))
    assert first == second
    assert not math.isnan(first["val/loss"])


@pytest.mark.slow
def test_failed_trial_does_not_end_the_sweep(tmp_path: Path) -> None:
    res = run_cli(["train.py", "-m", "data=synthetic", "data.batch_size=32,-1", "trainer.max_epochs=1",
                   "logger=csv", "callbacks=none", "+trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "0" / "csv" / "metrics.csv").exists()
    assert "data.batch_size must be positive" in (tmp_path / "1" / "train.log").read_text()


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_best(tmp_path: Path) -> None:
    res = run_cli(["train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "data=synthetic",
                   "trainer.max_epochs=1", "logger=none", "callbacks=none", "+trainer.enable_progress_bar=false",
                   f"hydra.sweep.dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-3000:]
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert 0.0 <= result["best_value"] <= 1.0
    assert "model.optimizer.lr" in result["best_params"]


@pytest.mark.slow
def test_glob_recipe_sweep(tmp_path: Path) -> None:
    res = run_cli(["train.py", "-m", "+recipe=glob(classif*,exclude=_*)", "data=synthetic", "trainer.max_epochs=1",
                   "logger=none", "callbacks=none", "+trainer.enable_progress_bar=false",
                   f"hydra.sweep.dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "recipe=classification" in (tmp_path / "0" / ".hydra" / "overrides.yaml").read_text()


def test_slurm_launcher_composes(tmp_path: Path) -> None:
    from tests.conftest import compose_config

    cfg = compose_config(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
                         output_dir=tmp_path)
    assert cfg.trainer.num_nodes == 2
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose("config", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                            "trainer.num_nodes=2"], return_hydra_config=True)
    launcher = full.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes == "${trainer.num_nodes}" or launcher.nodes == 2


def test_bit_width_outside_1_to_32_is_one_line(tmp_path: Path) -> None:
    line = _one_error_line(run_cli(["train.py", "+recipe=cpt", "callbacks.cyclic_precision.q_max=40",
                                    f"hydra.run.dir={tmp_path}", "logger=none"]))
    assert "callbacks.cyclic_precision" in line and "[1, 32]" in line and "40" in line


def test_constructor_value_errors_name_the_config_entry(make_cfg) -> None:
    from effnn.errors import ConfigError

    with pytest.raises(ConfigError, match="data.batch_size must be positive"):
        train(make_cfg("data.batch_size=-3"))


def test_supernet_checkpoint_from_another_space_is_rejected(make_cfg, tmp_path: Path) -> None:
    import hydra

    from effnn.pipeline import check_checkpoint

    tiny = hydra.utils.instantiate(make_cfg("+recipe=alphanet").model)
    ckpt = tmp_path / "tiny32.ckpt"
    torch.save({"state_dict": tiny.state_dict(), "epoch": 0, "global_step": 0}, ckpt)
    other = hydra.utils.instantiate(make_cfg("+recipe=alphanet", "model.space=attentivenas").model)
    with pytest.raises(CheckpointError, match="does not fit this model/config: .*shape mismatches"):
        check_checkpoint(str(ckpt), other)
    check_checkpoint(str(ckpt), tiny)  # the same space loads
