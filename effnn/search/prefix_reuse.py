"""Subnet evaluation that reuses the work already done for subnets with the same leading layers.

Recalibrating and evaluating a subnet runs its layers on fixed batches. Two archs with the same
resolution, stem width and leading blocks (same block, same configuration) compute identical activations
up to the first block where they differ, and identical re-estimated BN statistics there too: a layer's
batch statistics depend only on the layers before it. An evolutionary search evaluates children that
share long prefixes with their parents and with each other, so this evaluator keeps, per prefix of
segments (the stem, then each block), the segment's recalibrated buffers and its output activations on the
calibration and the evaluation batches, and for a new arch runs only the segments after the longest cached
prefix.

Recalibration is bit-identical to ``recalibrate_subnet`` (the same operations on the same inputs; each BN
layer sees its batches in the same order, segment by segment instead of batch by batch, which train-mode
BN cannot tell apart because it normalises with batch statistics). Evaluation runs the held-out batches
merged into chunks of up to ``eval_chunk_mb`` (eval-mode layers treat samples independently, so only the
floating-point blocking of a kernel could differ: the logits were bit-identical on the CPU this was
written on, and tests check that accuracies equal the from-scratch path's). Everything runs under
``torch.inference_mode``. The activation cache is an LRU bounded in megabytes.

Only a supernet whose only buffers are BN statistics qualifies (``PrefixReuse.supports``), or a quantized
one evaluated through its ``StagePrecision``: its activation-range buffers are reset before every
evaluation (``SubnetAccuracy.set_bits``), so after recalibration a layer's range, like its BN statistics,
depends only on the layers before it and their bit-widths. Segment keys then include each segment's
(weight, activation) bits, and calibration also runs the head (whose convs and classifier quantize their
inputs with ranges estimated in training mode) as the from-scratch forward does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from effnn.nas.bn_calibration import bn_layers
from effnn.nas.precision import StageBits, StagePrecision
from effnn.nas.space import Arch
from effnn.nas.supernet import Supernet, resize_to

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Segment:
    """One step of a subnet's forward pass whose output the cache can key: the stem or one block."""

    key: Hashable                       # identifies the segment AND everything before it
    run: Callable[[torch.Tensor], torch.Tensor]
    modules: tuple[nn.Module, ...]      # whose buffers are the segment's recalibrated state


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def merge_batches(batches: Sequence[Batch], chunk_mb: float) -> list[Batch]:
    """Consecutive batches concatenated into chunks of at most ``chunk_mb`` of inputs (at least one batch
    each): fewer, larger kernel calls for evaluation."""
    if chunk_mb <= 0:
        raise ValueError(f"eval_chunk_mb must be positive, got {chunk_mb}")
    limit = chunk_mb * 2 ** 20
    groups: list[list[Batch]] = []
    size = 0.0
    for x, y in batches:
        nbytes = x.numel() * x.element_size()
        if not groups or size + nbytes > limit or groups[-1][0][0].shape[1:] != x.shape[1:]:
            groups.append([])
            size = 0.0
        groups[-1].append((x, y))
        size += nbytes
    return [group[0] if len(group) == 1 else
            (_cat_like([x for x, _ in group]), torch.cat([y for _, y in group])) for group in groups]


def _cat_like(xs: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the batch keeping the inputs' memory format (NHWC stays NHWC)."""
    fmt = (torch.channels_last if xs[0].dim() == 4 and xs[0].is_contiguous(memory_format=torch.channels_last)
           and not xs[0].is_contiguous() else torch.contiguous_format)
    return torch.cat(xs).contiguous(memory_format=fmt)


class ActivationCache:
    """LRU of per-prefix activations (bounded in bytes) plus the per-segment buffer snapshots (small)."""

    def __init__(self, max_mb: float, max_states: int = 200_000) -> None:
        if max_mb <= 0:
            raise ValueError(f"the activation cache needs a positive size in MB, got {max_mb}")
        self.max_bytes = int(max_mb * 2 ** 20)
        self.max_states = max_states
        self.bytes = 0
        self._acts: OrderedDict[Hashable, tuple[list[torch.Tensor], list[torch.Tensor], int]] = OrderedDict()
        self._states: OrderedDict[Hashable, list[torch.Tensor]] = OrderedDict()

    def longest_prefix(self, keys: Sequence[Hashable]) -> int:
        """How many leading segments can be restored: their states are all cached, and so are the
        activations after the last of them (0 when none)."""
        known = 0
        while known < len(keys) and keys[known] in self._states:
            known += 1
        for n in range(known, 0, -1):
            if keys[n - 1] in self._acts:
                for key in keys[:n]:
                    self._states.move_to_end(key)
                self._acts.move_to_end(keys[n - 1])
                return n
        return 0

    def state(self, key: Hashable) -> list[torch.Tensor]:
        return self._states[key]

    def activations(self, key: Hashable) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        calib, evals, _ = self._acts[key]
        return calib, evals

    def put_state(self, key: Hashable, buffers: list[torch.Tensor]) -> None:
        self._states[key] = [b.detach().clone() for b in buffers]
        self._states.move_to_end(key)
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)

    def put_activations(self, key: Hashable, calib: list[torch.Tensor], evals: list[torch.Tensor]) -> None:
        size = _nbytes(calib) + _nbytes(evals)
        if size > self.max_bytes or key in self._acts:
            return
        while self.bytes + size > self.max_bytes:
            _, (_, _, freed) = self._acts.popitem(last=False)
            self.bytes -= freed
        self._acts[key] = (calib, evals, size)
        self.bytes += size


