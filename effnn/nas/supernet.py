"""The weight-sharing supernet of a search space, and the static subnets it extracts.

``MBNet`` is the network shape (stem, inverted-residual blocks, MobileNetV3 head) with timm-style
``forward_features``/``forward_head``; the static subnet is an ``MBNet`` of plain ``nn`` layers, and the
``Supernet`` is an ``MBNet`` of elastic layers that runs only the blocks the active ``Arch`` selects.
Both use the same module names, which are also the layer names of ``SearchSpace.workload``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_act_layer, make_divisible

from effnn.nas.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicDepthwiseConv2d,
    DynamicLinear,
    DynamicSE,
)
from effnn.nas.space import Arch, BlockConfig, SearchSpace


def resize_to(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a batch of images to ``resolution`` (an arch fixes its input size); no-op when it matches."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class Shortcut(nn.Module):
    """Residual path: ceil-mode average pool when the block strides, 1x1 conv when the width changes."""

    def __init__(self, stride: int, conv: nn.Module | None) -> None:
        super().__init__()
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                     if stride > 1 else None)
        self.conv = conv
        self.project = conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return self.conv(x) if self.project else x


class MBBlock(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 project, plus the shortcut."""

    def __init__(self, conv_pw: nn.Module | None, bn1: nn.Module | None, conv_dw: nn.Module, bn2: nn.Module,
                 se: nn.Module | None, conv_pwl: nn.Module, bn3: nn.Module, shortcut: Shortcut,
                 act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.conv_pw, self.bn1 = conv_pw, bn1
        self.act1 = act_layer() if conv_pw is not None else None
        self.conv_dw, self.bn2, self.act2 = conv_dw, bn2, act_layer()
        self.se = se
        self.conv_pwl, self.bn3 = conv_pwl, bn3
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.conv_pw is not None:
            out = self.act1(self.bn1(self.conv_pw(out)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        if self.se is not None:
            out = self.se(out)
        return self.bn3(self.conv_pwl(out)) + self.shortcut(x)


class MBNet(nn.Module):
    """A MobileNetV3-style network with timm's ``forward_features``/``forward_head`` split.

    ``forward_features`` returns the map after the 1x1 head expansion (before pooling);
    ``forward_head(x, pre_logits=True)`` returns the pooled feature-mix vector.
    """

    def __init__(self, conv_stem: nn.Module, bn1: nn.Module, blocks: Sequence[nn.Module],
                 conv_head: nn.Module, bn2: nn.Module, conv_mix: nn.Module, classifier: nn.Module,
                 act_layer: type[nn.Module],
                 dropout: float = 0.0, arch: Arch | None = None, num_classes: int = 1000) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.conv_stem, self.bn1, self.act1 = conv_stem, bn1, act_layer()
        self.blocks = nn.Sequential(*blocks)
        self.conv_head, self.bn2, self.act2 = conv_head, bn2, act_layer()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_mix, self.act3 = conv_mix, act_layer()
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_last_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 head expansion (conv, BN, activation) that ends ``forward_features``."""
        return self.act2(self.bn2(self.conv_head(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_last_conv(self.forward_blocks(self.forward_stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.act3(self.conv_mix(self.global_pool(x))))
        return x if pre_logits else self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier


class _ArchScope:
    """Returned by ``Supernet.set_arch``: the arch is already active; leaving a ``with`` restores the old."""

    def __init__(self, net: Supernet, previous: Arch) -> None:
        self.net, self.previous = net, previous

    def __enter__(self) -> Supernet:
        return self.net

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.net.set_arch(self.previous)


class Supernet(MBNet):
    """All subnets of ``space`` in one set of weights; ``set_arch`` picks the active one.

    The supernet holds the deepest stage of blocks at the widest sizes; an arch runs the first
    ``depth`` blocks of each stage on the leading channels, the convention of OFA/BigNAS/AttentiveNAS.
    It does not resize inputs: feed images at ``arch.resolution`` (see ``resize_to``).
    """

    def __init__(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.0,
                 zero_init_last_bn: bool = True) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        act_layer = get_act_layer(space.act)
        k = space.stem_kernel
        widest = max(space.stem_widths)
        blocks: list[MBBlock] = []
        stage_blocks: list[tuple[int, ...]] = []
        in_widths = space.stem_widths
        for spec in space.stages:
            first = len(blocks)
            for slot in range(max(spec.depths)):
                ins = in_widths if slot == 0 else spec.widths
                max_in, max_out = max(ins), max(spec.widths)
                max_mid = make_divisible(round(max_in * max(spec.expand_ratios)), space.divisor)
                may_project = slot == 0 and (set(ins) != set(spec.widths) or len(ins) > 1)
                stride = spec.stride if slot == 0 else 1
                blocks.append(MBBlock(
                    DynamicConv2d(max_in, max_mid) if spec.has_expand else None,
                    DynamicBatchNorm2d(max_mid) if spec.has_expand else None,
                    DynamicDepthwiseConv2d(max_mid, max(spec.kernel_sizes), stride),
                    DynamicBatchNorm2d(max_mid),
                    DynamicSE(max_mid, space.divisor) if spec.se else None,
                    DynamicConv2d(max_mid, max_out),
                    DynamicBatchNorm2d(max_out),
                    Shortcut(stride, DynamicConv2d(max_in, max_out) if may_project else None),
                    act_layer,
                ))
            stage_blocks.append(tuple(range(first, len(blocks))))
            in_widths = spec.widths
        last = max(space.stages[-1].widths)
        head_width = max(space.head_widths)
        super().__init__(
            DynamicConv2d(in_chans, widest, k, space.stem_stride), DynamicBatchNorm2d(widest), [],
            DynamicConv2d(last, space.head_expand * last), DynamicBatchNorm2d(space.head_expand * last),
            DynamicConv2d(space.head_expand * last, head_width, bias=True),
            DynamicLinear(head_width, num_classes), act_layer, dropout, None, num_classes)
        self.blocks = nn.ModuleList(blocks)
        self.space = space
        self.in_chans = in_chans
        self._act_layer = act_layer
        self._stage_blocks = tuple(stage_blocks)
        self._active_blocks: tuple[int, ...] = ()
        self._init_weights(zero_init_last_bn)
        self.set_arch(space.max_arch())

    def _init_weights(self, zero_init_last_bn: bool) -> None:
        """He init (fan-out) for convs as timm's EfficientNets (AttentiveNAS's public code keeps PyTorch's
        default init; this is effnn's choice); optional zero last-BN gamma so every block starts as its shortcut."""
        for m in self.modules():
            if isinstance(m, DynamicConv2d | DynamicDepthwiseConv2d):
                fan_out = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3]
                if isinstance(m, DynamicDepthwiseConv2d):
                    fan_out = m.weight.shape[2] * m.weight.shape[3]
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, DynamicLinear):
                bound = 1.0 / m.weight.shape[0] ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)
        if zero_init_last_bn:
            for block in self.blocks:
                nn.init.zeros_(block.bn3.weight)

    def _block_of(self, cfg: BlockConfig) -> MBBlock:
        return self.blocks[self._stage_blocks[cfg.stage][cfg.slot]]

    def set_arch(self, arch: Arch) -> _ArchScope:
        """Activate ``arch`` (validated against the space). Also a context manager that restores the
        previous arch: ``with supernet.set_arch(space.min_arch()): ...``."""
        blocks = self.space.blocks(arch)  # validates
        previous = self.arch
        self.conv_stem.configure(out_channels=arch.width[0])
        for cfg in blocks:
            block = self._block_of(cfg)
            if block.conv_pw is not None:
                block.conv_pw.configure(out_channels=cfg.mid_channels)
            block.conv_dw.configure(kernel_size=cfg.kernel_size)
            block.conv_pwl.configure(out_channels=cfg.out_channels)
            block.shortcut.project = cfg.in_channels != cfg.out_channels
            if block.shortcut.project:
                block.shortcut.conv.configure(out_channels=cfg.out_channels)
        self.conv_head.configure(out_channels=self.space.head_expand * arch.width[-2])
        self.conv_mix.configure(out_channels=arch.width[-1])
        self._active_blocks = tuple(self._stage_blocks[c.stage][c.slot] for c in blocks)
        self.arch = arch
        return _ArchScope(self, previous if previous is not None else arch)

    @property
    def stage_blocks(self) -> tuple[tuple[int, ...], ...]:
        """Indices into ``blocks`` of each stage's blocks (the deepest stage of each)."""
        return self._stage_blocks

    @property
    def active_blocks(self) -> tuple[int, ...]:
        """Indices into ``blocks`` of the active arch's blocks, in execution order."""
        return self._active_blocks

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for i in self._active_blocks:
            x = self.blocks[i](x)
        return x

    @torch.no_grad()
    def extract(self, arch: Arch | None = None) -> MBNet:
        """A static copy of ``arch`` (default: the active one) with plain Conv2d/BatchNorm2d/Linear layers,
        sliced weights and BN statistics; in eval mode it computes exactly what the supernet computes."""
        arch = self.arch if arch is None else arch
        with self.set_arch(arch):
            act = self._act_layer
            blocks = []
            for cfg in self.space.blocks(arch):
                b = self._block_of(cfg)
                cin, mid, cout = cfg.in_channels, cfg.mid_channels, cfg.out_channels
                project = b.shortcut.conv.to_static(cin) if cin != cout else None
                blocks.append(MBBlock(
                    b.conv_pw.to_static(cin) if b.conv_pw is not None else None,
                    b.bn1.to_static(mid) if b.bn1 is not None else None,
                    b.conv_dw.to_static(mid), b.bn2.to_static(mid),
                    b.se.to_static(mid) if b.se is not None else None,
                    b.conv_pwl.to_static(mid), b.bn3.to_static(cout),
                    Shortcut(cfg.stride, project), act))
            expanded = self.space.head_expand * arch.width[-2]
            static = MBNet(
                self.conv_stem.to_static(self.in_chans), self.bn1.to_static(arch.width[0]), blocks,
                self.conv_head.to_static(arch.width[-2]), self.bn2.to_static(expanded),
                self.conv_mix.to_static(expanded), self.classifier.to_static(arch.width[-1]), act,
                self.dropout.p, arch, self.num_classes)
        ref = self.conv_stem.weight
        return static.to(device=ref.device, dtype=ref.dtype).train(self.training)


def build_supernet(space: SearchSpace | str, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.0,
                   zero_init_last_bn: bool = True) -> Supernet:
    """The supernet of ``space`` (a SearchSpace or a name for ``get_space``), active arch = the largest."""
    if isinstance(space, str):
        from effnn.nas.space import get_space

        space = get_space(space)
    return Supernet(space, num_classes, in_chans, dropout, zero_init_last_bn)
