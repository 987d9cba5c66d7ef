"""Power, performance and area (PPA) of a systolic accelerator from published per-component numbers.

QUIDAM-style pre-characterisation: instead of synthesising each design point, every component -- a
processing element (PE) of a given type and bit-width, an SRAM of a given capacity and width, a DRAM
access -- gets its area, energy per operation and leakage from published numbers (``ppa_tables.yaml``,
each value cited there), interpolated by power laws fitted through the published points. An accelerator
is then rows x cols PEs plus three SRAMs, and a workload's cost is its access counts times these energies
plus leakage over its latency. All numbers are at one stated node (45 nm, 0.9 V for ``horowitz_45nm``).

PE types (``PE_TYPES``):

* ``int_mac`` -- a W x A integer multiplier and an accumulator adder (W + A + guard bits) with operand
  registers; layers wider than the PE take ``ceil(w/W) * ceil(a/A)`` passes, narrower ones gate the unused
  operand bits, so their multiplier energy is that of a w x a multiplier (one pass, cycles unchanged).
* ``bit_serial`` -- Stripes-style: a w x 1 multiplier (an AND row) and the accumulator, one activation bit
  per cycle, so a MAC takes ``a`` cycles.
* ``bit_fusion`` -- Bit Fusion's Fusion Unit: 16 2-bit BitBricks and a shift-add tree; a layer at w x a
  bits (<= 8) fuses ``ceil(w/2) * ceil(a/2)`` bricks per MAC, so throughput rises as bits shrink.
* ``shift_add`` -- power-of-two weights (LightNN, SmartDeal's coefficient matrix): a barrel shifter and the
  accumulator, no multiplier.

Every cost report (:func:`summarize`) has ``area_mm2``, ``power_mw`` (dynamic energy over the modelled
latency plus leakage), ``energy`` (uJ), ``latency_ms``, ``edp`` (uJ*ms) and ``gops_per_mm2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

PE_TYPES = ("int_mac", "bit_serial", "bit_fusion", "shift_add")
DRAM_KINDS = ("ddr3_horowitz", "lpddr4_accelergy")


@dataclass(frozen=True)
class PowerLaw:
    """``y = y0 * (x / x0) ** exponent``, fitted by least squares in log-log space through published points
    (exact through two points); how CACTI-style capacity curves and operator-width curves are interpolated."""

    x0: float
    y0: float
    exponent: float

    @classmethod
    def fit(cls, xs: Sequence[float], ys: Sequence[float]) -> PowerLaw:
        lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
        if len(lx) < 2 or np.ptp(lx) == 0:
            raise ValueError("a power-law fit needs at least two distinct points")
        slope, intercept = np.polyfit(lx, ly, 1)
        x0 = float(xs[0])
        return cls(x0, float(math.exp(intercept + slope * math.log(x0))), float(slope))

    def __call__(self, x: float) -> float:
        return self.y0 * (x / self.x0) ** self.exponent


@dataclass(frozen=True)
class Tech:
    """One technology's component models, built from a ``ppa_tables.yaml`` entry."""

    name: str
    node_nm: float
    mult_energy: PowerLaw  # x = w * a (product of operand widths), pJ
    mult_area: PowerLaw  # um^2
    mult_leak_32: float  # mW at 32 x 32
    add_energy: PowerLaw  # x = bits
    add_area: PowerLaw
    add_leak_32: float
    shift_ratio: float  # shifter / multiplier energy at 32 bits in the same library
    shift_leak_32: float
    reg_energy_bit: float
    reg_leak_bit: float
    guard_bits: float
    brick_bits: int
    bricks_per_unit: int
    max_fused_bits: int
    sram_read: PowerLaw  # x = kB, pJ per 64-bit read
    sram_write_ratio: float
    sram_area: PowerLaw  # x = kB, um^2
    sram_leak: PowerLaw  # x = kB, mW
    dram_pj_64b: Mapping[str, float]
    raw: Mapping[str, Any]

    # -- operators --------------------------------------------------------------------------------------
    def mult(self, w: float, a: float) -> tuple[float, float, float]:
        """(energy pJ, area um^2, leakage mW) of a w x a multiplier."""
        area = self.mult_area(w * a)
        return self.mult_energy(w * a), area, self.mult_leak_32 * area / self.mult_area(32 * 32)

    def add(self, bits: float) -> tuple[float, float, float]:
        area = self.add_area(bits)
        return self.add_energy(bits), area, self.add_leak_32 * area / self.add_area(32)

    def shifter(self, bits: float) -> tuple[float, float, float]:
        """A barrel shifter: energy and area as the Aladdin shifter/multiplier ratio of this library's 32-bit
        multiplier, linear in width (area assumed proportional to switched energy; see the docs)."""
        e32, a32, _ = self.mult(32, 32)
        scale = self.shift_ratio * bits / 32
        return e32 * scale, a32 * scale, self.shift_leak_32 * bits / 32

    def sram(self, kb: float, width_bits: float = 64) -> SramCost:
        if kb <= 0:
            raise ValueError(f"SRAM capacity must be positive, got {kb} kB")
        read = self.sram_read(kb) * width_bits / 64
        return SramCost(kb, width_bits, self.sram_area(kb) * 1e-6, read, read * self.sram_write_ratio,
                        self.sram_leak(kb))

    def dram_pj_per_bit(self, kind: str = "ddr3_horowitz") -> float:
        if kind not in self.dram_pj_64b:
            raise ValueError(f"unknown DRAM kind {kind!r}; available: {sorted(self.dram_pj_64b)}")
        return self.dram_pj_64b[kind] / 64


