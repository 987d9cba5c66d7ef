"""Per-access energy tables: what one MAC, register, inter-PE hop, SRAM or DRAM access costs.

Energy is counted, not simulated: the systolic model counts accesses per level and multiplies by these
numbers. Every number is quoted at ``ref_bits``-wide operands; the model scales MAC energy by
``(weight_bits * act_bits) / ref_bits**2`` (a multiplier's area and energy grow with the product of its
operand widths) and every data movement by ``bits / ref_bits`` (a narrower word moves fewer wires), which
is what gives low-precision (CPT, FracTrain) and decomposed (SmartDeal) models their real benefit.

The tables ship as package data (``energy_tables.yaml``; a hardware preset names one as ``array.energy_table``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

Num = float | np.ndarray

#: Accesses per MAC inside the array: the two moving operands arrive from neighbouring PEs (array level)
#: and each PE reads its stationary operand and updates its accumulator (register level). The same for
#: os/ws/is: which operand stays put changes, not how many values a MAC touches.
ARRAY_HOPS_PER_MAC = 2
RF_ACCESSES_PER_MAC = 2


@dataclass(frozen=True)
class EnergyTable:
    """Energy of one access at each level of the memory hierarchy, for ``ref_bits``-wide operands.

    ``unit`` names what the numbers are in (``"pJ"`` or ``"MAC"`` for a table normalised to one MAC);
    ``source`` says where they come from, including the process node for absolute tables.
    """

    name: str
    mac: float
    rf: float
    array: float
    sram: float
    dram: float
    ref_bits: float = 16.0
    unit: str = "MAC"
    source: str = ""

    def __post_init__(self) -> None:
        for field in ("mac", "rf", "array", "sram", "dram", "ref_bits"):
            value = getattr(self, field)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"energy table {self.name!r}: {field} must be a finite number >= 0, got "
                                 f"{value!r}")
        if self.ref_bits <= 0:
            raise ValueError(f"energy table {self.name!r}: ref_bits must be positive, got {self.ref_bits}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str | None = None) -> EnergyTable:
        """Build from a config mapping; unknown keys are an error so typos do not silently use defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"energy table {name or data.get('name')!r}: unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(known)}")
        values = dict(data)
        if name is not None:
            values.setdefault("name", name)
        if "name" not in values:
            raise ValueError("an energy table needs a 'name'")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def levels(self, macs: Num, sram_ifmap: Num, sram_filter: Num, sram_ofmap: Num, dram_ifmap: Num,
               dram_filter: Num, dram_ofmap: Num, weight_bits: Num, act_bits: Num, out_bits: Num,
               filter_bits: Num) -> tuple[Num, Num, Num, Num, Num]:
        """Energy at each level (mac, rf, array, sram, dram) from access counts in operand elements.

        ``sram_*`` count every access of that SRAM (the array's reads/writes and the DRAM fills/drains);
        ``filter_bits`` is the width weights are stored and moved in (SRAM, DRAM), ``weight_bits`` the width
        the array computes with. Works elementwise on numpy arrays (one entry per layer) and on plain floats
        with the same operations in the same order, so the energy of summed counts is reproducible.
        """
        ref = self.ref_bits
        move = (weight_bits + act_bits) / (2 * ref)
        mac = macs * (self.mac * (weight_bits * act_bits) / ref**2)
        rf = macs * (RF_ACCESSES_PER_MAC * self.rf * move)
        array = macs * (ARRAY_HOPS_PER_MAC * self.array * move)
        sram = self.sram * (sram_ifmap * act_bits + sram_filter * filter_bits + sram_ofmap * out_bits) / ref
        dram = self.dram * (dram_ifmap * act_bits + dram_filter * filter_bits + dram_ofmap * out_bits) / ref
        return mac, rf, array, sram, dram


@cache
def _packaged_tables() -> dict[str, dict[str, Any]]:
    """The tables shipped in ``effnn/hw/energy_tables.yaml`` (read once; the file is immutable data)."""
    text = resources.files("effnn.hw").joinpath("energy_tables.yaml").read_text()
    return yaml.safe_load(text)


def energy_table_names() -> list[str]:
    return sorted(_packaged_tables())


def load_energy_table(name_or_table: str | Mapping[str, Any] | EnergyTable) -> EnergyTable:
    """A packaged table by name (``"eyeriss_normalized"``, ``"horowitz_45nm"``), or one given inline."""
    if isinstance(name_or_table, EnergyTable):
        return name_or_table
    if isinstance(name_or_table, Mapping):
        return EnergyTable.from_dict(name_or_table)
    tables = _packaged_tables()
    if name_or_table not in tables:
        raise ValueError(f"unknown energy table {name_or_table!r}; available: {sorted(tables)} "
                         f"(or pass a mapping with mac/rf/array/sram/dram)")
    return EnergyTable.from_dict(tables[name_or_table], name=name_or_table)
