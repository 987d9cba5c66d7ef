"""Per-layer mappings onto a systolic accelerator and their analytic cost (Timeloop/ZigZag vocabulary).

A layer is ``G`` independent GEMMs (M output pixels x N filters x K window each; depthwise: ``G = C``,
``N = 1``). A :class:`LayerMapping` fixes

* the **dataflow** -- which GEMM dims are unrolled over the array's rows/columns (os: M x N, ws: K x N,
  is: K x M; the accelerator declares which it supports), the remaining dim streams in time;
* the **group spread** ``gs`` -- how many groups share the array side by side across the columns
  (``cols // gs`` columns each). Running each group of a depthwise layer as its own one-column GEMM is
  ``gs = 1``, what SCALE-Sim does; spreading needs an array whose row operand can be unicast per column
  block (declared by ``group_spread``);
* the **tiling** between DRAM and the SRAMs -- tile sizes ``(tm, tn, tk)`` that fit the active half of each
  double-buffered SRAM (for all ``gs`` groups in flight), and the **loop order** of the tile loops, which
  decides which operand is re-fetched: an operand is re-read from DRAM once per iteration of the loop it
  does not depend on unless that loop is innermost; partial sums spill (write + read back) when the K loop
  is not innermost.

Costs are closed forms, vectorised over candidate mappings (numpy), so the exhaustive search of a layer's
space takes milliseconds and searching whole networks is cached per layer shape. Energy prices the counts
with :mod:`effnn.hw.ppa` (PE energy per MAC at the layer's bits, SRAM per bit by capacity, DRAM per bit),
latency is compute cycles or DRAM transfer cycles, whichever is longer (double-buffered), and leakage is
charged over the latency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effnn.hw.cost import CostModel
from effnn.hw.layers import ConvLayer, GemmLayer, Layer
from effnn.hw.ppa import AcceleratorPPA, summarize

DATAFLOWS = ("os", "ws", "is")
#: Tile-loop orders, outer to inner, over the GEMM dims m, n, k.
ORDERS = tuple("".join(p) for p in itertools.permutations("mnk"))
OBJECTIVES = ("energy", "latency", "edp")
#: Quantities :func:`evaluate` returns per candidate.
FIELDS = ("cycles", "compute_cycles", "dyn_pj", "mac_pj", "sram_pj", "dram_pj", "dram_bits", "valid")


@dataclass(frozen=True)
class Accelerator:
    """A systolic accelerator as the mapper sees it: array, SRAMs, DRAM bandwidth, supported dataflows,
    whether groups may be spread over column blocks, and its silicon (:class:`AcceleratorPPA`)."""

    ppa: AcceleratorPPA
    dataflows: tuple[str, ...] = DATAFLOWS
    group_spread: bool = True
    dram_bandwidth: tuple[float, float, float] | None = None  # words of word_bits per cycle per operand
    word_bits: int = 8

    def __post_init__(self) -> None:
        bad = [d for d in self.dataflows if d not in DATAFLOWS]
        if bad or not self.dataflows:
            raise ValueError(f"dataflows must be a non-empty subset of {DATAFLOWS}, got {list(self.dataflows)}")

    @classmethod
    def from_array(cls, array: Any, dataflows: Sequence[str] | None = None, group_spread: bool = True,
                   **ppa_fields: Any) -> Accelerator:
        """From a :class:`~effnn.hw.systolic.SystolicArray`: its own dataflow only unless ``dataflows`` lists
        more; PPA fields (``pe_type``, ``weight_bits``, ``act_bits``, ``dram``) default as in
        :meth:`AcceleratorPPA.from_array`."""
        bw = getattr(array, "dram_bandwidth", None)
        return cls(AcceleratorPPA.from_array(array, **ppa_fields),
                   tuple(dataflows) if dataflows else (array.dataflow,), group_spread,
                   tuple(float(b) for b in bw) if bw is not None else None, int(getattr(array, "word_bits", 8)))

    @property
    def rows(self) -> int:
        return self.ppa.rows

    @property
    def cols(self) -> int:
        return self.ppa.cols


@dataclass(frozen=True)
class LayerShape:
    """What a mapping's cost depends on: the per-group GEMM, groups, real ifmap footprint and bit-widths.
    Hashable: the key of the per-shape caches."""

    g: int
    m: int
    n: int
    k: int
    ifmap_elems: int  # distinct ifmap elements one group reads from DRAM (<= m * k, im2col duplicates removed)
    weight_bits: float
    act_bits: float
    out_bits: float
    filter_bits: float

    @classmethod
    def of(cls, layer: Layer) -> LayerShape:
        m, n, k = layer.gemm
        if isinstance(layer, ConvLayer):
            cin = layer.in_ch // layer.groups
            h = min(layer.in_h, (layer.out_h - 1) * layer.stride_h + layer.kernel_h - layer.pad_h)
            w = min(layer.in_w, (layer.out_w - 1) * layer.stride_w + layer.kernel_w - layer.pad_w)
            foot = min(m * k, max(1, h) * max(1, w) * cin * layer.batch)
        elif isinstance(layer, GemmLayer):
            foot = m * k
        else:
            raise TypeError(f"expected ConvLayer or GemmLayer, got {type(layer).__name__}")
        return cls(layer.groups, m, n, k, foot, float(layer.weight_bits), float(layer.act_bits),
                   float(layer.out_bits), float(layer.stored_weight_bits))

    @property
    def macs(self) -> int:
        return self.g * self.m * self.n * self.k


@dataclass(frozen=True)
class LayerMapping:
    dataflow: str
    group_spread: int
    tile_m: int
    tile_n: int
    tile_k: int
    order: str  # tile loops outer -> inner, e.g. "mnk"

    def __str__(self) -> str:
        return (f"{self.dataflow} gs={self.group_spread} tile(m,n,k)=({self.tile_m},{self.tile_n},{self.tile_k}) "
                f"order={'>'.join(self.order)}")


def _tile_choices(dim: int) -> np.ndarray:
    """Powers of two below ``dim`` and ``dim`` itself: the tile sizes the mapper considers."""
    powers = [1 << i for i in range(int(math.log2(dim)) + 1) if (1 << i) < dim]
    return np.array(sorted(set(powers + [dim])), dtype=np.int64)


@dataclass
class MappingSpace:
    """The discrete mapping space of one layer on one accelerator: a choice list per axis.

    A mapping is an index vector ``(dataflow, gs, tm, tn, tk, order)``; :meth:`evaluate` costs any batch of
    them at once. Invalid ones (tiles that overflow an SRAM) get ``valid = False`` and infinite cost.
    """

    shape: LayerShape
    acc: Accelerator
    axes: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        s, cols = self.shape, self.acc.cols
        spreads = [1]
        if self.acc.group_spread and s.g > 1:
            spreads += [x for x in (2 ** i for i in range(1, int(math.log2(cols)) + 1)) if x <= min(s.g, cols)]
        self.axes = {"dataflow": np.arange(len(self.acc.dataflows)), "gs": np.array(spreads, dtype=np.int64),
                     "tm": _tile_choices(s.m), "tn": _tile_choices(s.n), "tk": _tile_choices(s.k),
                     "order": np.arange(len(ORDERS))}

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def size(self) -> int:
        return math.prod(self.dims)

    def all_indices(self) -> np.ndarray:
        grids = np.meshgrid(*[np.arange(d) for d in self.dims], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1)

    def decode(self, idx: Sequence[int]) -> LayerMapping:
        a = self.axes
        return LayerMapping(self.acc.dataflows[int(idx[0])], int(a["gs"][idx[1]]), int(a["tm"][idx[2]]),
                            int(a["tn"][idx[3]]), int(a["tk"][idx[4]]), ORDERS[int(idx[5])])

    def evaluate(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Cost of each row of ``idx`` (shape ``(B, 6)``): see :func:`evaluate_mappings`."""
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        a = self.axes
        df = np.asarray([DATAFLOWS.index(d) for d in self.acc.dataflows])[idx[:, 0]]
        return evaluate_mappings(self.shape, self.acc, df, a["gs"][idx[:, 1]], a["tm"][idx[:, 2]],
                                 a["tn"][idx[:, 3]], a["tk"][idx[:, 4]], idx[:, 5])

    def objective(self, idx: np.ndarray, objective: str = "edp") -> np.ndarray:
        """The objective (energy uJ incl. leakage, latency ms, or their product) of each mapping; inf if invalid."""
        return objective_values(self.evaluate(idx), self.acc, objective)