@dataclass(frozen=True)
class SramCost:
    """An SRAM macro: area, energy per ``width_bits`` read/write, leakage."""

    kb: float
    width_bits: float
    area_mm2: float
    read_pj: float
    write_pj: float
    leakage_mw: float

    @property
    def read_pj_per_bit(self) -> float:
        return self.read_pj / self.width_bits

    @property
    def write_pj_per_bit(self) -> float:
        return self.write_pj / self.width_bits


@dataclass(frozen=True)
class PECost:
    """A PE designed for ``weight_bits`` x ``act_bits``: its area, leakage, and per-layer cost via :meth:`run`."""

    pe_type: str
    weight_bits: int
    act_bits: int
    area_um2: float
    leakage_mw: float
    tech: Tech

    def run(self, w: float, a: float) -> tuple[float, float]:
        """(dynamic energy pJ per MAC, PE-cycles per MAC) for a layer at w x a bits on this PE."""
        return _pe_run(self.tech, self.pe_type, self.weight_bits, self.act_bits, w, a)


def _acc_bits(tech: Tech, w: float, a: float) -> float:
    return w + a + tech.guard_bits


def _pe_run(tech: Tech, kind: str, wd: int, ad: int, w: float, a: float) -> tuple[float, float]:
    """Energy per MAC and cycles per MAC; see the module docstring for each PE's structure."""
    reg = tech.reg_energy_bit
    if kind == "int_mac":
        passes = math.ceil(w / wd) * math.ceil(a / ad)
        acc = _acc_bits(tech, wd, ad)
        # operands narrower than the PE are gated (unused bits held at zero, as precision-scalable MACs do,
        # Moons & Verhelst VLSI 2016): the multiplier and operand registers switch like a w x a one; the
        # accumulator keeps its design width. Wider layers run full-width passes.
        wa, aa = min(w, wd), min(a, ad)
        energy = tech.mult(wa, aa)[0] + tech.add(acc)[0] + reg * (wa + aa + acc)
        return energy * passes, float(passes)
    if kind == "bit_serial":
        wpass = math.ceil(w / wd)
        acc = _acc_bits(tech, wd, ad)
        per_bit = tech.mult(wd, 1)[0] + tech.add(acc)[0] + reg * (1 + acc)
        return wpass * (math.ceil(a) * per_bit + reg * wd), float(wpass * math.ceil(a))
    if kind == "bit_fusion":
        b = tech.brick_bits
        passes = math.ceil(w / tech.max_fused_bits) * math.ceil(a / tech.max_fused_bits)
        wf, af = min(w, tech.max_fused_bits), min(a, tech.max_fused_bits)
        bricks = math.ceil(wf / b) * math.ceil(af / b)
        acc = _acc_bits(tech, wf, af)
        energy = (bricks * tech.mult(b, b)[0] + (bricks - 1) * tech.add(wf + af)[0] + tech.add(acc)[0]
                  + reg * (wf + af + acc))
        return energy * passes, passes * bricks / tech.bricks_per_unit
    if kind == "shift_add":
        acc = _acc_bits(tech, wd, ad)
        passes = math.ceil(a / ad)
        return passes * (tech.shifter(acc)[0] + tech.add(acc)[0] + reg * (wd + ad + acc)), float(passes)
    raise ValueError(f"unknown PE type {kind!r}; choose one of {', '.join(PE_TYPES)}")


