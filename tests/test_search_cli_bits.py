"""tools/search.py with bits and accelerator genes, as the issue's Done-when command runs it: a Pareto front of
(arch, bits, accelerator) triples, kill + resume identical, and one-line errors for precision misuse."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from search_support import write_checkpoint, write_quantized_checkpoint
from test_search_cli import ENV, SMALL, one_error_line

from effnn.hw import build_cost_model
from effnn.search.hardware import Accelerator, AreaModel

JOINT = ["search.bits.enabled=true", "search.hardware.co_search=true", "search.objectives=[acc,edp]"]


def _budget() -> float:
    """An area budget (mm^2) that admits 16x16 arrays of 4-bit int_mac PEs but not 8-bit ones with 64 kB SRAMs."""
    base = build_cost_model("systolic_16x16_os").array
    acc = Accelerator(16, 16, "os", 64.0, 64.0, 64.0, "int_mac")
    low, high = (AreaModel().ppa(acc, base.clock_mhz, (b, b)).area_mm2() for b in (4, 8))
    return round((low + high) / 2, 4)


def search(ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(["tools/search.py", f"ckpt={ckpt}", f"out={out}", *SMALL, "search.generations=3", *extra],
                   env=ENV)


@pytest.mark.slow
def test_joint_search_front_of_triples_and_kill_resume(tmp_path: Path) -> None:
    ckpt = write_quantized_checkpoint(tmp_path / "q" / "last.ckpt")
    budget = _budget()
    args = [*JOINT, f"search.hardware.budget.max_area_mm2={budget}"]
    full = search(ckpt, tmp_path / "full", *args)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "full"
    header = (out / "pareto.csv").read_text().splitlines()[0].split(",")
    assert {"bits", "pe_type", "mapping", "hardware", "area_mm2", "power_mw", "edp"} <= set(header)
    archs = sorted((out / "archs").glob("pareto_*.yaml"))
    assert archs
    for path in archs:
        data = yaml.safe_load(path.read_text())
        assert set(data["bits"]) == {"weight", "act"} and len(data["bits"]["weight"]) == 3
        assert {"pe_type", "mapping"} <= set(data["hardware"]) and data["metrics"]["area_mm2"] <= budget
    state = json.loads((out / "search_state.json").read_text())
    assert state["context"]["bits"] == {"weight": [4, 8], "act": [4, 8]}
    evaluated = [e["candidate"] for e in state["evaluations"]]
    assert len({json.dumps(c["bits"]) for c in evaluated}) > 1
    assert len({c["hardware"]["pe_type"] for c in evaluated}) > 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert {"search/min_power_mw", "search/min_area_mm2", "search/min_edp"} <= set(events.Tags()["scalars"])

    killed = tmp_path / "killed"
    proc = search(ckpt, killed, *args, "+observers.kill._target_=effnn.search.observers.KillAtGeneration",
                  "+observers.kill.generation=1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert json.loads((killed / "search_state.json").read_text())["generation"] == 1
    changed = search(ckpt, killed, *JOINT, "search.hardware.budget.max_area_mm2=9", "resume=true")
    assert changed.returncode == 2 and "cannot resume" in changed.stderr
    resumed = search(ckpt, killed, *args, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (killed / "pareto.csv").read_text() == (out / "pareto.csv").read_text()
    assert json.loads((killed / "search_state.json").read_text())["evaluations"] == state["evaluations"]


@pytest.mark.slow
def test_bits_on_a_checkpoint_without_precision_is_one_line(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    one_error_line(search(ckpt, tmp_path / "x", "search.bits.enabled=true"), "+recipe=alphanet_quant")
    quantized = write_quantized_checkpoint(tmp_path / "q" / "last.ckpt")
    one_error_line(search(quantized, tmp_path / "y", "search.bits.enabled=true", "search.bits.weight_choices=[2,8]"),
                   "were not trained")
    one_error_line(search(quantized, tmp_path / "z", "search.bits.enabled=true", "search.bits.act_choices=[0]"),
                   "search.bits")
