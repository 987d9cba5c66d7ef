"""The accelerator half of a co-search: a small space of systolic-array configurations under a budget.

A configuration (``Accelerator``) fixes the genes a co-search varies -- array rows and columns, dataflow,
the three SRAM sizes, the PE type and how layers are mapped (SCALE-Sim's one schedule, or each layer on
its best mapping for an objective) -- on top of a base ``SystolicArray`` that holds everything else
(clock, DRAM bandwidth, word width). A budget bounds the number of PEs, the silicon area and/or the peak
power; area and power come from the PPA model (:mod:`effnn.hw.ppa`: published per-PE and per-SRAM numbers
at 45 nm for the PE type, at the PE's design bit-width).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from effnn.errors import ConfigError
from effnn.hw.ppa import PE_TYPES, AcceleratorPPA, tech_names
from effnn.hw.systolic import DATAFLOWS, SystolicArray

#: genes of the systolic array itself (``SystolicArray`` fields)
ARRAY_GENES = ("rows", "cols", "dataflow", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb")
GENES = (*ARRAY_GENES, "pe_type", "mapping")
#: ``scalesim``: the array's one SCALE-Sim schedule per layer; the others: each layer on its best mapping for
#: that objective (``effnn.hw.mapping.Mapper``)
MAPPINGS = ("scalesim", "edp", "energy", "latency")
DEFAULT_PE_TYPE = "int_mac"
DEFAULT_MAPPING = "scalesim"


@dataclass(frozen=True, order=True)
class Accelerator:
    """One point of the hardware space (hashable: keys caches and the Pareto archive)."""

    rows: int
    cols: int
    dataflow: str
    ifmap_sram_kb: float
    filter_sram_kb: float
    ofmap_sram_kb: float
    pe_type: str = DEFAULT_PE_TYPE
    mapping: str = DEFAULT_MAPPING

    @property
    def num_pes(self) -> int:
        return self.rows * self.cols

    @property
    def sram_kb(self) -> float:
        return self.ifmap_sram_kb + self.filter_sram_kb + self.ofmap_sram_kb

    def to_dict(self) -> dict[str, Any]:
        return {g: getattr(self, g) for g in GENES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Accelerator:
        """From ``to_dict``'s mapping; ``pe_type``/``mapping`` may be absent (files written before they were
        genes: int_mac PEs on SCALE-Sim's schedule)."""
        unknown = sorted(set(data) - set(GENES))
        missing = [g for g in ARRAY_GENES if g not in data]
        if unknown or missing:
            raise ConfigError(f"an accelerator needs {', '.join(ARRAY_GENES)} (optionally pe_type, mapping); "
                              f"missing {missing}, unknown {unknown}")
        return cls(int(data["rows"]), int(data["cols"]), str(data["dataflow"]),
                   *(float(data[k]) for k in ARRAY_GENES[3:]), str(data.get("pe_type", DEFAULT_PE_TYPE)),
                   str(data.get("mapping", DEFAULT_MAPPING)))

    @classmethod
    def of_array(cls, array: SystolicArray, pe_type: str = DEFAULT_PE_TYPE,
                 mapping: str = DEFAULT_MAPPING) -> Accelerator:
        """The configuration of a fixed ``array`` (the ``hardware`` preset when nothing is co-searched)."""
        return cls(*(getattr(array, g) for g in ARRAY_GENES), pe_type, mapping)

    def array(self, base: SystolicArray) -> SystolicArray:
        """The full systolic-array model: ``base`` with this configuration's array genes."""
        return base.with_(**{g: getattr(self, g) for g in ARRAY_GENES})


