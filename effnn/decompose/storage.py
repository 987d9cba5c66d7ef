"""Weight-storage accounting: how many bits a model's conv/linear weights take, dense fp32 vs SmartDeal.

Two SD formulas. ``public_storage`` (the reported figure) is the public SmartDeal code's model size
(``SmartDeal-Training/main.py --validate``): every nonzero Ce entry at ``C_bit = ceil(log2(V - 1)) + 1``
bits, V the number of distinct |Ce| values (zero included) over the whole model, plus a 1-bit
encoding map per Ce entry, plus B in fp32; dense layers count fp32. ``weight_storage`` (effnn's, kept
as a second column) is described below.

Counted: the weight of every Conv/Linear layer. An SD layer stores B in fp32, one sign + exponent code per
entry of each kept Ce row and one mask bit per row per filter group (``SDWeight.storage_bits``); a dense
layer stores fp32. Biases and norm parameters are identical in both forms, so they are reported as
parameters but left out of the ratio, which is ``dense fp32 weight bits / SD weight bits``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from rich.table import Table
from torch import nn

from effnn.decompose.sd_layers import FP32_BITS, SD_LAYERS

_DENSE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class LayerStorage:
    """Storage of one layer's weight; ``breakdown`` splits ``stored_bits`` by component."""

    name: str
    kind: str
    weights: int  # entries of the dense weight
    stored_values: int  # numbers actually stored (B entries + kept Ce entries, or the dense weights)
    stored_bits: int
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def dense_bits(self) -> int:
        return self.weights * FP32_BITS

    @property
    def ratio(self) -> float:
        return self.dense_bits / self.stored_bits

    @property
    def bits_per_weight(self) -> float:
        return self.stored_bits / self.weights


def layer_storage(name: str, module: nn.Module) -> LayerStorage | None:
    """Storage of ``module``'s weight, or None when it is not a conv/linear/SD layer."""
    if isinstance(module, SD_LAYERS):
        bits = module.storage_bits()
        kept = int(module.coeff_mask().sum().item()) * module.layout.basis_size
        return LayerStorage(name, type(module).__name__, module.dense_weight_numel,
                            module.basis.numel() + kept, sum(bits.values()), bits)
    if isinstance(module, _DENSE_TYPES) and getattr(module, "weight", None) is not None:
        n = module.weight.numel()
        return LayerStorage(name, type(module).__name__, n, n, n * FP32_BITS, {"dense": n * FP32_BITS})
    return None


@dataclass(frozen=True)
class StorageReport:
    """Per-layer and total weight storage of a model."""

    layers: tuple[LayerStorage, ...]
    other_params: int  # biases, norm parameters, ...: fp32 in both forms, outside the ratio

    @property
    def dense_bits(self) -> int:
        return sum(l.dense_bits for l in self.layers)

    @property
    def stored_bits(self) -> int:
        return sum(l.stored_bits for l in self.layers)

    @property
    def ratio(self) -> float:
        """Dense fp32 weight bits / stored weight bits (the issue's ``smartdeal/storage_ratio``)."""
        return self.dense_bits / max(1, self.stored_bits)

    @property
    def weights(self) -> int:
        return sum(l.weights for l in self.layers)

    @property
    def stored_values(self) -> int:
        return sum(l.stored_values for l in self.layers)

    def as_dict(self) -> dict[str, float]:
        return {"dense_weight_bits": self.dense_bits, "sd_weight_bits": self.stored_bits,
                "storage_ratio": self.ratio, "weights": self.weights, "stored_values": self.stored_values,
                "other_params": self.other_params}

    def table(self, title: str = "SmartDeal weight storage") -> Table:
        """A rich table: one row per layer, then the totals."""
        t = Table(title=title)
        for col in ("layer", "type", "weights", "stored values", "dense KiB", "stored KiB", "bits/weight",
                    "ratio"):
            t.add_column(col, justify="left" if col in ("layer", "type") else "right")
        rows = [*self.layers, LayerStorage("total", "", self.weights, self.stored_values, self.stored_bits)]
        for l in rows:
            t.add_row(l.name, l.kind, f"{l.weights:,}", f"{l.stored_values:,}", f"{l.dense_bits / 8192:.1f}",
                      f"{l.stored_bits / 8192:.1f}", f"{l.bits_per_weight:.2f}", f"{l.ratio:.2f}x",
                      end_section=len(rows) > 1 and l is rows[-2])
        t.caption = (f"weights only; {self.other_params:,} other parameters (bias, norm) stay fp32 "
                     f"in both forms")
        return t