def _tiles(dim: int, tile: np.ndarray, unit: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(number of tiles, sum over tiles of ceil(tile extent / unit)) when ``dim`` is cut into ``tile``-sized
    pieces with a ragged last one: what folds and re-reads add up to over a tiled dimension."""
    full, rem = dim // tile, dim % tile
    n = full + (rem > 0)
    folds = full * -(-tile // unit) + -(-rem // unit)
    return n, folds


def evaluate_mappings(s: LayerShape, acc: Accelerator, df: np.ndarray, gs: np.ndarray, tm: np.ndarray,
                      tn: np.ndarray, tk: np.ndarray, order: np.ndarray) -> dict[str, np.ndarray]:
    """Cycles and energy (pJ, dynamic) of a batch of mappings of one layer; see the module docstring.
    Long on purpose: one vectorised closed form over all candidate mappings (tiles, spatial use, traffic
    per loop order), kept in one place so the cost a search optimises is readable as a whole."""
    R, C = acc.rows, acc.cols
    cg = C // gs  # columns per group
    nm, _ = _tiles(s.m, tm, 1)
    nn_, _ = _tiles(s.n, tn, 1)
    nk, _ = _tiles(s.k, tk, 1)
    # spatial / temporal dims per dataflow: os (M rows, N cols, K time), ws (K, N, M), is (K, M, N)
    _, m_r = _tiles(s.m, tm, R)
    _, n_c = _tiles(s.n, tn, cg)
    _, k_r = _tiles(s.k, tk, R)
    _, m_c = _tiles(s.m, tm, cg)
    os_, ws_ = df == 0, df == 1
    row_folds = np.where(os_, m_r, k_r)
    col_folds = np.where(os_ | ws_, n_c, m_c)
    t_dim = np.where(os_, s.k, np.where(ws_, s.m, s.n))
    n_t = np.where(os_, nk, np.where(ws_, nm, nn_))
    fill = np.where(os_, R + C - 2, 2 * R + C - 2)
    energy_mac, cycles_per_mac = acc.ppa.pe.run(s.weight_bits, s.act_bits)
    rounds = -(-s.g // gs)
    compute = rounds * row_folds * col_folds * (t_dim * cycles_per_mac + n_t * fill)

    # DRAM traffic per group (elements): re-fetch factor = trips of the operand's irrelevant loop unless innermost
    inner = np.array([o[-1] for o in ORDERS])[order]
    im2col = s.ifmap_elems / (s.m * s.k)
    dram_if = s.ifmap_elems * np.where(inner == "n", 1, nn_)
    dram_f = s.k * s.n * np.where(inner == "m", 1, nm)
    spill = np.where(inner == "k", 1, nk)
    dram_of_w, dram_of_r = s.m * s.n * spill, s.m * s.n * (spill - 1)

    # SRAM accesses per group by the array (elements)
    sram_if = s.m * s.k * np.where(os_ | ws_, n_c, nn_)
    sram_f = s.k * s.n * np.where(os_, m_r, np.where(ws_, nm, m_c))
    psum = np.where(os_, nk, k_r)
    sram_of_w, sram_of_r = s.m * s.n * psum, s.m * s.n * (psum - 1)

    srams = acc.ppa.srams()
    ab, ob, fb = s.act_bits, s.out_bits, s.filter_bits
    g = s.g
    sram_pj = g * (
        (sram_if * ab * srams["ifmap"].read_pj_per_bit + dram_if * ab * srams["ifmap"].write_pj_per_bit)
        + (sram_f * fb * srams["filter"].read_pj_per_bit + dram_f * fb * srams["filter"].write_pj_per_bit)
        + ((sram_of_w + dram_of_r) * ob * srams["ofmap"].write_pj_per_bit
           + (sram_of_r + dram_of_w) * ob * srams["ofmap"].read_pj_per_bit))
    dram_bits = g * (dram_if * ab + dram_f * fb + (dram_of_w + dram_of_r) * ob)
    dram_pj = dram_bits * acc.ppa.dram_pj_per_bit()
    mac_pj = np.full(len(df), s.macs * energy_mac, dtype=np.float64)

    half = {op: getattr(acc.ppa, f"{op}_sram_kb") * 8192 / 2 for op in ("ifmap", "filter", "ofmap")}
    valid = ((gs * tm * tk * im2col * ab <= half["ifmap"]) & (gs * tk * tn * fb <= half["filter"])
             & (gs * tm * tn * ob <= half["ofmap"]) & (gs <= C) & ((gs == 1) | (s.g > 1)))
    cycles = compute.astype(np.float64)
    if acc.dram_bandwidth is not None:
        bw = np.asarray(acc.dram_bandwidth) * acc.word_bits
        transfer = g * np.maximum.reduce([dram_if * ab / bw[0], dram_f * fb / bw[1],
                                          (dram_of_w + dram_of_r) * ob / bw[2]])
        cycles = np.maximum(cycles, transfer)
    dyn = mac_pj + sram_pj + dram_pj
    return {"cycles": cycles, "compute_cycles": compute.astype(np.float64), "dyn_pj": dyn, "mac_pj": mac_pj,
            "sram_pj": sram_pj, "dram_pj": dram_pj, "dram_bits": dram_bits, "valid": valid}


def objective_values(cost: Mapping[str, np.ndarray], acc: Accelerator, objective: str) -> np.ndarray:
    """Energy (uJ, with leakage over the latency), latency (ms) or EDP per mapping; inf where invalid."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    latency_ms = cost["cycles"] / (acc.ppa.clock_mhz * 1e3)
    energy = cost["dyn_pj"] * 1e-6 + acc.ppa.leakage_mw() * latency_ms
    value = {"energy": energy, "latency": latency_ms, "edp": energy * latency_ms}[objective]
    return np.where(cost["valid"], value, np.inf)


@dataclass(frozen=True)
class MappedLayer:
    """A layer's chosen mapping and its cost (dynamic energy in pJ; leakage is added over the totals)."""

    name: str
    mapping: LayerMapping | None  # None in SCALE-Sim mode (its one fixed schedule)
    macs: int
    cycles: float
    compute_cycles: float
    dyn_pj: float
    mac_pj: float
    sram_pj: float
    dram_pj: float
    utilization: float  # percent of PE-cycles doing a MAC over the layer's cycles

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "macs", "cycles", "compute_cycles", "dyn_pj", "mac_pj",
                                             "sram_pj", "dram_pj", "utilization")}
        out["mapping"] = str(self.mapping) if self.mapping is not None else "scalesim"
        return out


