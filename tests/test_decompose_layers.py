"""SD layers: block layout, exact W = (mask * Q(Ce)) @ B, any channel count, STE gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effnn.decompose.quantize_pow2 import Pow2Spec
from effnn.decompose.sd_layers import SDConv2d, SDLayout, SDLinear


def random_pow2(shape: tuple[int, ...], gen: torch.Generator, lo: int = -6, hi: int = 3) -> torch.Tensor:
    """Random signed powers of two inside Q's default exponent range (so Q is the identity on them)."""
    exps = torch.randint(lo, hi + 1, shape, generator=gen).float()
    return torch.exp2(exps) * (torch.rand(shape, generator=gen) - 0.5).sign()


def test_layout_of_a_kxk_conv_follows_the_paper_reshape() -> None:
    # 64 input channels of a 3x3 conv: one block of (64*3) x 3 per filter, basis 3x3
    layout = SDLayout.for_weight((32, 64, 3, 3), max_block_rows=192)
    assert (layout.num_blocks, layout.block_rows, layout.basis_size) == (1, 192, 3)
    # 100 channels with blocks of at most 64 channels -> 2 balanced blocks of 50 channels, no padding
    layout = SDLayout.for_weight((8, 100, 3, 3), max_block_rows=192)
    assert (layout.num_blocks, layout.block_rows, layout.padded_numel) == (2, 150, 900)
    # 99 channels -> 2 blocks of 50 channels, one padding channel (3 rows) at the very end
    layout = SDLayout.for_weight((8, 99, 3, 3), max_block_rows=192)
    assert (layout.num_blocks, layout.block_rows, layout.num_valid_rows) == (2, 150, 297)
    assert layout.valid_rows().sum() == 297 and not layout.valid_rows()[1, -3:].any()


def test_layout_of_vectors_folds_rows_of_vector_basis_channels() -> None:
    layout = SDLayout.for_weight((10, 64), max_block_rows=192, vector_basis=3)  # Linear 64 -> 10
    assert (layout.num_blocks, layout.block_rows, layout.basis_size, layout.num_valid_rows) == (1, 22, 3, 22)
    layout = SDLayout.for_weight((16, 1000, 1, 1), max_block_rows=100, vector_basis=4)  # 1x1 conv
    assert (layout.num_blocks, layout.block_rows, layout.basis_size) == (3, 84, 4)
    assert layout.padded_numel == 3 * 84 * 4 >= 1000


@pytest.mark.parametrize("shape", [(4, 7, 3, 3), (6, 5, 1, 1), (3, 2, 3, 5), (5, 11, 5, 1), (7, 13)])
def test_to_blocks_round_trips_and_rows_match_the_weight(shape: tuple[int, ...]) -> None:
    layout = SDLayout.for_weight(shape, max_block_rows=6, vector_basis=3)
    w = torch.randn(shape)
    blocks = layout.to_blocks(w)
    assert blocks.shape == layout.coeff_shape
    torch.testing.assert_close(layout.from_blocks(blocks), w, rtol=0, atol=0)
    flat = blocks.reshape(shape[0], -1)
    assert torch.all(flat[:, w[0].numel():] == 0)  # only zero padding after the real weights
    if len(shape) == 4 and shape[3] > 1:  # k x k: each row is one kernel row of one input channel
        torch.testing.assert_close(blocks.reshape(shape[0], -1, shape[3])[:, : shape[1] * shape[2]],
                                   w.reshape(shape[0], shape[1] * shape[2], shape[3]))


