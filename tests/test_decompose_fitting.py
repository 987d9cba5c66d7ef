"""SED fitting and model conversion: exactness, least-squares optimality, structured row pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effnn.decompose import SDConv2d, SDLinear, SmartDealConfig, convert, sd_layers, smartdeal
from effnn.decompose.fitting import fit_sed, global_row_masks, layer_row_mask, row_scores
from effnn.decompose.quantize_pow2 import Pow2Spec, round_pow2
from effnn.decompose.sd_layers import SDLayout
from effnn.errors import ConfigError


def small_net(in_ch: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                         nn.Conv2d(12, 20, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(20, 17, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(17, 5))


def test_convert_is_exact_when_weights_are_powers_of_two_and_nothing_is_pruned() -> None:
    gen = torch.Generator().manual_seed(0)
    net = small_net().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                exps = torch.randint(-7, 4, m.weight.shape, generator=gen).float()
                m.weight.copy_(torch.exp2(exps) * (torch.rand(m.weight.shape, generator=gen) - 0.5).sign())
    x = torch.randn(4, 3, 8, 8, generator=gen)
    want = net(x)
    fits = convert(net, {"row_sparsity": 0.0, "skip_no_gain": False}, progress=False)
    assert set(fits) == {"0", "3", "5", "8"} and len(sd_layers(net)) == 4
    for fit in fits.values():
        assert fit.relative_error < 1e-6 and fit.row_sparsity == 0.0
    torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)


def test_als_basis_step_is_the_least_squares_optimum_and_beats_plain_rounding() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(16, 1, 48, 3, generator=gen).double() * 0.1
    mask = torch.ones(16, 1, 48, 1, dtype=torch.float64)
    spec = Pow2Spec()
    plain = float((round_pow2(w, spec) - w).norm() / w.norm())  # Q(W) with B = I
    result = fit_sed(w, mask, spec, iterations=30)
    assert result.relative_error < plain * 0.97
    # given its Ce, the returned B must be the least-squares solution: residual orthogonal to Ce's columns
    residual = result.ce @ result.basis - w
    gram = result.ce.transpose(-1, -2) @ residual
    assert gram.abs().max() < 1e-9
    # returned Ce is on the power-of-two grid
    torch.testing.assert_close(round_pow2(result.ce, spec), result.ce, rtol=0, atol=0)


def test_row_pruning_removes_the_weakest_rows_jointly_per_filter_group() -> None:
    layout = SDLayout.for_weight((4, 4, 1, 3), max_block_rows=4)  # 1x3 kernels: 4 rows of 3 per filter
    w = torch.ones(4, 4, 1, 3)
    w[:2, 1] = 0.1  # filters 0-1 (group 0): channel 1 is weak
    w[2:, 3] = 0.2  # filters 2-3 (group 1): channel 3 is weak
    w[3, 0] = 0.01  # one filter alone cannot make a row weak for its whole group
    scores = row_scores(layout.to_blocks(w), filter_group=2)
    mask = layer_row_mask(scores, layout.valid_rows(), sparsity=0.25)  # 2 of 8 (group, row) pairs
    want = torch.ones(2, 1, 4)
    want[0, 0, 1] = 0
    want[1, 0, 3] = 0
    torch.testing.assert_close(mask, want.double())


def test_global_scope_ranks_rows_independently_of_each_layers_scale() -> None:
    gen = torch.Generator().manual_seed(2)
    layouts = {n: SDLayout.for_weight((8, 6, 3, 3)) for n in "ab"}
    weights = {n: torch.randn(8, 6, 3, 3, generator=gen) for n in "ab"}
    scores = {n: row_scores(layouts[n].to_blocks(weights[n]), 4) for n in "ab"}
    valid = {n: layouts[n].valid_rows() for n in "ab"}
    masks = global_row_masks(scores, valid, 0.4)
    scaled = dict(scores, b=scores["b"] * 1e4)  # e.g. a layer before BatchNorm with larger weights
    masks_scaled = global_row_masks(scaled, valid, 0.4)
    for n in "ab":
        torch.testing.assert_close(masks[n], masks_scaled[n])
    total_pruned = sum(int((1 - m).sum()) for m in masks.values())
    assert total_pruned == round(0.4 * 2 * 2 * 18)


def test_convert_prunes_at_the_requested_ratio_and_keeps_layers_without_gain_dense() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 64, 3), nn.Flatten(),
                        nn.Linear(64 * 16, 10))
    config = SmartDealConfig(row_sparsity=0.5, layer_sparsity={"3": 0.25})
    fits = smartdeal.convert(net, config, progress=False)
    assert isinstance(net[0], nn.Conv2d)  # depthwise 3x3: the 3x3 basis is as large as the filter
    assert isinstance(net[1], SDConv2d) and isinstance(net[3], SDLinear)
    assert fits["1"].row_sparsity == 0.5
    assert fits["3"].row_sparsity == pytest.approx(0.25, abs=0.01)
    # per filter: 3x3 fp32 basis + 6 of 12 rows x 3 entries x 5 bits + 12 mask bits per group of 8 filters
    assert fits["1"].storage_ratio == pytest.approx(36 * 32 / (9 * 32 + 6 * 3 * 5 + 12 / 8))
    assert 0 < fits["1"].relative_error < 1


def test_scratch_init_starts_from_the_dense_weights_with_identity_basis() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(8, 8, 3))
    dense = net[0].weight.detach().clone()
    convert(net, {"init": "scratch", "row_sparsity": 0.0}, progress=False)
    eye = torch.eye(3).expand_as(net[0].basis)
    torch.testing.assert_close(net[0].basis.detach(), eye)
    torch.testing.assert_close(net[0].weight.detach(), round_pow2(dense, Pow2Spec()))


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown config keys"):
        SmartDealConfig.from_any({"row_sparsty": 0.3})
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        SmartDealConfig(row_sparsity=1.0)
    with pytest.raises(ConfigError, match="train_mode"):
        SmartDealConfig(train_mode="sgd")
    with pytest.raises(ConfigError, match="wrap it in nn.Sequential"):
        convert(nn.Conv2d(16, 16, 3), progress=False)
    with pytest.raises(ConfigError, match="no Conv2d/Linear layer"):
        convert(nn.Sequential(nn.ReLU()), progress=False)
