"""Kill a training run with SIGKILL at an exact step, resume from last.ckpt, and check the resumed run ends with
exactly the metrics of the uninterrupted run (same seed, CPU).

The kill is a callback (``effnn.callbacks.KillAtStep``) that SIGKILLs its own process after a given optimizer
step: no sleeps, no polling, the same point on every machine. Exact equality needs the data order
(``EpochShuffle``: a function of seed and epoch) and the global RNG states (``RestoreRNG``) to continue where
the killed run was; before those, a resumed run drew other batches and other random numbers (issue 17.6).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

# (overrides, steps per epoch, kill step): the kill lands mid-epoch 1, after epoch 0's checkpoint
RECIPES = {
    "classification": (["data=synthetic", "data.num_samples=512", "trainer.max_epochs=3"], 9, 12),
    "alphanet": (["trainer.max_epochs=3", "data.batch_size=64", "+trainer.limit_train_batches=6",
                  "+trainer.limit_val_batches=2"], 6, 8),
}
COMMON = ["logger=csv", "trainer.enable_model_summary=false"]


def _train(args: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def kill_and_resume(recipe: str, tmp_path: Path) -> None:
    overrides, steps_per_epoch, kill_step = RECIPES[recipe]
    args = [f"+recipe={recipe}", *overrides, *COMMON]
    full = _train(args, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]

    killed = _train([*args, "+callbacks.kill._target_=effnn.callbacks.KillAtStep",
                     f"+callbacks.kill.step={kill_step}"], tmp_path / "killed")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # SIGKILL, nothing cleaned up
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    saved = _ckpt(last)  # atomic writes: the kill never truncates last.ckpt
    assert saved["epoch"] == 0 and saved["global_step"] == steps_per_epoch

    resumed = _train([*args, f"ckpt_path={last}"], tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stdout + resumed.stderr
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())
    got = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert got == expected and len(expected) >= 4  # every metric, exactly, not approximately
    final = _ckpt(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    reference = _ckpt(tmp_path / "full" / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 3 * steps_per_epoch  # nothing skipped, nothing done twice
    for key, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    sched = final.get("lr_schedulers") or []
    if sched:  # the LR schedule continued from the checkpoint instead of restarting
        assert sched[0]["last_epoch"] == final["global_step"]
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "csv" / "metrics.csv")))
    assert min(int(r["step"]) for r in rows if r.get("step")) >= steps_per_epoch  # began at the checkpoint


def test_sigkill_then_resume_equals_uninterrupted_classification(tmp_path: Path) -> None:
    kill_and_resume("classification", tmp_path)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_alphanet(tmp_path: Path) -> None:
    """The supernet draws archs from the global RNG every step: this one needs ``RestoreRNG``."""
    kill_and_resume("alphanet", tmp_path)


def test_epoch_shuffle_depends_only_on_seed_and_epoch() -> None:
    from effnn.data.base import EpochShuffle

    a, b = EpochShuffle(50, seed=7), EpochShuffle(50, seed=7)
    a.set_epoch(3)
    torch.manual_seed(0)
    first = list(a)
    torch.rand(100)  # the global RNG moves; the order must not
    b.set_epoch(3)
    assert list(b) == first and sorted(first) == list(range(50))
    b.set_epoch(4)
    assert list(b) != first