def best_mapping(shape: LayerShape, acc: Accelerator, objective: str = "edp") -> tuple[LayerMapping, dict[str, float]]:
    """The exhaustive optimum of one layer's mapping space (ground truth for the searches)."""
    space = MappingSpace(shape, acc)
    idx = space.all_indices()
    cost = space.evaluate(idx)
    values = objective_values(cost, acc, objective)
    best = int(np.argmin(values))
    if not np.isfinite(values[best]):
        raise ValueError(f"no mapping of a layer with GEMM (M={shape.m}, N={shape.n}, K={shape.k}) fits the "
                         f"SRAMs; give larger SRAMs")
    return space.decode(idx[best]), {k: float(v[best]) for k, v in cost.items()}


def mapped_layer(name: str, shape: LayerShape, acc: Accelerator, mapping: LayerMapping,
                 cost: Mapping[str, float]) -> MappedLayer:
    """A :class:`MappedLayer` from one mapping's cost (one row of :func:`evaluate_mappings`)."""
    c = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in cost.items()}
    util = 100.0 * shape.macs / (c["cycles"] * acc.rows * acc.cols) if c["cycles"] else 0.0
    return MappedLayer(name, mapping, shape.macs, c["cycles"], c["compute_cycles"], c["dyn_pj"], c["mac_pj"],
                       c["sram_pj"], c["dram_pj"], util)


