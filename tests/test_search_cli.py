"""tools/search.py and tools/export.py as a user runs them: outputs, kill + resume, fine-tuning, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli
from search_support import write_checkpoint

SMALL = ["data.resolution=16", "search.population=6", "search.generations=4", "search.parents=3",
         "search.num_mutations=3", "search.num_crossovers=3", "search.calibration.batches=2"]
ENV = {"OMP_NUM_THREADS": "1"}


def search(ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(["tools/search.py", f"ckpt={ckpt}", f"out={out}", *SMALL, *extra], env=ENV)


def one_error_line(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_arguments_are_one_line(tmp_path: Path) -> None:
    one_error_line(run_cli(["tools/search.py", f"out={tmp_path / 'x'}"]), "missing ckpt=")
    assert not (tmp_path / "x").exists()  # named before Hydra makes the run directory
    one_error_line(run_cli(["tools/export.py", "ckpt=x"]), "missing arch= and out=")


@pytest.mark.slow
def test_search_outputs_and_kill_resume(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    full = search(ckpt, tmp_path / "full", "search.objectives=[acc,latency_ms]")
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "full"
    rows = (out / "pareto.csv").read_text().splitlines()
    assert rows[0].split(",")[:7] == ["name", "acc", "macs", "params", "latency_ms", "energy", "edp"]
    archs = sorted((out / "archs").glob("pareto_*.yaml"))
    assert len(archs) == len(rows) - 1 >= 1
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "search_state.json").read_text())["generation"] == 4

    killed = tmp_path / "killed"  # SIGKILLed by its own observer right after generation 1 is saved
    proc = search(ckpt, killed, "search.objectives=[acc,latency_ms]",
                  "+observers.kill._target_=effnn.search.observers.KillAtGeneration", "+observers.kill.generation=1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    state = killed / "search_state.json"
    stopped_at = json.loads(state.read_text())["generation"]
    assert stopped_at == 1 and not (killed / "pareto.csv").exists()

    again = search(ckpt, killed, "search.objectives=[acc,latency_ms]")  # forgot resume=true
    assert again.returncode == 2 and "pass resume=true" in again.stderr
    resumed = search(ckpt, killed, "search.objectives=[acc,latency_ms]", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (killed / "pareto.csv").read_text() == (out / "pareto.csv").read_text()
    assert json.loads(state.read_text())["evaluations"] == json.loads(
        (out / "search_state.json").read_text())["evaluations"]


@pytest.mark.slow
def test_co_search_reports_the_best_accelerator(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    proc = search(ckpt, tmp_path / "co", "search.hardware.co_search=true", "search.objectives=[acc,edp]",
                  "search.hardware.budget.max_pes=256", "search.generations=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in (tmp_path / "co" / "archs").glob("pareto_*.yaml"):
        data = yaml.safe_load(path.read_text())
        best, searched = data["best_hardware"], data["hardware"]
        assert best["rows"] * best["cols"] <= 256 and searched["rows"] * searched["cols"] <= 256
        assert best["metrics"]["edp"] <= data["metrics"]["edp"]


@pytest.mark.slow
def test_export_cli_and_fine_tune(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    assert search(ckpt, tmp_path / "s", "search.generations=1").returncode == 0
    arch = tmp_path / "s" / "archs" / "pareto_000.yaml"
    proc = run_cli(["tools/export.py", f"ckpt={ckpt}", f"arch={arch}", f"out={tmp_path / 'e'}",
                    "data.resolution=16", "calibration.batches=2"], env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    assert set(meta["files"].values()) == {"arch.yaml", "model.safetensors", "model.pt2", "model.onnx"}
    acc = meta["accuracy"]
    assert abs(acc["test_acc_exported"] - acc["test_acc_supernet"]) <= 1.0
    # the exported model's val accuracy is the one the search reported for that arch (up to float rounding:
    # the search ran NHWC, the static model runs NCHW)
    assert abs(acc["val_acc_exported"] - yaml.safe_load(arch.read_text())["metrics"]["acc"]) <= 1.0
    train = run_cli(["train.py", "model=exported", f"model.path={tmp_path / 'e'}", "trainer.max_epochs=1",
                     "logger=none", f"paths.log_dir={tmp_path / 'logs'}", "data.resolution=16"], env=ENV)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "test/acc" in train.stdout + train.stderr


@pytest.mark.slow
def test_bad_input_gives_one_error_line(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    (tmp_path / "corrupt.ckpt").write_bytes(ckpt.read_bytes()[:4000])
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(10, 4)}}, tmp_path / "cls.ckpt")
    arch = {"resolution": 16, "width": [8, 8, 16, 24, 48], "depth": [1, 2, 3], "kernel_size": [3, 5, 3],
            "expand_ratio": [1, 3, 2]}
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    one_error_line(search(tmp_path / "corrupt.ckpt", tmp_path / "a"), "corrupt or truncated")
    one_error_line(search(tmp_path / "cls.ckpt", tmp_path / "b"), "is not a supernet checkpoint")
    one_error_line(search(ckpt, tmp_path / "c", "search.objectives=[acc,flops]"), "unknown metric(s) ['flops']")
    one_error_line(run_cli(["tools/export.py", f"ckpt={ckpt}", f"arch={tmp_path / 'arch.yaml'}",
                            f"out={tmp_path / 'e'}", "data.resolution=16"], env=ENV),
                   "arch.depth[2]=3 is not in space 'micro'")


@pytest.mark.slow
def test_search_and_export_a_train_py_alphanet_checkpoint(tmp_path: Path) -> None:
    """The real pipeline end to end: a (briefly trained) `+recipe=alphanet` run, searched and exported."""
    logs = tmp_path / "logs"
    train = run_cli(["train.py", "+recipe=alphanet", "trainer.max_epochs=1", "+trainer.limit_train_batches=3",
                     "+trainer.limit_val_batches=1", "test=false", "logger=none", f"paths.log_dir={logs}"], env=ENV)
    assert train.returncode == 0, train.stderr[-3000:]
    (ckpt,) = logs.glob("alphanet/runs/*/checkpoints/last.ckpt")
    proc = run_cli(["tools/search.py", f"ckpt={ckpt}", f"out={tmp_path / 's'}", "search.population=4",
                    "search.generations=1", "search.parents=2", "search.num_mutations=2", "search.num_crossovers=2",
                    "search.calibration.batches=2"], env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    arch = tmp_path / "s" / "archs" / "pareto_000.yaml"
    proc = run_cli(["tools/export.py", f"ckpt={ckpt}", f"arch={arch}", f"out={tmp_path / 'e'}",
                    "calibration.batches=2", "program=none"], env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    assert meta["space"]["name"] == "tiny32" and max(meta["checks"]["max_abs_diff"].values()) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("choice", [[], ["hardware=systolic_32x32_ws"]])
def test_train_py_and_search_report_the_same_accelerator(tmp_path: Path, choice: list[str]) -> None:
    """As a user runs them: `train.py +recipe=alphanet` logs hw/latency_ms and hw/energy of the largest subnet,
    `tools/search.py` writes latency_ms and energy of every Pareto arch; both are the `hardware` group's
    accelerator (default systolic_16x16_os), and `hardware=systolic_32x32_ws` on both changes both. Training
    logs the SCALE-Sim model (energy-table units), the search the PPA model in SCALE-Sim mode on the same
    array (uJ, the preset's PE type); where the PEs do one MAC per cycle (the default preset) the latencies
    are equal."""
    import csv

    from effnn.config import DEFAULT_HARDWARE
    from effnn.hw import build_cost_model
    from effnn.hw.mapping import cost_model_for_preset
    from effnn.nas import Arch, get_space

    run = tmp_path / "run"
    train = run_cli(["train.py", "+recipe=alphanet", *choice, "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                     "+trainer.limit_val_batches=1", "test=false", "logger=csv", "callbacks.rich_progress_bar=null",
                     "+trainer.enable_progress_bar=false", f"hydra.run.dir={run}", "model.bn_calibration_batches=1"],
                    env=ENV)
    assert train.returncode == 0, train.stderr[-3000:]
    logged = [r for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("hw/latency_ms")][-1]
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = run_cli(["tools/search.py", f"ckpt={ckpt}", f"out={tmp_path / 's'}", *choice, "search.population=4",
                    "search.generations=1", "search.parents=2", "search.num_mutations=2", "search.num_crossovers=2",
                    "search.calibration.batches=1", "progress=false"], env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    space = get_space("tiny32")
    preset = choice[0].split("=")[1] if choice else DEFAULT_HARDWARE
    model, ppa = build_cost_model(preset), cost_model_for_preset(preset, mode="scalesim")

    def cost(arch: Arch, of=model) -> dict[str, float]:  # digits: 10 classes, 3 channels
        return of.score_sections(space.workload_sections(arch, 10, 3))

    largest = cost(space.max_arch())
    assert float(logged["hw/latency_ms"]) == pytest.approx(largest["latency_ms"], rel=1e-6)
    assert float(logged["hw/energy"]) == pytest.approx(largest["energy"], rel=1e-6)
    for row in csv.DictReader((tmp_path / "s" / "pareto.csv").open()):
        arch = Arch.from_dict(json.loads(row["arch"]))
        expected = cost(arch, ppa)
        for name in ("latency_ms", "energy", "area_mm2", "power_mw"):
            assert float(row[name]) == pytest.approx(expected[name], rel=1e-6), name
        if not choice:
            assert float(row["latency_ms"]) == pytest.approx(cost(arch)["latency_ms"], rel=1e-6)
