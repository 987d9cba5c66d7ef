"""Model-level SmartDeal: ``convert`` swaps Conv2d/Linear for SD layers, ``materialize`` swaps them back.

(This module is ``conversion``, not ``convert``, so that ``effnn.decompose.convert`` is only the function.)
``convert`` works on any model built from ``nn.Conv2d`` / ``nn.Linear`` (timm, torchvision, effnn models):
it fits each weight with SED (or, with ``init="scratch"``, starts from it with B = identity) and replaces
the module in place. ``materialize`` bakes W = (mask * Q(Ce)) @ B into plain dense layers for export.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import track
from torch import nn

from effnn.decompose.config import SmartDealConfig
from effnn.decompose.fitting import fit_sed, global_layer_sparsity, layer_row_mask, row_scores
from effnn.decompose.sd_layers import FP32_BITS, SD_LAYERS, SDConv2d, SDLayout, SDLinear, SDWeight
from effnn.errors import ConfigError


@dataclass(frozen=True)
class LayerFit:
    """What conversion did to one layer: its block structure, pruning and reconstruction error."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    layout: SDLayout
    row_sparsity: float  # fraction of valid (group, row) pairs actually pruned
    relative_error: float  # ||W_sd - W||_F / ||W||_F against the dense weight it replaced
    iterations: int
    storage_ratio: float  # dense fp32 bits / SD bits of this weight (effnn's formula)
    pruned_rows_per_group: tuple[int, ...] = ()  # equal in every group: balanced pruning


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _layer_sparsity(name: str, module: nn.Module, config: SmartDealConfig) -> float:
    if isinstance(module, nn.Linear) and not config.prune_linear:
        return 0.0
    for pattern, value in config.layer_sparsity.items():
        if fnmatch.fnmatchcase(name, pattern):
            return float(value)
    return config.row_sparsity