@dataclass(frozen=True)
class AreaModel:
    """Area and peak power of a configuration from :class:`effnn.hw.ppa.AcceleratorPPA`: ``rows x cols`` PEs
    of the configuration's PE type, ``weight_bits`` x ``act_bits`` wide unless a candidate's own design widths
    are given, plus the three SRAMs, at the base array's clock. ``pe_type`` is the PE of a space that does
    not list ``pe_type`` choices."""

    pe_type: str = "int_mac"
    weight_bits: int = 16
    act_bits: int = 16
    tech: str = "horowitz_45nm"

    def __post_init__(self) -> None:
        if self.pe_type not in PE_TYPES:
            raise ConfigError(f"search.hardware.area.pe_type={self.pe_type!r}; choose one of {', '.join(PE_TYPES)}")
        if self.tech not in tech_names():
            raise ConfigError(f"search.hardware.area.tech={self.tech!r}; available: {', '.join(tech_names())}")

    @classmethod
    def from_config(cls, area: Mapping[str, Any]) -> AreaModel:
        known = {"pe_type", "weight_bits", "act_bits", "tech"}
        unknown = sorted(set(area) - known)
        if unknown:
            raise ConfigError(f"search.hardware.area has unknown keys {unknown} (the linear pe_mm2/sram_mm2_per_kb "
                              f"estimate was replaced by the PPA model); allowed: {sorted(known)}")
        return cls(**dict(area))

    def ppa(self, acc: Accelerator, clock_mhz: float = 1000.0,
            design_bits: tuple[int, int] | None = None) -> AcceleratorPPA:
        """The silicon of ``acc``; ``design_bits`` = (weight, act) widths of its PEs (default: this model's)."""
        w, a = design_bits if design_bits is not None else (self.weight_bits, self.act_bits)
        return AcceleratorPPA(acc.rows, acc.cols, acc.pe_type, int(w), int(a), acc.ifmap_sram_kb,
                              acc.filter_sram_kb, acc.ofmap_sram_kb, clock_mhz, tech=self.tech)

    def __call__(self, acc: Accelerator) -> float:
        return self.ppa(acc).area_mm2()


ALLOWED = {"dataflow": DATAFLOWS, "pe_type": PE_TYPES, "mapping": MAPPINGS}


def _choices(name: str, values: Any, kind: type) -> tuple:
    if isinstance(values, str | int | float):
        values = [values]
    values = tuple(kind(v) for v in values)
    if not values:
        raise ConfigError(f"search.hardware.space.{name} must list at least one value")
    if kind is str:
        bad = [v for v in values if v not in ALLOWED[name]]
        if bad:
            raise ConfigError(f"search.hardware.space.{name} has {bad}; allowed {name}s: {', '.join(ALLOWED[name])}")
    elif any(v <= 0 for v in values):
        raise ConfigError(f"search.hardware.space.{name} must be positive, got {list(values)}")
    return tuple(sorted(set(values), key=values.index))


