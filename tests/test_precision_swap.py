"""quantize_model / dequantize_model on real models: which layers, exact equivalences, clean revert."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from effnn.models import create_model
from effnn.precision import (
    PrecisionState,
    QuantizationConfig,
    dequantize_model,
    find_precision_state,
    layer_bitwidths,
    quantize_model,
    quantized_layers,
)
from effnn.precision.quantizers import quantize_weight


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("cifar_resnet8", num_classes=10).eval()


def test_every_conv_but_not_bn_or_classifier_is_quantized(resnet: nn.Module) -> None:
    convs = {n for n, m in resnet.named_modules() if isinstance(m, nn.Conv2d)}
    params_before = {n: p for n, p in resnet.named_parameters()}
    state = quantize_model(resnet)
    assert {n for n, _ in quantized_layers(resnet)} == convs  # stem, block convs and the 1x1 shortcuts
    assert not hasattr(resnet.fc, "quantizer")
    assert all(not hasattr(m, "quantizer") for m in resnet.modules() if isinstance(m, nn.BatchNorm2d))
    assert find_precision_state(resnet) is state and state.fwd_bits is None
    # the optimizer-visible Parameters are the very same objects, only renamed
    after = {id(p) for p in resnet.parameters()}
    assert after == {id(p) for p in params_before.values()}


def test_full_precision_state_is_exactly_the_original_model(resnet: nn.Module) -> None:
    x = torch.randn(4, 3, 32, 32)
    reference = copy.deepcopy(resnet)(x)
    quantize_model(resnet)
    torch.testing.assert_close(resnet(x), reference, rtol=0, atol=0)


def test_quantized_forward_equals_manual_fake_quant_and_error_shrinks_with_bits() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    reference = model(x)
    state = quantize_model(model)  # model[2] is the classifier: stays fp32
    model.train()
    state.set(3, 8)
    got = model(x)
    # layer 0 by hand: per-tensor batch range on the input, per-channel weight quantization
    lo, hi = x.min(), x.max()
    scale = (hi - lo) / 7
    xq = lo + scale * torch.round((x - lo) / scale)
    h = F.relu(F.linear(xq, quantize_weight(w0, 3), b0))
    torch.testing.assert_close(got, model[2](h))
    errors = []
    for bits in (2, 4, 8):
        state.set(bits, None)
        errors.append((model(x) - reference).abs().max().item())
    assert errors[0] > errors[1] > errors[2] > 0


def test_eval_uses_the_ema_activation_range() -> None:
    layer = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    state = quantize_model(layer)
    state.set(4, None)
    quantizer = layer[0].quantizer
    batches = [torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[-2.0, 0.0, 6.0]])]
    for batch in batches:
        layer(batch)
    # first batch initializes, then ema = 0.9 * ema + 0.1 * new
    assert quantizer.running_min.item() == pytest.approx(0.9 * 0.0 + 0.1 * -2.0)
    assert quantizer.running_max.item() == pytest.approx(0.9 * 2.0 + 0.1 * 6.0)
    layer.eval()
    x = torch.tensor([[-5.0, 0.3, 9.0]])
    seen = {}
    layer[0].register_forward_pre_hook(lambda m, a: seen.setdefault("q", a[0]))
    layer(x)
    assert seen["q"].min().item() == pytest.approx(-0.2) and seen["q"].max().item() == pytest.approx(2.4)


def test_non_finite_batch_does_not_poison_the_activation_range() -> None:
    layer = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    quantize_model(layer).set(8, None)
    layer(torch.tensor([[0.0, 1.0]]))
    layer(torch.tensor([[float("nan"), float("inf")]]))
    assert layer[0].quantizer.running_min.item() == 0.0 and layer[0].quantizer.running_max.item() == 1.0


def test_dequantize_restores_plain_layers_with_trained_weights(resnet: nn.Module) -> None:
    keys = set(resnet.state_dict())
    state = quantize_model(resnet)
    state.set(4, 8)
    resnet.train()
    opt = torch.optim.SGD(resnet.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    F.cross_entropy(resnet(x), y).backward()
    opt.step()
    trained = {id(p): p.detach().clone() for p in resnet.parameters()}
    dequantize_model(resnet)
    assert set(resnet.state_dict()) == keys
    assert type(resnet.stem[0]) is nn.Conv2d and not list(quantized_layers(resnet))
    for p in resnet.parameters():
        assert torch.equal(p.detach(), trained[id(p)])
    resnet.eval()
    assert not resnet.stem[0]._forward_pre_hooks and not resnet.stem[0]._forward_hooks


def test_quantized_state_dict_round_trips_including_activation_ranges(resnet: nn.Module) -> None:
    other = copy.deepcopy(resnet)
    quantize_model(resnet).set(4, 8)
    resnet.train()
    resnet(torch.randn(8, 3, 32, 32))
    resnet.eval()
    quantize_model(other).set(4, 8)
    other.load_state_dict(resnet.state_dict())
    other.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(x), resnet(x), rtol=0, atol=0)


def test_deepcopy_of_a_quantized_model_is_independent(resnet: nn.Module) -> None:
    state = quantize_model(resnet)
    clone = copy.deepcopy(resnet)
    clone_state = find_precision_state(clone)
    assert clone_state is not state
    clone_state.set(2, None)
    x = torch.randn(2, 3, 32, 32)
    assert state.fwd_bits is None and not torch.equal(clone(x), resnet(x))


def test_config_keeps_named_and_first_layers_full_precision(resnet: nn.Module) -> None:
    quantize_model(resnet, {"keep_full_precision": ["blocks.2.*"], "keep_first": True})
    names = {n for n, _ in quantized_layers(resnet)}
    assert "stem.0" not in names and not any(n.startswith("blocks.2.") for n in names)
    assert "blocks.0.conv1" in names
    dequantize_model(resnet)
    quantize_model(resnet, QuantizationConfig(keep_classifier=False))
    assert "fc" in {n for n, _ in quantized_layers(resnet)}


def test_bad_configs_and_double_quantization_raise(resnet: nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown quantization option"):
        quantize_model(resnet, {"keep_clasifier": False})
    quantize_model(resnet)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(resnet)
    with pytest.raises(ValueError, match="no layer to quantize"):
        quantize_model(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="act_momentum|momentum"):
        quantize_model(nn.Linear(2, 2), {"act_momentum": 1.5, "keep_classifier": False})


class SlicingLinear(nn.Module):
    """An elastic op in the style of a supernet: full-size weight, sliced to the active width in forward."""

    def __init__(self, max_in: int, max_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_out, max_in))
        self.active_out = max_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[: self.active_out, : x.shape[1]])


def test_elastic_ops_are_quantized_by_duck_typing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(SlicingLinear(6, 5), nn.Linear(5, 2))
    state = quantize_model(model)
    assert [n for n, _ in quantized_layers(model)] == ["0"]
    state.set(3, 8)
    model[0].active_out = 4
    x = torch.randn(3, 4)
    out = model[0](x)
    lo, hi = x.min(), x.max()
    xq = lo + (hi - lo) / 7 * torch.round((x - lo) / ((hi - lo) / 7))
    full = model[0].parametrizations.weight.original
    # per-output-channel ranges of the full-size weight, then sliced
    torch.testing.assert_close(out, F.linear(xq, quantize_weight(full.detach(), 3)[:4, :4]))
    out.sum().backward()
    assert full.grad is not None and full.grad[:4, :4].abs().sum() > 0 and full.grad[4:].abs().sum() == 0


def _per_channel_reference(w: torch.Tensor, bits: int) -> torch.Tensor:
    """CPT/FracTrain weight quantizer, written out: per output channel, lo + s * round((w - lo) / s)."""
    flat = w.reshape(w.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    s = (hi - lo) / (2 ** bits - 1)
    return (lo + s * torch.round((flat - lo) / s)).reshape(w.shape)


def test_supernet_elastic_conv_is_quantized_on_its_active_slice() -> None:
    ops = pytest.importorskip("effnn.nas.ops")
    torch.manual_seed(0)
    model = nn.Sequential(ops.DynamicConv2d(6, 8, 5), ops.DynamicBatchNorm2d(8), ops.DynamicLinear(8, 3))
    state = quantize_model(model, {"keep_classifier": False})
    assert [n for n, _ in quantized_layers(model)] == ["0", "2"]  # elastic BN (1-D weight) stays fp32
    state.set(4, 8)
    model[0].configure(out_channels=5, kernel_size=3)
    x = torch.randn(2, 4, 7, 7)
    lo, hi = x.min(), x.max()
    scale = (hi - lo) / 15
    xq = lo + scale * torch.round((x - lo) / scale)
    full = model[0].parametrizations.weight.original.detach()
    expected = F.conv2d(xq, _per_channel_reference(full[:5, :4, 1:4, 1:4], 4), None, 1, 1)
    torch.testing.assert_close(model[0](x), expected)
    # the largest subnet is quantized exactly as a static conv would be
    model[0].configure(out_channels=8, kernel_size=5)
    torch.testing.assert_close(model[0].active_weight(6), _per_channel_reference(full, 4))


def test_layer_bitwidths_follow_the_state(resnet: nn.Module) -> None:
    state = quantize_model(resnet)
    state.set(5, 7)
    widths = layer_bitwidths(resnet)
    assert widths and set(widths.values()) == {(5, 7)}
    state.set(None, None)
    assert set(layer_bitwidths(resnet).values()) == {(32, 32)}


def test_precision_state_override_restores() -> None:
    state = PrecisionState(8, 8)
    with state.override(fwd_bits=3):
        assert (state.fwd_bits, state.grad_bits) == (3, 8)
    assert (state.fwd_bits, state.grad_bits) == (8, 8)
    with pytest.raises(ValueError, match="fwd_bits"):
        state.set(0, 8)


def test_quantized_layers_declare_their_bits_to_the_hardware_model(resnet: nn.Module) -> None:
    hw = pytest.importorskip("effnn.hw")
    state = quantize_model(resnet)
    state.set(4, 8)
    layers = hw.extract_workload(resnet, (1, 3, 32, 32), default_bits=16)
    by_name = {layer.name: layer for layer in layers}
    assert by_name["stem.0"].weight_bits == 4 and by_name["stem.0"].act_bits == 4
    assert by_name["fc"].weight_bits == 16  # the full-precision classifier gets the hardware default
    state.set(6, 8)  # widths follow the schedule at every trace
    assert {la.weight_bits for la in hw.extract_workload(resnet, (1, 3, 32, 32)) if la.name != "fc"} == {6}
    cost = hw.build_cost_model("systolic_16x16_os")
    energy = {}
    for bits in (8, 4):
        state.set(bits, 8)
        energy[bits] = cost(resnet, (1, 3, 32, 32))["energy"]
    assert energy[4] < energy[8]  # bit-aware: fewer bits, less MAC and traffic energy
    dequantize_model(resnet)
    assert not hasattr(resnet.stem[0], "hw_bits")
