"""Cost metrics of a subnet at given bit-widths on a given accelerator: what the search trades accuracy against.

MACs and parameters come analytically from the search space. Latency, energy, EDP, area and power come
from the PPA cost model (``effnn.hw.mapping.MappedCostModel``) run on the subnet's workload sections at the
candidate's per-stage bits (``effnn.nas.precision.BitsWorkload``; the preset's ``default_bits`` everywhere
when bits are not searched), on the candidate's accelerator -- its array, PE type and mapping choice -- or
on the fixed ``hardware`` preset. Scoring an arch takes microseconds once its layer shapes are cached and
needs no module. The callable is the pluggable part: anything mapping ``(arch, accelerator, bits)`` to a
dict of floats can replace it.

The PEs of a co-searched accelerator are designed for the candidate's widest weight and activation bits:
every layer then runs in one pass per MAC (a narrower layer is gated, streamed in fewer bit-serial cycles
or fused, depending on the PE type), and the silicon is no wider than the network needs. The fixed preset
keeps its own PE widths (its ``ppa:`` block, else ``default_bits``): that hardware already exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from effnn.errors import ConfigError
from effnn.hw import SystolicArray
from effnn.hw import mapping as hw_mapping
from effnn.nas.precision import BitsWorkload, StageBits
from effnn.nas.space import Arch, SearchSpace
from effnn.search.hardware import Accelerator, HardwareSpace

ANALYTIC_METRICS = ("macs", "params")
HARDWARE_METRICS = ("latency_ms", "energy", "edp", "area_mm2", "power_mw")
#: what ``search.hardware.metric`` (the best accelerator per Pareto point) may minimise
SELECTION_METRICS = ("latency_ms", "energy", "edp")
COST_METRICS = ANALYTIC_METRICS + HARDWARE_METRICS

CostFn = Callable[..., Mapping[str, float]]  # (arch, accelerator=None, bits=None) -> metrics
DesignBits = tuple[int, int]


def design_bits(bits: StageBits) -> DesignBits:
    """The PE widths an accelerator built for ``bits`` has: its widest weight and activation bit-widths."""
    return max(bits.weight), max(bits.act)


class SubnetCosts:
    """``costs(arch, accelerator=None, bits=None)`` -> ``{"macs", "params"[, "latency_ms", "energy", "edp",
    "area_mm2", "power_mw"]}``.

    Hardware metrics are computed only if ``hardware_metrics`` is true (the search asks for them when an
    objective or constraint needs them), on ``array`` with ``pe_type`` PEs ``fixed_design_bits`` wide priced
    in SCALE-Sim mode, or on an ``Accelerator``'s genes in a co-search (one cost model per accelerator and PE
    width, each caching per section). Layers run at ``bits``, else at ``default_bits``. ``tech`` is the fixed
    preset's technology table, ``co_tech`` the co-searched accelerators' (the PPA model's default when None).
    ``energy`` is in uJ, ``power_mw`` is the average power over the modelled latency (dynamic + leakage).
    Results are memoized.
    """

    def __init__(self, space: SearchSpace, num_classes: int, in_chans: int = 3, array: SystolicArray | None = None,
                 hardware_metrics: bool = True, default_bits: float = 16.0, pe_type: str = "int_mac",
                 fixed_design_bits: DesignBits | None = None, tech: str | None = None,
                 co_design_bits: DesignBits | None = None, co_tech: str | None = None) -> None:
        self.space = space
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.array = array if array is not None else SystolicArray(16, 16, "ws")
        self.hardware_metrics = hardware_metrics
        self.default_bits = _uniform_bits(space, default_bits)
        self.fixed = Accelerator.of_array(self.array, pe_type)
        self.fixed_design_bits = fixed_design_bits or (int(default_bits), int(default_bits))
        self.co_design_bits = co_design_bits or self.fixed_design_bits
        self.tech = tech
        self.co_tech = co_tech
        self.workload = BitsWorkload(space)
        self._models: dict[tuple[Accelerator, DesignBits], hw_mapping.MappedCostModel] = {}
        self._cache: dict[tuple[Arch, Accelerator | None, StageBits | None], dict[str, float]] = {}

    def metric_names(self) -> tuple[str, ...]:
        return COST_METRICS if self.hardware_metrics else ANALYTIC_METRICS

    def pe_bits(self, accelerator: Accelerator | None, bits: StageBits | None) -> DesignBits:
        """PE widths: the fixed preset's own; a co-searched accelerator's are designed for the candidate's
        widest bits (``co_design_bits``, the area model's, when bits are not searched)."""
        if accelerator is None:
            return self.fixed_design_bits
        return design_bits(bits) if bits is not None else self.co_design_bits

    def cost_model(self, accelerator: Accelerator | None = None,
                   pe_bits: DesignBits | None = None) -> hw_mapping.MappedCostModel:
        acc = accelerator if accelerator is not None else self.fixed
        pe_bits = pe_bits or self.pe_bits(accelerator, None)
        model = self._models.get((acc, pe_bits))
        if model is None:
            array = acc.array(self.array)
            tech = self.tech if accelerator is None else self.co_tech
            extra: dict[str, Any] = {} if tech is None else {"tech": tech}
            hw = hw_mapping.Accelerator.from_array(array, pe_type=acc.pe_type, weight_bits=pe_bits[0],
                                                   act_bits=pe_bits[1], **extra)
            mode, objective = ("scalesim", "edp") if acc.mapping == "scalesim" else ("mapped", acc.mapping)
            model = self._models[(acc, pe_bits)] = hw_mapping.MappedCostModel(
                hw, objective, mode, array if mode == "scalesim" else None, default_bits=self.default_bits.weight[0])
        return model

    def __call__(self, arch: Arch, accelerator: Accelerator | None = None,
                 bits: StageBits | None = None) -> dict[str, float]:
        key = (arch, accelerator, bits)
        cached = self._cache.get(key)
        if cached is None:
            cached = {"macs": float(self.space.macs(arch, self.num_classes, self.in_chans)),
                      "params": float(self.space.params(arch, self.num_classes, self.in_chans))}
            if self.hardware_metrics:
                at = bits if bits is not None else self.default_bits
                sections = self.workload.sections(arch, at, self.num_classes, self.in_chans)
                scored = self.cost_model(accelerator, self.pe_bits(accelerator, bits)).score_sections(sections)
                cached.update({m: float(scored[m]) for m in HARDWARE_METRICS})
            self._cache[key] = cached
        return dict(cached)


def _uniform_bits(space: SearchSpace, default_bits: float) -> StageBits:
    """Every stage at the preset's ``default_bits`` (the width of layers that declare none)."""
    if float(default_bits) != int(default_bits):
        raise ConfigError(f"hardware.default_bits={default_bits} must be a whole number of bits for the search")
    return StageBits.uniform(space.num_stages, int(default_bits))


def check_metric_names(names: list[str] | tuple[str, ...], where: str, allow_acc: bool) -> None:
    """Raise ConfigError naming an unknown metric and the known ones."""
    known = (("acc",) if allow_acc else ()) + COST_METRICS
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"{where} has unknown metric(s) {bad}; known metrics: {', '.join(known)}")


def best_accelerator(costs: SubnetCosts, arch: Arch, hardware: HardwareSpace, metric: str = "edp",
                     tried: Iterable[Accelerator] = (), max_exhaustive: int = 512,
                     bits: StageBits | None = None) -> tuple[Accelerator, dict[str, float]]:
    """The accelerator in ``hardware`` (within budget at the PE widths ``bits`` need) that minimizes ``metric``
    for ``arch`` at ``bits``.

    Small hardware spaces are enumerated exhaustively; larger ones (mapped modes search every layer's
    mappings per new accelerator, milliseconds each) fall back to the accelerators the search ``tried``.
    """
    if metric not in SELECTION_METRICS:
        raise ConfigError(f"search.hardware.metric={metric!r} must be one of {', '.join(SELECTION_METRICS)}")
    pe_bits = design_bits(bits) if bits is not None else None
    pool = list(hardware.feasible()) if hardware.size() <= max_exhaustive else list(dict.fromkeys(tried))
    pool = [acc for acc in pool if hardware.within_budget(acc, pe_bits)]
    if not pool:
        pool = [hardware.initial()]
    best = min(pool, key=lambda acc: (costs(arch, acc, bits)[metric], acc))
    return best, costs(arch, best, bits)


def candidate_budget_ok(hardware: HardwareSpace | None, accelerator: Accelerator | None,
                        bits: StageBits | None) -> bool:
    """A co-searched accelerator fits the budget with PEs as wide as ``bits`` need (always true otherwise)."""
    if hardware is None or accelerator is None:
        return True
    return hardware.within_budget(accelerator, design_bits(bits) if bits is not None else None)
