"""End-to-end: a few real training steps on digits, checkpoints/events on disk, CLI errors, a 2-job sweep."""

from __future__ import annotations

from pathlib import Path

from effnn.pipeline import optimized_value, train
from tests.conftest import run_cli


def test_train_on_digits_learns_and_writes_outputs(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("trainer.max_epochs=2", "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false")
    metrics = train(cfg)
    assert metrics["val/acc"] > 0.6, metrics  # chance is 0.1; two epochs on digits reach ~0.9
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert optimized_value(cfg, metrics) == metrics["val/acc"]
    ckpts = {p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in ckpts and any(n.startswith("epoch_") for n in ckpts)
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_unknown_recipe_is_one_line_listing_recipes(tmp_path: Path) -> None:
    res = run_cli(["train.py", "+recipe=does_not_exist", f"hydra.run.dir={tmp_path}"])
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "does_not_exist" in lines[0] and "classification" in lines[0]


def test_missing_dataset_root_is_one_line(tmp_path: Path) -> None:
    res = run_cli(["train.py", "data=cifar10", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}",
                   "logger=none", "callbacks=none"])
    assert res.returncode == 2, res.stderr[-2000:]
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "cifar-10-batches-py" in err[0] and "nowhere" in err[0]


def test_multirun_sweep_of_two_values_produces_two_jobs(tmp_path: Path) -> None:
    res = run_cli(["train.py", "-m", "trainer.max_epochs=1", "model.optimizer.lr=0.1,0.05", "data=synthetic",
                   f"hydra.sweep.dir={tmp_path}", "logger=csv", "callbacks=none",
                   "+trainer.enable_progress_bar=false"])
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    for job in jobs:
        overrides = (tmp_path / job / ".hydra" / "overrides.yaml").read_text()
        assert "model.optimizer.lr" in overrides
        assert (tmp_path / job / "csv" / "metrics.csv").exists()
