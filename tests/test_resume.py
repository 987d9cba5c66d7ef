"""Kill a training run with SIGKILL mid-epoch, resume from last.ckpt, and check it finishes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

RECIPES = {
    "classification": ["data=synthetic", "data.num_samples=4000", "trainer.max_epochs=3"],
    "alphanet": ["trainer.max_epochs=3", "data.batch_size=64", "+trainer.limit_train_batches=12",
                 "+trainer.limit_val_batches=2"],
}
COMMON = ["logger=csv", "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false"]


def _launch(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_sigkill_mid_epoch_then_resume(recipe: str, tmp_path: Path) -> None:
    if not (ROOT / "recipes" / f"{recipe}.yaml").exists():
        pytest.skip(f"recipe {recipe} not present")
    args = [f"+recipe={recipe}", *RECIPES[recipe], *COMMON]
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    proc = _launch([*args, f"hydra.run.dir={tmp_path / 'first'}"])
    deadline = time.time() + 600
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), f"no checkpoint before the deadline:\n{proc.stdout.read()[-3000:] if proc.stdout else ''}"
    time.sleep(0.3)  # into the next epoch, well before the run ends
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _ckpt(last)  # the kill never truncates last.ckpt (atomic writes)
    assert killed["epoch"] < 2, "the kill came after the last epoch's checkpoint; the run is too short to test resume"
    steps_per_epoch = killed["global_step"] // (killed["epoch"] + 1)
    assert killed["global_step"] > 0

    resumed = _launch([*args, f"hydra.run.dir={tmp_path / 'second'}", f"ckpt_path={last}"])
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-4000:]
    assert "Restored all states" in out
    final = _ckpt(tmp_path / "second" / "checkpoints" / "last.ckpt")
    max_epochs = 3
    assert final["epoch"] == max_epochs - 1
    assert final["global_step"] == max_epochs * steps_per_epoch  # nothing skipped, nothing done twice
    # the LR schedule continued from the checkpoint instead of restarting
    sched = final.get("lr_schedulers") or []
    if sched:
        assert sched[0]["last_epoch"] == final["global_step"]
    # loop state restored: the resumed run began at the killed checkpoint's step (at most one epoch redone)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "second" / "csv" / "metrics.csv")))
    first_step = min(int(r["step"]) for r in rows if r.get("step"))
    assert first_step >= killed["global_step"] - 1