def weight_storage(model: nn.Module) -> StorageReport:
    """Account every conv/linear/SD weight of ``model``."""
    layers, counted = [], set()
    for name, module in model.named_modules():
        entry = layer_storage(name, module)
        if entry is not None:
            layers.append(entry)
            counted.update(id(p) for n, p in module.named_parameters(recurse=False) if n != "bias")
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return StorageReport(tuple(layers), other)


@dataclass(frozen=True)
class PublicStorage:
    """Model weight storage by the public SmartDeal formula (see the module docstring)."""

    coeff_bits: int  # C_bit: bits per nonzero Ce entry (sign included)
    distinct_values: int  # V: distinct |Ce| values over all SD layers, zero included
    nonzero_coeffs: int
    coeffs: int  # Ce entries (real rows only, pruned ones included: the encoding map covers them)
    basis_values: int
    dense_weights: int  # weights of the layers left dense (fp32)
    dense_fp32_weights: int  # every conv/linear weight of the model, for the fp32 reference

    @property
    def stored_bits(self) -> int:
        return (self.nonzero_coeffs * self.coeff_bits + self.coeffs + self.basis_values * FP32_BITS
                + self.dense_weights * FP32_BITS)

    @property
    def ratio(self) -> float:
        """Dense fp32 weight bits / SD weight bits."""
        return self.dense_fp32_weights * FP32_BITS / max(1, self.stored_bits)

    def as_dict(self) -> dict[str, float]:
        return {"coeff_bits": self.coeff_bits, "distinct_values": self.distinct_values,
                "nonzero_coeffs": self.nonzero_coeffs, "coeffs": self.coeffs, "basis_values": self.basis_values,
                "dense_weights": self.dense_weights, "stored_bits": self.stored_bits, "storage_ratio": self.ratio}


def public_storage(model: nn.Module) -> PublicStorage:
    """Weight storage of ``model`` by the public SmartDeal code's formula."""
    values: set[float] = set()
    nonzero = coeffs = basis = dense = total = 0
    for _, module in model.named_modules():
        if isinstance(module, SD_LAYERS):
            q = module.quantized_coefficients().detach()[:, module.layout.valid_rows(module.ce.device)]
            values.update(torch.unique(q.abs()).tolist())
            nonzero += int((q != 0).sum())
            coeffs += q.numel()
            basis += module.basis.numel()
            total += module.dense_weight_numel
        elif isinstance(module, _DENSE_TYPES) and getattr(module, "weight", None) is not None:
            dense += module.weight.numel()
            total += module.weight.numel()
    values.add(0.0)  # the public code's set always holds the zeros of pruned entries
    coeff_bits = math.ceil(math.log2(max(2, len(values)) - 1)) + 1
    return PublicStorage(coeff_bits, len(values), nonzero, coeffs, basis, dense, total)


def weight_bits_per_module(model: nn.Module) -> dict[str, float]:
    """Average stored bits per weight for each conv/linear/SD layer, by module name (hw-model hook).

    A hardware cost model multiplies a layer's weight count by this to get its DRAM weight traffic.
    """
    return {name: entry.bits_per_weight for name, module in model.named_modules()
            if (entry := layer_storage(name, module)) is not None}


__all__ = ["LayerStorage", "PublicStorage", "StorageReport", "layer_storage", "public_storage",
           "weight_bits_per_module", "weight_storage"]
