"""Elastic (weight-sharing) layers: full-size parameters, sliced to the active config at every forward.

Every op keeps its largest tensors as ``weight``/``bias`` parameters and runs the functional op
(``F.conv2d``, ``F.batch_norm``, ``F.linear``) on a slice, so gradients of all subnets land in the same
storage, and a generic tool (quantizers, hooks) can treat the op like its static counterpart. Input
channels always follow the input tensor; output channels and kernel size are set by the supernet
(``configure``). ``to_static`` returns the plain ``nn`` module with the active slice copied out.

A weight parametrization (e.g. the fake quantizer of ``effnn.precision``) is applied to the active slice,
not to the full-size tensor (``active_slice``): a quantizer's per-channel range then spans what the subnet
actually uses, so a small subnet gets all 2^b levels instead of a subset of the supernet's range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import make_divisible
from timm.models._efficientnet_blocks import SqueezeExcite
from torch.nn.utils import parametrize


def _check_channels(op: nn.Module, channels: int, maximum: int, what: str) -> None:
    if not 0 < channels <= maximum:
        raise ValueError(f"{type(op).__name__}: {what}={channels} is outside 1..{maximum}, the size this "
                         f"layer was built with; build the supernet from the space the arch belongs to")


def _check_kernel(op: nn.Module, kernel_size: int, maximum: int) -> None:
    if kernel_size % 2 == 0 or not 0 < kernel_size <= maximum:
        raise ValueError(f"{type(op).__name__}: kernel_size={kernel_size} must be odd and <= {maximum} "
                         f"(elastic kernels are centre crops of the largest one)")


def active_slice(op: nn.Module, cut: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``cut(weight)``, with any parametrizations of ``op.weight`` applied after the cut, in their order.

    Without a parametrization this is ``cut(op.weight)``. With one (a fake quantizer), the stored full-size
    tensor is sliced first and the parametrization sees only the slice.
    """
    if not parametrize.is_parametrized(op, "weight"):
        return cut(op.weight)
    weight = cut(op.parametrizations.weight.original)
    for parametrization in op.parametrizations.weight:
        weight = parametrization(weight)
    return weight


