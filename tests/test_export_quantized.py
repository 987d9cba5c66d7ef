"""Exporting a subnet of a switchable-precision supernet at per-stage bits as a static quantized model.

A micro supernet trained on digits is wrapped in the switchable-precision quantizers and written as a
quantized checkpoint (``search_support.write_quantized_checkpoint``: quantizer buffers + ``precision``
hyper-parameters, as ``+recipe=alphanet_quant`` writes), loaded back with ``load_supernet_checkpoint`` and
exported at mixed bits. The checks: stored weights on each channel's grid, logits equal to the supernet's,
program/ONNX agreement, the val accuracy equal to the search's measurement, and the one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from search_support import digits, write_checkpoint, write_quantized_checkpoint

from effnn.errors import ConfigError
from effnn.export import export_subnet, load_exported
from effnn.export.app import resolve_bits
from effnn.export.artifact import read_arch_bits, read_arch_file
from effnn.export.finetune import exported_classifier
from effnn.export.quantized import QuantConv2d, QuantLinear, parse_bits
from effnn.hw.workload import extract_workload
from effnn.nas import Arch, resize_to
from effnn.nas.precision import BitsWorkload, StageBits
from effnn.search import SubnetAccuracy, fixed_batches, load_supernet_checkpoint, top1_accuracy

ARCH = Arch(16, (8, 8, 16, 24, 48), (1, 2, 2), (3, 5, 3), (1, 3, 2))
BITS = StageBits((8, 4, 4), (8, 8, 4))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("qexport")
    ckpt = write_quantized_checkpoint(tmp / "last.ckpt")
    loaded = load_supernet_checkpoint(ckpt)
    assert loaded.quantized
    dm = digits()
    calib = fixed_batches(dm.train_set, 4, 64, seed=0)
    val = list(dm.val_dataloader())
    verify = val[0][0][:16]
    result = export_subnet(loaded, ARCH, calib, tmp / "out", verify_batch=verify, eval_splits={"val": val},
                           bits=BITS, precision=loaded.precision, bits_space=loaded.bits_space, channels_last=True)
    return {"dir": tmp / "out", "ckpt": ckpt, "result": result, "calib": calib, "val": val, "loaded": loaded}


def quant_layers(model: torch.nn.Module) -> dict[str, QuantConv2d | QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantConv2d | QuantLinear)}


def test_stored_weights_are_each_channels_quantized_grid(exported: dict) -> None:
    model = load_exported(exported["dir"])
    meta = json.loads((exported["dir"] / "export.json").read_text())
    layers = quant_layers(model)
    assert set(layers) == set(meta["quantization"]["layers"]) and meta["quantization"]["bits"] == BITS.to_dict()
    assert "conv_stem" in layers and "classifier" in layers and "blocks.2.se.conv_reduce" in layers
    seen_bits = set()
    for name, layer in layers.items():
        entry = meta["quantization"]["layers"][name]
        assert (layer.weight_bits, layer.act_bits) == (entry["weight_bits"], entry["act_bits"])
        levels = 2 ** layer.weight_bits
        seen_bits.add((layer.weight_bits, layer.act_bits))
        w = layer.weight.detach().flatten(1)
        assert max(len(torch.unique(row)) for row in w) <= levels, name
        q = (w - layer.weight_offset[:, None]) / layer.weight_scale[:, None]
        assert torch.allclose(q, q.round(), atol=1e-3) and q.min() > -1e-3 and q.max() < levels - 1 + 1e-3, name
        lo, hi = layer.act_range.tolist()
        assert [lo, hi] == pytest.approx(entry["act_range"]) and lo < hi
    assert seen_bits == {(8, 8), (4, 8), (4, 4)}  # stem/stage 0, stage 1, stage 2 + head
    # the hardware tracer reads the static layers' bits: the same as the search prices the subnet at
    traced = [(layer.weight_bits, layer.act_bits) for layer in extract_workload(model, (1, 3, 16, 16))]
    priced = [(layer.weight_bits, layer.act_bits) for layer in BitsWorkload(exported["loaded"].space).layers(
        ARCH, BITS, 10, 3)]
    assert traced == priced


def test_logits_equal_the_supernets_and_programs_agree(exported: dict) -> None:
    result, out = exported["result"], exported["dir"]
    assert result.max_abs_diff["static_vs_supernet"] == 0.0 and result.max_abs_diff["model.pt2_vs_static"] == 0.0
    meta = json.loads((out / "export.json").read_text())
    assert meta["checks"]["max_abs_diff"] == result.max_abs_diff
    x = resize_to(torch.cat([b[0] for b in exported["val"]]), ARCH.resolution)
    model = load_exported(out)
    with torch.no_grad():
        ours = model(x)
        assert torch.equal(ours, result.static(x))
        program = torch.export.load(str(out / "model.pt2")).module()
        torch.testing.assert_close(program(x), ours, atol=1e-5, rtol=0)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    agree = (onnx_out.argmax(1) == ours.argmax(1).numpy()).mean()
    close = (np.abs(onnx_out - ours.numpy()).max(1) <= 1e-4).mean()
    assert agree >= 0.99 and close >= 0.95, (agree, close)  # onnxruntime rounds a few boundary values apart
    assert abs(result.accuracy["val_acc_onnx"] - result.accuracy["val_acc_exported"]) <= 1.0


@pytest.mark.parametrize("reuse_mb", [0.0, 64.0])
def test_val_accuracy_equals_the_searchs_measurement(exported: dict, reuse_mb: float) -> None:
    """The search's evaluator (SubnetAccuracy at (arch, bits): bits set, activation ranges reset, BN + range
    recalibration on the same batches, NHWC as search.channels_last; with and without prefix reuse) on a freshly
    loaded checkpoint measures exactly the exported model's val accuracy."""
    loaded = load_supernet_checkpoint(exported["ckpt"])
    evaluator = SubnetAccuracy(loaded.supernet, exported["calib"], exported["val"], channels_last=True,
                               reuse_mb=reuse_mb, precision=loaded.precision)
    evaluator(loaded.space.min_arch(), StageBits.uniform(3, 4))  # whatever ran before must not matter
    searched = evaluator(ARCH, BITS)
    model = load_exported(exported["dir"]).to(memory_format=torch.channels_last)
    val = [(x.to(memory_format=torch.channels_last), y) for x, y in exported["val"]]
    assert top1_accuracy(model, val, ARCH.resolution) == searched
    assert exported["result"].accuracy["val_acc_exported"] == searched
    assert exported["result"].accuracy["val_acc_supernet"] == searched
    assert searched > 30.0  # 10 classes: far above chance even at 4 bits


