"""Accuracy of one subnet of a trained supernet: BN recalibration on training batches, then a held-out split.

The supernet's running BN statistics mix all subnets trained, so each subnet gets its own: reset and
re-estimate them on a fixed set of training batches (the same batches for every arch and every rank,
so an arch's accuracy does not depend on which rank or in which order it was evaluated), then count
correct top-1 predictions on the held-out (validation) batches. Inputs are resized to the arch's
resolution exactly as the supernet saw them in training (``effnn.nas.resize_to``).

A quantized supernet (``effnn.nas.precision.StagePrecision``) is evaluated at given per-stage bits: set the
bits, forget every layer's activation range, recalibrate (which re-estimates BN statistics and activation
ranges together, for this subnet at these bits alone), then evaluate. Resetting the ranges first makes
the result a function of (arch, bits) only, independent of what was evaluated before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from effnn.nas.bn_calibration import recalibrate_bn
from effnn.nas.precision import StageBits, StagePrecision
from effnn.nas.space import Arch
from effnn.nas.supernet import Supernet, resize_to
from effnn.search.prefix_reuse import PrefixReuse

Batch = tuple[torch.Tensor, torch.Tensor]


def fixed_batches(dataset: Dataset, num_batches: int, batch_size: int, seed: int) -> list[Batch]:
    """``num_batches`` shuffled batches drawn once with a seeded generator (identical on every rank)."""
    if num_batches <= 0 or batch_size <= 0:
        raise ValueError(f"calibration needs positive num_batches and batch_size, got {num_batches}, {batch_size}")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                        generator=torch.Generator().manual_seed(seed))
    batches = []
    for x, y in loader:
        batches.append((x, y))
        if len(batches) == num_batches:
            break
    return batches


def recalibrate_subnet(supernet: Supernet, arch: Arch, batches: Sequence[Batch]) -> None:
    """Activate ``arch`` and re-estimate its BN statistics as the cumulative average over ``batches``
    (this rank only: under DDP, ranks evaluate different archs)."""
    supernet.set_arch(arch)
    recalibrate_bn(supernet, batches, len(batches),
                   forward=lambda batch: supernet(resize_to(batch[0], arch.resolution)), sync_distributed=False)


@torch.no_grad()
def top1_accuracy(model: torch.nn.Module, batches: Iterable[Batch], resolution: int) -> float:
    """Top-1 accuracy in percent of ``model`` (eval mode) on ``batches`` resized to ``resolution``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            pred = model(resize_to(x, resolution)).argmax(dim=1)
            correct += int((pred == y.to(pred.device)).sum())
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy evaluation got no batches")
    return 100.0 * correct / total


class SubnetAccuracy:
    """``acc(arch, bits=None)`` -> top-1 accuracy in percent of ``arch`` (at ``bits`` on a quantized supernet)
    on ``eval_batches`` after BN (and activation-range) recalibration.

    Leaves the supernet with ``arch``'s recalibrated BN statistics (which is what the exporter relies on),
    at ``bits``, and its previous active arch restored. With ``reuse_mb > 0`` (and a supernet that qualifies,
    see ``PrefixReuse``) calls reuse the activations and statistics of earlier (arch, bits)' shared leading
    layers, with bit-identical results; ``recalibrate`` and ``accuracy`` always compute from scratch.
    ``precision`` is the supernet's ``StagePrecision`` when it is quantized; bits None then runs it at full
    precision.
    """

    def __init__(self, supernet: Supernet, calib_batches: Sequence[Batch], eval_batches: Iterable[Batch],
                 device: torch.device | str = "cpu", channels_last: bool = False, reuse_mb: float = 1024.0,
                 precision: StagePrecision | None = None) -> None:
        if not calib_batches:
            raise ValueError("BN recalibration needs at least one training batch")
        self.device = torch.device(device)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.supernet = supernet.to(device=self.device, memory_format=fmt)  # NHWC: ~1.5x faster on CPU
        self.calib_batches = [(x.to(self.device, memory_format=fmt), y) for x, y in calib_batches]
        self.eval_batches = [(x.to(self.device, memory_format=fmt), y.to(self.device)) for x, y in eval_batches]
        if not self.eval_batches:
            raise ValueError("accuracy evaluation needs a non-empty held-out split")
        if precision is not None and precision.supernet is not supernet:
            raise ValueError("precision must be the StagePrecision of this supernet")
        self.precision = precision
        self.reuse = (PrefixReuse(self.supernet, self.calib_batches, self.eval_batches, reuse_mb, precision=precision)
                      if reuse_mb > 0 and PrefixReuse.supports(self.supernet, precision) else None)

    def set_bits(self, bits: StageBits | None) -> None:
        """Run the supernet at ``bits`` (None: full precision) with its activation ranges forgotten."""
        if self.precision is None:
            if bits is not None:
                raise ValueError("evaluating at bits needs a quantized supernet (SubnetAccuracy(precision=...))")
            return
        self.precision.set(bits)
        self.precision.reset_activation_ranges()

    def recalibrate(self, arch: Arch, bits: StageBits | None = None) -> None:
        """Set ``arch`` (and ``bits``) active and re-estimate its BN statistics (and activation ranges) on the
        calibration batches."""
        self.set_bits(bits)
        recalibrate_subnet(self.supernet, arch, self.calib_batches)

    def accuracy(self, arch: Arch) -> float:
        """Top-1 accuracy (percent) with the BN statistics currently in the supernet."""
        with self.supernet.set_arch(arch):
            return top1_accuracy(self.supernet, self.eval_batches, arch.resolution)

    def __call__(self, arch: Arch, bits: StageBits | None = None) -> float:
        previous = self.supernet.arch
        try:
            if self.reuse is not None:
                self.set_bits(bits)
                return self.reuse.evaluate(arch, bits)
            self.recalibrate(arch, bits)
            return self.accuracy(arch)
        finally:
            if previous is not None:
                self.supernet.set_arch(previous)