class HardwareSpace:
    """Choices per gene plus a PE and/or area budget; sampling and variation stay inside the budget.

    The budget is checked at the area model's PE widths (``within_budget``); a precision co-search sets them
    to its narrowest bit choices, so this is the necessary condition, and ``within_budget(acc, design_bits)``
    checks a candidate at its own PE widths.
    """

    def __init__(self, base: SystolicArray, rows: Sequence[int], cols: Sequence[int], dataflow: Sequence[str],
                 ifmap_sram_kb: Sequence[float], filter_sram_kb: Sequence[float], ofmap_sram_kb: Sequence[float],
                 max_pes: int | None = None, max_area_mm2: float | None = None,
                 area_model: AreaModel | None = None, max_power_mw: float | None = None,
                 pe_type: Sequence[str] | None = None, mapping: Sequence[str] = (DEFAULT_MAPPING,)) -> None:
        self.base = base
        self.area_model = area_model or AreaModel()
        self.genes: dict[str, tuple] = {
            "rows": _choices("rows", rows, int), "cols": _choices("cols", cols, int),
            "dataflow": _choices("dataflow", dataflow, str),
            "ifmap_sram_kb": _choices("ifmap_sram_kb", ifmap_sram_kb, float),
            "filter_sram_kb": _choices("filter_sram_kb", filter_sram_kb, float),
            "ofmap_sram_kb": _choices("ofmap_sram_kb", ofmap_sram_kb, float),
            "pe_type": _choices("pe_type", pe_type or (self.area_model.pe_type,), str),
            "mapping": _choices("mapping", mapping, str),
        }
        self.max_pes = max_pes
        self.max_area_mm2 = max_area_mm2
        self.max_power_mw = max_power_mw
        if not any(True for _ in self.feasible()):
            smallest = min((Accelerator(*v) for v in product(*self.genes.values())), key=self.area_mm2)
            raise ConfigError(f"no accelerator fits the budget (max_pes={max_pes}, max_area_mm2={max_area_mm2}, "
                              f"max_power_mw={max_power_mw}); the smallest choice has {smallest.num_pes} PEs, "
                              f"{self.area_mm2(smallest):.3f} mm^2 and {self.power_mw(smallest):.1f} mW peak; "
                              f"raise the budget or add smaller choices")

    @classmethod
    def from_config(cls, base: SystolicArray, space: Mapping[str, Any], budget: Mapping[str, Any],
                    area: Mapping[str, Any] | None = None) -> HardwareSpace:
        unknown = sorted(set(space) - set(GENES))
        if unknown:
            raise ConfigError(f"search.hardware.space has unknown keys {unknown}; allowed: {', '.join(GENES)}")
        missing = [g for g in ARRAY_GENES if g not in space]
        if missing:
            raise ConfigError(f"search.hardware.space is missing {missing}; give the choices of every array gene")
        known_budget = {"max_pes", "max_area_mm2", "max_power_mw"}
        if set(budget) - known_budget:
            raise ConfigError(f"search.hardware.budget has unknown keys {sorted(set(budget) - known_budget)}; "
                              f"allowed: {sorted(known_budget)}")
        area_model = AreaModel.from_config(area) if area else None
        return cls(base, **{g: list(space[g]) for g in GENES if g in space}, max_pes=budget.get("max_pes"),
                   max_area_mm2=budget.get("max_area_mm2"), area_model=area_model,
                   max_power_mw=budget.get("max_power_mw"))

    def area_mm2(self, acc: Accelerator, design_bits: tuple[int, int] | None = None) -> float:
        return self.area_model.ppa(acc, self.base.clock_mhz, design_bits).area_mm2()

    def power_mw(self, acc: Accelerator, design_bits: tuple[int, int] | None = None) -> float:
        """Peak power: every PE busy at the base array's clock, plus leakage (effnn.hw.ppa)."""
        return self.area_model.ppa(acc, self.base.clock_mhz, design_bits).peak_power_mw()

    def within_budget(self, acc: Accelerator, design_bits: tuple[int, int] | None = None) -> bool:
        """Inside the PE, area and peak-power budget with PEs ``design_bits`` wide (default: the area model's)."""
        if self.max_pes is not None and acc.num_pes > self.max_pes:
            return False
        if self.max_power_mw is not None and self.power_mw(acc, design_bits) > self.max_power_mw:
            return False
        return self.max_area_mm2 is None or self.area_mm2(acc, design_bits) <= self.max_area_mm2

    def contains(self, acc: Accelerator) -> bool:
        return all(getattr(acc, g) in c for g, c in self.genes.items()) and self.within_budget(acc)

    def feasible(self) -> Iterator[Accelerator]:
        """Every configuration within the budget, in a fixed order."""
        for values in product(*self.genes.values()):
            acc = Accelerator(*values)
            if self.within_budget(acc):
                yield acc

    def size(self) -> int:
        return sum(1 for _ in self.feasible())

    def _retry(self, make: Callable[[], Accelerator], tries: int = 100) -> Accelerator | None:
        for _ in range(tries):
            acc = make()
            if self.within_budget(acc):
                return acc
        return None

    def sample(self, rng: random.Random) -> Accelerator:
        """Uniform over genes, resampled until it fits the budget (falls back to a uniform feasible pick)."""
        acc = self._retry(lambda: Accelerator(*[rng.choice(c) for c in self.genes.values()]))
        return acc if acc is not None else rng.choice(list(self.feasible()))

    def mutate(self, acc: Accelerator, prob: float, rng: random.Random) -> Accelerator:
        """Resample each gene with probability ``prob``; keeps the parent if no mutant fits the budget."""

        def make() -> Accelerator:
            return Accelerator(*[rng.choice(c) if rng.random() < prob else getattr(acc, g)
                                     for g, c in self.genes.items()])

        return self._retry(make) or acc

    def crossover(self, a: Accelerator, b: Accelerator, rng: random.Random) -> Accelerator:
        """Uniform crossover (each gene from either parent with p=0.5); keeps ``a`` if nothing fits."""

        def make() -> Accelerator:
            return Accelerator(*[getattr(a if rng.random() < 0.5 else b, g) for g in self.genes])

        return self._retry(make) or a

    def initial(self) -> Accelerator:
        """The base array's configuration when it is in the space, else the first feasible one."""
        base = Accelerator.of_array(self.base, self.genes["pe_type"][0], self.genes["mapping"][0])
        return base if self.contains(base) else next(iter(self.feasible()))

