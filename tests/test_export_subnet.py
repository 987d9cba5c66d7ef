"""Exporting a subnet: verified static model, torch.export program and ONNX; loading; fine-tuning; bad input."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from search_support import digits, write_checkpoint

import effnn
from effnn.errors import CheckpointError, ConfigError
from effnn.export import ExportError, export_subnet, load_exported, read_arch_file
from effnn.export.app import resolve_arch
from effnn.export.finetune import ResizeInput, exported_classifier
from effnn.nas import Arch, resize_to
from effnn.search import SubnetAccuracy, fixed_batches, load_supernet_checkpoint, top1_accuracy

ARCH = Arch(16, (8, 8, 16, 24, 48), (1, 2, 2), (3, 5, 3), (1, 3, 2))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("export")
    loaded = load_supernet_checkpoint(write_checkpoint(tmp / "last.ckpt"))
    dm = digits()
    calib = fixed_batches(dm.train_set, 4, 64, seed=0)
    verify = next(iter(dm.val_dataloader()))[0][:8]
    result = export_subnet(loaded, ARCH, calib, tmp / "out", verify_batch=verify,
                           eval_splits={"test": list(dm.test_dataloader())})
    return {"dir": tmp / "out", "ckpt": tmp / "last.ckpt", "result": result, "calib": calib, "dm": dm}


def test_export_writes_every_artifact_and_they_agree(exported: dict) -> None:
    out = exported["dir"]
    assert {p.name for p in out.iterdir()} == {"arch.yaml", "export.json", "model.safetensors", "model.pt2",
                                              "model.onnx"}
    assert Arch.from_dict(yaml.safe_load((out / "arch.yaml").read_text())) == ARCH
    meta = json.loads((out / "export.json").read_text())
    assert meta["input_shape"] == [None, 3, 16, 16] and meta["num_classes"] == 10
    assert all(d <= 1e-4 for d in meta["checks"]["max_abs_diff"].values())

    model = effnn.load_exported(out)
    assert isinstance(model, torch.nn.Module) and not model.training and model.arch == ARCH
    x = resize_to(next(iter(exported["dm"].test_dataloader()))[0], ARCH.resolution)
    with torch.no_grad():
        ours = model(x)
        static = exported["result"].static(x)
    assert torch.equal(ours, static)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})  # a different batch size than at export
    np.testing.assert_allclose(onnx_out, ours.numpy(), atol=1e-4, rtol=0)
    program = torch.export.load(str(out / "model.pt2")).module()
    torch.testing.assert_close(program(x), ours, atol=1e-5, rtol=0)


def test_exported_test_accuracy_equals_the_supernets_at_that_arch(exported: dict) -> None:
    """Done-when: within 1 point. Same weights and BN statistics, so it is the same up to float rounding."""
    dm = exported["dm"]
    loaded = load_supernet_checkpoint(exported["ckpt"])  # a fresh supernet, recalibrated on the same batches
    supernet_acc = SubnetAccuracy(loaded.supernet, exported["calib"], dm.test_dataloader())(ARCH)
    exported_acc = top1_accuracy(load_exported(exported["dir"]), dm.test_dataloader(), ARCH.resolution)
    assert abs(exported_acc - supernet_acc) <= 1.0
    assert exported["result"].accuracy["test_acc_exported"] == pytest.approx(exported_acc)
    assert exported["result"].accuracy["test_acc_supernet"] == pytest.approx(supernet_acc)


def test_disagreement_fails_loudly_and_writes_nothing(exported: dict, tmp_path: Path) -> None:
    loaded = load_supernet_checkpoint(exported["ckpt"])
    verify = exported["calib"][0][0][:4]
    with pytest.raises(ExportError, match=r"ONNX model .* differ by max \|diff\| = .* > atol = 0"):
        export_subnet(loaded, ARCH, exported["calib"][:1], tmp_path / "out", verify_batch=verify, atol=0.0,
                      program="none")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_and_pt_formats(exported: dict, tmp_path: Path) -> None:
    loaded = load_supernet_checkpoint(exported["ckpt"])
    verify = exported["calib"][0][0][:4]
    arch = loaded.space.min_arch()
    export_subnet(loaded, arch, exported["calib"][:2], tmp_path, verify_batch=verify, program="torchscript",
                  onnx=False, weights_format="pt")
    assert {p.name for p in tmp_path.iterdir()} == {"arch.yaml", "export.json", "model.pt", "model.ts"}
    model = load_exported(tmp_path)
    x = resize_to(verify, arch.resolution)
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "model.ts"))(x), model(x), atol=1e-5, rtol=0)


def test_arch_files_and_bad_archs(tmp_path: Path, exported: dict) -> None:
    space = load_supernet_checkpoint(exported["ckpt"]).space
    search_style = {**ARCH.to_dict(), "metrics": {"acc": 80.0}, "hardware": None}
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(search_style))
    assert resolve_arch(str(tmp_path / "ok.yaml"), space) == ARCH
    assert resolve_arch("max", space) == space.max_arch()
    outside = {**ARCH.to_dict(), "kernel_size": [3, 7, 3]}
    (tmp_path / "outside.yaml").write_text(yaml.safe_dump(outside))
    with pytest.raises(ConfigError, match=r"outside the checkpoint's search space.*kernel_size\[1\]=7.*3, 5"):
        resolve_arch(str(tmp_path / "outside.yaml"), space)
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**ARCH.to_dict(), "widht": [8]}))
    with pytest.raises(ConfigError, match="unknown keys"):
        read_arch_file(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        read_arch_file(tmp_path / "missing.yaml")


def test_load_exported_rejects_broken_directories(exported: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not an exported subnet"):
        load_exported(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("export.json", "arch.yaml"):
        (broken / name).write_bytes((exported["dir"] / name).read_bytes())
    (broken / "model.safetensors").write_bytes((exported["dir"] / "model.safetensors").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_exported(broken)


def test_finetune_module_wraps_the_exported_model(exported: dict) -> None:
    sgd = partial(torch.optim.SGD, lr=0.01)
    module = exported_classifier(str(exported["dir"]), num_classes=10, optimizer=sgd)
    assert isinstance(module.net, ResizeInput) and module.net.model.training
    x, y = next(iter(exported["dm"].train_dataloader()))  # 16 px data; the model resizes to its own 16
    loss = torch.nn.functional.cross_entropy(module(x), y)
    loss.backward()
    assert module.net.model.conv_stem.weight.grad is not None
    with pytest.raises(ConfigError, match="has 10 classes but data has 100"):
        exported_classifier(str(exported["dir"]), num_classes=100, optimizer=sgd)
