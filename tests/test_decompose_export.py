"""Export paths: materialized dense layers, torch.export and ONNX of the decomposed model."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from torch import nn

from effnn.decompose import materialize, sd_layers, smartdeal


def converted_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                        nn.Conv2d(12, 20, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(20, 5)).eval()
    smartdeal.convert(net, {"row_sparsity": 0.25}, progress=False)
    assert len(sd_layers(net)) == 3
    return net


def test_materialize_gives_plain_layers_with_identical_outputs() -> None:
    net = converted_net()
    x = torch.randn(4, 3, 8, 8)
    want = net(x).detach()
    weights = {n: m.weight.detach().clone() for n, m in sd_layers(net).items()}
    materialize(net)
    assert not sd_layers(net)
    assert type(net[0]) is nn.Conv2d and type(net[3]) is nn.Conv2d and type(net[6]) is nn.Linear
    assert net[3].bias is None and net[0].padding == (1, 1)
    for name, w in weights.items():
        torch.testing.assert_close(net.get_submodule(name).weight, w, rtol=0, atol=0)
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)


def test_decomposed_model_traces_with_torch_export() -> None:
    net = converted_net()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(net, (x,))
    torch.testing.assert_close(program.module()(x), net(x))


def test_decomposed_model_runs_in_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    net = converted_net()
    x = torch.randn(2, 3, 8, 8)
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"])  # TorchScript exporter: no onnxscript
    session = ort.InferenceSession(buf.getvalue())
    out = session.run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), net(x).detach(), rtol=1e-5, atol=1e-5)


def test_hw_workload_sees_the_same_layers_and_names_for_storage_bits() -> None:
    from effnn.hw.workload import extract_workload

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 20, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(20, 5)).eval()
    before = extract_workload(dense, (1, 3, 8, 8))
    smartdeal.convert(dense, {"row_sparsity": 0.25}, progress=False)
    after = extract_workload(dense, (1, 3, 8, 8))
    # the weight rebuild is not a GEMM: no extra layer, same shapes; only the stored weight width changes
    assert [replace(layer, weight_storage_bits=None) for layer in after] == before
    bits = smartdeal.weight_bits_per_module(dense)
    assert [layer.name for layer in after] == list(bits)  # names line up for DRAM weight traffic
    assert all(0 < b < 32 for b in bits.values())
    assert [layer.weight_storage_bits for layer in after] == pytest.approx(list(bits.values()))
