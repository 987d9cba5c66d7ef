"""Workload extraction: layer shapes from real modules, MACs equal to torch.utils.flop_counter's."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from effnn.hw import ConvLayer, GemmLayer, SystolicArray, extract_workload
from effnn.models import create_model

SHARED = Path(__file__).resolve().parent / "data" / "scalesim" / "shared"  # in the repo: missing fails


def _flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-accumulate


def _small_mbnet() -> nn.Module:
    """Stem, an inverted residual with depthwise conv and squeeze-excite, pooled linear head."""
    from timm.models._efficientnet_blocks import InvertedResidual

    block = InvertedResidual(16, 24, 5, 2, exp_ratio=4.0, se_layer=_se)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), block, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(24, 10))


def _se(channels: int, **kwargs: object) -> nn.Module:
    from timm.layers import SqueezeExcite

    return SqueezeExcite(channels, rd_ratio=0.25)


class _Odd(nn.Module):
    """Ops a module-type walker would miss: functional convs, transposed/1-D/dilated convs, matmuls."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.up = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1)
        self.dil = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.line = nn.Conv1d(4, 5, 3, stride=2)
        self.proj = nn.Linear(5, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.w, stride=2, padding=1)
        x = self.dil(self.up(x))
        seq = self.line(x.flatten(2))  # (N, 5, L)
        tokens = self.proj(seq.transpose(1, 2))  # 3-D input: one (N*L x 5) @ (5 x 7) GEMM
        return torch.bmm(tokens, tokens.transpose(1, 2)).sum() + (tokens @ tokens.transpose(1, 2)).sum()


@pytest.mark.parametrize(("name", "shape"), [
    pytest.param("resnet18", (1, 3, 64, 64), marks=pytest.mark.slow),
    pytest.param("mobilenetv3_small_100", (2, 3, 96, 96), marks=pytest.mark.slow),  # depthwise, SE, batch 2
    ("cifar_resnet20", (1, 3, 32, 32)),
    ("small_mbnet", (2, 3, 24, 24)),
])
def test_macs_match_flop_counter(name: str, shape: tuple[int, ...]) -> None:
    model = _small_mbnet() if name == "small_mbnet" else create_model(name, num_classes=10)
    layers = extract_workload(model, shape)
    assert sum(layer.macs for layer in layers) == _flop_counter_macs(model, torch.zeros(shape))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == len(convs)  # one layer per conv/linear, none invented, named by its module
    modules = dict(model.named_modules())
    assert all(isinstance(modules[layer.name], nn.Conv2d | nn.Linear) for layer in layers)


def test_unusual_ops_match_flop_counter() -> None:
    torch.manual_seed(0)
    model = _Odd()
    x = torch.randn(2, 3, 16, 16)
    layers = extract_workload(model, example_input=x)
    assert sum(layer.macs for layer in layers) == _flop_counter_macs(model, x)
    names = [layer.name for layer in layers]
    assert names[:5] == ["model", "up", "dil", "line", "proj"] and len(layers) == 7
    # 16 -> conv s2 -> 8 -> transposed s2 -> 16 -> dilated 'same' -> 16x16 = 256 -> conv1d k3 s2 -> 127
    assert isinstance(layers[4], GemmLayer) and layers[4].gemm == (2 * 127, 7, 5)
    assert layers[5].groups == 2 and layers[5].gemm == (127, 127, 7)  # bmm: one GEMM per batch entry


def test_attention_counted_as_two_gemms() -> None:
    """Fused SDPA (which FlopCounterMode misses on CPU) is QK^T and PV: 2 * heads * L * S * E MACs."""
    q = torch.randn(2, 4, 9, 16)

    class Attn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(x, x, x)

    layers = extract_workload(Attn(), example_input=q)
    assert [layer.gemm for layer in layers] == [(9, 9, 16), (9, 16, 9)]
    assert sum(layer.macs for layer in layers) == 2 * (2 * 4) * 9 * 9 * 16