class Mapper:
    """Best mapping per layer shape for one accelerator and objective, cached (the cache lives here)."""

    def __init__(self, acc: Accelerator, objective: str = "edp") -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.acc = acc
        self.objective = objective
        self._cache: dict[LayerShape, tuple[LayerMapping, dict[str, float]]] = {}

    def __call__(self, layer: Layer) -> MappedLayer:
        shape = LayerShape.of(layer)
        hit = self._cache.get(shape)
        if hit is None:
            hit = self._cache[shape] = best_mapping(shape, self.acc, self.objective)
        return mapped_layer(layer.name, shape, self.acc, *hit)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def scalesim_layers(array: Any, acc: Accelerator, layers: Sequence[Layer]) -> list[MappedLayer]:
    """SCALE-Sim mode: ``array``'s one fixed schedule (its cycles and access counts, ``array.simulate``),
    priced with the same PPA energies as mapped mode, so the two compare like for like. SCALE-Sim assumes
    one MAC per PE-cycle; a PE that needs more (bit-serial, extra passes of a narrow PE) or fewer (fused Bit
    Fusion bricks) stretches the compute cycles by its cycles per MAC; DRAM stall and first-prefetch cycles
    are kept, so on a PE doing one MAC per cycle the latency is :class:`~effnn.hw.SystolicCostModel`'s
    (SCALE-Sim's "Total Cycles (incl. prefetch)")."""
    srams = acc.ppa.srams()
    dram = acc.ppa.dram_pj_per_bit()
    out = []
    for layer, c in zip(layers, array.simulate(layers)):
        energy_mac, per_mac = acc.ppa.pe.run(layer.weight_bits, layer.act_bits)
        compute = c.compute_cycles * per_mac
        # SCALE-Sim's reported total (incl. the first prefetch), as SystolicCostModel's latency_s
        total = c.total_cycles_incl_prefetch - c.compute_cycles + compute
        ab, fb, ob = layer.act_bits, layer.stored_weight_bits, layer.out_bits
        sram = (c.sram_reads_ifmap * ab * srams["ifmap"].read_pj_per_bit
                + c.dram_reads_ifmap * ab * srams["ifmap"].write_pj_per_bit
                + c.sram_reads_filter * fb * srams["filter"].read_pj_per_bit
                + c.dram_reads_filter * fb * srams["filter"].write_pj_per_bit
                + c.sram_writes_ofmap * ob * srams["ofmap"].write_pj_per_bit
                + c.dram_writes_ofmap * ob * srams["ofmap"].read_pj_per_bit)
        dram_pj = (c.dram_reads_ifmap * ab + c.dram_reads_filter * fb + c.dram_writes_ofmap * ob) * dram
        mac = c.macs * energy_mac
        util = 100.0 * c.macs / (total * acc.rows * acc.cols) if total else 0.0
        out.append(MappedLayer(layer.name, None, c.macs, float(total), float(compute),
                               mac + sram + dram_pj, mac, sram, dram_pj, util))
    return out


