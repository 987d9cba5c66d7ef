"""SED fitting and model conversion: exactness, least-squares optimality, structured row pruning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from effnn.decompose import SDConv2d, SDLinear, SmartDealConfig, convert, sd_layers, smartdeal
from effnn.decompose.fitting import fit_sed, global_layer_sparsity, layer_row_mask, row_scores
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
    weights["b"][:, :3] *= 0.1  # layer b has weaker rows: it should get the larger share of the pruning
    scores = {n: row_scores(layouts[n].to_blocks(weights[n]), 4) for n in "ab"}
    valid = {n: layouts[n].valid_rows() for n in "ab"}
    ratios = global_layer_sparsity(scores, valid, 0.4)
    scaled = dict(scores, b=scores["b"] * 1e4)  # e.g. a layer before BatchNorm with larger weights
    assert global_layer_sparsity(scaled, valid, 0.4) == ratios
    assert ratios["b"] > 0.4 > ratios["a"]
    assert (ratios["a"] + ratios["b"]) / 2 == pytest.approx(0.4, abs=1 / 72)


def public_structural_mask(w: torch.Tensor, ratio: float, group_size: int = 32) -> torch.Tensor:
    """The public SmartDeal code's structural pruning (smart_exchange_structural.smart_decompose), written
    out: per group of filters, sum |W| over each kernel row, prune the ceil(rows * ratio) lowest rows."""
    out, cin, kh, kw = w.shape
    flat = w.abs().sum(-1).reshape(out, cin * kh)
    group_size = min(out, group_size)
    keep = torch.ones(out, cin * kh)
    for i in range(0, out, group_size):
        col_sum = flat[i:i + group_size].sum(0)
        pruned = torch.argsort(col_sum)[:math.ceil(col_sum.numel() * ratio)]
        keep[i:i + group_size, pruned] = 0
    return keep


def test_row_pruning_is_balanced_and_equals_the_public_algorithm() -> None:
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(16, 70, 3, padding=1), nn.ReLU(), nn.Conv2d(70, 64, 3, padding=1))
    dense = {n: net[int(n)].weight.detach().clone() for n in ("0", "2")}
    fits = convert(net, SmartDealConfig(row_sparsity=0.4), progress=False)
    for name, w in dense.items():
        layer = net[int(name)]
        rows = w.shape[1] * w.shape[2]
        assert layer.layout.num_blocks == -(-rows // 192)
        ours = layer.coeff_mask().squeeze(-1).reshape(w.shape[0], -1)[:, layer.layout.valid_rows().flatten()]
        torch.testing.assert_close(ours, public_structural_mask(w, 0.4))
        per_group = fits[name].pruned_rows_per_group
        assert len(per_group) == -(-w.shape[0] // 32) and set(per_group) == {math.ceil(rows * 0.4)}


def test_resnet_conversion_prunes_every_group_equally_and_leaves_the_classifier_unpruned() -> None:
    from effnn.models import create_model

    torch.manual_seed(7)
    net = create_model("cifar_resnet8", num_classes=10)
    fits = convert(net, None, progress=False)
    for name, fit in fits.items():
        layer = net.get_submodule(name)
        pruned = layer.layout.num_valid_rows - layer.row_mask.sum(dim=(1, 2))
        assert len(set(pruned.tolist())) == 1, name  # every filter group prunes the same number of rows
        assert set(fit.pruned_rows_per_group) == {int(pruned[0])}
        if isinstance(layer, SDLinear):
            assert fit.row_sparsity == 0.0  # public code: conv layers only
        else:
            assert int(pruned[0]) == math.ceil(layer.layout.num_valid_rows * 0.4)


def test_convert_prunes_at_the_requested_ratio_and_keeps_layers_without_gain_dense() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 64, 3), nn.Flatten(),
                        nn.Linear(64 * 16, 10))
    config = SmartDealConfig(row_sparsity=0.5, layer_sparsity={"3": 0.25}, prune_linear=True)
    fits = smartdeal.convert(net, config, progress=False)
    assert isinstance(net[0], nn.Conv2d)  # depthwise 3x3: the 3x3 basis is as large as the filter
    assert isinstance(net[1], SDConv2d) and isinstance(net[3], SDLinear)
    assert fits["1"].row_sparsity == 0.5
    assert fits["3"].row_sparsity == pytest.approx(0.25, abs=0.01)
    # per filter: 3x3 fp32 basis + 6 of 12 rows x 3 entries x 5 bits + 12 mask bits per group of 32 filters
    assert fits["1"].storage_ratio == pytest.approx(36 * 32 / (9 * 32 + 6 * 3 * 5 + 12 / 32))
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
        SmartDealConfig.from_mapping({"row_sparsty": 0.3})
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        SmartDealConfig(row_sparsity=1.0)
    with pytest.raises(ConfigError, match="train_mode"):
        SmartDealConfig(train_mode="sgd")
    with pytest.raises(ConfigError, match="wrap it in nn.Sequential"):
        convert(nn.Conv2d(16, 16, 3), progress=False)
    with pytest.raises(ConfigError, match="no Conv2d/Linear layer"):
        convert(nn.Sequential(nn.ReLU()), progress=False)