def _centre_crop(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The centre ``kernel_size`` x ``kernel_size`` window of a square kernel (a view, no copy)."""
    full = weight.shape[-1]
    if kernel_size == full:
        return weight
    start = (full - kernel_size) // 2
    return weight[..., start:start + kernel_size, start:start + kernel_size]


class DynamicConv2d(nn.Module):
    """Dense conv with elastic input/output channels and an elastic odd kernel (centre crop), 'same' padding.

    The channel slice keeps the first channels, as in OFA/AttentiveNAS, so the smallest subnet shares the
    most-trained filters.
    """

    def __init__(self, max_in_channels: int, max_out_channels: int, kernel_size: int = 1, stride: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.max_kernel_size = kernel_size
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_out_channels, max_in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None
        self.active_out_channels = max_out_channels
        self.active_kernel_size = kernel_size
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def configure(self, out_channels: int | None = None, kernel_size: int | None = None) -> None:
        """Set the active output channels and kernel size (None keeps the current value)."""
        if out_channels is not None:
            _check_channels(self, out_channels, self.max_out_channels, "out_channels")
            self.active_out_channels = out_channels
        if kernel_size is not None:
            _check_kernel(self, kernel_size, self.max_kernel_size)
            self.active_kernel_size = kernel_size

    def active_weight(self, in_channels: int) -> torch.Tensor:
        _check_channels(self, in_channels, self.max_in_channels, "in_channels")

        def cut(weight: torch.Tensor) -> torch.Tensor:
            if self.active_out_channels != self.max_out_channels or in_channels != self.max_in_channels:
                weight = weight[:self.active_out_channels, :in_channels]
            return _centre_crop(weight, self.active_kernel_size)

        return active_slice(self, cut)

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out_channels == self.max_out_channels:
            return self.bias
        return self.bias[:self.active_out_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.active_weight(x.shape[1]), self.active_bias(), self.stride,
                        self.active_kernel_size // 2)

    def to_static(self, in_channels: int) -> nn.Conv2d:
        k = self.active_kernel_size
        conv = nn.Conv2d(in_channels, self.active_out_channels, k, self.stride, k // 2,
                         bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight(in_channels))
            if self.bias is not None:
                conv.bias.copy_(self.active_bias())
        return conv

    def extra_repr(self) -> str:
        return (f"max_in={self.max_in_channels}, max_out={self.max_out_channels}, "
                f"max_k={self.max_kernel_size}, stride={self.stride}, active_out={self.active_out_channels}, "
                f"active_k={self.active_kernel_size}")


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise conv (groups == active channels, taken from the input) with an elastic odd kernel."""

    def __init__(self, max_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.max_channels = max_channels
        self.max_kernel_size = kernel_size
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, kernel_size, kernel_size))
        self.register_parameter("bias", None)
        self.active_kernel_size = kernel_size
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def configure(self, kernel_size: int | None = None) -> None:
        if kernel_size is not None:
            _check_kernel(self, kernel_size, self.max_kernel_size)
            self.active_kernel_size = kernel_size

    def active_weight(self, channels: int) -> torch.Tensor:
        _check_channels(self, channels, self.max_channels, "channels")

        def cut(weight: torch.Tensor) -> torch.Tensor:
            return _centre_crop(weight if channels == self.max_channels else weight[:channels],
                                self.active_kernel_size)

        return active_slice(self, cut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        return F.conv2d(x, self.active_weight(channels), None, self.stride, self.active_kernel_size // 2, 1,
                        channels)

    def to_static(self, channels: int) -> nn.Conv2d:
        k = self.active_kernel_size
        conv = nn.Conv2d(channels, channels, k, self.stride, k // 2, groups=channels, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight(channels))
        return conv

    def extra_repr(self) -> str:
        return (f"max_channels={self.max_channels}, max_k={self.max_kernel_size}, stride={self.stride}, "
                f"active_k={self.active_kernel_size}")


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first C channels of full-size affine parameters and running statistics.

    Deliberately not an ``nn.BatchNorm2d`` subclass: ``SyncBatchNorm.convert_sync_batchnorm`` would
    otherwise swap it for a fixed-width layer. ``momentum=None`` gives a cumulative average, which is
    what BN recalibration uses.
    """

    def __init__(self, max_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.max_features = max_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(max_features))
        self.bias = nn.Parameter(torch.zeros(max_features))
        self.register_buffer("running_mean", torch.zeros(max_features))
        self.register_buffer("running_var", torch.ones(max_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def _slice(self, tensor: torch.Tensor, channels: int) -> torch.Tensor:
        return tensor if channels == self.max_features else tensor[:channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        _check_channels(self, c, self.max_features, "num_features")
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        else:
            factor = 0.0
        return F.batch_norm(x, self._slice(self.running_mean, c), self._slice(self.running_var, c),
                            self._slice(self.weight, c), self._slice(self.bias, c), self.training, factor,
                            self.eps)

    def to_static(self, num_features: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(num_features, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(self, name)[:num_features])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn

    def extra_repr(self) -> str:
        return f"max_features={self.max_features}, eps={self.eps}, momentum={self.momentum}"


class DynamicLinear(nn.Module):
    """Linear layer with elastic input features (from the input) and elastic output features."""

    def __init__(self, max_in_features: int, max_out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.max_in_features = max_in_features
        self.max_out_features = max_out_features
        self.weight = nn.Parameter(torch.empty(max_out_features, max_in_features))
        self.bias = nn.Parameter(torch.zeros(max_out_features)) if bias else None
        self.active_out_features = max_out_features
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def configure(self, out_features: int | None = None) -> None:
        if out_features is not None:
            _check_channels(self, out_features, self.max_out_features, "out_features")
            self.active_out_features = out_features

    def active_weight(self, in_features: int) -> torch.Tensor:
        _check_channels(self, in_features, self.max_in_features, "in_features")
        if in_features == self.max_in_features and self.active_out_features == self.max_out_features:
            return active_slice(self, lambda weight: weight)
        return active_slice(self, lambda weight: weight[:self.active_out_features, :in_features])

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out_features == self.max_out_features:
            return self.bias
        return self.bias[:self.active_out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.active_weight(x.shape[-1]), self.active_bias())

    def to_static(self, in_features: int) -> nn.Linear:
        linear = nn.Linear(in_features, self.active_out_features, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.active_weight(in_features))
            if self.bias is not None:
                linear.bias.copy_(self.active_bias())
        return linear

    def extra_repr(self) -> str:
        return (f"max_in={self.max_in_features}, max_out={self.max_out_features}, "
                f"active_out={self.active_out_features}")


def se_hidden_channels(channels: int, divisor: int = 8) -> int:
    """Squeeze-excite bottleneck width of AttentiveNAS/AlphaNet: make_divisible(channels // 4, 8)."""
    return make_divisible(channels // 4, divisor)


class DynamicSE(nn.Module):
    """Squeeze-excite (ReLU bottleneck, hard-sigmoid gate) whose width follows the input channels.

    The bottleneck is ``se_hidden_channels(C)`` for the active C, computed from the input every call.
    Its parameters live in the two ``DynamicConv2d`` children, which generic tools find as usual.
    """

    def __init__(self, max_channels: int, divisor: int = 8) -> None:
        super().__init__()
        self.max_channels = max_channels
        self.divisor = divisor
        max_hidden = se_hidden_channels(max_channels, divisor)
        self.conv_reduce = DynamicConv2d(max_channels, max_hidden, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = DynamicConv2d(max_hidden, max_channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        self.conv_reduce.configure(out_channels=se_hidden_channels(channels, self.divisor))
        self.conv_expand.configure(out_channels=channels)
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)

    def to_static(self, channels: int) -> SqueezeExcite:
        hidden = se_hidden_channels(channels, self.divisor)
        self.conv_reduce.configure(out_channels=hidden)
        self.conv_expand.configure(out_channels=channels)
        se = SqueezeExcite(channels, rd_channels=hidden, act_layer=nn.ReLU, gate_layer=nn.Hardsigmoid)
        se.conv_reduce = self.conv_reduce.to_static(channels)
        se.conv_expand = self.conv_expand.to_static(hidden)
        return se


DYNAMIC_OPS = (DynamicConv2d, DynamicDepthwiseConv2d, DynamicBatchNorm2d, DynamicLinear, DynamicSE)

__all__ = ["DYNAMIC_OPS", "DynamicBatchNorm2d", "DynamicConv2d", "DynamicDepthwiseConv2d", "DynamicLinear",
           "DynamicSE", "active_slice", "se_hidden_channels"]