def totals(layers: Sequence[MappedLayer], acc: Accelerator) -> dict[str, float]:
    """The standard PPA report (:func:`effnn.hw.ppa.summarize`) of a list of costed layers."""
    cycles = math.fsum(layer.cycles for layer in layers)
    dyn = math.fsum(layer.dyn_pj for layer in layers)
    macs = float(sum(layer.macs for layer in layers))
    report = summarize(dyn, cycles, macs, acc.ppa.clock_mhz, acc.ppa.area_mm2(), acc.ppa.leakage_mw())
    report.update(cycles=cycles, macs=macs, dynamic_energy=dyn * 1e-6,
                  utilization=100.0 * macs / (cycles * acc.rows * acc.cols) if cycles else 0.0)
    return report


class MappedCostModel(CostModel):
    """A :class:`~effnn.hw.cost.CostModel` pricing workloads with the PPA model, in one of two modes:

    * ``mapped`` -- every layer on its best mapping for ``objective`` (:class:`Mapper`);
    * ``scalesim`` -- every layer on ``array``'s one SCALE-Sim schedule (the reference).

    Per-layer results are cached by layer shape (and by object identity), a space's memoised sections by
    identity, so scoring random subnets of a space is a few dictionary look-ups per section.
    """

    name = "mapped"
    metric_names = ("macs", "params", "latency_ms", "energy", "edp", "power_mw", "area_mm2", "gops_per_mm2",
                    "cycles", "utilization", "dynamic_energy", "leakage_mw")
    units = {"macs": "MAC", "params": "weights", "latency_ms": "ms", "energy": "uJ", "edp": "uJ*ms",
             "power_mw": "mW", "area_mm2": "mm^2", "gops_per_mm2": "GOPS/mm^2", "cycles": "cycles",
             "utilization": "%", "dynamic_energy": "uJ", "leakage_mw": "mW"}
    identity_cache_size = 200_000

    def __init__(self, acc: Accelerator, objective: str = "edp", mode: str = "mapped", array: Any = None,
                 default_bits: float = 16.0) -> None:
        super().__init__(default_bits)
        if mode not in ("mapped", "scalesim"):
            raise ValueError(f"unknown mapping mode {mode!r}; use 'mapped' or 'scalesim'")
        if mode == "scalesim" and array is None:
            raise ValueError("scalesim mode needs the SystolicArray whose schedule it reproduces (array=...)")
        self.acc, self.mode, self.array = acc, mode, array
        self.mapper = Mapper(acc, objective)
        self.name = f"{mode}:{objective}" if mode == "mapped" else "scalesim"
        self._by_shape: dict[tuple, tuple[float, float, float, float]] = {}
        self._by_id: dict[int, tuple[float, float, float, float]] = {}  # layers
        self._by_section: dict[int, tuple[float, float, float, float]] = {}  # small: stays in cache when warm
        self._alive: list[Any] = []  # keeps id()-keyed objects alive so ids are never reused
        # one summary per run: the area and leakage do not depend on the workload
        self._area, self._leak = acc.ppa.area_mm2(), acc.ppa.leakage_mw()

    def _remember(self, obj: Any, value: tuple[float, float, float, float],
                  table: dict[int, tuple[float, float, float, float]] | None = None) -> None:
        if len(self._alive) >= self.identity_cache_size:
            self._by_id.clear()
            self._by_section.clear()
            self._alive.clear()
        (self._by_id if table is None else table)[id(obj)] = value
        self._alive.append(obj)

    def layer_cost(self, layer: Layer) -> MappedLayer:
        """The costed layer in this model's mode (not cached; :meth:`score` caches)."""
        if self.mode == "mapped":
            return self.mapper(layer)
        return scalesim_layers(self.array, self.acc, [layer])[0]

    def _layer(self, layer: Layer) -> tuple[float, float, float, float]:
        hit = self._by_id.get(id(layer))
        if hit is not None:
            return hit
        key = tuple(layer.__dict__.values())[1:]  # shape and bits, not the name
        value = self._by_shape.get(key)
        if value is None:
            c = self.layer_cost(layer)
            value = self._by_shape[key] = (c.cycles, c.dyn_pj, float(c.macs), float(layer.params))
        self._remember(layer, value)
        return value

    def _metrics(self, cycles: float, dyn: float, macs: float, params: float) -> dict[str, float]:
        out = summarize(dyn, cycles, macs, self.acc.ppa.clock_mhz, self._area, self._leak)
        out.update(macs=macs, params=params, cycles=cycles, dynamic_energy=dyn * 1e-6,
                   utilization=100.0 * macs / (cycles * self.acc.rows * self.acc.cols) if cycles else 0.0)
        return out

    def score(self, layers: Sequence[Layer]) -> dict[str, float]:
        parts = [self._layer(layer) for layer in layers]
        return self._metrics(*(math.fsum(p[i] for p in parts) for i in range(4)))

    def score_sections(self, sections: Sequence[Any]) -> dict[str, float]:
        cycles = dyn = macs = params = 0.0
        lookup = self._by_section.get
        for section in sections:
            hit = lookup(id(section))
            if hit is None:
                parts = [self._layer(layer) for layer in section.layers]
                hit = (math.fsum(p[0] for p in parts), math.fsum(p[1] for p in parts),
                       math.fsum(p[2] for p in parts), float(section.params))
                self._remember(section, hit, self._by_section)
            cycles += hit[0]
            dyn += hit[1]
            macs += hit[2]
            params += hit[3]
        return self._metrics(cycles, dyn, macs, params)