def test_weight_is_exactly_masked_pow2_coefficients_times_basis() -> None:
    gen = torch.Generator().manual_seed(0)
    layer = SDConv2d(6, 4, 3, padding=1, bias=False, block_rows=9, filter_group=2)  # 2 blocks of 3 channels
    ce = random_pow2(layer.layout.coeff_shape, gen)
    basis = torch.randn(layer.layout.basis_shape, generator=gen)
    mask = torch.ones_like(layer.row_mask)
    mask[1, 0, 4] = 0  # drop row 4 of block 0 for filters 2 and 3
    layer.load_decomposition(ce, basis, mask)
    w = layer.weight.detach()
    for o in range(4):
        for blk in range(2):
            c = ce[o, blk].clone()
            if o >= 2 and blk == 0:
                c[4] = 0
            want = (c.double() @ basis[o, blk].double()).reshape(3, 3, 3)  # 3 channels x kH x kW
            torch.testing.assert_close(w[o, 3 * blk: 3 * blk + 3].double(), want, rtol=1e-6, atol=1e-6)
    x = torch.randn(2, 6, 5, 5, generator=gen)
    torch.testing.assert_close(layer(x), F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("make_dense", [
    lambda: nn.Conv2d(7, 5, 3, stride=2, padding=1),
    lambda: nn.Conv2d(10, 6, 1),
    lambda: nn.Conv2d(6, 6, 3, padding=1, groups=3),
    lambda: nn.Conv2d(3, 4, (3, 5), padding=(1, 2), dilation=1, bias=False),
    lambda: nn.Conv2d(65, 8, 3, padding="same"),
    lambda: nn.Linear(100, 7),
])
def test_any_channel_count_reproduces_a_dense_layer_with_pow2_weights(make_dense) -> None:
    gen = torch.Generator().manual_seed(1)
    dense = make_dense()
    with torch.no_grad():
        dense.weight.copy_(random_pow2(tuple(dense.weight.shape), gen))
    cls = SDConv2d if isinstance(dense, nn.Conv2d) else SDLinear
    sd = cls.from_dense(dense, block_rows=12, vector_basis=3)
    sd.load_dense_weight(dense.weight)  # B = I, Ce = W: Q is the identity on these weights
    x = torch.randn(3, dense.in_channels, 9, 9, generator=gen) if cls is SDConv2d else torch.randn(3, 100)
    torch.testing.assert_close(sd(x), dense(x), rtol=0, atol=0)
    sd(x).square().sum().backward()
    assert sd.ce.grad is not None and sd.basis.grad is not None


def test_ste_gradients_equal_the_chain_rule_through_the_weight() -> None:
    gen = torch.Generator().manual_seed(2)
    layer = SDLinear(10, 4, bias=False, vector_basis=3, filter_group=2)
    layer.load_decomposition(torch.randn(layer.layout.coeff_shape, generator=gen) * 0.3,
                             torch.randn(layer.layout.basis_shape, generator=gen))
    mask = layer.row_mask.clone()
    mask[0, 0, 1] = 0
    layer.set_row_mask(mask)
    x = torch.randn(5, 10, generator=gen)
    layer(x).sum().backward()
    # independent reference: dL/dW for sum(x @ W^T) is ones^T x; blocks view; dCe = mask * dWb @ B^T
    grad_w = torch.ones(5, 4).T @ x
    grad_blocks = layer.layout.to_blocks(grad_w)
    want = layer.coeff_mask() * (grad_blocks @ layer.basis.detach().transpose(-1, -2))
    torch.testing.assert_close(layer.ce.grad, want)
    assert torch.all(layer.ce.grad[:2, 0, 1] == 0)  # pruned row of the first filter group gets no gradient


def test_padding_rows_stay_masked_and_project_snaps_onto_the_grid() -> None:
    layer = SDLinear(10, 3, vector_basis=4, spec=Pow2Spec(-4, 2))  # 10 inputs in rows of 4 -> 3 rows
    assert layer.layout.num_valid_rows == 3 and layer.layout.padded_numel == 12
    layer.set_row_mask(torch.ones_like(layer.row_mask))
    with torch.no_grad():
        layer.ce.add_(0.123)
    layer.project_()
    q = layer.ce.detach()
    nonzero = q[q != 0].abs()
    torch.testing.assert_close(torch.exp2(torch.log2(nonzero).round()), nonzero, rtol=0, atol=0)
    assert nonzero.max() <= 4 and nonzero.min() >= 2**-4


def test_bad_layer_arguments_raise() -> None:
    with pytest.raises(ValueError, match="divisible by groups"):
        SDConv2d(6, 4, 3, groups=4)
    layer = SDLinear(8, 2)
    with pytest.raises(ValueError, match="ce has shape"):
        layer.load_decomposition(torch.zeros(2, 2), layer.basis.detach())
