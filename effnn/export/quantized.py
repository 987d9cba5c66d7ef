"""A subnet of a quantized supernet as a static quantized model: plain modules that torch.export and ONNX capture.

The supernet quantizes with hooks and weight parametrizations (``effnn.precision``), which a deployable
model must not need. Its static counterpart here stores, per quantized conv/linear layer:

- ``weight``: the weight already fake-quantized per output channel at the stage's weight bits (the
  stored tensor IS the quantized weight: ``weight = weight_offset + weight_scale * q``, ``q`` an integer in
  ``[0, 2**weight_bits - 1]``), with ``weight_scale``/``weight_offset`` per output channel beside it;
- ``act_range``: the calibrated ``(lo, hi)`` of its input activation, which ``forward`` fake-quantizes
  at ``act_bits`` with the same formula (``effnn.precision.quantizers.fake_quantize``) the supernet's
  quantizer uses in evaluation, before the convolution.

``QuantConv2d``/``QuantLinear`` subclass ``nn.Conv2d``/``nn.Linear`` and carry numeric ``weight_bits``/
``act_bits`` attributes, so the hardware workload tracer prices them at those widths. The export runs the
search's procedure first (``calibrate_quantized``): bits set, activation ranges forgotten, then BN
recalibration in training mode on the calibration batches, which also re-estimates the ranges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import yaml

from effnn.errors import ConfigError
from effnn.nas.precision import BitsSpace, StageBits, StagePrecision
from effnn.nas.space import Arch
from effnn.nas.supernet import MBNet, Supernet
from effnn.nas.switchable import recalibrate_precision
from effnn.precision.modules import LayerQuantizer, WeightFakeQuant
from effnn.precision.quantizers import MIN_SCALE, channel_range, fake_quantize
from effnn.precision.swap import QUANTIZER_ATTR
from effnn.search.evaluator import Batch

#: How the stored numbers are to be read (export.json ``quantization.scheme``).
SCHEME = ("affine min/max fake quantization: weights per output channel, weight = weight_offset + weight_scale * q "
          "with integer q in [0, 2**weight_bits - 1] (stored already quantized); input activations per tensor on "
          "act_range = (lo, hi), x_q = lo + s * round(clamp((x - lo) / s, 0, 2**act_bits - 1)), "
          "s = max((hi - lo) / (2**act_bits - 1), 1e-8)")


class _StaticQuant:
    """What ``QuantConv2d`` and ``QuantLinear`` add to their float layer: fixed bits and calibrated ranges."""

    weight: torch.Tensor
    act_range: torch.Tensor
    weight_scale: torch.Tensor
    weight_offset: torch.Tensor

    def _init_quant(self, act_bits: int | None, weight_bits: int | None) -> None:
        self.act_bits = act_bits  # numeric attributes: read by effnn.hw workload extraction
        self.weight_bits = weight_bits
        device = self.weight.device
        if act_bits is not None:
            self.register_buffer("act_range", torch.zeros(2, device=device))
        if weight_bits is not None:
            channels = self.weight.shape[0]
            self.register_buffer("weight_scale", torch.ones(channels, device=device))
            self.register_buffer("weight_offset", torch.zeros(channels, device=device))

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input on ``2**act_bits`` levels of the calibrated range (unchanged without ``act_bits``)."""
        if self.act_bits is None:
            return x
        lo, hi = self.act_range.to(x.dtype)
        return fake_quantize(x, self.act_bits, lo, hi)

    def quant_repr(self) -> str:
        return f"act_bits={self.act_bits}, weight_bits={self.weight_bits}"