def cost_model_for(array: Any, *, pe_type: str, weight_bits: int, act_bits: int, mode: str = "mapped",
                   objective: str = "edp", dataflows: Sequence[str] | None = None, group_spread: bool = True,
                   dram: str | None = None, tech: str | None = None,
                   default_bits: float = 16.0) -> MappedCostModel:
    """A :class:`MappedCostModel` for ``array`` built from ``pe_type`` PEs of ``weight_bits`` x ``act_bits``.

    The one call a joint network x bit-width x accelerator search needs: the PE type and widths set the
    silicon (area, leakage, peak power), while every layer is priced at its *own* ``weight_bits`` /
    ``act_bits`` (``ConvLayer``/``GemmLayer`` fields) on that PE -- a 4-bit layer takes 4 cycles per MAC on a
    bit-serial PE instead of 8, fuses 4 MACs per Bit Fusion unit per cycle instead of 1, and gates the unused
    multiplier bits of an ``int_mac`` PE; a layer wider than the PE takes extra passes. Layers extracted from
    an unquantised module (or a space that declares no bits) are ``default_bits`` wide.

    ``dataflows`` defaults to the array's own one (pass ``("os", "ws", "is")`` for a flexible accelerator);
    ``dram``/``tech`` default to :class:`~effnn.hw.ppa.AcceleratorPPA`'s. ``mode="scalesim"`` prices the
    array's one SCALE-Sim schedule with the same PPA numbers.
    """
    for label, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0:
            raise ValueError(f"cost_model_for: {label} must be a positive integer (the PE's operand width), "
                             f"got {bits!r}")
    fields: dict[str, Any] = {"pe_type": pe_type, "weight_bits": int(weight_bits), "act_bits": int(act_bits)}
    if dram is not None:
        fields["dram"] = dram
    if tech is not None:
        fields["tech"] = tech
    acc = Accelerator.from_array(array, dataflows=dataflows, group_spread=group_spread, **fields)
    return MappedCostModel(acc, objective, mode, array if mode == "scalesim" else None, default_bits=default_bits)