def pe_cost(pe_type: str, weight_bits: int = 8, act_bits: int = 8, tech: str | Tech = "horowitz_45nm") -> PECost:
    """Area and leakage of one PE of ``pe_type`` built for ``weight_bits`` x ``act_bits`` operands."""
    t = load_tech(tech) if isinstance(tech, str) else tech
    if weight_bits <= 0 or act_bits <= 0:
        raise ValueError(f"PE bit-widths must be positive, got {weight_bits} x {act_bits}")
    wd, ad = int(weight_bits), int(act_bits)
    if pe_type == "int_mac":
        parts = [t.mult(wd, ad), t.add(_acc_bits(t, wd, ad))]
    elif pe_type == "bit_serial":
        parts = [t.mult(wd, 1), t.add(_acc_bits(t, wd, ad))]
    elif pe_type == "bit_fusion":
        # one Fusion Unit: 16 bricks, a 15-adder shift-add tree at the fused 8x8 product width and one
        # accumulator per fused PE it can form (16 at 2x2 bits)
        f = t.max_fused_bits
        n = t.bricks_per_unit
        parts = [t.mult(t.brick_bits, t.brick_bits)] * n + [t.add(2 * f)] * (n - 1) \
            + [t.add(_acc_bits(t, f, f))] * n
    elif pe_type == "shift_add":
        acc = _acc_bits(t, wd, ad)
        parts = [t.shifter(acc), t.add(acc)]
    else:
        raise ValueError(f"unknown PE type {pe_type!r}; choose one of {', '.join(PE_TYPES)}")
    area = sum(p[1] for p in parts)
    leak = sum(p[2] for p in parts)
    return PECost(pe_type, wd, ad, area, leak, t)


@cache
def _packaged() -> dict[str, Any]:
    return yaml.safe_load(resources.files("effnn.hw").joinpath("ppa_tables.yaml").read_text())


def tech_names() -> list[str]:
    return sorted(_packaged())


@cache
def load_tech(name: str = "horowitz_45nm") -> Tech:
    """The component models of a packaged technology table (fits computed once; tables are immutable)."""
    tables = _packaged()
    if name not in tables:
        raise ValueError(f"unknown PPA technology {name!r}; available: {sorted(tables)}")
    d = tables[name]

    def law(points: list[dict], x: str, y: str) -> PowerLaw:
        return PowerLaw.fit([p[x] for p in points], [p[y] for p in points])

    m, ad, sh, sr = d["int_mult"], d["int_add"], d["shifter"], d["sram"]
    mult_x = [p["bits"] ** 2 for p in m["points"]]
    bf = d["bitfusion"]
    return Tech(
        name=name, node_nm=float(d["node_nm"]),
        mult_energy=PowerLaw.fit(mult_x, [p["energy_pj"] for p in m["points"]]),
        mult_area=PowerLaw.fit(mult_x, [p["area_um2"] for p in m["points"]]),
        mult_leak_32=float(m["leakage_mw_32b"]),
        add_energy=law(ad["points"], "bits", "energy_pj"), add_area=law(ad["points"], "bits", "area_um2"),
        add_leak_32=float(ad["leakage_mw_32b"]),
        shift_ratio=float(sh["aladdin_energy_pj_32b"]) / float(sh["aladdin_mult_energy_pj_32b"]),
        shift_leak_32=float(sh["leakage_mw_32b"]),
        reg_energy_bit=float(d["register"]["energy_pj_per_bit"]),
        reg_leak_bit=float(d["register"]["leakage_mw_per_bit"]),
        guard_bits=float(d["accumulator_guard_bits"]),
        brick_bits=int(bf["brick_bits"]), bricks_per_unit=int(bf["bricks_per_unit"]),
        max_fused_bits=int(bf["max_fused_bits"]),
        sram_read=law(sr["read_points"], "kb", "energy_pj_64b"), sram_write_ratio=float(sr["write_over_read"]),
        sram_area=law(sr["area_points"], "kb", "area_um2"), sram_leak=law(sr["leakage_points"], "kb", "leakage_mw"),
        dram_pj_64b={k: (v["energy_pj_64b_low"] + v["energy_pj_64b_high"]) / 2 for k, v in d["dram"].items()},
        raw=d,
    )


