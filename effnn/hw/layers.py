"""Layer shapes: the one vocabulary shared by workload extraction, the systolic model and search spaces.

A search space can describe a subnet as a list of these without building a module, which is what
lets the hardware model score thousands of archs per second.
"""

from __future__ import annotations

from dataclasses import dataclass


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output size with PyTorch's Conv2d semantics (floor division)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_bits(layer: ConvLayer | GemmLayer) -> None:
    for field in ("weight_bits", "act_bits", "out_bits", "weight_storage_bits"):
        value = getattr(layer, field)
        if value is not None and not value > 0:
            raise ValueError(f"layer {layer.name!r}: {field} must be positive, got {value}")


@dataclass(frozen=True)
class ConvLayer:
    """A 2-D convolution (a Linear is a 1x1 conv on a 1x1 map) with PyTorch stride/padding semantics.

    Grouped and depthwise convs are expressed with ``groups``; each group is an independent GEMM.
    Bit-widths let quantized/decomposed models report their real MAC energy and traffic:
    ``weight_bits`` is the width the array computes with, ``weight_storage_bits`` (default: the same) the
    average bits a weight occupies in DRAM and in the filter SRAM, e.g. SmartDeal's compressed form, which
    is rebuilt to ``weight_bits`` at the array's edge.
    """

    name: str
    in_ch: int
    out_ch: int
    in_h: int
    in_w: int
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    groups: int = 1
    batch: int = 1
    weight_bits: float = 16.0
    act_bits: float = 16.0
    out_bits: float = 16.0
    weight_storage_bits: float | None = None
    #: bottom/right padding when it differs from the top/left one (default: ``pad_h``/``pad_w``, PyTorch's
    #: symmetric padding). SCALE-Sim topology files need it: their ``ceil((H - R + s) / s)`` output size is
    #: a conv whose last window runs off the bottom/right edge (see ``read_scalesim_topology``).
    pad_h_end: int | None = None
    pad_w_end: int | None = None

    def __post_init__(self) -> None:
        _check_bits(self)
        for field in ("pad_h", "pad_w", "pad_h_end", "pad_w_end"):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValueError(f"layer {self.name!r}: {field} must be >= 0, got {value}")
        for field in ("in_ch", "out_ch", "in_h", "in_w", "kernel_h", "kernel_w", "stride_h", "stride_w",
                      "groups", "batch"):
            if getattr(self, field) <= 0:
                raise ValueError(f"layer {self.name!r}: {field} must be positive, got {getattr(self, field)}")
        if self.in_ch % self.groups or self.out_ch % self.groups:
            raise ValueError(f"layer {self.name!r}: in_ch={self.in_ch} and out_ch={self.out_ch} must both be "
                             f"divisible by groups={self.groups}")
        if self.out_h <= 0 or self.out_w <= 0:
            raise ValueError(f"layer {self.name!r}: kernel larger than the padded input "
                             f"({self.in_h}x{self.in_w}, pad {self.pad_h},{self.pad_w})")

    @property
    def out_h(self) -> int:
        end = self.pad_h if self.pad_h_end is None else self.pad_h_end
        return _conv_out(self.in_h + end - self.pad_h, self.kernel_h, self.stride_h, self.pad_h)

    @property
    def out_w(self) -> int:
        end = self.pad_w if self.pad_w_end is None else self.pad_w_end
        return _conv_out(self.in_w + end - self.pad_w, self.kernel_w, self.stride_w, self.pad_w)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_ch

    @property
    def gemm(self) -> tuple[int, int, int]:
        """Per-group GEMM (M, N, K) = (ofmap pixels x batch, filters per group, R*S*C per group)."""
        return (self.batch * self.out_h * self.out_w, self.out_ch // self.groups,
                self.kernel_h * self.kernel_w * (self.in_ch // self.groups))

    @property
    def macs(self) -> int:
        m, n, k = self.gemm
        return self.groups * m * n * k

    @property
    def params(self) -> int:
        return self.out_ch * (self.in_ch // self.groups) * self.kernel_h * self.kernel_w

    @property
    def stored_weight_bits(self) -> float:
        """Bits per weight in DRAM and the filter SRAM: ``weight_storage_bits`` if given, else ``weight_bits``."""
        return self.weight_bits if self.weight_storage_bits is None else self.weight_storage_bits


@dataclass(frozen=True)
class GemmLayer:
    """A plain matrix multiply (M x K) @ (K x N), e.g. attention or a batched linear; the (K x N) operand is
    the "weight" (bits as in :class:`ConvLayer`)."""

    name: str
    m: int
    n: int
    k: int
    weight_bits: float = 16.0
    act_bits: float = 16.0
    out_bits: float = 16.0
    weight_storage_bits: float | None = None

    def __post_init__(self) -> None:
        _check_bits(self)
        for field in ("m", "n", "k"):
            if getattr(self, field) <= 0:
                raise ValueError(f"layer {self.name!r}: {field} must be positive, got {getattr(self, field)}")

    @property
    def groups(self) -> int:
        return 1

    @property
    def gemm(self) -> tuple[int, int, int]:
        return (self.m, self.n, self.k)

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k

    @property
    def params(self) -> int:
        return self.n * self.k

    @property
    def stored_weight_bits(self) -> float:
        return self.weight_bits if self.weight_storage_bits is None else self.weight_storage_bits


Layer = ConvLayer | GemmLayer