def test_pytorch_depthwise_reports_like_scalesim_dp() -> None:
    """A groups=C conv from PyTorch costs what SCALE-Sim reports for the same layer named DP..."""
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    layer = extract_workload(conv, (1, 32, 16, 16))[0]
    assert layer.depthwise and layer.gemm == (256, 1, 9)
    with open(SHARED / "results_8x8.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["layer"] == "DPdw_conv3x3_16x16x32"]
    for row in rows:
        cost = SystolicArray(8, 8, row["dataflow"]).simulate([layer])[0]
        assert cost.compute_cycles == int(row["compute_cycles"])
        assert (cost.sram_reads_ifmap, cost.sram_reads_filter, cost.sram_writes_ofmap) == (
            int(row["sram_ifmap_reads"]), int(row["sram_filter_reads"]), int(row["sram_ofmap_writes"]))
        # SCALE-Sim's topology is pre-padded to 18x18 and fetches the zeros; we never fetch padding
        assert cost.dram_reads_ifmap == 16 * 16 * 32 < int(row["dram_ifmap_reads"]) == 18 * 18 * 32


def test_declared_bits_and_state_untouched() -> None:
    """Modules declare operand widths (attribute or hw_bits); extraction leaves train mode and BN stats."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4))
    model[0].weight_bits = 4
    model[3].hw_bits = lambda: {"weight": 2, "act": 3}
    model[5].hw_bits = (8, 8, 32)
    model.train()
    stats = model[1].running_mean.clone()
    layers = extract_workload(model, (1, 3, 8, 8), default_bits=16)
    assert [(layer.weight_bits, layer.act_bits, layer.out_bits) for layer in layers] == [
        (4, 16, 16), (2, 3, 16), (8, 8, 32)]
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, stats)
    model[0].weight_bits = 0
    with pytest.raises(ValueError, match="bit-widths must be positive"):
        extract_workload(model, (1, 3, 8, 8))


def _three_convs() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(32, 32, 3, stride=2, padding=1))


def test_smartdeal_and_quantized_models() -> None:
    """Decomposed and fake-quantized models trace to the same GEMMs; SmartDeal layers declare their stored
    bits per weight themselves, CPT's current precision reaches the model through ``module_bits``."""
    from effnn.decompose import smartdeal
    from effnn.precision.swap import quantize_model, quantized_layers

    torch.manual_seed(0)
    dense = _three_convs()
    shape = (1, 3, 16, 16)
    reference = [(layer.name, layer.gemm, layer.groups) for layer in extract_workload(dense, shape)]
    smartdeal.convert(dense, progress=False)
    layers = extract_workload(dense, shape)
    assert [(layer.name, layer.gemm, layer.groups) for layer in layers] == reference
    decomposed = [layer for layer in layers if layer.weight_storage_bits is not None]
    assert decomposed and all(layer.weight_bits == 16 for layer in layers)
    modules = dict(dense.named_modules())
    for layer in decomposed:
        assert layer.weight_storage_bits == pytest.approx(modules[layer.name].storage_bits_per_weight)
        assert layer.weight_storage_bits < 16

    model = _three_convs()
    state = quantize_model(model, {"keep_classifier": False})
    state.set(4, 8)
    names = [name for name, _ in quantized_layers(model)]
    layers = extract_workload(model, shape, module_bits={n: lambda: (state.fwd_bits, state.fwd_bits)
                                                           for n in names})
    assert [(layer.name, layer.gemm, layer.groups) for layer in layers] == reference
    assert {(layer.weight_bits, layer.act_bits) for layer in layers if layer.name in names} == {(4, 4)}
    with pytest.raises(ValueError, match="module_bits names modules the model does not have"):
        extract_workload(model, shape, module_bits={"nope": 4})


def _sd_test_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 64, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def test_smartdeal_weight_traffic_reflects_compressed_storage() -> None:
    """A converted SmartDeal model moves its compressed weights: DRAM weight bits shrink by exactly the
    storage ratio of effnn.decompose's own accounting (fp32 dense = 32 bits), while MACs, compute cycles and
    MAC/register/array energy (the array computes with rebuilt weights) stay those of the dense model."""
    from effnn.decompose import smartdeal, weight_storage
    from effnn.hw import build_cost_model, load_energy_table

    torch.manual_seed(0)
    model = _sd_test_net()
    shape = (1, 3, 16, 16)
    dense_layers = extract_workload(model, shape, default_bits=32)
    smartdeal.convert(model, {"row_sparsity": 0.3}, progress=False)
    report = weight_storage(model)
    assert report.ratio > 3
    sd_layers = extract_workload(model, shape, default_bits=32)
    assert [(x.name, x.gemm, x.groups) for x in sd_layers] == [(x.name, x.gemm, x.groups) for x in dense_layers]
    table = load_energy_table("horowitz_45nm")
    # SRAMs large enough for every operand, CALC bandwidth: each weight crosses DRAM exactly once in both
    # forms (in USER mode SCALE-Sim counts whole prefetch lines, docs/hardware.md quirk 14, and the dense
    # 32-bit layers are replayed while fractional stored bits keep the estimate)
    roomy = SystolicArray(16, 16, "os", 512, 512, 512, energy_table=table)
    dense, sd = roomy.simulate(dense_layers), roomy.simulate(sd_layers)
    for d, s, layer in zip(dense, sd, sd_layers):
        assert (s.macs, s.compute_cycles, s.dram_reads_filter) == (d.macs, d.compute_cycles, d.dram_reads_filter)
        assert s.dram_reads_filter == layer.params
        for level in ("mac", "rf", "array"):
            assert s.energy_breakdown[level] == pytest.approx(d.energy_breakdown[level], rel=1e-12)
        saved = table.dram * d.dram_reads_filter * (32 - layer.stored_weight_bits) / table.ref_bits
        assert d.energy_breakdown["dram"] - s.energy_breakdown["dram"] == pytest.approx(saved, rel=1e-9)
    weight_bits = lambda costs, layers: sum(c.dram_reads_filter * x.stored_weight_bits  # noqa: E731
                                            for c, x in zip(costs, layers))
    assert weight_bits(dense, dense_layers) / weight_bits(sd, sd_layers) == pytest.approx(report.ratio, rel=1e-9)
    # the preset array (64 kB SRAMs): totals through the cost model; compressed weights also stall less
    cost = build_cost_model("systolic_16x16_os")
    before, after = cost(dense_layers), cost(sd_layers)
    assert (after["macs"], after["compute_cycles"]) == (before["macs"], before["compute_cycles"])
    assert after["energy_mac"] == pytest.approx(before["energy_mac"], rel=1e-12)
    assert after["energy_dram"] < before["energy_dram"] and after["energy"] < before["energy"]
    assert after["stall_cycles"] + after["prefetch_cycles"] <= before["stall_cycles"] + before["prefetch_cycles"]


def test_supernet_at_an_arch_matches_the_space() -> None:
    """Elastic supernet ops (F.conv2d on sliced weights) and the extracted static subnet both trace to the
    space's analytic workload (the static one layer by layer, with the same names)."""
    from effnn.nas import build_supernet, get_space

    space = get_space("tiny32")
    supernet = build_supernet(space, num_classes=10)
    key = lambda layer: (layer.gemm, layer.groups)  # noqa: E731
    for seed in range(2):
        arch = space.sample(torch.Generator().manual_seed(seed))
        shape = (1, 3, arch.resolution, arch.resolution)
        analytic = space.workload(arch, num_classes=10)
        with supernet.set_arch(arch):
            traced = extract_workload(supernet, shape)
        assert sorted(map(key, traced)) == sorted(map(key, analytic))
        static = extract_workload(supernet.extract(arch), shape)
        named = lambda layers: [(layer.name, *key(layer)) for layer in layers]  # noqa: E731
        assert named(static) == named(analytic)


def test_bad_inputs_raise() -> None:
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="exactly one of input_shape"):
        extract_workload(conv)
    with pytest.raises(ValueError, match="input_shape must be positive"):
        extract_workload(conv, (1, 3, 0, 8))
    with pytest.raises(ValueError, match="workload is empty"):
        SystolicArray(8, 8).simulate(extract_workload(nn.ReLU(), (1, 3)))
    assert isinstance(extract_workload(conv, (1, 3, 5, 5))[0], ConvLayer)
