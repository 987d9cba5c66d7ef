"""Cost models: one small interface from "a network" to a dict of metrics, for sampling, search and logs.

A cost model is called on any of

* a static ``nn.Module`` and its input shape: ``model(resnet, (1, 3, 224, 224))`` -- the workload is
  extracted by running it once (:func:`effnn.hw.workload.extract_workload`);
* a search space and an arch: ``model(space, arch)`` -- anything with ``workload(arch[, num_classes])``
  returning layer shapes, so no module is built; a space that also has ``workload_sections`` (memoized
  pieces of the subnet, see :class:`WorkloadSection`) is scored per section, which is what makes
  scoring random subnets fast;
* a list of :class:`~effnn.hw.layers.ConvLayer` / :class:`~effnn.hw.layers.GemmLayer`.

and returns ``dict[str, float]``. :class:`AnalyticCostModel` gives ``macs`` and ``params``;
:class:`SystolicCostModel` adds ``latency_ms``, ``energy``, ``edp`` and the array's cycle/traffic counts.
:func:`build_cost_model` builds either from a preset name (``effnn/conf/hardware/*.yaml``) or a config mapping.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, Protocol

import numpy as np
import torch.nn as nn
import yaml

from effnn.hw.layers import Layer
from effnn.hw.systolic import LayerArrays, SystolicArray
from effnn.hw.workload import extract_workload

#: A space is anything with ``workload(arch, num_classes=...) -> list[Layer]`` (duck-typed, see nas).
Target = Any


class WorkloadSection(Protocol):
    """A piece of a subnet (a space's stem, one block, its head) that the space memoizes and hands out as
    the same object for every arch sharing it (``effnn.nas.SearchSpace.workload_sections``)."""

    layers: Sequence[Layer]
    #: the section's parameter count as the space counts it (BN and biases included)
    params: int


class CostModel(abc.ABC):
    """Maps a module, a (space, arch) pair or a layer list to a dict of metrics (see the module docstring)."""

    name: str = "cost"
    #: What :meth:`score` returns, in order; units in :attr:`units`.
    metric_names: tuple[str, ...] = ()
    units: Mapping[str, str] = {}

    def __init__(self, default_bits: float = 16.0) -> None:
        self.default_bits = float(default_bits)

    @abc.abstractmethod
    def score(self, layers: Sequence[Layer]) -> dict[str, float]:
        """Metrics of a workload given as layer shapes."""

    def score_many(self, workloads: Iterable[Sequence[Layer]]) -> list[dict[str, float]]:
        """Metrics of many workloads; subclasses batch the work."""
        return [self.score(layers) for layers in workloads]

    def workload(self, target: Target, arch_or_input: Any = None, *,
                 num_classes: int | None = None) -> tuple[list[Layer], int | None]:
        """(layers, parameter count or None) of whatever :meth:`__call__` accepts."""
        if isinstance(target, nn.Module):
            if arch_or_input is None:
                raise ValueError(f"scoring a module needs its input shape, e.g. cost("
                                 f"{type(target).__name__}, (1, 3, 224, 224)), or an example input")
            if isinstance(arch_or_input, Sequence) and all(isinstance(s, int) for s in arch_or_input):
                layers = extract_workload(target, arch_or_input, default_bits=self.default_bits)
            else:
                layers = extract_workload(target, example_input=arch_or_input, default_bits=self.default_bits)
            return layers, sum(p.numel() for p in target.parameters())
        if hasattr(target, "workload"):
            if arch_or_input is None:
                raise ValueError(f"scoring a search space needs an arch: cost({type(target).__name__}, arch)")
            kwargs = {} if num_classes is None else {"num_classes": num_classes}
            layers = target.workload(arch_or_input, **kwargs)
            # a space that counts its own parameters (BN, biases) is more exact than the conv weights
            count = getattr(target, "params", None)
            params = int(count(arch_or_input, **kwargs)) if callable(count) else None
            return list(layers), params
        if isinstance(target, Sequence) and not isinstance(target, str):
            if arch_or_input is not None:
                raise ValueError("a layer list is scored on its own; drop the second argument")
            return list(target), None
        raise TypeError(f"cannot score a {type(target).__name__}: give an nn.Module and its input shape, a "
                        f"search space with .workload(arch) and an arch, or a list of ConvLayer/GemmLayer")

    def score_sections(self, sections: Sequence[WorkloadSection]) -> dict[str, float]:
        """Metrics of a workload given as sections; ``params`` is the sections' own count. The same numbers
        as scoring the concatenated layers (subclasses cache per section)."""
        metrics = self.score([layer for section in sections for layer in section.layers])
        metrics["params"] = float(sum(section.params for section in sections))
        return metrics

    def __call__(self, target: Target, arch_or_input: Any = None, *,
                 num_classes: int | None = None) -> dict[str, float]:
        """Score a module (``arch_or_input`` = input shape or example input), a (space, arch) or layers."""
        if arch_or_input is not None and hasattr(target, "workload_sections") \
                and not isinstance(target, nn.Module):
            kwargs = {} if num_classes is None else {"num_classes": num_classes}
            return self.score_sections(target.workload_sections(arch_or_input, **kwargs))
        layers, params = self.workload(target, arch_or_input, num_classes=num_classes)
        metrics = self.score(layers)
        if params is not None:
            metrics["params"] = float(params)
        return metrics


class AnalyticCostModel(CostModel):
    """Multiply-accumulates and weight count, straight from the layer shapes.

    ``params`` is every parameter of an ``nn.Module``, what a space's ``params(arch)`` reports, and for a
    bare layer list the conv/linear weights (no BN or bias).
    """

    name = "analytic"
    metric_names = ("macs", "params")
    units = {"macs": "MAC", "params": "weights"}

    def score(self, layers: Sequence[Layer]) -> dict[str, float]:
        return {"macs": float(sum(layer.macs for layer in layers)),
                "params": float(sum(layer.params for layer in layers))}


#: Per-layer counts the cost model keeps and sums. All are whole numbers, so their float64 sums are exact
#: (below 2**53) and do not depend on the order or grouping of the layers.
_COUNTS = ("macs", "compute_cycles", "stall_cycles", "total_cycles", "prefetch_cycles",
           "total_cycles_incl_prefetch",
           "sram_reads_ifmap", "sram_reads_filter", "sram_writes_ofmap",
           "dram_reads_ifmap", "dram_reads_filter", "dram_writes_ofmap",
           "sram_accesses_ifmap", "sram_accesses_filter", "sram_accesses_ofmap", "params")
_PARAMS = _COUNTS.index("params")
#: The counts energy is linear in, in the order of :meth:`EnergyTable.levels`.
_ENERGY_COUNTS = tuple(_COUNTS.index(c) for c in (
    "macs", "sram_accesses_ifmap", "sram_accesses_filter", "sram_accesses_ofmap",
    "dram_reads_ifmap", "dram_reads_filter", "dram_writes_ofmap"))
_LEVELS = ("mac", "rf", "array", "sram", "dram")


class SystolicCostModel(CostModel):
    """Latency, energy and traffic of a workload on a :class:`SystolicArray`, plus ``macs``/``params``.

    Per-layer counts are cached per unique layer shape and bit-widths (the layer name does not matter),
    and new shapes are evaluated in one vectorised batch, so scoring random subnets of a space mostly
    costs dictionary look-ups. The cache lives on the instance and holds one row per distinct shape.

    A workload's totals are exact: its counts (cycles, accesses) are whole numbers summed exactly, and its
    energy is the energy table applied to the summed access counts of each bit-width combination (energy
    is linear in them), added with ``math.fsum`` when there are several. So totals do not depend on the
    order or grouping of layers, and a space's memoized sections (:meth:`score_sections`) can each cache
    one subtotal and give bit for bit what scoring the concatenated layer list gives.
    """

    name = "systolic"
    #: Most layer (and section) objects remembered by identity (values are always remembered).
    identity_cache_size = 200_000
    metric_names = ("macs", "params", "latency_ms", "energy", "edp", "cycles", "compute_cycles",
                    "stall_cycles", "prefetch_cycles", "utilization", "sram_accesses", "dram_accesses",
                    "energy_mac", "energy_rf", "energy_array", "energy_sram", "energy_dram")

    def __init__(self, array: SystolicArray, default_bits: float = 16.0, name: str | None = None) -> None:
        super().__init__(default_bits)
        self.array = array
        self.name = name or array.name or "systolic"
        unit = array.energy_table.unit
        self.units = {"macs": "MAC", "params": "weights", "latency_ms": "ms", "energy": unit,
                      "edp": f"{unit}*ms", "cycles": "cycles", "compute_cycles": "cycles",
                      "stall_cycles": "cycles", "prefetch_cycles": "cycles", "utilization": "%",
                      "sram_accesses": "elements",
                      "dram_accesses": "elements", **{f"energy_{lvl}": unit for lvl in _LEVELS}}
        # per distinct layer shape: its counts and its bit-width combination ("group")
        self._index: dict[tuple, int] = {}
        self._by_id: dict[int, int] = {}
        self._alive: list[Layer] = []  # keeps the objects keyed by id() alive, so no id is ever reused
        self._counts = np.zeros((0, len(_COUNTS)))
        self._layer_group = np.zeros(0, dtype=np.int64)
        self._groups: list[tuple[float, float, float, float]] = []  # (weight, act, out, stored weight) bits
        self._group_index: dict[tuple[float, float, float, float], int] = {}
        # per section object: (group or -1 if mixed, *summed counts, per-group counts if mixed else None)
        self._section_by_id: dict[int, tuple] = {}
        self._sections_alive: list[WorkloadSection] = []  # keeps the keyed objects (and their ids) alive
        self._cycle_scale = 1e3 / (array.clock_mhz * 1e6)  # cycles -> ms

    def __repr__(self) -> str:
        return f"SystolicCostModel({self.array!r})"

    @property
    def cache_size(self) -> int:
        return len(self._index)

    def _group(self, layer: Layer) -> int:
        key = (float(layer.weight_bits), float(layer.act_bits), float(layer.out_bits),
               float(layer.stored_weight_bits))
        group = self._group_index.get(key)
        if group is None:
            group = self._group_index[key] = len(self._groups)
            self._groups.append(key)
        return group

    def _lookup(self, layers: Sequence[Layer]) -> list[int]:
        """Row index of every layer, evaluating the shapes not seen before in one vectorised batch.

        Two caches: by object identity (a space that memoises its layer objects, as ``effnn.nas`` does,
        pays one dict probe per layer; ``_alive`` holds those objects so their ids cannot be reused) and
        by value (shape and bits, not the name), which makes a fresh object with a known shape a hit.
        """
        get = self._by_id.get
        rows = [get(id(layer), -1) for layer in layers]
        if -1 not in rows:
            return rows
        index = self._index
        missing: dict[tuple, int] = {}
        new: list[Layer] = []
        fresh: list[int] = []
        for position, layer in enumerate(layers):
            if rows[position] >= 0:
                continue
            # every dataclass field but the name, in declaration order: shape and bits identify the cost
            key = tuple(layer.__dict__.values())[1:]
            row = index.get(key)
            if row is None:
                slot = missing.get(key)
                if slot is None:
                    slot = missing[key] = len(new)
                    new.append(layer)
                row = -2 - slot
            rows[position] = row
            fresh.append(position)
        if new:
            result = self.array.evaluate_arrays(LayerArrays.from_layers(new))
            result["params"] = np.array([layer.params for layer in new], dtype=np.float64)
            counts = np.column_stack([result[c] for c in _COUNTS])
            if not np.array_equal(counts, np.floor(counts)):
                raise ValueError(f"non-integral access counts for layers {[layer.name for layer in new][:5]}: "
                                 f"layer sizes must be integers")
            start = len(self._counts)
            self._counts = np.concatenate([self._counts, counts])
            self._layer_group = np.concatenate([self._layer_group, [self._group(layer) for layer in new]])
            for key, slot in missing.items():
                index[key] = start + slot
            rows = [r if r >= 0 else start - 2 - r for r in rows]
        if len(self._alive) + len(fresh) > self.identity_cache_size:
            self._by_id.clear()  # objects are not being reused; start over rather than hold them all
            self._alive.clear()
        for position in fresh:
            layer = layers[position]
            self._by_id[id(layer)] = rows[position]
            self._alive.append(layer)
        return rows

    def _group_counts(self, rows: list[int]) -> tuple[list[float], dict[int, list[float]]]:
        """(summed counts, summed counts per bit-width group) of some cached layer rows."""
        index = np.asarray(rows)
        counts = self._counts[index]
        total = counts.sum(axis=0).tolist()
        if len(self._groups) == 1:  # every layer seen so far has the same bit-widths
            return total, {0: total}
        groups = self._layer_group[index]
        if (groups == groups[0]).all():
            return total, {int(groups[0]): total}
        return total, {int(g): counts[groups == g].sum(axis=0).tolist() for g in np.unique(groups)}

    def _metrics(self, counts: Sequence[float], groups: Mapping[int, Sequence[float]]) -> dict[str, float]:
        """Metrics from exact summed counts and, per bit-width group, the summed counts energy needs."""
        table = self.array.energy_table
        per_group = [table.levels(*(c[i] for i in _ENERGY_COUNTS), *self._groups[g]) for g, c in groups.items()]
        if len(per_group) == 1:
            levels = list(per_group[0])
        else:  # correctly rounded, so the order of the groups does not matter
            levels = [math.fsum(values) for values in zip(*per_group)]
        mac, rf, array, sram, dram = levels
        energy = mac + rf + array + sram + dram if len(per_group) == 1 else math.fsum(sum(e) for e in per_group)
        t = dict(zip(_COUNTS, counts))
        # latency is SCALE-Sim's "total cycles incl. prefetch" per layer: first fill, compute with stalls,
        # the ofmap's final drain
        cycles = t["total_cycles_incl_prefetch"]
        latency_ms = cycles * self._cycle_scale
        macs = t["macs"]
        return {
            "macs": macs, "params": t["params"], "latency_ms": latency_ms, "energy": energy,
            "edp": energy * latency_ms, "cycles": cycles, "compute_cycles": t["compute_cycles"],
            "stall_cycles": t["stall_cycles"], "prefetch_cycles": t["prefetch_cycles"],
            "utilization": 100.0 * macs / (cycles * self.array.num_pes) if cycles else 0.0,
            "sram_accesses": t["sram_reads_ifmap"] + t["sram_reads_filter"] + t["sram_writes_ofmap"],
            "dram_accesses": t["dram_reads_ifmap"] + t["dram_reads_filter"] + t["dram_writes_ofmap"],
            "energy_mac": mac, "energy_rf": rf, "energy_array": array, "energy_sram": sram,
            "energy_dram": dram,
        }

    def score(self, layers: Sequence[Layer]) -> dict[str, float]:
        if not layers:
            raise ValueError("no layers to score: the workload is empty")
        return self._metrics(*self._group_counts(self._lookup(layers)))

    def score_many(self, workloads: Iterable[Sequence[Layer]]) -> list[dict[str, float]]:
        workloads = [list(w) for w in workloads]
        if any(not w for w in workloads):
            raise ValueError("no layers to score: a workload is empty")
        rows = self._lookup([layer for w in workloads for layer in w])
        out, start = [], 0
        for w in workloads:
            out.append(self._metrics(*self._group_counts(rows[start:start + len(w)])))
            start += len(w)
        return out

    def _add_sections(self, sections: Sequence[WorkloadSection]) -> None:
        """Compute and remember the subtotal of every section not seen before (one batch of layer look-ups).

        Entries are plain Python tuples: summing ~25 short rows is cheaper in Python than a numpy gather.
        """
        unique = list({id(s): s for s in sections if id(s) not in self._section_by_id}.values())
        if len(self._sections_alive) + len(unique) > self.identity_cache_size:
            # sections are not being reused: start over rather than hold them all
            self._section_by_id.clear()
            self._sections_alive.clear()
            unique = list({id(s): s for s in sections}.values())
        if any(not section.layers for section in unique):
            raise ValueError("no layers to score: a workload section is empty")
        layer_rows = self._lookup([layer for section in unique for layer in section.layers])
        start = 0
        for section in unique:
            total, groups = self._group_counts(layer_rows[start:start + len(section.layers)])
            start += len(section.layers)
            total[_PARAMS] = float(section.params)  # the space's own count (BN, biases), not conv weights
            if len(groups) == 1:
                entry = (next(iter(groups)), *total, None)
            else:
                entry = (-1, *total, tuple(groups.items()))
            self._section_by_id[id(section)] = entry
            self._sections_alive.append(section)

    def score_sections(self, sections: Sequence[WorkloadSection]) -> dict[str, float]:
        if not sections:
            raise ValueError("no layers to score: the workload is empty")
        get = self._section_by_id.get
        entries = [get(id(section)) for section in sections]
        if None in entries:
            self._add_sections(sections)
            get = self._section_by_id.__getitem__
            entries = [get(id(section)) for section in sections]
        columns = list(zip(*entries))
        counts = [sum(column) for column in columns[1:-1]]
        group = columns[0][0]
        if group >= 0 and columns[0].count(group) == len(entries):  # one bit-width combination throughout
            return self._metrics(counts, {group: counts})
        rows: dict[int, list[Sequence[float]]] = {}
        for entry in entries:
            for g, c in ((entry[0], entry[1:-1]),) if entry[0] >= 0 else entry[-1]:
                rows.setdefault(g, []).append(c)
        return self._metrics(counts, {g: [sum(col) for col in zip(*c)] for g, c in rows.items()})


# ---------------------------------------------------------------------------------------------------------
@cache
def _packaged_presets() -> dict[str, dict[str, Any]]:
    """Hardware presets shipped as package data, ``effnn/conf/hardware/NAME.yaml``: the files Hydra reads as
    the ``hardware`` group (through the search path ``pkg://effnn.conf``), so there is one definition.
    Their Hydra ``defaults`` list (the structured-config schema) is not part of the preset."""
    presets = {}
    for entry in resources.files("effnn.conf").joinpath("hardware").iterdir():
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            preset = yaml.safe_load(entry.read_text())
            preset.pop("defaults", None)
            presets[preset.pop("name", entry.name[:-5])] = preset
    return presets


def hardware_preset_names() -> list[str]:
    return sorted(_packaged_presets())


def hardware_preset(name: str) -> dict[str, Any]:
    """A copy of a packaged preset's config mapping."""
    presets = _packaged_presets()
    if name not in presets:
        raise ValueError(f"unknown hardware preset {name!r}; available: {sorted(presets)} "
                         f"(or pass a mapping like effnn/conf/hardware/*.yaml)")
    return yaml.safe_load(yaml.safe_dump(presets[name]))


def build_cost_model(cfg_or_name: str | Mapping[str, Any] | CostModel | SystolicArray) -> CostModel:
    """A cost model from a preset name, a ``conf/hardware``-style mapping, an array, or a model (as is).

    Mapping keys: ``kind`` (``analytic`` or ``systolic``), ``name``, ``default_bits`` and, for
    ``systolic``, ``array`` (the :class:`SystolicArray` fields, ``energy_table`` a table name or mapping).
    """
    if isinstance(cfg_or_name, CostModel):
        return cfg_or_name
    if isinstance(cfg_or_name, SystolicArray):
        return SystolicCostModel(cfg_or_name)
    if isinstance(cfg_or_name, str):
        cfg: dict[str, Any] = hardware_preset(cfg_or_name)
        cfg.setdefault("name", cfg_or_name)
    elif isinstance(cfg_or_name, Mapping) or hasattr(cfg_or_name, "items"):
        cfg = _plain(cfg_or_name)
    else:
        raise TypeError(f"build_cost_model takes a preset name, a mapping, a SystolicArray or a CostModel, "
                        f"got {type(cfg_or_name).__name__}")
    allowed = {"kind", "name", "array", "default_bits", "ppa"}
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"hardware config: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if cfg.get("ppa") is not None:  # the PPA block prices mapped modes (effnn.hw.mapping); validate it here
        from effnn.hw.ppa import preset_ppa_fields

        preset_ppa_fields(cfg["ppa"])
    kind = cfg.get("kind", "systolic" if "array" in cfg else None)
    default_bits = float(cfg.get("default_bits", 16.0))
    if kind == "analytic":
        return AnalyticCostModel(default_bits=default_bits)
    if kind == "systolic":
        if "array" not in cfg:
            raise ValueError("hardware config of kind 'systolic' needs an 'array' mapping (rows, cols, ...)")
        array_cfg = dict(cfg["array"])
        array_cfg.setdefault("name", cfg.get("name", ""))
        return SystolicCostModel(SystolicArray.from_dict(array_cfg), default_bits=default_bits,
                                 name=cfg.get("name"))
    raise ValueError(f"hardware config: kind must be 'analytic' or 'systolic', got {kind!r}")


def _plain(cfg: Any) -> dict[str, Any]:
    """A plain dict from a mapping or an OmegaConf node (resolving interpolations)."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        DictConfig = ()  # noqa: N806
    if DictConfig and isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return {str(k): (_plain(v) if isinstance(v, Mapping) else v) for k, v in dict(cfg).items()}