def test_bits_errors_are_one_line(exported: dict, tmp_path: Path) -> None:
    loaded, calib, verify = exported["loaded"], exported["calib"], exported["val"][0][0][:4]
    fp = load_supernet_checkpoint(write_checkpoint(tmp_path / "fp.ckpt"))
    with pytest.raises(ConfigError, match=r"full-precision supernet; export it without bits") as err:
        export_subnet(fp, ARCH, calib, tmp_path / "a", verify_batch=verify, bits=BITS, precision=fp.precision)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"outside the choices .* trained for: weights in \[4, 8\]"):
        export_subnet(loaded, ARCH, calib, tmp_path / "b", verify_batch=verify, bits=StageBits.uniform(3, 2),
                      precision=loaded.precision, bits_space=loaded.bits_space)
    with pytest.raises(ConfigError, match=r"bits have 2 stages but the supernet .* has 3"):
        export_subnet(loaded, ARCH, calib, tmp_path / "c", verify_batch=verify, bits=StageBits.uniform(2, 8),
                      precision=loaded.precision)
    assert not any((tmp_path / d).exists() for d in "abc")
    with pytest.raises(ConfigError, match=r"is not YAML/JSON"):
        parse_bits("{weight: [8", "bits")
    with pytest.raises(ConfigError, match=r"exactly 'weight' and 'act'"):
        parse_bits('{"weight": [8, 8, 8]}', "bits")
    with pytest.raises(ConfigError, match=r"quantized export \(inference only\)"):
        exported_classifier(str(exported["dir"]), 10, torch.optim.SGD)


