"""Search spaces of MobileNetV3-style supernets and ``Arch``, the immutable description of one subnet.

A space is a list of stages with per-stage choices of width, depth, kernel size and expand ratio, plus
the input resolutions (the AttentiveNAS/AlphaNet layout). Everything a search or a cost model needs
about a subnet -- its blocks, its layer shapes (``workload``), MACs and parameter counts -- is computed
analytically here, memoized per stage configuration, without building a module.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from timm.layers import make_divisible

from effnn.hw.layers import ConvLayer
from effnn.nas.ops import se_hidden_channels

ARCH_KEYS = ("resolution", "width", "depth", "kernel_size", "expand_ratio")
Rng = torch.Generator | random.Random


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    return int(value)


def _as_ratio(value: Any, where: str) -> int | float:
    """Expand ratios keep ints as ints so ``to_dict`` round-trips AlphaNet's YAML exactly."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where} must be a positive number, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def _as_tuple(values: Any, where: str, convert: Callable[[Any, str], Any]) -> tuple:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | torch.Tensor):
        raise ValueError(f"{where} must be a list of numbers, got {values!r}")
    return tuple(convert(v, f"{where}[{i}]") for i, v in enumerate(values))


@dataclass(frozen=True)
class Arch:
    """One subnet: input resolution and per-stage width/depth/kernel/expand (AlphaNet's YAML keys).

    ``width`` has one entry per stage plus the stem (first) and the last conv (last); ``depth``,
    ``kernel_size`` and ``expand_ratio`` have one entry per stage. Lists are stored as tuples, so an
    Arch is hashable and can key caches and Pareto archives.
    """

    resolution: int
    width: tuple[int, ...]
    depth: tuple[int, ...]
    kernel_size: tuple[int, ...]
    expand_ratio: tuple[int | float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", _as_int(self.resolution, "arch.resolution"))
        for key in ARCH_KEYS[1:]:
            convert = _as_ratio if key == "expand_ratio" else _as_int
            object.__setattr__(self, key, _as_tuple(getattr(self, key), f"arch.{key}", convert))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = True) -> Arch:
        """Build from a mapping such as an AlphaNet/AttentiveNAS ``active_subnet`` YAML block.

        With ``strict=False`` extra keys (``name``, ``flops``, ``acc1`` ... in search logs) are ignored.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an arch must be a mapping with keys {', '.join(ARCH_KEYS)}, "
                             f"got {type(data).__name__}")
        missing = [k for k in ARCH_KEYS if k not in data]
        if missing:
            raise ValueError(f"arch is missing {', '.join(missing)}; an arch needs {', '.join(ARCH_KEYS)}")
        extra = sorted(str(k) for k in data if k not in ARCH_KEYS)
        if extra and strict:
            raise ValueError(f"arch has unknown keys {', '.join(extra)}; an arch has exactly "
                             f"{', '.join(ARCH_KEYS)} (pass strict=False to ignore extra keys)")
        return cls(**{k: data[k] for k in ARCH_KEYS})

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and ints, ready for ``yaml.safe_dump``/JSON and for ``from_dict``."""
        return {"resolution": self.resolution, "width": list(self.width), "depth": list(self.depth),
                "kernel_size": list(self.kernel_size), "expand_ratio": list(self.expand_ratio)}

    def genes(self) -> tuple:
        """All choices as one flat tuple: resolution, widths, depths, kernel sizes, expand ratios."""
        return (self.resolution, *self.width, *self.depth, *self.kernel_size, *self.expand_ratio)