@dataclass(frozen=True)
class AcceleratorPPA:
    """The silicon of a rows x cols accelerator: PEs of one type and width, three SRAMs, a DRAM interface.

    ``sram_width_bits`` is the SRAM port width whose access energy the tables give per access (64 bits in
    Horowitz's numbers); traffic is charged per bit.
    """

    rows: int
    cols: int
    pe_type: str = "int_mac"
    weight_bits: int = 8
    act_bits: int = 8
    ifmap_sram_kb: float = 64.0
    filter_sram_kb: float = 64.0
    ofmap_sram_kb: float = 64.0
    clock_mhz: float = 1000.0
    sram_width_bits: float = 64.0
    dram: str = "ddr3_horowitz"
    tech: str = "horowitz_45nm"

    def __post_init__(self) -> None:
        if self.pe_type not in PE_TYPES:
            raise ValueError(f"unknown pe_type {self.pe_type!r}; choose one of {', '.join(PE_TYPES)}")
        if self.rows <= 0 or self.cols <= 0 or self.clock_mhz <= 0:
            raise ValueError(f"rows, cols and clock_mhz must be positive, got {self.rows}, {self.cols}, "
                             f"{self.clock_mhz}")
        load_tech(self.tech).dram_pj_per_bit(self.dram)  # validates the DRAM kind

    @classmethod
    def from_array(cls, array: Any, **overrides: Any) -> AcceleratorPPA:
        """From a :class:`~effnn.hw.systolic.SystolicArray` (or anything with its fields) plus PPA fields
        (``pe_type``, ``weight_bits``, ``act_bits``, ``dram``, ``tech``) that presets do not carry yet;
        PEs default to 16 x 16 bits."""
        fields = {k: getattr(array, k) for k in ("rows", "cols", "ifmap_sram_kb", "filter_sram_kb",
                                                   "ofmap_sram_kb", "clock_mhz")}
        # PEs as wide as effnn's default layer width (extract_workload's default_bits), so an undeclared
        # network runs one pass per MAC, as SCALE-Sim assumes; narrower PEs are a PPA choice
        fields.update(weight_bits=16, act_bits=16)
        fields.update(overrides)
        return cls(**fields)

    @property
    def tech_model(self) -> Tech:
        return load_tech(self.tech)

    @property
    def pe(self) -> PECost:
        return pe_cost(self.pe_type, self.weight_bits, self.act_bits, self.tech_model)

    def srams(self) -> dict[str, SramCost]:
        t = self.tech_model
        return {op: t.sram(getattr(self, f"{op}_sram_kb"), self.sram_width_bits)
                for op in ("ifmap", "filter", "ofmap")}

    def area_mm2(self) -> float:
        return self.rows * self.cols * self.pe.area_um2 * 1e-6 + sum(s.area_mm2 for s in self.srams().values())

    def leakage_mw(self) -> float:
        return self.rows * self.cols * self.pe.leakage_mw + sum(s.leakage_mw for s in self.srams().values())

    def peak_power_mw(self) -> float:
        """Every PE doing a MAC of its design width each cycle, plus leakage: the budget a power cap bounds."""
        energy, cycles = self.pe.run(self.weight_bits, self.act_bits)
        return self.rows * self.cols * energy / cycles * self.clock_mhz * 1e-3 + self.leakage_mw()

    def dram_pj_per_bit(self) -> float:
        return self.tech_model.dram_pj_per_bit(self.dram)

    def describe(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "pe_type": self.pe_type, "weight_bits": self.weight_bits,
                "act_bits": self.act_bits, "node_nm": self.tech_model.node_nm, "tech": self.tech,
                "area_mm2": self.area_mm2(), "leakage_mw": self.leakage_mw(),
                "peak_power_mw": self.peak_power_mw(), "pe_area_um2": self.pe.area_um2}


def preset_ppa_fields(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :class:`AcceleratorPPA` fields of a hardware preset's ``ppa:`` block (``effnn.config.PPAConfig``),
    validated: unknown keys, wrong types, unknown PE types, DRAM kinds or tables raise one line each.
    ``models`` (the cited design) is documentation and is dropped; ``None`` gives ``{}``."""
    if spec is None:
        return {}
    from dataclasses import asdict

    from effnn.config import PPAConfig, validated

    cfg = asdict(validated(PPAConfig, spec, "hardware.ppa"))
    cfg.pop("models")
    if cfg["pe_type"] not in PE_TYPES:
        raise ValueError(f"hardware.ppa.pe_type: unknown PE type {cfg['pe_type']!r}; choose one of "
                         f"{', '.join(PE_TYPES)}")
    if cfg["weight_bits"] <= 0 or cfg["act_bits"] <= 0:
        raise ValueError(f"hardware.ppa: weight_bits and act_bits must be positive, got "
                         f"{cfg['weight_bits']} and {cfg['act_bits']}")
    try:
        load_tech(cfg["tech"]).dram_pj_per_bit(cfg["dram"])
    except ValueError as err:
        raise ValueError(f"hardware.ppa: {err}") from err
    return cfg


def summarize(dynamic_pj: float, cycles: float, macs: float, clock_mhz: float, area_mm2: float,
              leakage_mw: float) -> dict[str, float]:
    """The standard cost report: leakage over the latency is added to the dynamic energy."""
    latency_ms = cycles / (clock_mhz * 1e3)
    energy_uj = dynamic_pj * 1e-6 + leakage_mw * latency_ms  # mW * ms = uJ
    power_mw = energy_uj / latency_ms if latency_ms > 0 else leakage_mw
    gops = 2 * macs / (latency_ms * 1e-3) / 1e9 if latency_ms > 0 else 0.0
    return {"area_mm2": area_mm2, "power_mw": power_mw, "energy": energy_uj, "latency_ms": latency_ms,
            "edp": energy_uj * latency_ms, "gops_per_mm2": gops / area_mm2 if area_mm2 > 0 else 0.0,
            "leakage_mw": leakage_mw}