def test_bits_come_from_the_command_line_or_the_arch_file(exported: dict, tmp_path: Path) -> None:
    arch_file = tmp_path / "pareto_000.yaml"
    arch_file.write_text(yaml.safe_dump({**ARCH.to_dict(), "bits": BITS.to_dict(), "metrics": {"acc": 50.0}}))
    assert read_arch_file(arch_file) == ARCH and read_arch_bits(arch_file) == BITS
    loaded = exported["loaded"]
    cfg = OmegaConf.create({"arch": str(arch_file), "ckpt": "q.ckpt", "bits": None})
    assert resolve_bits(cfg, loaded) == BITS
    cfg.bits = '{"weight": [8, 8, 8], "act": [4, 4, 4]}'  # the command line wins over the file
    assert resolve_bits(cfg, loaded) == StageBits((8, 8, 8), (4, 4, 4))
    cfg.bits = {"weight": [8, 8, 8], "act": [8, 8, 8]}  # bits={weight: [...], act: [...]} as Hydra parses it
    assert resolve_bits(cfg, loaded) == StageBits.uniform(3, 8)
    fp = load_supernet_checkpoint(write_checkpoint(tmp_path / "fp.ckpt"))
    with pytest.raises(ConfigError, match="full-precision supernet"):
        resolve_bits(OmegaConf.create({"arch": str(arch_file), "ckpt": "fp.ckpt", "bits": None}), fp)
    assert resolve_bits(OmegaConf.create({"arch": "min", "ckpt": "fp.ckpt", "bits": None}), fp) is None


@pytest.mark.slow
def test_export_cli_reads_the_arch_files_bits(tmp_path: Path) -> None:
    from conftest import run_cli

    ckpt = write_quantized_checkpoint(tmp_path / "last.ckpt")
    arch = tmp_path / "pareto_000.yaml"
    arch.write_text(yaml.safe_dump({**ARCH.to_dict(), "bits": BITS.to_dict()}))
    common = [f"ckpt={ckpt}", f"arch={arch}", "data.resolution=16", "calibration.batches=4"]
    proc = run_cli(["tools/export.py", *common, f"out={tmp_path / 'e'}"], env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    assert meta["quantization"]["bits"] == BITS.to_dict()
    acc = meta["accuracy"]
    assert acc["val_acc_exported"] == acc["val_acc_supernet"] and acc["test_acc_exported"] == acc["test_acc_supernet"]
    assert isinstance(load_exported(tmp_path / "e").classifier, QuantLinear)
    bad = run_cli(["tools/export.py", *common, f"out={tmp_path / 'f'}", "bits={weight:[2,2,2],act:[8,8,8]}"])
    assert bad.returncode == 2 and "outside the choices" in bad.stderr
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())


@pytest.mark.slow
def test_searched_pareto_subnet_exports_at_the_searchs_accuracy(tmp_path: Path) -> None:
    """tools/search.py with bits, then tools/export.py on a Pareto arch file: the exported model's val accuracy
    is the search's number for that (arch, bits), exactly."""
    from conftest import run_cli

    ckpt = write_quantized_checkpoint(tmp_path / "last.ckpt")
    env = {"OMP_NUM_THREADS": "1"}
    search = run_cli(["tools/search.py", f"ckpt={ckpt}", f"out={tmp_path / 's'}", "data.resolution=16",
                      "search.population=6", "search.generations=1", "search.parents=3", "search.num_mutations=3",
                      "search.num_crossovers=3", "search.calibration.batches=2", "search.bits.enabled=true",
                      "search.objectives=[acc,macs]"], env=env)
    assert search.returncode == 0, search.stderr[-3000:]
    for arch in sorted((tmp_path / "s" / "archs").glob("pareto_*.yaml"))[:2]:
        data = yaml.safe_load(arch.read_text())
        out = tmp_path / arch.stem
        proc = run_cli(["tools/export.py", f"ckpt={ckpt}", f"arch={arch}", f"out={out}", "data.resolution=16",
                        "calibration.batches=2", "evaluate=true"], env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        meta = json.loads((out / "export.json").read_text())
        assert meta["quantization"]["bits"] == data["bits"]
        assert meta["accuracy"]["val_acc_exported"] == data["metrics"]["acc"], (arch.name, meta["accuracy"])
