"""Switchable-precision supernet training (InstantNet-style), composed from the sandwich step and StagePrecision.

A supernet trained with ``model.precision`` is quantized per stage (``effnn.nas.precision.StagePrecision``)
and every sandwich step also draws bit-widths: the largest subnet at the ladder's highest precision learns
from the labels and teaches; the middle subnets run at sampled per-stage bits (``BitsSpace.sample``) or
at a random uniform ladder level, the smallest at the lowest level; with ``cascade=largest`` the largest
subnet also runs at every lower ladder level, distilled from itself one level up (InstantNet's cascade
distillation; ``both`` also moves the smallest down the ladder; docs/supernet.md lists the deviations).
Each group of subnets that shares one teacher is one call of ``effnn.nas.sandwich.sandwich_backward``.

``SwitchablePrecision`` is also what ``effnn.search.load_supernet_checkpoint`` rebuilds from a checkpoint's
hyper-parameters, so the search and the export evaluate the supernet at any bits the same way training did.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn as nn

from effnn.config import QuantizationConfig, SwitchablePrecisionConfig, validated
from effnn.errors import ConfigError
from effnn.nas.bn_calibration import recalibrate_bn
# the module, not its names: importing effnn.nas.precision imports effnn.precision -> effnn.lit -> the supernet
# module -> this module, so its names may not exist yet while this module loads
from effnn.nas import precision as stage_bits
from effnn.nas.sandwich import SyncBlocker, sandwich_backward
from effnn.nas.space import Arch
from effnn.nas.supernet import Supernet, resize_to

if TYPE_CHECKING:
    from effnn.nas.precision import BitsSpace, StageBits, StagePrecision

FULL_PRECISION = 32
MIDDLE_BITS = ("mixed", "uniform")
#: which subnets also run at every lower ladder level (see ``step_groups``)
CASCADES = ("off", "largest", "both")


def bits_label(bits: StageBits | None) -> str:
    """``fp`` (full precision), ``w8a8`` (uniform) or ``mixed`` -- the suffix of logged metrics."""
    if bits is None or (set(bits.weight) == {FULL_PRECISION} and set(bits.act) == {FULL_PRECISION}):
        return "fp"
    if len(set(bits.weight)) == 1 and len(set(bits.act)) == 1:
        return f"w{bits.weight[0]}a{bits.act[0]}"
    return "mixed"


def _widths(values: Iterable[Any], where: str) -> tuple[int, ...]:
    try:
        return stage_bits.StageBits((*values,), (*values,)).weight
    except ValueError as err:
        raise ConfigError(f"{where}: {err}".replace("bits.weight", where)) from err


@dataclass(frozen=True)
class SwitchableSettings:
    """The validated ``model.precision`` of one supernet: its bits space, the cascade ladder (uniform
    precisions, highest first), how middle subnets draw bits, and the precisions validated."""

    space: BitsSpace
    ladder: tuple[StageBits, ...]
    middle_bits: str
    cascade: str
    eval_bits: tuple[StageBits, ...]
    quantization: QuantizationConfig

    @classmethod
    def parse(cls, value: Mapping[str, Any] | SwitchablePrecisionConfig, num_stages: int,
              where: str = "model.precision") -> SwitchableSettings:
        """Check ``value`` (the config mapping) against ``num_stages``; every problem is one ConfigError line."""
        cfg = value if isinstance(value, SwitchablePrecisionConfig) else validated(
            SwitchablePrecisionConfig, value, where)
        try:
            space = stage_bits.BitsSpace(num_stages, tuple(cfg.weight_choices), tuple(cfg.act_choices))
        except ValueError as err:
            raise ConfigError(str(err).replace("bits.", f"{where}.")) from err
        cascade = str(cfg.cascade)
        if cascade not in CASCADES:
            raise ConfigError(f"{where}.cascade={cfg.cascade!r} is unknown; choose off, largest (the largest "
                              f"subnet at every lower ladder level) or both (the largest and the smallest)")
        if cfg.middle_bits not in MIDDLE_BITS:
            raise ConfigError(f"{where}.middle_bits={cfg.middle_bits!r} is unknown; choose mixed (per-stage "
                              f"bits, BitsSpace.sample) or uniform (a random ladder level)")
        shared = sorted(set(space.weight_choices) & set(space.act_choices), reverse=True)
        widths = _widths(cfg.ladder, f"{where}.ladder") if cfg.ladder is not None else tuple(shared)
        widths = tuple(sorted(set(widths), reverse=True))
        if not widths:
            raise ConfigError(f"{where}: weight_choices {list(space.weight_choices)} and act_choices "
                              f"{list(space.act_choices)} share no bit-width; set {where}.ladder to widths in both (or [32], full precision)")
        outside = [w for w in widths if w != FULL_PRECISION and w not in shared]
        if outside:
            raise ConfigError(f"{where}.ladder level {outside[0]} is not in both weight_choices and act_choices "
                              f"(shared: {shared}); use those widths or 32 (full precision)")
        ladder = tuple(stage_bits.StageBits.uniform(num_stages, w) for w in widths)
        evals = (_widths(cfg.eval_bits, f"{where}.eval_bits") if cfg.eval_bits is not None
                 else (FULL_PRECISION, *widths))
        eval_bits = tuple(stage_bits.StageBits.uniform(num_stages, w) for w in dict.fromkeys(evals))
        quant = QuantizationConfig(keep_classifier=cfg.keep_classifier, gradients=False,
                                   act_momentum=cfg.act_momentum)
        return cls(space, ladder, cfg.middle_bits, cascade, eval_bits, quant)

    def middle(self, rng: torch.Generator) -> StageBits:
        """Bits of one middle subnet: per-stage from the choices (mixed) or one random ladder level."""
        if self.middle_bits == "mixed":
            return self.space.sample(rng)
        return self.ladder[int(torch.randint(len(self.ladder), (1,), generator=rng))]


def attach_precision(supernet: Supernet, settings: SwitchableSettings) -> StagePrecision:
    """Quantize ``supernet`` per stage (in place) as ``settings`` say; it starts at full precision."""
    return stage_bits.StagePrecision(supernet, settings.quantization)


# ------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class Candidate:
    """One subnet of a step: an arch at per-stage bits (``resolution`` as ``Arch``'s, for the sandwich)."""

    arch: Arch
    bits: StageBits

    @property
    def resolution(self) -> int:
        return self.arch.resolution


class PrecisionNet:
    """What ``sandwich_backward`` drives: ``set_arch(candidate)`` activates its arch and its bits."""

    def __init__(self, net: Supernet, precision: StagePrecision) -> None:
        self.net = net
        self.precision = precision

    def set_arch(self, candidate: Candidate) -> None:
        self.net.set_arch(candidate.arch)
        self.precision.set(candidate.bits)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TeacherTargets(nn.Module):
    """A group head's loss one ladder level down: ``kd(logits, teacher)``, the labels ignored."""

    def __init__(self, kd: nn.Module, teacher: torch.Tensor) -> None:
        super().__init__()
        self.kd = kd
        self.teacher = teacher

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.kd(logits, self.teacher)


class RecordLogits(nn.Module):
    """Wraps a group head's loss and keeps its detached logits: the teacher of the next level down."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss
        self.logits: torch.Tensor | None = None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.logits = logits.detach()
        return self.loss(logits, labels)


def step_groups(settings: SwitchableSettings, archs: Sequence[Arch], rng: torch.Generator
                ) -> list[list[Candidate]]:
    """The candidates of one step, one group per teacher, highest precision first.

    Group 0: largest@top (labels), middles@drawn bits, smallest@lowest (cascade off or largest) or @top
    (both), all taught by largest@top. Cascade ``largest``/``both``: group k is largest@level k, taught by
    largest@level k-1; with ``both`` followed by smallest@level k, taught by largest@level k.
    """
    top, lowest = settings.ladder[0], settings.ladder[-1]
    largest, smallest, middles = archs[0], archs[-1], archs[1:-1]
    both = settings.cascade == "both" and len(archs) > 1
    first = [Candidate(largest, top), *(Candidate(a, settings.middle(rng)) for a in middles)]
    if len(archs) > 1:
        first.append(Candidate(smallest, top if both else lowest))
    groups = [first]
    if settings.cascade != "off":
        for level in settings.ladder[1:]:
            groups.append([Candidate(largest, level)] + ([Candidate(smallest, level)] if both else []))
    return groups


def switchable_backward(net: Supernet, precision: StagePrecision, groups: Sequence[Sequence[Candidate]],
                        x: torch.Tensor, y: torch.Tensor, ce: nn.Module, kd: nn.Module, *,
                        prepare: Callable[[torch.Tensor, int], torch.Tensor] = resize_to,
                        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                        skip_grad_sync: SyncBlocker = contextlib.nullcontext,
                        ) -> dict[str, torch.Tensor]:
    """Accumulate the gradients of every group (``step_groups``), one ``sandwich_backward`` call each.

    Group 0's head learns from ``ce`` on the labels; each later group's head from ``kd`` to the previous
    group's head logits (the same arch one precision up). Only the very last backward syncs gradients under
    DDP. Returns detached losses: ``max`` (CE of the top), ``kd`` (mean KD of all students) and ``cascade``
    (mean KD of the lower-precision heads; zero without cascade). Leaves the model at full precision.
    """
    wrapped = PrecisionNet(net, precision)
    zero = torch.zeros((), device=x.device)
    max_loss, kd_sum, cascade_sum, students = zero, zero, zero, 0
    teacher: torch.Tensor | None = None
    try:
        for g, group in enumerate(groups):
            head = RecordLogits(ce if teacher is None else TeacherTargets(kd, teacher))
            sync = contextlib.nullcontext() if g == len(groups) - 1 else skip_grad_sync()
            with sync:
                head_loss, kd_mean = sandwich_backward(wrapped, group, x, y, head, kd, prepare=prepare,
                                                       backward=backward, skip_grad_sync=skip_grad_sync)
            if g == 0:
                max_loss = head_loss
            else:
                cascade_sum = cascade_sum + head_loss
            kd_sum = kd_sum + kd_mean * (len(group) - 1)
            students += len(group) - 1 + (g > 0)
            teacher = head.logits
    finally:
        precision.set(None)
    cascade_count = len(groups) - 1
    return {"max": max_loss, "kd": (kd_sum + cascade_sum) / max(1, students),
            "cascade": cascade_sum / max(1, cascade_count)}


# ------------------------------------------------------------------------------------------------ evaluation


def _mean_over_ranks(tensor: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor.div_(dist.get_world_size())


@torch.no_grad()
def recalibrate_precision(precision: StagePrecision, arch: Arch, bits: StageBits | None, batches: Iterable[Any],
                          num_batches: int, prepare: Callable[[torch.Tensor, int], torch.Tensor] = resize_to,
                          sync_distributed: bool = True) -> int:
    """Activate ``arch`` at ``bits`` and re-estimate, on ``num_batches`` of ``batches``, its BN statistics
    and every quantizer's activation range (forgotten first), in place. Returns the batches used.

    Quantized evaluation needs both: ranges and statistics accumulated in training mix every subnet and
    precision trained. Under torch.distributed both are averaged over ranks unless ``sync_distributed``
    is False (e.g. when ranks evaluate different subnets)."""
    net = precision.supernet
    net.set_arch(arch)
    precision.set(bits)
    precision.reset_activation_ranges()
    device = net.conv_stem.weight.device if hasattr(net.conv_stem, "weight") else next(net.parameters()).device

    def forward(batch: Any) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return net(prepare(x.to(device), arch.resolution))

    used = recalibrate_bn(net, batches, num_batches, forward=forward, sync_distributed=sync_distributed)
    if sync_distributed:
        for q in precision.quantizers():
            _mean_over_ranks(q.running_range)
    return used


class QuantizedSubnet(nn.Module):
    """An evaluation copy of a switchable-precision supernet fixed at one arch and one precision (its own
    BN statistics and activation ranges); ``forward`` takes inputs at the arch's resolution."""

    def __init__(self, precision: StagePrecision, arch: Arch, bits: StageBits | None) -> None:
        super().__init__()
        self.net = precision.supernet
        self.precision = precision
        self.arch = arch
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def calibrated_copy(precision: StagePrecision, arch: Arch, bits: StageBits | None, batches: Iterable[Any],
                    num_batches: int, prepare: Callable[[torch.Tensor, int], torch.Tensor] = resize_to
                    ) -> QuantizedSubnet:
    """A recalibrated copy of the supernet at ``arch`` and ``bits`` (eval mode); the original is untouched."""
    twin = copy.deepcopy(precision)
    recalibrate_precision(twin, arch, bits, batches, num_batches, prepare)
    return QuantizedSubnet(twin, arch, bits).eval()


__all__ = ["Candidate", "MIDDLE_BITS", "PrecisionNet", "QuantizedSubnet", "RecordLogits", "SwitchableSettings",
           "TeacherTargets", "attach_precision", "bits_label", "calibrated_copy", "recalibrate_precision",
           "step_groups", "switchable_backward"]
