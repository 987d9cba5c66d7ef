"""``benchmarks/run_all.py``: the CLI writes its JSON, Markdown and plots, and degrades to clear rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_all  # noqa: E402
import speed  # noqa: E402
from claims import CLAIMS  # noqa: E402

from tests.conftest import run_cli  # noqa: E402


def test_only_selects_and_rejects_names() -> None:
    assert run_all.select("speed") == ({b.name for b in speed.SPEED_BENCHES}, [])
    assert run_all.select("cpt,bn_calibration") == ({"bn_calibration"}, ["cpt"])
    assert run_all.select(None)[1] == list(CLAIMS)
    with pytest.raises(SystemExit, match="unknown --only entries"):
        run_all.select("cpt,nope")


def test_budget_overrides_change_fields_and_name() -> None:
    base = run_all.get_budget("quick")
    changed = run_all.budget_with(base, ["supernet_epochs=24", "limit_train_batches=none"])
    assert changed.supernet_epochs == 24 and changed.limit_train_batches is None
    assert changed.precision_epochs == base.precision_epochs and "supernet_epochs=24" in changed.name
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        run_all.budget_with(base, ["epochs=3"])
    with pytest.raises(SystemExit, match="integer"):
        run_all.budget_with(base, ["supernet_epochs=many"])


def test_missing_speed_script_is_reported_not_faked(tmp_path: Path) -> None:
    bench = speed.SpeedBench("ghost", "bench_does_not_exist.py", "nothing")
    entry = speed.run_speed_bench(bench, "smoke", tmp_path, timeout=10)
    assert entry["status"] == "not available yet" and "ratios" not in entry


STUB_BENCH = """
import argparse, json, time
parser = argparse.ArgumentParser()
parser.add_argument("--json")
parser.add_argument("--repeats", type=int, default=9)
args = parser.parse_args()
def timed(n):
    start = time.perf_counter()
    sum(range(n))
    return time.perf_counter() - start
ratio = sorted(timed(200_000) / timed(100_000) for _ in range(args.repeats))[args.repeats // 2]
print(f"double / single work: {ratio:.2f}x")
json.dump({"repeats": args.repeats, "ratios": {"double / single work": ratio}}, open(args.json, "w"))
"""


def test_run_all_writes_speed_results_report_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_all's speed path end to end with a stub script: flags read from its source, the --json result
    passed through, tables, summary, report and plot written; then --report-only rebuilds them."""
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "bench_stub.py").write_text(STUB_BENCH)
    monkeypatch.setattr(speed, "BENCH_DIR", bench_dir)
    monkeypatch.setattr(speed, "SPEED_BENCHES", (speed.SpeedBench("stub", "bench_stub.py", "a stub"),))
    out = tmp_path / "out"
    assert run_all.main(["--smoke", "--only", "stub", "--out", str(out), "--no-progress"]) == 0
    entry = json.loads((out / "speed_stub.json").read_text())
    assert entry["status"] == "ok" and entry["source"] == "json" and entry["mode"] == "smoke"
    assert entry["data"]["repeats"] == speed.FEWER_REPEATS["smoke"]  # no --smoke/--quick flag: fewer repeats
    assert entry["ratios"] == entry["data"]["ratios"]
    assert entry["ratios"]["double / single work"] > 0  # a measured timing ratio: its size is the machine's
    summary = json.loads((out / "summary.json").read_text())
    machine = summary["invocations"][-1]["machine"]
    assert summary["mode"] == "smoke" and machine["nproc"] >= 1 and machine["torch"]
    assert "| speed: stub | ok |" in (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert run_all.main(["--smoke", "--report-only", "--out", str(out), "--no-progress"]) == 0
    assert "| speed: stub | ok |" in (out / "report.md").read_text()
    assert (out / "speed_ratios.png").stat().st_size > 0
    assert len(json.loads((out / "summary.json").read_text())["invocations"]) == 1  # report-only adds none


def test_bn_calibration_timings_add_up() -> None:
    import bench_bn_calibration
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: extra threads only contend on a shared machine
    try:
        result = bench_bn_calibration.measure(calib_batches=2, repeats=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    archs = result["archs"]
    assert [a["name"] for a in archs] == ["min", "mid_small", "mid_large", "max"]
    for a in archs:  # the parts add up to the total, and the rate is its inverse
        assert a["total_ms"] == pytest.approx(a["recalibrate_ms"] + a["extract_ms"] + a["evaluate_ms"])
        assert a["subnets_per_s"] == pytest.approx(1000.0 / a["total_ms"])
    assert result["ratios"]["max arch / min arch time"] == pytest.approx(archs[-1]["total_ms"] / archs[0]["total_ms"])
    assert result["eval_images"] == 270 and result["calib_batches"] == 2


@pytest.mark.slow
def test_run_all_smoke_runs_everything(tmp_path: Path) -> None:
    """The whole benchmark at smoke size, as a user runs it: every claim and speed benchmark reports."""
    proc = run_cli(["benchmarks/run_all.py", "--smoke", "--out", str(tmp_path), "--no-progress"], timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for claim in CLAIMS.values():
        entry = json.loads((tmp_path / f"claim{claim.number}_{claim.key}.json").read_text())
        assert entry["status"] in ("ok", "not available yet"), entry
        if entry["status"] == "ok":
            assert entry["held"] in (True, False, None) and entry["table"]["rows"]
            assert (tmp_path / entry["plot"]).stat().st_size > 0
    for bench in speed.SPEED_BENCHES:
        entry = json.loads((tmp_path / f"speed_{bench.name}.json").read_text())
        assert entry["status"] in ("ok", "not available yet"), entry
        if entry["status"] == "ok":
            assert entry["ratios"]
    assert "effnn benchmarks" in proc.stdout
