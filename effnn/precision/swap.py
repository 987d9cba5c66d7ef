"""``quantize_model`` / ``dequantize_model``: instrument a model's conv/linear layers in place, and revert.

Instead of swapping classes per layer type (torch.ao style), every selected layer gets the same three
attachments: a weight parametrization, an input pre-hook and an output hook (see ``modules``). That one
mechanism covers ``nn.Conv2d``/``nn.Linear``, timm layers and the supernet's elastic ops (anything with a
2-D or 4-D ``.weight`` Parameter) without importing them. Parameters keep their identity, so an optimizer
built before or after quantization is equally valid; ``dequantize_model`` restores the plain layers, with
the trained weights, and the plain state-dict keys. Each quantized layer also declares ``hw_bits`` (its
current forward bit-width), which ``effnn.hw`` workload extraction reads to price MACs and traffic.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from typing import Any

import torch.nn as nn
from torch.nn.utils import parametrize

from effnn.config import QuantizationConfig  # the structured config; re-exported here
from effnn.precision.modules import LayerQuantizer, WeightFakeQuant
from effnn.precision.state import PrecisionState

QUANTIZER_ATTR = "quantizer"


class FullPrecision(nn.Module):
    """Marker base class: ``quantize_model`` never descends into subclasses (e.g. DFQ precision gates)."""


def stored_weight(module: nn.Module) -> nn.Parameter | None:
    """The ``weight`` Parameter a layer trains (under a parametrization, the unquantized original)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, nn.Parameter) else None


def is_quantizable(module: nn.Module) -> bool:
    """A layer with a 2-D (linear) or 4-D (conv) weight Parameter; embeddings are lookups, not MACs."""
    weight = stored_weight(module)
    return (weight is not None and weight.dim() in (2, 4)
            and not isinstance(module, nn.Embedding | nn.EmbeddingBag))


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Quantizable layers in registration order, skipping ``FullPrecision`` subtrees."""
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        if isinstance(module, FullPrecision):
            return
        if is_quantizable(module):
            out.append((prefix, module))
            return
        for name, child in module.named_children():
            if name == QUANTIZER_ATTR and isinstance(child, LayerQuantizer):
                continue
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return out


def classifier_name(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> str | None:
    """Name of the final classifier: timm's ``get_classifier()`` if it is one of ``layers``, else the last
    layer with a 2-D weight (a linear layer) if it is the last quantizable layer."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            head = get_classifier()
        except (AttributeError, NotImplementedError, TypeError):
            head = None
        for name, module in layers:
            if module is head:
                return name
    if layers and stored_weight(layers[-1][1]).dim() == 2:
        return layers[-1][0]
    return None


def select_layers(model: nn.Module, config: QuantizationConfig) -> list[tuple[str, nn.Module]]:
    """The layers ``quantize_model`` would instrument under ``config``."""
    layers = candidate_layers(model)
    keep = set()
    if config.keep_classifier:
        keep.add(classifier_name(model, layers))
    if config.keep_first and layers:
        keep.add(layers[0][0])
    return [(name, m) for name, m in layers
            if name not in keep and not any(fnmatch.fnmatchcase(name, p) for p in config.keep_full_precision)]


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Layers of ``model`` currently instrumented by ``quantize_model``."""
    for name, module in model.named_modules():
        if isinstance(getattr(module, QUANTIZER_ATTR, None), LayerQuantizer):
            yield name, module


def find_precision_state(model: nn.Module) -> PrecisionState | None:
    """The ``PrecisionState`` shared by the quantized layers of ``model`` (None if it has none)."""
    states = {id(m.quantizer.state): m.quantizer.state for _, m in quantized_layers(model)}
    if len(states) > 1:
        raise ValueError(f"model has layers quantized with {len(states)} different PrecisionStates; "
                         f"quantize it with a single quantize_model call")
    return next(iter(states.values()), None)


def quantize_model(model: nn.Module, config: QuantizationConfig | Mapping[str, Any] | None = None,
                   state: PrecisionState | None = None, weight_state: PrecisionState | None = None
                   ) -> PrecisionState:
    """Instrument ``model``'s conv/linear layers (in place) to train with fake quantization.

    Returns the ``PrecisionState`` all of them read; it starts at full precision (``fwd_bits=None``) until
    a schedule sets bits. BN/norm layers and, by default, the classifier stay full precision. Calling it
    on an already quantized model raises (dequantize first), so layers are never instrumented twice.
    ``weight_state``: weights read their bit-width from this state instead (``fwd_bits``; None there means
    full-precision weights), so weights and activations can run at different widths (per-stage precision
    search, ``effnn.nas.precision``).
    """
    config = QuantizationConfig.coerce(config)
    if next(quantized_layers(model), None) is not None:
        raise ValueError("model is already quantized; call dequantize_model(model) first or reuse "
                         "find_precision_state(model)")
    layers = select_layers(model, config)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer to quantize (no conv/linear with a 2-D/4-D "
                         f".weight outside keep_full_precision={list(config.keep_full_precision)})")
    state = state if state is not None else PrecisionState()
    for _, layer in layers:
        if config.weights:
            weights_read = state if weight_state is None else weight_state
            parametrize.register_parametrization(layer, "weight", WeightFakeQuant(weights_read), unsafe=True)
        quantizer = LayerQuantizer(state, config.act_momentum, config.activations, config.gradients)
        quantizer.weight_state = weight_state
        quantizer.to(stored_weight(layer).device)
        layer.add_module(QUANTIZER_ATTR, quantizer)
        quantizer.attach(layer)
        layer.hw_bits = quantizer.hw_bits  # bit-aware hardware cost (effnn.hw reads ``hw_bits``)
    return state


def dequantize_model(model: nn.Module) -> nn.Module:
    """Undo ``quantize_model``: plain layers again, holding the trained full-precision weights."""
    for _, layer in list(quantized_layers(model)):
        quantizer: LayerQuantizer = getattr(layer, QUANTIZER_ATTR)
        quantizer.detach_hooks()
        delattr(layer, QUANTIZER_ATTR)
        if getattr(layer, "hw_bits", None) == quantizer.hw_bits:
            del layer.hw_bits
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    return model


def layer_bitwidths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{layer name: (forward bits, gradient bits)}`` for the quantized layers at the current state
    (32 = full precision), for cost models that price MACs and traffic by bit-width."""
    return {name: (m.quantizer.state.effective_fwd_bits, m.quantizer.state.effective_grad_bits)
            for name, m in quantized_layers(model)}


__all__ = ["FullPrecision", "QuantizationConfig", "candidate_layers", "classifier_name", "dequantize_model",
           "find_precision_state", "is_quantizable", "layer_bitwidths", "quantize_model", "quantized_layers",
           "select_layers", "stored_weight"]