def _estimated_gain(layout: SDLayout, sparsity: float, config: SmartDealConfig) -> float:
    """Dense bits / SD bits before any mask exists: ``SDWeight.storage_bits`` at the target sparsity."""
    valid_rows = layout.num_valid_rows
    groups = -(-layout.out_features // config.filter_group)
    sd = (layout.out_features * layout.num_blocks * layout.basis_size**2 * FP32_BITS
          + (1 - sparsity) * layout.out_features * valid_rows * layout.basis_size * config.spec.bits_per_entry
          + groups * valid_rows)
    return layout.out_features * layout.filter_numel * FP32_BITS / sd


def _candidates(model: nn.Module, config: SmartDealConfig) -> dict[str, nn.Conv2d | nn.Linear]:
    found = {}
    for name, module in model.named_modules():
        if type(module) not in (nn.Conv2d, nn.Linear) or _matches(name, config.skip):
            continue
        if name == "":
            raise ConfigError("SmartDeal: the model itself is a single Conv2d/Linear; wrap it in "
                              "nn.Sequential so the layer can be replaced in place")
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            continue
        layout = SDLayout.for_weight(module.weight.shape, config.block_rows, config.vector_basis)
        if config.skip_no_gain and _estimated_gain(layout, _layer_sparsity(name, module, config), config) <= 1.0:
            continue
        found[name] = module
    return found


def _build_sd_layer(module: nn.Conv2d | nn.Linear, config: SmartDealConfig) -> SDWeight:
    kwargs = {"block_rows": config.block_rows, "vector_basis": config.vector_basis,
              "filter_group": config.filter_group, "spec": config.spec}
    if isinstance(module, nn.Conv2d):
        return SDConv2d.from_dense(module, **kwargs)
    return SDLinear.from_dense(module, **kwargs)


def convert(model: nn.Module, config: SmartDealConfig | Mapping[str, Any] | None = None,
            progress: bool = True) -> dict[str, LayerFit]:
    """Replace every eligible ``nn.Conv2d`` / ``nn.Linear`` of ``model`` by its SD form, in place.

    Eligible: exact ``nn.Conv2d`` (zeros padding) and ``nn.Linear`` modules not matched by ``config.skip``
    (subclasses with their own forward, e.g. already-quantized layers, are left alone). Returns one
    ``LayerFit`` per converted layer (name -> fit), with the per-layer reconstruction error. The model
    keeps its training/eval mode, device and dtype.
    """
    config = SmartDealConfig.from_mapping(config)
    modules = _candidates(model, config)
    if not modules:
        raise ConfigError("SmartDeal: no Conv2d/Linear layer to convert (all skipped or none present); "
                          "check config.skip and skip_no_gain")
    layouts = {n: SDLayout.for_weight(m.weight.shape, config.block_rows, config.vector_basis)
               for n, m in modules.items()}
    blocks = {n: layouts[n].to_blocks(m.weight.detach()) for n, m in modules.items()}
    scores = {n: row_scores(blocks[n], config.filter_group) for n in modules}
    valid = {n: layouts[n].valid_rows(blocks[n].device) for n in modules}
    ratios = {n: _layer_sparsity(n, m, config) for n, m in modules.items()}
    if config.scope == "global":
        prunable = [n for n, m in modules.items() if config.prune_linear or not isinstance(m, nn.Linear)]
        ratios.update(global_layer_sparsity({n: scores[n] for n in prunable}, {n: valid[n] for n in prunable},
                                            config.row_sparsity))
    masks = {n: layer_row_mask(scores[n], valid[n], ratios[n]) for n in modules}

    fits: dict[str, LayerFit] = {}
    items = track(modules.items(), description="SED fitting", transient=True, disable=not progress)
    for name, module in items:
        layer = _build_sd_layer(module, config)
        layer.train(module.training)
        layer.set_row_mask(masks[name])
        if config.init == "fit":
            result = fit_sed(blocks[name], layer.coeff_mask(), config.spec, config.als_iters, config.als_tol)
            layer.load_decomposition(result.ce, result.basis)
            if config.element_mask:  # public SEConv2d.set_mask: zero entries of Q(Ce) stay zero
                layer.set_element_mask(result.ce != 0)
            iterations = result.iterations
        else:
            layer.load_dense_weight(module.weight.detach())
            iterations = 0
        with torch.no_grad():
            err = float((layer.weight - module.weight).norm() / module.weight.norm().clamp_min(1e-30))
        valid_pairs = layer.row_mask.shape[0] * int(valid[name].sum())
        fits[name] = LayerFit(
            name=name, kind=type(module).__name__, weight_shape=tuple(module.weight.shape),
            layout=layouts[name], row_sparsity=1.0 - float(layer.row_mask.sum()) / valid_pairs,
            relative_error=err, iterations=iterations,
            storage_ratio=FP32_BITS / layer.storage_bits_per_weight,
            pruned_rows_per_group=tuple(int(v) for v in (valid[name].sum() - layer.row_mask.sum(dim=(1, 2)))),
        )
        _replace(model, name, layer)
    return fits


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def sd_layers(model: nn.Module) -> dict[str, SDWeight]:
    """All SD layers of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SD_LAYERS)}


def project_coefficients_(model: nn.Module) -> None:
    """Snap every SD layer's latent Ce onto mask * Q(Ce) (call after each optimizer step in project mode)."""
    for layer in sd_layers(model).values():
        layer.project_()


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """Replace SD layers by plain ``nn.Conv2d`` / ``nn.Linear`` holding W = (mask * Q(Ce)) @ B, in place.

    The result has exactly the SD model's outputs and no effnn dependency, for export paths that want a
    dense graph. Returns ``model`` for chaining.
    """
    for name, layer in sd_layers(model).items():
        if name == "":
            raise ConfigError("SmartDeal: materialize needs a container model, not a bare SD layer")
        weight = layer.weight.detach()
        if isinstance(layer, SDConv2d):
            dense: nn.Module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                         layer.stride, layer.padding, layer.dilation, layer.groups,
                                         bias=layer.bias is not None)
        else:
            dense = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        dense.to(device=weight.device, dtype=weight.dtype).train(layer.training)
        dense.weight.copy_(weight)
        if layer.bias is not None:
            dense.bias.copy_(layer.bias)
        _replace(model, name, dense)
    return model