@dataclass(frozen=True)
class StageSpec:
    """Choices of one stage of inverted-residual blocks; only the first block of a stage strides."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int | float, ...]
    stride: int
    se: bool = False

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "kernel_sizes", "expand_ratios"):
            values = tuple(getattr(self, name))
            if not values or any(v <= 0 for v in values):
                raise ValueError(f"StageSpec.{name} must be a non-empty list of positive values, "
                                 f"got {values}")
            object.__setattr__(self, name, values)
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"StageSpec.kernel_sizes must be odd, got {self.kernel_sizes}")
        if self.stride not in (1, 2):
            raise ValueError(f"StageSpec.stride must be 1 or 2, got {self.stride}")

    @property
    def has_expand(self) -> bool:
        """Stages whose only expand ratio is 1 have no 1x1 expansion conv (AttentiveNAS's first stage)."""
        return max(self.expand_ratios) != 1


@dataclass(frozen=True)
class BlockConfig:
    """One inverted-residual block of a subnet: everything needed to configure or build it."""

    index: int          # position in the static subnet
    stage: int
    slot: int           # position within the stage (0 = the block that may stride and change width)
    in_channels: int
    out_channels: int
    mid_channels: int
    kernel_size: int
    expand_ratio: int | float
    stride: int
    se: bool
    has_expand: bool
    in_size: int        # input feature-map height = width


@dataclass(frozen=True)
class Section:
    """Memoized analytic description of the stem, one block or the head under one configuration.

    The space hands out the same object for every arch that shares the configuration, so consumers can
    cache per section by identity: ``effnn.hw``'s cost models keep one aggregated row per section.
    """

    layers: tuple[ConvLayer, ...]
    blocks: tuple[BlockConfig, ...]
    macs: int
    params: int
    out_size: int


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv or the ceil-mode shortcut pool."""
    return (size - 1) // stride + 1


def _uniforms(rng: Rng, n: int) -> list[float]:
    """``n`` floats in [0, 1) from either RNG kind, so callers can share a seeded torch.Generator."""
    if isinstance(rng, torch.Generator):
        return torch.rand(n, generator=rng, dtype=torch.float64).tolist()
    if isinstance(rng, random.Random):
        return [rng.random() for _ in range(n)]
    raise TypeError(f"rng must be a torch.Generator or random.Random, got {type(rng).__name__}")


class SearchSpace:
    """A MobileNetV3-style weight-sharing space: stem, stages of MB blocks, MobileNetV3 head.

    Every block is residual: identity when shape is kept, a ceil-mode average pool when only the size
    changes and a 1x1 conv when the width changes (its MACs count). The head is a 1x1 conv to
    ``head_expand`` x the last stage width, global pooling, a 1x1 feature-mix conv to the last width and
    a linear classifier.
    """

    def __init__(self, name: str, resolutions: Sequence[int], stem_widths: Sequence[int],
                 stages: Sequence[StageSpec], head_widths: Sequence[int], *, stem_stride: int = 2,
                 stem_kernel: int = 3, head_expand: int = 6, act: str = "swish", divisor: int = 8,
                 num_classes: int = 1000) -> None:
        if not stages:
            raise ValueError("a search space needs at least one stage")
        self.name = name
        self.resolutions = tuple(resolutions)
        self.stem_widths = tuple(stem_widths)
        self.stages = tuple(stages)
        self.head_widths = tuple(head_widths)
        self.stem_stride = stem_stride
        self.stem_kernel = stem_kernel
        self.head_expand = head_expand
        self.act = act
        self.divisor = divisor
        self.num_classes = num_classes  # of the data the space is designed for: the tools' default head
        n = len(self.stages)
        width_choices = [self.stem_widths, *(s.widths for s in self.stages), self.head_widths]
        self._genes: tuple[tuple[str, int | None, tuple], ...] = (
            ("resolution", None, self.resolutions),
            *(("width", i, c) for i, c in enumerate(width_choices)),
            *(("depth", i, s.depths) for i, s in enumerate(self.stages)),
            *(("kernel_size", i, s.kernel_sizes) for i, s in enumerate(self.stages)),
            *(("expand_ratio", i, s.expand_ratios) for i, s in enumerate(self.stages)),
        )
        self._allowed = tuple(frozenset(c) for _, _, c in self._genes)
        self._lengths = {"width": n + 2, "depth": n, "kernel_size": n, "expand_ratio": n}
        self._sections: dict[tuple, Section] = {}
        self._stages: dict[tuple, tuple[tuple[Section, ...], int]] = {}

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, stages={len(self.stages)}, resolutions={self.resolutions})"

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def max_depth(self) -> int:
        """Total number of blocks of the deepest subnet (blocks the supernet holds)."""
        return sum(max(s.depths) for s in self.stages)

    def choices(self) -> dict[str, tuple]:
        """Allowed values per gene, keyed like ``width[3]`` (what validation errors name)."""
        return {field if i is None else f"{field}[{i}]": c for field, i, c in self._genes}

    def _from_genes(self, genes: Sequence) -> Arch:
        n = len(self.stages)
        return Arch(genes[0], genes[1:n + 3], genes[n + 3:2 * n + 3], genes[2 * n + 3:3 * n + 3],
                    genes[3 * n + 3:4 * n + 3])

    def min_arch(self) -> Arch:
        return self._from_genes([min(c) for _, _, c in self._genes])

    def max_arch(self) -> Arch:
        return self._from_genes([max(c) for _, _, c in self._genes])

    def sample(self, rng: Rng) -> Arch:
        """Uniform over every gene independently (the BigNAS/AttentiveNAS 'uniform' sampler)."""
        u = _uniforms(rng, len(self._genes))
        return self._from_genes([c[int(x * len(c))] for x, (_, _, c) in zip(u, self._genes)])

    def mutate(self, arch: Arch, prob: float, rng: Rng) -> Arch:
        """Resample each gene with probability ``prob`` (AlphaNet's evolutionary search uses 0.2)."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation prob must be in [0, 1], got {prob}")
        genes = self.validate(arch).genes()
        u = _uniforms(rng, 2 * len(genes))
        return self._from_genes([c[int(u[2 * i + 1] * len(c))] if u[2 * i] < prob else g
                                 for i, (g, (_, _, c)) in enumerate(zip(genes, self._genes))])

    def crossover(self, a: Arch, b: Arch, rng: Rng) -> Arch:
        """Uniform crossover: each gene from ``a`` or ``b`` with probability 1/2."""
        ga, gb = self.validate(a).genes(), self.validate(b).genes()
        u = _uniforms(rng, len(ga))
        return self._from_genes([x if r < 0.5 else y for r, x, y in zip(u, ga, gb)])

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it lies in this space, else raise ValueError naming the field and the allowed
        values."""
        if not isinstance(arch, Arch):
            raise ValueError(f"expected an effnn.nas.Arch, got {type(arch).__name__}; "
                             f"use Arch.from_dict(...) for a dict")
        for key, length in self._lengths.items():
            got = len(getattr(arch, key))
            if got != length:
                extra = " (stem, one per stage, last conv)" if key == "width" else " (one per stage)"
                raise ValueError(f"arch.{key} has {got} entries but space {self.name!r} needs "
                                 f"{length}{extra}")
        for value, allowed, (field, i, c) in zip(arch.genes(), self._allowed, self._genes):
            if value not in allowed:
                where = field if i is None else f"{field}[{i}]"
                raise ValueError(f"arch.{where}={value} is not in space {self.name!r}; allowed values: "
                                 f"{', '.join(map(str, c))}")
        return arch

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    # ----------------------------------------------------------------- analytic subnet description

    def _stem(self, width: int, resolution: int, in_chans: int) -> Section:
        key = ("stem", width, resolution, in_chans)
        section = self._sections.get(key)
        if section is None:
            k = self.stem_kernel
            conv = ConvLayer("conv_stem", in_chans, width, resolution, resolution, k, k, self.stem_stride,
                             self.stem_stride, k // 2, k // 2)
            section = Section((conv,), (), conv.macs, conv.params + 2 * width,
                               _out_size(resolution, self.stem_stride))
            self._sections[key] = section
        return section

    def _block(self, index: int, stage: int, slot: int, cin: int, cout: int, k: int, t: int | float,
               size: int) -> Section:
        """One block's layers, keyed without the rest of the arch, so tables fill within a few thousand
        archs."""
        key = (index, stage, slot, cin, cout, k, t, size)
        section = self._sections.get(key)
        if section is not None:
            return section
        spec = self.stages[stage]
        stride = spec.stride if slot == 0 else 1
        mid = make_divisible(round(cin * t), self.divisor)
        out_size = _out_size(size, stride)
        p = f"blocks.{index}."
        layers: list[ConvLayer] = []
        params = 2 * mid + 2 * cout  # BN after the depthwise and the projection conv
        if spec.has_expand:
            layers.append(ConvLayer(p + "conv_pw", cin, mid, size, size))
            params += 2 * mid
        layers.append(ConvLayer(p + "conv_dw", mid, mid, size, size, k, k, stride, stride, k // 2, k // 2,
                                groups=mid))
        if spec.se:
            hidden = se_hidden_channels(mid, self.divisor)
            layers += [ConvLayer(p + "se.conv_reduce", mid, hidden, 1, 1),
                       ConvLayer(p + "se.conv_expand", hidden, mid, 1, 1)]
            params += hidden + mid  # SE conv biases
        layers.append(ConvLayer(p + "conv_pwl", mid, cout, out_size, out_size))
        if cin != cout:
            layers.append(ConvLayer(p + "shortcut.conv", cin, cout, out_size, out_size))
        block = BlockConfig(index, stage, slot, cin, cout, mid, k, t, stride, spec.se, spec.has_expand, size)
        section = Section(tuple(layers), (block,), sum(layer.macs for layer in layers),
                           params + sum(layer.params for layer in layers), out_size)
        self._sections[key] = section
        return section

    def _head(self, cin: int, width: int, num_classes: int, size: int) -> Section:
        key = ("head", cin, width, num_classes, size)
        section = self._sections.get(key)
        if section is None:
            expanded = self.head_expand * cin
            layers = (ConvLayer("conv_head", cin, expanded, size, size),
                      ConvLayer("conv_mix", expanded, width, 1, 1),
                      ConvLayer("classifier", width, num_classes, 1, 1))
            params = sum(layer.params for layer in layers) + 2 * expanded + width + num_classes
            section = Section(layers, (), sum(layer.macs for layer in layers), params, 1)
            self._sections[key] = section
        return section

    def _stage(self, stage: int, index: int, cin: int, cout: int, depth: int, k: int, t: int | float,
               size: int) -> tuple[tuple[Section, ...], int]:
        """(the stage's block sections, output size), memoized so an arch costs one probe per stage."""
        key = (stage, index, cin, cout, depth, k, t, size)
        found = self._stages.get(key)
        if found is None:
            blocks = []
            for slot in range(depth):
                block = self._block(index + slot, stage, slot, cin, cout, k, t, size)
                blocks.append(block)
                size, cin = block.out_size, cout
            found = self._stages[key] = (tuple(blocks), size)
        return found

    def _sections_of(self, arch: Arch, num_classes: int, in_chans: int = 3) -> list[Section]:
        self.validate(arch)
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        width = arch.width
        stem = self._stem(width[0], arch.resolution, in_chans)
        sections, size, index = [stem], stem.out_size, 0
        for s, (depth, k, t) in enumerate(zip(arch.depth, arch.kernel_size, arch.expand_ratio)):
            blocks, size = self._stage(s, index, width[s], width[s + 1], depth, k, t, size)
            sections += blocks
            index += depth
        sections.append(self._head(width[-2], width[-1], num_classes, size))
        return sections

    def blocks(self, arch: Arch) -> list[BlockConfig]:
        """The subnet's blocks in order (what the supernet configures and ``extract`` builds)."""
        return [b for section in self._sections_of(arch, 1) for b in section.blocks]

    def workload_sections(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[Section]:
        """The subnet's workload as memoized sections: the stem, each block, the head, in order.

        Each has ``layers`` (its part of :meth:`workload`) and ``params`` (its part of :meth:`params`).
        Archs that share a block configuration share the section object, which is what lets
        ``effnn.hw`` cost models score an arch with one cached row per section instead of one per layer.
        """
        return self._sections_of(arch, num_classes, in_chans)

    def workload(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[ConvLayer]:
        """Every conv/linear of the static subnet at batch 1, named like its modules in ``extract``."""
        sections = self._sections_of(arch, num_classes, in_chans)
        return [layer for section in sections for layer in section.layers]

    def macs(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> int:
        """Multiply-accumulates of one image through the static subnet (convs and linears; what papers
        call FLOPs)."""
        return sum(section.macs for section in self._sections_of(arch, num_classes, in_chans))

    def params(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> int:
        """Parameter count of the static subnet (weights, biases and BN affine parameters)."""
        return sum(section.params for section in self._sections_of(arch, num_classes, in_chans))


def attentivenas_space() -> SearchSpace:
    """The AttentiveNAS/AlphaNet ImageNet space (AlphaNet-A0 is its smallest subnet, 203 MFLOPs)."""
    return SearchSpace(
        "attentivenas",
        resolutions=(192, 224, 256, 288),
        stem_widths=(16, 24),
        stages=(
            StageSpec((16, 24), (1, 2), (3, 5), (1,), 1),
            StageSpec((24, 32), (3, 4, 5), (3, 5), (4, 5, 6), 2),
            StageSpec((32, 40), (3, 4, 5, 6), (3, 5), (4, 5, 6), 2, se=True),
            StageSpec((64, 72), (3, 4, 5, 6), (3, 5), (4, 5, 6), 2),
            StageSpec((112, 120, 128), (3, 4, 5, 6, 7, 8), (3, 5), (4, 5, 6), 1, se=True),
            StageSpec((192, 200, 208, 216), (3, 4, 5, 6, 7, 8), (3, 5), (6,), 2, se=True),
            StageSpec((216, 224), (1, 2), (3, 5), (6,), 1, se=True),
        ),
        head_widths=(1792, 1984),
    )


def tiny32_space() -> SearchSpace:
    """A small-image space (24..32 px inputs: digits, CIFAR): 0.28..3.5 MMACs, so a sandwich step of the
    supernet takes about a second on 2 CPU cores; same block and head design as AttentiveNAS."""
    return SearchSpace(
        "tiny32",
        resolutions=(24, 28, 32),
        stem_widths=(8, 16),
        stages=(
            StageSpec((8, 16), (1,), (3,), (1,), 1),
            StageSpec((16, 24), (1, 2), (3, 5), (3, 4, 6), 2),
            StageSpec((24, 32), (1, 2, 3), (3, 5), (3, 4, 6), 2, se=True),
            StageSpec((48, 64), (1, 2, 3), (3, 5), (3, 4, 6), 2, se=True),
        ),
        head_widths=(128, 192),
        num_classes=10,
    )


SPACES: Mapping[str, Callable[[], SearchSpace]] = MappingProxyType({
    "attentivenas": attentivenas_space,
    "alphanet": attentivenas_space,
    "tiny32": tiny32_space,
})


def list_spaces() -> list[str]:
    return sorted(SPACES)


def get_space(name: str) -> SearchSpace:
    """A fresh space by name (each instance memoizes its own per-stage tables)."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known spaces: {', '.join(list_spaces())}")
    return SPACES[name]()