class QuantConv2d(_StaticQuant, nn.Conv2d):
    """``nn.Conv2d`` with a stored quantized weight and a fake-quantized input (see the module docstring)."""

    def __init__(self, conv: nn.Conv2d, act_bits: int | None, weight_bits: int | None) -> None:
        nn.Conv2d.__init__(self, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                           device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self._init_quant(act_bits, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Conv2d.forward(self, self.quantize_input(x))

    def extra_repr(self) -> str:
        return f"{nn.Conv2d.extra_repr(self)}, {self.quant_repr()}"


class QuantLinear(_StaticQuant, nn.Linear):
    """``nn.Linear`` with a stored quantized weight and a fake-quantized input (see the module docstring)."""

    def __init__(self, linear: nn.Linear, act_bits: int | None, weight_bits: int | None) -> None:
        nn.Linear.__init__(self, linear.in_features, linear.out_features, linear.bias is not None,
                           device=linear.weight.device, dtype=linear.weight.dtype)
        self.weight, self.bias = linear.weight, linear.bias
        self._init_quant(act_bits, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear.forward(self, self.quantize_input(x))

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self.quant_repr()}"


def parse_bits(value: Any, where: str = "bits") -> StageBits | None:
    """``bits=`` from the command line or an arch file: a mapping, a YAML/JSON string of one, or None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)  # JSON is YAML
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}={value!r} is not YAML/JSON; write e.g. "
                              f"'{where}={{weight: [8, 4, 4], act: [8, 8, 4]}}'") from err
    if hasattr(value, "items") and not isinstance(value, Mapping):  # an OmegaConf DictConfig
        value = dict(value.items())
    try:
        return StageBits.from_dict({k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                                    for k, v in value.items()} if isinstance(value, Mapping) else value)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err


def check_bits_fit(bits: StageBits, precision: StagePrecision | None, bits_space: BitsSpace | None,
                   source: str) -> None:
    """One-line errors for bits asked of a full-precision supernet or outside the checkpoint's choices."""
    if precision is None:
        raise ConfigError(f"bits={bits.to_dict()} asks for a quantized export, but {source} is a full-precision "
                          f"supernet; export it without bits, or pass a checkpoint trained with +recipe=alphanet_quant")
    if bits.num_stages != precision.num_stages:
        raise ConfigError(f"bits have {bits.num_stages} stages but the supernet in {source} has "
                          f"{precision.num_stages}; give one weight and one act bit-width per stage")
    if bits_space is not None and not bits_space.contains(bits):
        raise ConfigError(f"bits={bits.to_dict()} are outside the choices {source} was trained for: weights in "
                          f"{list(bits_space.weight_choices)}, activations in {list(bits_space.act_choices)} per stage")


def calibrate_quantized(precision: StagePrecision, arch: Arch, bits: StageBits, batches: Sequence[Batch]) -> None:
    """The search's quantized evaluation set-up (``effnn.nas.switchable.recalibrate_precision``, this process
    only): ``bits`` on, activation ranges forgotten, then BN recalibration (training mode) on ``batches``, which
    re-estimates BN statistics and activation ranges of ``arch`` at ``bits`` together. Leaves the supernet at
    ``arch`` and ``bits``."""
    recalibrate_precision(precision, arch, bits, batches, len(batches), sync_distributed=False)


def supernet_name(static_name: str, active_blocks: Sequence[int]) -> str:
    """The supernet module a static subnet's module was sliced from (static block i = active block i)."""
    parts = static_name.split(".")
    if len(parts) > 1 and parts[0] == "blocks":
        parts[1] = str(active_blocks[int(parts[1])])
    return ".".join(parts)


def _layer_bits(module: nn.Module, name: str) -> tuple[int | None, int | None, torch.Tensor | None]:
    """``(act bits, weight bits, act range)`` a supernet layer runs at now (None, None, None if not quantized)."""
    quantizer = getattr(module, QUANTIZER_ATTR, None)
    if not isinstance(quantizer, LayerQuantizer):
        return None, None, None
    act = quantizer.state.fwd_bits if quantizer.quantize_input else None
    weight = None
    parametrizations = getattr(getattr(module, "parametrizations", None), "weight", None)
    for p in parametrizations or ():
        if isinstance(p, WeightFakeQuant):
            weight = p.bits()
    if act is not None and not bool(quantizer.initialized):
        raise RuntimeError(f"the activation range of {name} was never calibrated; run calibrate_quantized first")
    return act, weight, (quantizer.running_range.detach().clone() if act is not None else None)


def quantize_static(quantized: MBNet, float_static: MBNet, supernet: Supernet) -> dict[str, dict[str, Any]]:
    """Swap, in place, every layer of ``quantized`` (extracted at the bits) that the supernet quantizes now
    for a ``QuantConv2d``/``QuantLinear`` holding its bits, activation range and weight grid.

    ``float_static`` is the same subnet extracted at full precision; its weights give each channel's
    quantization range, and the stored weight must equal their fake quantization bit for bit.
    Returns ``{layer: {act_bits, weight_bits, act_range}}`` (export.json's ``quantization.layers``).
    """
    modules = dict(supernet.named_modules())
    floats = dict(float_static.named_modules())
    spec: dict[str, dict[str, Any]] = {}
    for name, layer in list(quantized.named_modules()):
        if type(layer) not in (nn.Conv2d, nn.Linear):
            continue
        act, weight, act_range = _layer_bits(modules[supernet_name(name, supernet.active_blocks)], name)
        if act is None and weight is None:
            continue
        new = (QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear)(layer, act, weight)
        with torch.no_grad():
            if act_range is not None:
                new.act_range.copy_(act_range)
            if weight is not None:
                _set_weight_grid(new, floats[name].weight, weight, name)
        quantized.set_submodule(name, new)
        spec[name] = {"act_bits": act, "weight_bits": weight,
                      "act_range": None if act_range is None else [float(v) for v in act_range]}
    return spec


def _set_weight_grid(layer: _StaticQuant, float_weight: torch.Tensor, bits: int, name: str) -> None:
    lo, hi = channel_range(float_weight)
    if not torch.equal(fake_quantize(float_weight, bits, lo, hi), layer.weight):
        raise RuntimeError(f"the stored weight of {name} is not the per-channel {bits}-bit quantization of its "
                           f"full-precision weight")
    layer.weight_scale.copy_(((hi - lo) / float(2 ** bits - 1)).clamp_min(MIN_SCALE).flatten())
    layer.weight_offset.copy_(lo.flatten())


def apply_quant_spec(static: MBNet, spec: Mapping[str, Mapping[str, Any]]) -> None:
    """Swap the layers named in ``spec`` (export.json's ``quantization.layers``) for their quantized kind,
    with empty buffers that the exported state dict fills (``load_exported``)."""
    for name, entry in spec.items():
        layer = static.get_submodule(name)
        kind = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear if isinstance(layer, nn.Linear) else None
        if kind is None:
            raise ValueError(f"quantized layer {name} is a {type(layer).__name__}, not a conv or linear layer")
        static.set_submodule(name, kind(layer, entry.get("act_bits"), entry.get("weight_bits")))


__all__ = ["QuantConv2d", "QuantLinear", "SCHEME", "apply_quant_spec", "calibrate_quantized", "check_bits_fit",
           "parse_bits", "quantize_static", "supernet_name"]