class PrefixReuse:
    """``evaluate(arch)`` -> top-1 accuracy (percent) after BN recalibration, reusing cached prefixes.

    Leaves ``arch`` active with its recalibrated statistics in every BN layer (inactive ones reset), the
    state ``recalibrate_subnet`` leaves, so exporting right after an evaluation sees the same model.
    """

    def __init__(self, supernet: Supernet, calib_batches: Sequence[Batch], eval_batches: Sequence[Batch],
                 max_mb: float = 1024.0, eval_chunk_mb: float = 64.0, precision: StagePrecision | None = None) -> None:
        if not self.supports(supernet, precision):
            raise ValueError("prefix reuse needs a supernet whose only buffers are BN statistics, or a quantized "
                             "one given with its StagePrecision")
        self.supernet = supernet
        self.precision = precision
        self.calib_inputs = [x for x, _ in calib_batches]
        self.eval_batches = merge_batches(eval_batches, eval_chunk_mb)
        self._resized: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.cache = ActivationCache(max_mb)
        self.reused_segments = 0
        self.computed_segments = 0

    @staticmethod
    def supports(supernet: nn.Module, precision: StagePrecision | None = None) -> bool:
        """True when every buffer belongs to a BN layer, or (with ``precision``) to one of its quantizers,
        whose ranges are reset before each evaluation: nothing else carries recalibration history."""
        owners = list(bn_layers(supernet)) + (precision.quantizers() if precision is not None else [])
        known = {id(b) for m in owners for b in m.buffers(recurse=False)}
        return all(id(b) in known for b in supernet.buffers())

    def segments(self, arch: Arch, bits: StageBits | None = None) -> list[Segment]:
        """Stem and blocks of the active ``arch``, each keyed by everything up to and including it (with
        ``bits``: the (weight, activation) bits of each segment's stage too)."""
        net = self.supernet

        def at(stage: int) -> tuple[int, int] | None:
            return None if bits is None else bits.stage(stage)

        key: Hashable = ("stem", arch.resolution, arch.width[0], at(0))
        segments = [Segment(key, net.forward_stem, (net.conv_stem, net.bn1))]
        for index, cfg in zip(net.active_blocks, net.space.blocks(arch), strict=True):
            key = (key, index, cfg, at(cfg.stage))
            block = net.blocks[index]
            segments.append(Segment(key, block, (block,)))
        return segments

    def _inputs_at(self, resolution: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Calibration and evaluation inputs resized to ``resolution`` (computed once per resolution)."""
        if resolution not in self._resized:
            self._resized[resolution] = ([resize_to(x, resolution) for x in self.calib_inputs],
                                         [resize_to(x, resolution) for x, _ in self.eval_batches])
        return self._resized[resolution]

    @staticmethod
    def _buffers(segment: Segment) -> list[torch.Tensor]:
        return [b for m in segment.modules for b in m.buffers()]

    @torch.inference_mode()
    def evaluate(self, arch: Arch, bits: StageBits | None = None) -> float:
        """Accuracy of ``arch`` at ``bits`` (which the caller has set on the ``StagePrecision``, with its
        activation ranges reset)."""
        net = self.supernet
        if bits is not None and (self.precision is None or self.precision.bits != bits):
            raise ValueError("PrefixReuse.evaluate(arch, bits): set the bits on its StagePrecision first")
        net.set_arch(arch)
        segments = self.segments(arch, bits)
        start = self.cache.longest_prefix([s.key for s in segments])
        layers = bn_layers(net)
        modes = [(m, m.training) for m in net.modules()]
        momenta = [m.momentum for m in layers]
        try:
            for m in layers:
                m.reset_running_stats()
                m.momentum = None  # cumulative average, as recalibrate_bn
            if start:
                for segment in segments[:start]:
                    for buf, saved in zip(self._buffers(segment), self.cache.state(segment.key), strict=True):
                        buf.copy_(saved)
                calib, evals = self.cache.activations(segments[start - 1].key)
            else:
                calib, evals = self._inputs_at(arch.resolution)
            self.reused_segments += start
            self.computed_segments += len(segments) - start
            return self._run_tail(segments[start:], calib, evals)
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
            for m, mode in modes:
                m.training = mode

    def _run_tail(self, tail: Sequence[Segment], calib: list[torch.Tensor], evals: list[torch.Tensor]) -> float:
        """Recalibrate then evaluate the segments after the cached prefix; cache what fits (earliest first:
        the most widely shared prefixes), never holding more than the cache's budget of kept outputs."""
        net = self.supernet
        net.train()
        calib_outputs: list[list[torch.Tensor] | None] = []
        kept = 0
        eval_share = sum(x.shape[0] for x in evals) / max(1, sum(x.shape[0] for x in calib))
        for segment in tail:
            calib = [segment.run(x) for x in calib]
            size = int(_nbytes(calib) * (1 + eval_share))
            keep = kept + size <= self.cache.max_bytes
            kept += size if keep else 0
            calib_outputs.append(calib if keep else None)
            self.cache.put_state(segment.key, self._buffers(segment))
        for x in calib:  # the last BN's statistics (the layers after it hold no statistics but quantizer ranges)
            last = net.forward_last_conv(x)
            if self.precision is not None:
                net.forward_head(last)
        net.eval()
        for segment, calib_out in zip(tail, calib_outputs, strict=True):
            evals = [segment.run(x) for x in evals]
            if calib_out is not None:
                self.cache.put_activations(segment.key, calib_out, evals)
        correct = total = 0
        for x, (_, y) in zip(evals, self.eval_batches, strict=True):
            pred = net.forward_head(net.forward_last_conv(x)).argmax(dim=1)
            correct += int((pred == y.to(pred.device)).sum())
            total += y.numel()
        if total == 0:
            raise ValueError("accuracy evaluation got no batches")
        return 100.0 * correct / total
