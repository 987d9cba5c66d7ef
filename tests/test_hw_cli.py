"""tools/hwcost.py: SCALE-Sim files in, SCALE-Sim's numbers out (JSON or a table); spaces and exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

# SCALE-Sim's outputs copied into the repo (tests/data/scalesim/shared): a missing file fails, never skips
SHARED = Path(__file__).resolve().parent / "data" / "scalesim" / "shared"


def _tool():
    """The installed code behind tools/hwcost.py (the tool is a thin wrapper over it)."""
    import effnn.hw.app

    return effnn.hw.app


def _reference(layer: str, dataflow: str) -> dict[str, str]:
    with open(SHARED / "results_8x8.csv") as f:
        return next(r for r in csv.DictReader(f) if r["layer"] == layer and r["dataflow"] == dataflow)


def test_json_reproduces_scalesim_as_a_user_runs_it() -> None:
    layer, dataflow = "res_conv3x3_16x16x32-64_s2", "is"
    proc = run_cli(["tools/hwcost.py", "-c", str(SHARED / "configs" / f"calc64k_8x8_{dataflow}.cfg"),
                    "-t", str(SHARED / "topologies" / f"{layer}.csv"), "--json"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    ref = _reference(layer, dataflow)
    (row,) = report["layers"]
    assert row["name"] == layer
    assert row["compute_cycles"] == int(ref["compute_cycles"])
    assert row["sram_reads"] == {"ifmap": int(ref["sram_ifmap_reads"]),
                                 "filter": int(ref["sram_filter_reads"])}
    assert row["sram_writes"] == {"ofmap": int(ref["sram_ofmap_writes"])}
    assert row["dram_reads"]["ifmap"] == int(ref["dram_ifmap_reads"])
    for key in ("name", "macs", "compute_cycles", "stall_cycles", "total_cycles", "overall_util",
                "mapping_efficiency", "dram_writes", "energy", "latency_s"):
        assert key in row
    assert report["total"]["compute_cycles"] == row["compute_cycles"]


def test_gemm_topology_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    tool = _tool()
    args = ["-c", str(SHARED / "configs" / "calc64k_8x8_ws.cfg"),
            "-t", str(SHARED / "topologies" / "gemm_M64_N128_K256.csv"), "--gemm"]
    assert tool.main([*args, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["layers"][0]
    assert row["compute_cycles"] == int(_reference("gemm_M64_N128_K256", "ws")["compute_cycles"])
    assert tool.main(args) == 0
    table = capsys.readouterr().out
    assert "gemm_M64_N128_K256" in table and f"{row['compute_cycles']:,}" in table and "latency" in table


def test_space_arch_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from effnn.hw import build_cost_model
    from effnn.nas import get_space

    space = get_space("attentivenas")
    arch = space.min_arch()
    arch_file = tmp_path / "a0.yaml"
    arch_file.write_text(yaml.safe_dump({**arch.to_dict(), "name": "A0"}))
    tool = _tool()
    assert tool.main(["--space", "attentivenas", "--arch", str(arch_file), "--hardware", "systolic_32x32_ws",
                      "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    expected = build_cost_model("systolic_32x32_ws")(space, arch)
    assert total["macs"] == expected["macs"] and total["params"] == expected["params"]
    assert total["latency_ms"] == pytest.approx(expected["latency_ms"])
    assert total["energy"] == pytest.approx(expected["energy"])


def test_exported_subnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An export directory (arch + weights) is loaded with effnn.export.load_exported and traced."""
    from safetensors.torch import save_file

    from effnn.export.artifact import ARCH_FILE, EXPORT_FORMAT, EXPORT_VERSION, META_FILE, space_to_dict
    from effnn.hw import build_cost_model
    from effnn.nas import build_supernet, get_space

    space = get_space("tiny32")
    arch = space.min_arch()
    static = build_supernet(space, num_classes=10).extract(arch)
    (tmp_path / META_FILE).write_text(json.dumps({
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "space": space_to_dict(space),
        "arch": arch.to_dict(), "num_classes": 10, "in_chans": 3}))
    (tmp_path / ARCH_FILE).write_text(yaml.safe_dump(arch.to_dict()))
    weights = {k: v.contiguous() for k, v in static.state_dict().items()}
    save_file(weights, str(tmp_path / "model.safetensors"))
    tool = _tool()
    assert tool.main(["--exported", str(tmp_path), "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    expected = build_cost_model("systolic_16x16_os")(space, arch, num_classes=10)
    assert total["macs"] == expected["macs"] and total["energy"] == pytest.approx(expected["energy"])


def test_bad_input_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "topo.csv"
    bad.write_text("Layer name, H, W, R, S, C, M, Stride,\n"
                   "conv1, 10, 10, 3, 3, 8, 4, 1,\n"
                   "conv2, 10, 10, 3,\n")
    tool = _tool()
    assert tool.main(["-t", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and f"{bad}:3:" in err
    assert tool.main(["-t", str(bad), "--hardware", "nope"]) == 2
    assert "unknown hardware preset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--space", "attentivenas"])  # --arch missing: argparse usage error


def test_space_subnet_defaults_to_the_spaces_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--space tiny32`` prices the 10-class head tiny32 is made for (digits, CIFAR-10), not ImageNet's 1000;
    ``--num-classes`` still overrides it."""
    from effnn.nas import get_space

    space = get_space("tiny32")
    arch = space.min_arch()
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(arch.to_dict()))
    for extra, classes in (([], 10), (["--num-classes", "100"], 100)):
        assert _tool().main(["--space", "tiny32", "--arch", str(path), "--json", *extra]) == 0
        layers = json.loads(capsys.readouterr().out)["layers"]
        assert layers[-1]["name"] == "classifier" and layers[-1]["macs"] == arch.width[-1] * classes
