"""Elastic ops against independent references: zero-padded kernels, block-diagonal convs, closed-form BN."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import make_divisible

from effnn.nas.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicDepthwiseConv2d,
    DynamicLinear,
    DynamicSE,
    se_hidden_channels,
)


def test_centre_cropped_kernel_equals_full_kernel_with_zeroed_border() -> None:
    torch.manual_seed(0)
    conv = DynamicConv2d(8, 6, kernel_size=5, stride=2)
    x = torch.randn(2, 5, 11, 11)
    conv.configure(out_channels=4, kernel_size=3)
    y = conv(x)
    # reference: the 5x5 kernel of the active channels with its outer ring zeroed, padding 2
    w = conv.weight[:4, :5].detach().clone()
    w[..., 0, :] = w[..., -1, :] = w[..., :, 0] = w[..., :, -1] = 0
    ref = F.conv2d(x, w, None, 2, 2)
    assert y.shape == (2, 4, 6, 6)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(conv.to_static(5)(x), ref)


def test_conv_gradients_land_only_in_the_active_slice() -> None:
    conv = DynamicConv2d(8, 8, kernel_size=5, bias=True)
    conv.configure(out_channels=3, kernel_size=3)
    conv(torch.randn(2, 4, 7, 7)).square().sum().backward()
    grad = conv.weight.grad
    assert grad[:3, :4, 1:4, 1:4].abs().sum() > 0
    mask = torch.ones_like(grad, dtype=torch.bool)
    mask[:3, :4, 1:4, 1:4] = False
    assert grad[mask].abs().max() == 0
    assert conv.bias.grad[3:].abs().max() == 0 and conv.bias.grad[:3].abs().sum() > 0


def test_depthwise_equals_block_diagonal_dense_conv() -> None:
    torch.manual_seed(1)
    dw = DynamicDepthwiseConv2d(12, kernel_size=5, stride=2)
    dw.configure(kernel_size=3)
    x = torch.randn(2, 7, 9, 9)
    dense = torch.zeros(7, 7, 3, 3)
    for c in range(7):
        dense[c, c] = dw.weight[c, 0, 1:4, 1:4].detach()
    ref = F.conv2d(x, dense, None, 2, 1)
    torch.testing.assert_close(dw(x), ref)
    static = dw.to_static(7)
    assert isinstance(static, nn.Conv2d) and static.groups == 7
    torch.testing.assert_close(static(x), ref)


def test_batchnorm_normalizes_active_channels_and_updates_only_their_stats() -> None:
    torch.manual_seed(2)
    bn = DynamicBatchNorm2d(10, momentum=0.5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    x = torch.randn(6, 4, 5, 5) * 3 + 1
    y = bn.train()(x)
    mean = x.mean((0, 2, 3))
    var = x.var((0, 2, 3), unbiased=False)
    ref = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
    ref = ref * bn.weight[:4, None, None] + bn.bias[:4, None, None]
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_mean[:4], 0.5 * mean)
    torch.testing.assert_close(bn.running_var[:4], 0.5 * 1.0 + 0.5 * x.var((0, 2, 3), unbiased=True))
    assert bn.running_mean[4:].abs().max() == 0 and (bn.running_var[4:] == 1).all()
    static = bn.to_static(4).eval()
    torch.testing.assert_close(static(x), bn.eval()(x))


def test_linear_slices_rows_and_columns() -> None:
    lin = DynamicLinear(16, 10)
    lin.configure(out_features=7)
    x = torch.randn(3, 12)
    ref = x @ lin.weight[:7, :12].T + lin.bias[:7]
    torch.testing.assert_close(lin(x), ref)
    torch.testing.assert_close(lin.to_static(12)(x), ref)


@pytest.mark.parametrize("channels", [40, 96, 144])
def test_se_matches_timm_squeeze_excite_with_alphanet_width(channels: int) -> None:
    torch.manual_seed(3)
    se = DynamicSE(144)
    x = torch.randn(2, channels, 5, 5)
    static = se.to_static(channels)
    assert static.conv_reduce.out_channels == make_divisible(channels // 4, 8) == se_hidden_channels(channels)
    torch.testing.assert_close(se(x), static(x))
    # closed form: x * hardsigmoid(W2 relu(W1 mean(x) + b1) + b2)
    s = x.mean((2, 3))
    h = se_hidden_channels(channels)
    z = F.relu(s @ se.conv_reduce.weight[:h, :channels, 0, 0].T + se.conv_reduce.bias[:h])
    gate = F.hardsigmoid(z @ se.conv_expand.weight[:channels, :h, 0, 0].T + se.conv_expand.bias[:channels])
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_bad_configs_raise_clear_errors() -> None:
    conv = DynamicConv2d(4, 4, kernel_size=3)
    with pytest.raises(ValueError, match="in_channels=5 is outside 1..4"):
        conv(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="kernel_size=5 must be odd and <= 3"):
        conv.configure(kernel_size=5)
    with pytest.raises(ValueError, match="out_channels=9"):
        conv.configure(out_channels=9)
    with pytest.raises(ValueError, match="odd"):
        DynamicDepthwiseConv2d(4, kernel_size=4)


def _levels_per_channel(w: torch.Tensor) -> float:
    """Mean number of distinct values per output channel."""
    flat = w.detach().reshape(w.shape[0], -1)
    return sum(len(torch.unique(row)) for row in flat) / flat.shape[0]


def _reference_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """CPT/FracTrain weight quantizer, written out: per output channel, lo + s * round((w - lo) / s)."""
    flat = w.detach().reshape(w.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    s = (hi - lo) / (2 ** bits - 1)
    return (lo + s * torch.round((flat - lo) / s)).reshape(w.shape)


@pytest.mark.parametrize("bits", [3, 4])
def test_quantized_small_subnet_uses_every_level_of_its_own_range(bits: int) -> None:
    """The min subnet of the supernet quantizes the slice it runs, not the full-size weight."""
    from effnn.nas.space import get_space
    from effnn.nas.supernet import build_supernet
    from effnn.precision import quantize_model

    torch.manual_seed(0)
    space = get_space("tiny32")
    net = build_supernet(space, num_classes=10)
    state = quantize_model(net)
    state.set(bits, 8)
    net.set_arch(space.min_arch())
    x = torch.randn(1, 3, space.min_arch().resolution, space.min_arch().resolution)
    used, old_used = [], []
    hooks = []

    def record(op: nn.Module, args: tuple, out: torch.Tensor) -> None:
        w = op.active_weight(args[0].shape[1])
        if w[0].numel() < 2 ** bits * 4:  # too few weights per channel to hit every level by chance
            return
        original = op.parametrizations.weight.original
        cut = _reference_quantize(original, bits)  # the old way: range over the full-size weight, then cut
        old = cut[:w.shape[0], :w.shape[1]]
        k, K = w.shape[-1], original.shape[-1]
        old = old[..., (K - k) // 2:(K + k) // 2, (K - k) // 2:(K + k) // 2]
        torch.testing.assert_close(w, _reference_quantize(w, bits))  # the slice's own per-channel range
        used.append(_levels_per_channel(w))
        old_used.append(_levels_per_channel(old))

    for module in net.modules():
        if isinstance(module, DynamicConv2d) and hasattr(module, "quantizer"):
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    assert len(used) >= 3
    mean_used, mean_old = sum(used) / len(used), sum(old_used) / len(old_used)
    assert mean_used >= 0.9 * 2 ** bits  # (almost) every level of the 2^b grid is in use
    print(f"{bits} bits: {mean_used:.2f} levels on the active slice, {mean_old:.2f} with the full-size range")
    assert mean_used > mean_old + 0.5  # the full-size range wastes levels on weights the subnet does not run
