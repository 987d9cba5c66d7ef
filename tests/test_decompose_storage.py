"""Storage accounting, checked bit by bit against a hand count on a small layer."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console
from torch import nn

from effnn.decompose import Pow2Spec, SDConv2d, weight_bits_per_module, weight_storage


def hand_layer(spec: Pow2Spec | None = None) -> SDConv2d:
    """Conv 5 -> 4, 3x3, blocks of 2 channels: 3 blocks of 6 rows x 3, last block has 1 padding channel."""
    layer = SDConv2d(5, 4, 3, block_rows=6, filter_group=2, spec=spec)
    mask = torch.ones(2, 3, 6)
    mask[0, 0, 0] = mask[0, 1, 2] = 0  # group 0 (filters 0, 1): 2 rows pruned
    mask[1, 2, 1] = 0  # group 1 (filters 2, 3): 1 row pruned
    layer.set_row_mask(mask)
    return layer


def test_layer_storage_by_hand() -> None:
    layer = hand_layer()
    assert (layer.layout.num_blocks, layer.layout.block_rows, layer.layout.num_valid_rows) == (3, 6, 15)
    # kept rows: group 0: (15 - 2) x 2 filters, group 1: (15 - 1) x 2 filters = 54 rows x 3 entries
    want = {"basis": 4 * 3 * 9 * 32,  # one 3x3 fp32 basis per filter per block
            "coefficients": 54 * 3 * 5,  # sign + 4-bit exponent code (14 exponents + zero)
            "mask": 2 * 15}  # one bit per real row per filter group; padding rows are implicit
    assert layer.storage_bits() == want
    assert layer.storage_bits_per_weight == pytest.approx(sum(want.values()) / (4 * 5 * 9))
    # a 3-level exponent range needs a 2-bit code: Ce costs 3 bits per entry
    assert hand_layer(Pow2Spec(-1, 0)).storage_bits()["coefficients"] == 54 * 3 * 3


def test_model_report_totals_and_ratio_by_hand() -> None:
    model = nn.Sequential(hand_layer(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    report = weight_storage(model)
    sd_bits = 4 * 3 * 9 * 32 + 54 * 3 * 5 + 30
    assert [l.name for l in report.layers] == ["0", "3"]
    assert report.dense_bits == (4 * 45 + 8) * 32
    assert report.stored_bits == sd_bits + 8 * 32
    assert report.ratio == pytest.approx((4 * 45 + 8) * 32 / (sd_bits + 8 * 32))
    assert report.stored_values == 4 * 3 * 9 + 54 * 3 + 8
    assert report.other_params == 4 + 8 + 2  # conv bias, BN weight+bias, linear bias
    assert weight_bits_per_module(model) == pytest.approx({"0": sd_bits / 180, "3": 32.0})
    console = Console(record=True, width=140)
    console.print(report.table())
    text = console.export_text()
    assert "SDConv2d" in text and f"{report.ratio:.2f}x" in text


def test_pruning_more_rows_only_removes_coefficient_bits() -> None:
    dense = hand_layer()
    sparse = hand_layer()
    mask = sparse.row_mask.clone()
    mask[:, 0, :] = 0  # prune block 0 entirely for both groups: 6 rows x 4 filters
    sparse.set_row_mask(mask)
    d, s = dense.storage_bits(), sparse.storage_bits()
    assert d["basis"] == s["basis"] and d["mask"] == s["mask"]
    # row 0 of block 0 was already pruned for group 0 (2 filters)
    assert d["coefficients"] - s["coefficients"] == (6 * 4 - 2) * 3 * 5


def test_public_formula_by_hand() -> None:
    """SmartDeal-Training/main.py --validate: C_bit = ceil(log2(|{|C|}| - 1)) + 1 bits per nonzero Ce
    entry, one encoding bit per Ce entry, 32 bits per B entry; here B is 4 x 3 x 9 fp32 values."""
    from effnn.decompose import public_storage

    layer = hand_layer()
    ce = torch.full(layer.ce.shape, 0.5)
    ce[0, 0, :3] = -2.0  # rows 0-2 of filter 0, block 0 (row 0 is pruned for group 0)
    ce[3, 1, 0, 0] = 0.0
    layer.load_decomposition(ce, layer.basis.detach())
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(4, 2))
    report = public_storage(model)
    # Ce entries on real rows: 4 filters x 15 rows x 3; nonzero: the 54 kept rows x 3, minus one zero
    assert report.coeffs == 4 * 15 * 3 and report.nonzero_coeffs == 54 * 3 - 1
    assert report.distinct_values == 3  # {0, 0.5, 2}
    assert report.coeff_bits == 2  # ceil(log2(3 - 1)) + 1
    want = (54 * 3 - 1) * 2 + 4 * 15 * 3 + 4 * 3 * 9 * 32 + 8 * 32  # + the dense Linear in fp32
    assert report.stored_bits == want
    assert report.ratio == pytest.approx((4 * 45 + 8) * 32 / want)


def test_element_mask_keeps_zero_coefficients_zero_while_fine_tuning() -> None:
    from effnn.decompose import convert

    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 16, 3))
    convert(net, {"row_sparsity": 0.25}, progress=False)
    layer = net[0]
    zero = layer.quantized_coefficients().detach() == 0
    assert zero.any() and not zero.all()
    torch.testing.assert_close(layer.element_mask, (~zero).float())
    opt = torch.optim.SGD(net.parameters(), lr=1.0)  # a large step would revive zeros without the mask
    x, y = torch.randn(16, 8, 4, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert (layer.quantized_coefficients().detach()[zero] == 0).all()
    assert (layer.quantized_coefficients().detach() != 0).sum() <= (~zero).sum()
