"""SmartDeal layers: a Conv2d/Linear whose weight is rebuilt as W = (mask * Q(Ce)) @ B on every forward.

Layout (``SDLayout``). Each filter (one output channel: ``Cin/groups x kH x kW`` values, or ``in_features``
for a Linear) is flattened, zero-padded at the end and cut into ``num_blocks`` matrices of
``block_rows x b``; each block has its own ``b x b`` full-precision basis B and power-of-two coefficients Ce.

* k x k convs (kW > 1) use ``b = kW``: a row of Ce is one kernel row of one input channel, so a block is
  ``block_rows / kH`` whole input channels (the paper's per-filter ``(Cin*kH) x kW`` reshape, split along
  Cin). Channel counts that do not divide evenly are spread over balanced blocks and the remainder padded.
* 1x1 convs and Linear layers (kW == 1) have no spatial axis to share, so the flattened filter is folded
  into rows of ``vector_basis`` consecutive input channels (default 3, as in the paper's 1x1 convs), again
  balanced over blocks of at most ``block_rows`` rows.

Structured sparsity is a 0/1 mask over rows of Ce, shared by each group of ``filter_group`` consecutive
filters, so hardware can skip a whole row of every filter in the group; padding rows are always masked.
Ce is a latent fp32 tensor: the forward uses Q(Ce) with a straight-through gradient and the mask is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from effnn.decompose.quantize_pow2 import Pow2Spec, round_pow2, round_pow2_ste
from effnn.errors import ConfigError

FP32_BITS = 32


@dataclass(frozen=True)
class SDLayout:
    """How the weight of one layer (``out_features`` filters of ``filter_shape``) maps onto SD blocks."""

    out_features: int
    filter_shape: tuple[int, ...]
    basis_size: int
    num_blocks: int
    block_rows: int

    @classmethod
    def for_weight(cls, weight_shape: tuple[int, ...] | torch.Size, max_block_rows: int = 192,
                   vector_basis: int = 3) -> SDLayout:
        """Pick the block structure for a Conv2d weight ``(Cout, Cin/g, kH, kW)`` or Linear ``(out, in)``."""
        if max_block_rows < 1 or vector_basis < 1:
            raise ConfigError(f"SmartDeal: block_rows ({max_block_rows}) and vector_basis ({vector_basis}) "
                              "must be positive integers")
        shape = tuple(int(s) for s in weight_shape)
        if len(shape) not in (2, 4) or min(shape) < 1:
            raise ConfigError(f"SmartDeal: expected a Linear (out, in) or Conv2d (out, in, kH, kW) weight "
                              f"shape with positive sizes, got {shape}")
        out_features, filter_shape = shape[0], shape[1:]
        if len(shape) == 4 and shape[3] > 1:
            kernel_h, basis = shape[2], shape[3]
            units, rows_per_unit = shape[1], kernel_h  # whole input channels, kH rows each
            max_units = max(1, max_block_rows // kernel_h)
        else:
            basis = vector_basis
            units, rows_per_unit = math.ceil(math.prod(filter_shape) / basis), 1
            max_units = max_block_rows
        num_blocks = math.ceil(units / max_units)
        units_per_block = math.ceil(units / num_blocks)
        return cls(out_features, filter_shape, basis, num_blocks, units_per_block * rows_per_unit)

    @property
    def filter_numel(self) -> int:
        return math.prod(self.filter_shape)

    @property
    def padded_numel(self) -> int:
        return self.num_blocks * self.block_rows * self.basis_size

    @property
    def coeff_shape(self) -> tuple[int, int, int, int]:
        return (self.out_features, self.num_blocks, self.block_rows, self.basis_size)

    @property
    def basis_shape(self) -> tuple[int, int, int, int]:
        return (self.out_features, self.num_blocks, self.basis_size, self.basis_size)

    @property
    def num_valid_rows(self) -> int:
        """Rows per filter that hold at least one real (non-padding) weight."""
        return math.ceil(self.filter_numel / self.basis_size)

    def valid_rows(self, device: torch.device | None = None) -> torch.Tensor:
        """Bool ``(num_blocks, block_rows)``: True where a row is not pure padding (padding is at the end)."""
        rows = torch.arange(self.num_blocks * self.block_rows, device=device)
        return (rows < self.num_valid_rows).view(self.num_blocks, self.block_rows)

    def to_blocks(self, weight: torch.Tensor) -> torch.Tensor:
        """Dense weight -> ``(out, num_blocks, block_rows, b)`` with zero padding."""
        flat = weight.reshape(self.out_features, self.filter_numel)
        flat = F.pad(flat, (0, self.padded_numel - self.filter_numel))
        return flat.view(self.coeff_shape)

    def from_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """``(out, num_blocks, block_rows, b)`` -> dense weight, dropping the padding (static slicing)."""
        flat = blocks.reshape(self.out_features, self.padded_numel)[:, : self.filter_numel]
        return flat.reshape(self.out_features, *self.filter_shape)


class SDWeight(nn.Module):
    """The decomposed weight shared by ``SDConv2d`` and ``SDLinear``.

    Parameters: ``ce`` (latent fp32 coefficients, ``layout.coeff_shape``) and ``basis``
    (``layout.basis_shape``).
    Buffers: ``row_mask`` (``ceil(out / filter_group) x num_blocks x block_rows``, 1 = row kept) and
    ``element_mask`` (``layout.coeff_shape``, 1 = entry may be nonzero; all ones until conversion sets it
    from the fitted Ce, as the public SEConv2d's ``mask``).
    """

    def __init__(self, layout: SDLayout, spec: Pow2Spec, filter_group: int) -> None:
        super().__init__()
        if filter_group < 1:
            raise ConfigError(f"SmartDeal: filter_group must be >= 1, got {filter_group}")
        self.layout = layout
        self.spec = spec
        self.filter_group = filter_group
        self.ce = nn.Parameter(torch.zeros(layout.coeff_shape))
        self.basis = nn.Parameter(torch.eye(layout.basis_size).expand(layout.basis_shape).clone())
        groups = math.ceil(layout.out_features / filter_group)
        self.register_buffer("row_mask", layout.valid_rows().float().expand(groups, -1, -1).clone())
        self.register_buffer("element_mask", torch.ones(layout.coeff_shape))

    def coeff_mask(self) -> torch.Tensor:
        """Row mask broadcast to every filter: ``(out, num_blocks, block_rows, 1)``."""
        mask = self.row_mask.repeat_interleave(self.filter_group, dim=0)[: self.layout.out_features]
        return mask.unsqueeze(-1)

    def entry_mask(self) -> torch.Tensor:
        """Row mask times element mask, per Ce entry: ``layout.coeff_shape``."""
        return self.coeff_mask() * self.element_mask

    def quantized_coefficients(self) -> torch.Tensor:
        """mask * Q(Ce), with the straight-through gradient to the latent Ce."""
        return self.entry_mask() * round_pow2_ste(self.ce, self.spec)

    @property
    def weight(self) -> torch.Tensor:
        """The effective dense weight W = (mask * Q(Ce)) @ B, in the dense layer's shape.

        The product is a broadcast multiply + sum rather than a matmul: it is the on-chip weight rebuild,
        not a layer, so op-level workload extraction (``effnn.hw``) sees only the layer's own conv/linear.
        """
        coeffs = self.quantized_coefficients()
        blocks = (coeffs.unsqueeze(-1) * self.basis.unsqueeze(-3)).sum(dim=-2)
        return self.layout.from_blocks(blocks)

    @torch.no_grad()
    def load_decomposition(self, ce: torch.Tensor, basis: torch.Tensor, row_mask: torch.Tensor | None = None
                           ) -> None:
        """Set Ce, B (and optionally the row mask); shapes must match the layout. Padding rows stay masked."""
        for name, value, want in (("ce", ce, self.ce.shape), ("basis", basis, self.basis.shape),
                                  ("row_mask", row_mask, self.row_mask.shape)):
            if value is not None and tuple(value.shape) != tuple(want):
                raise ValueError(f"{type(self).__name__}.load_decomposition: {name} has shape "
                                 f"{tuple(value.shape)}, the layout needs {tuple(want)}")
        if row_mask is not None:
            self.set_row_mask(row_mask)
        self.ce.copy_(ce * self.coeff_mask())
        self.basis.copy_(basis)

    @torch.no_grad()
    def set_row_mask(self, row_mask: torch.Tensor) -> None:
        """Fix which rows are kept (nonzero = kept); padding rows are forced to 0."""
        if tuple(row_mask.shape) != tuple(self.row_mask.shape):
            raise ValueError(f"{type(self).__name__}.set_row_mask: mask has shape {tuple(row_mask.shape)}, "
                             f"the layout needs {tuple(self.row_mask.shape)}")
        valid = self.layout.valid_rows(self.row_mask.device)
        self.row_mask.copy_((row_mask.to(self.row_mask.device) != 0).to(self.row_mask) * valid)

    @torch.no_grad()
    def set_element_mask(self, element_mask: torch.Tensor) -> None:
        """Fix which Ce entries may be nonzero (nonzero = kept), e.g. ``Q(Ce) != 0`` right after fitting."""
        if tuple(element_mask.shape) != tuple(self.element_mask.shape):
            raise ValueError(f"{type(self).__name__}.set_element_mask: mask has shape "
                             f"{tuple(element_mask.shape)}, the layout needs {tuple(self.element_mask.shape)}")
        self.element_mask.copy_((element_mask.to(self.element_mask.device) != 0).to(self.element_mask))

    @torch.no_grad()
    def load_dense_weight(self, weight: torch.Tensor) -> None:
        """Start from a dense weight with B = identity (Ce = W): SD training from scratch, no fitting."""
        eye = torch.eye(self.layout.basis_size, dtype=self.basis.dtype, device=self.basis.device)
        self.load_decomposition(self.layout.to_blocks(weight), eye.expand(self.layout.basis_shape))

    @torch.no_grad()
    def project_(self) -> None:
        """Replace the latent Ce by mask * Q(Ce) (the project-after-step training mode)."""
        self.ce.copy_(self.entry_mask() * round_pow2(self.ce, self.spec))

    def storage_bits(self) -> dict[str, int]:
        """Bits to store this weight: B in fp32, Ce as sign + exponent code on kept rows, 1 bit per mask row.

        Masked rows (pruned or padding) store nothing; the mask has one bit per real row per filter group.
        The bias is not part of the weight and is counted separately by the storage report.
        """
        kept_rows = int(self.coeff_mask().sum().item())
        return {
            "basis": self.basis.numel() * FP32_BITS,
            "coefficients": kept_rows * self.layout.basis_size * self.spec.bits_per_entry,
            "mask": self.row_mask.shape[0] * self.layout.num_valid_rows,
        }

    @property
    def dense_weight_numel(self) -> int:
        return self.layout.out_features * self.layout.filter_numel

    @property
    def storage_bits_per_weight(self) -> float:
        """Average stored bits per dense weight: what a hardware model should use for weight traffic."""
        return sum(self.storage_bits().values()) / self.dense_weight_numel

    def _sd_repr(self) -> str:
        l = self.layout
        return (f"blocks={l.num_blocks}x{l.block_rows}x{l.basis_size}, filter_group={self.filter_group}, "
                f"exp=[{self.spec.min_exp},{self.spec.max_exp}]")


class SDConv2d(SDWeight):
    """Drop-in Conv2d (zeros padding) with a SmartDeal weight; any channel count and kernel size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True, *,
                 block_rows: int = 192, vector_basis: int = 3, filter_group: int = 8,
                 spec: Pow2Spec | None = None) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"SDConv2d: in_channels={in_channels} and out_channels={out_channels} must be "
                             f"divisible by groups={groups}")
        kernel = _pair(kernel_size)
        layout = SDLayout.for_weight((out_channels, in_channels // groups, *kernel), block_rows, vector_basis)
        super().__init__(layout, spec or Pow2Spec(), filter_group)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel
        self.stride, self.dilation, self.groups = _pair(stride), _pair(dilation), groups
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initial weight distribution as nn.Conv2d, expressed with B = identity."""
        weight = torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.load_dense_weight(weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, **kwargs) -> SDConv2d:
        """An SD layer with ``conv``'s hyper-parameters and bias (Ce/B still to be fitted or loaded)."""
        if conv.padding_mode != "zeros":
            raise ConfigError(f"SDConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}; "
                              "skip this layer in the SmartDeal config")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, **kwargs)
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        if conv.bias is not None:
            layer.bias.data.copy_(conv.bias.data)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={self.bias is not None}, {self._sd_repr()}")


class SDLinear(SDWeight):
    """Drop-in Linear with a SmartDeal weight; rows of Ce hold ``vector_basis`` consecutive inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, block_rows: int = 192,
                 vector_basis: int = 3, filter_group: int = 8, spec: Pow2Spec | None = None) -> None:
        layout = SDLayout.for_weight((out_features, in_features), block_rows, vector_basis)
        super().__init__(layout, spec or Pow2Spec(), filter_group)
        self.in_features, self.out_features = in_features, out_features
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_features)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initial weight distribution as nn.Linear, expressed with B = identity."""
        weight = torch.empty(self.out_features, self.in_features)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.load_dense_weight(weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_dense(cls, linear: nn.Linear, **kwargs) -> SDLinear:
        """An SD layer with ``linear``'s shape and bias (Ce/B still to be fitted or loaded)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, **kwargs)
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.data)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._sd_repr()}")


SD_LAYERS = (SDConv2d, SDLinear)
