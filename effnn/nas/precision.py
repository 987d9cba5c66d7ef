"""Per-stage bit-widths of a subnet: the precision half of a (network, bits, accelerator) candidate.

A subnet of a quantized supernet runs each stage's conv/linear layers at that stage's weight and
activation bit-widths (``StageBits``); the stem runs at the first stage's and the head (last convs and
classifier) at the last stage's. ``BitsSpace`` holds the choices a search draws from and evolves, as
``SearchSpace`` does for archs. ``StagePrecision`` instruments a ``Supernet`` with one pair of
``PrecisionState`` objects (weights, activations) per stage, so a training step or an evaluation sets a
whole subnet's precision with plain attribute writes. ``BitsWorkload`` gives the hardware model the same
subnet's layers at those bit-widths, as memoized sections so cost models keep caching per section.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from effnn.config import QuantizationConfig
from effnn.nas.space import Arch, SearchSpace, Section

if TYPE_CHECKING:
    from effnn.precision.modules import LayerQuantizer

# effnn.precision.* are imported where used: importing the effnn.precision package pulls in its Lightning
# callbacks and effnn.lit, whose supernet module imports this one (a cycle when this module comes first)

Rng = torch.Generator | random.Random
FULL_PRECISION = 32


def _bits_tuple(values: Any, where: str) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{where} must be a list of bit-widths, got {values!r}")
    out = []
    for i, v in enumerate(values):
        from effnn.precision.quantizers import check_bits

        checked = check_bits(v, f"{where}[{i}]")
        out.append(FULL_PRECISION if checked is None else checked)
    return tuple(out)


@dataclass(frozen=True)
class StageBits:
    """Weight and activation bit-widths per stage (32 = full precision); hashable, like ``Arch``."""

    weight: tuple[int, ...]
    act: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _bits_tuple(self.weight, "bits.weight"))
        object.__setattr__(self, "act", _bits_tuple(self.act, "bits.act"))
        if len(self.weight) != len(self.act) or not self.weight:
            raise ValueError(f"bits.weight and bits.act need one entry per stage each, got "
                             f"{len(self.weight)} and {len(self.act)}")

    @classmethod
    def uniform(cls, num_stages: int, weight: int, act: int | None = None) -> StageBits:
        """Every stage at ``weight`` x ``act`` bits (``act`` defaults to ``weight``)."""
        return cls((weight,) * num_stages, ((weight if act is None else act),) * num_stages)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageBits:
        if not isinstance(data, Mapping) or set(data) != {"weight", "act"}:
            raise ValueError(f"bits must be a mapping with exactly 'weight' and 'act' (lists per stage), "
                             f"got {data!r}")
        return cls(data["weight"], data["act"])

    def to_dict(self) -> dict[str, list[int]]:
        return {"weight": list(self.weight), "act": list(self.act)}

    @property
    def num_stages(self) -> int:
        return len(self.weight)

    def stage(self, index: int) -> tuple[int, int]:
        """``(weight bits, activation bits)`` of stage ``index``."""
        return self.weight[index], self.act[index]

    def genes(self) -> tuple[int, ...]:
        return (*self.weight, *self.act)


def _choose(rng: Rng, options: Sequence[int]) -> int:
    if isinstance(rng, random.Random):
        return options[rng.randrange(len(options))]
    return options[int(torch.randint(len(options), (1,), generator=rng))]


def _uniform(rng: Rng) -> float:
    return rng.random() if isinstance(rng, random.Random) else float(torch.rand((), generator=rng))


@dataclass(frozen=True)
class BitsSpace:
    """The bit-width choices of a precision search: per stage, one of ``weight_choices`` for weights and
    one of ``act_choices`` for activations (each a sorted tuple of widths, 32 = full precision)."""

    num_stages: int
    weight_choices: tuple[int, ...] = (4, 8)
    act_choices: tuple[int, ...] = (4, 8)

    def __post_init__(self) -> None:
        if self.num_stages < 1:
            raise ValueError(f"a bits space needs at least one stage, got {self.num_stages}")
        for name in ("weight_choices", "act_choices"):
            values = _bits_tuple(getattr(self, name), f"bits.{name}")
            if not values:
                raise ValueError(f"bits.{name} must list at least one bit-width, e.g. [4, 8]")
            object.__setattr__(self, name, tuple(sorted(set(values))))

    def max_bits(self) -> StageBits:
        return StageBits.uniform(self.num_stages, self.weight_choices[-1], self.act_choices[-1])

    def min_bits(self) -> StageBits:
        return StageBits.uniform(self.num_stages, self.weight_choices[0], self.act_choices[0])

    def size(self) -> int:
        return (len(self.weight_choices) * len(self.act_choices)) ** self.num_stages

    def contains(self, bits: StageBits) -> bool:
        return (bits.num_stages == self.num_stages and all(w in self.weight_choices for w in bits.weight)
                and all(a in self.act_choices for a in bits.act))

    def validate(self, bits: StageBits) -> StageBits:
        if not self.contains(bits):
            raise ValueError(f"bits {bits.to_dict()} are outside the space: {self.num_stages} stages, weights "
                             f"in {list(self.weight_choices)}, activations in {list(self.act_choices)}")
        return bits

    def sample(self, rng: Rng) -> StageBits:
        return StageBits(tuple(_choose(rng, self.weight_choices) for _ in range(self.num_stages)),
                         tuple(_choose(rng, self.act_choices) for _ in range(self.num_stages)))

    def mutate(self, bits: StageBits, prob: float, rng: Rng) -> StageBits:
        """Resample each gene with probability ``prob``."""
        weight = tuple(_choose(rng, self.weight_choices) if _uniform(rng) < prob else w for w in bits.weight)
        act = tuple(_choose(rng, self.act_choices) if _uniform(rng) < prob else a for a in bits.act)
        return StageBits(weight, act)

    def crossover(self, a: StageBits, b: StageBits, rng: Rng) -> StageBits:
        """Each gene from either parent with probability 0.5."""
        weight = tuple(x if _uniform(rng) < 0.5 else y for x, y in zip(a.weight, b.weight))
        act = tuple(x if _uniform(rng) < 0.5 else y for x, y in zip(a.act, b.act))
        return StageBits(weight, act)


def stage_modules(supernet: nn.Module) -> list[tuple[int, str, nn.Module]]:
    """``(stage, name, module)`` for each part of a ``Supernet`` that runs at one stage's precision: the stem
    with stage 0, every block with its stage, the head convs and the classifier with the last stage."""
    last = supernet.space.num_stages - 1
    parts = [(0, "conv_stem", supernet.conv_stem)]
    for stage, block_ids in enumerate(supernet.stage_blocks):
        parts += [(stage, f"blocks.{b}", supernet.blocks[b]) for b in block_ids]
    parts += [(last, name, getattr(supernet, name)) for name in ("conv_head", "conv_mix", "classifier")]
    return parts


class StagePrecision:
    """A ``Supernet`` quantized per stage: ``set(bits)`` switches the whole subnet's precision.

    Each stage gets its own activation ``PrecisionState`` and weight ``PrecisionState``; every quantized
    layer of the stage reads them (``quantize_model(..., weight_state=...)``). ``set(None)`` runs full
    precision. Gradients are not quantized (switchable-precision training quantizes the forward pass).
    The classifier is quantized with the last stage unless ``config.keep_classifier`` says otherwise.
    """

    def __init__(self, supernet: nn.Module, config: QuantizationConfig | None = None) -> None:
        from effnn.precision.state import PrecisionState
        from effnn.precision.swap import quantize_model

        self.supernet = supernet
        self.config = config if config is not None else QuantizationConfig(keep_classifier=False, gradients=False)
        n = supernet.space.num_stages
        self.act_states = [PrecisionState() for _ in range(n)]
        self.weight_states = [PrecisionState() for _ in range(n)]
        self.bits: StageBits | None = None
        for stage, name, module in stage_modules(supernet):
            if name == "classifier" and self.config.keep_classifier:
                continue
            quantize_model(module, replace(self.config, keep_classifier=False), state=self.act_states[stage],
                           weight_state=self.weight_states[stage])

    @property
    def num_stages(self) -> int:
        return len(self.act_states)

    def set(self, bits: StageBits | None) -> None:
        """Run every stage at ``bits`` (None: full precision everywhere)."""
        if bits is not None and bits.num_stages != self.num_stages:
            raise ValueError(f"bits have {bits.num_stages} stages; this supernet has {self.num_stages}")
        for s in range(self.num_stages):
            w, a = (None, None) if bits is None else bits.stage(s)
            self.act_states[s].set(a, None)
            self.weight_states[s].set(w, None)
        self.bits = bits

    @contextmanager
    def use(self, bits: StageBits | None) -> Iterator[StagePrecision]:
        """Temporarily run at ``bits``; the previous bits come back afterwards."""
        previous = self.bits
        self.set(bits)
        try:
            yield self
        finally:
            self.set(previous)

    def quantizers(self) -> list[LayerQuantizer]:
        from effnn.precision.swap import quantized_layers

        return [m.quantizer for _, m in quantized_layers(self.supernet)]

    def reset_activation_ranges(self) -> None:
        """Forget every layer's activation-range EMA, so the next training-mode forwards (e.g. BN
        recalibration of one subnet at one precision) re-estimate it for that subnet alone."""
        for q in self.quantizers():
            q.running_range.zero_()
            q.initialized.zero_()


class BitsWorkload:
    """A subnet's hardware workload at per-stage bit-widths, as memoized sections.

    The stem is priced at the first stage's bits, the head at the last stage's; every layer's
    ``weight_bits``/``act_bits`` are set, its ``out_bits`` are the next layer's input width (the stage's
    activation bits). Sections are memoized per (section, bits), so a cost model's per-section cache keeps
    working across archs and precisions.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._memo: dict[tuple[int, int, int], Section] = {}
        self._keep: list[Section] = []

    def section_stage(self, index: int, section: Section) -> int:
        """The stage whose bits price ``section`` (the ``index``-th of a subnet): a block's own stage, the
        stem's (index 0) the first, the head's the last."""
        if section.blocks:
            return section.blocks[0].stage
        return 0 if index == 0 else self.space.num_stages - 1

    def sections(self, arch: Arch, bits: StageBits, num_classes: int, in_chans: int = 3) -> list[Section]:
        sections = self.space.workload_sections(arch, num_classes, in_chans)
        if bits.num_stages != self.space.num_stages:
            raise ValueError(f"bits have {bits.num_stages} stages; space {self.space.name!r} has "
                             f"{self.space.num_stages}")
        out = []
        for i, section in enumerate(sections):
            w, a = bits.stage(self.section_stage(i, section))
            key = (id(section), w, a)
            found = self._memo.get(key)
            if found is None:
                layers = tuple(replace(layer, weight_bits=float(w), act_bits=float(a), out_bits=float(a))
                               for layer in section.layers)
                found = self._memo[key] = replace(section, layers=layers)
                self._keep.append(section)  # keeps id(section) from being reused
            out.append(found)
        return out

    def layers(self, arch: Arch, bits: StageBits, num_classes: int, in_chans: int = 3) -> list:
        return [layer for s in self.sections(arch, bits, num_classes, in_chans) for layer in s.layers]


__all__ = ["BitsSpace", "BitsWorkload", "FULL_PRECISION", "StageBits", "StagePrecision", "stage_modules"]