def cost_model_for_preset(preset: str | Mapping[str, Any], *, mode: str = "mapped", objective: str = "edp",
                          dataflows: Sequence[str] | None = None, **overrides: Any) -> MappedCostModel:
    """:func:`cost_model_for` of a hardware preset (a name of ``effnn/conf/hardware`` or such a mapping): its
    array and its ``ppa:`` block (PE type, widths, DRAM, technology; defaults where it has none), with any
    of those fields overridden by keyword."""
    from effnn.hw.cost import SystolicCostModel, build_cost_model, hardware_preset
    from effnn.hw.ppa import preset_ppa_fields

    spec = hardware_preset(preset) if isinstance(preset, str) else dict(preset)
    model = build_cost_model(spec)
    if not isinstance(model, SystolicCostModel):
        raise ValueError(f"hardware preset {preset if isinstance(preset, str) else spec.get('name', '')!r} has no "
                         f"systolic array (kind: analytic); PPA needs one, e.g. 'systolic_16x16_os'")
    fields = {"pe_type": "int_mac", "weight_bits": 16, "act_bits": 16, **preset_ppa_fields(spec.get("ppa")),
              **overrides}
    return cost_model_for(model.array, mode=mode, objective=objective, dataflows=dataflows,
                          default_bits=float(spec.get("default_bits", 16.0)), **fields)
