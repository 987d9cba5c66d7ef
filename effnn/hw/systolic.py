"""Analytic model of a SCALE-Sim-style systolic array: cycles, SRAM/DRAM traffic and energy per layer.

Every layer is a GEMM (M ofmap pixels, N filters, K = R*S*C window) per group; the array folds it onto
``rows x cols`` PEs according to the dataflow (SCALE-Sim's spatio-temporal mapping):

========  =========  =========  =========  =====================  ============================
dataflow  Sr (rows)  Sc (cols)  T (time)   cycles per fold        stationary operand
========  =========  =========  =========  =====================  ============================
os        M          N          K          T + rows + cols - 2    outputs
ws        K          N          M          T + 2 rows + cols - 2  filters
is        K          M          N          T + 2 rows + cols - 2  ifmap
========  =========  =========  =========  =====================  ============================

with ``ceil(Sr/rows) * ceil(Sc/cols)`` folds run back to back. Compute cycles and SRAM counts are closed
forms that reproduce SCALE-Sim 3.0.0 exactly (its quirks are listed in ``docs/hardware.md`` and next to
the code below). DRAM counts, stalls and SCALE-Sim's "total cycles incl. prefetch" are closed forms too
where every operand fits its buffer; where one spills or the bandwidth is finite, layers SCALE-Sim could
run with words of the operands' widths (whole bits, whole elements per cycle, up to ``replay_limit``) are
replayed on its memory system (:mod:`effnn.hw.memory`), the rest use a closed-form estimate. The closed
form is written once (``SystolicArray._closed_form``) against a small operations namespace: numpy over a
batch of layers, so a whole network costs microseconds, or Python floats for a call of a few layers,
where numpy's per-call overhead would dominate; both give bit-identical numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np

from effnn.hw.energy import EnergyTable, load_energy_table
from effnn.hw.layers import ConvLayer, GemmLayer, Layer
from effnn.hw.memory import (
    ConvGeometry,
    calc_dram_reads,
    demand_streams,
    drain_folds,
    fetch_counts,
    fetch_lengths,
    fetch_streams,
    held_read_buffer,
    ifmap_table,
    read_buffer_holds_all,
    user_read_buffer,
    user_run,
)

DATAFLOWS = ("os", "ws", "is")

#: Per-layer quantities computed by :meth:`SystolicArray.evaluate_arrays`, in this order.
METRICS = (
    "macs", "compute_cycles", "stall_cycles", "total_cycles", "prefetch_cycles", "total_cycles_incl_prefetch",
    "sram_reads_ifmap", "sram_reads_filter", "sram_writes_ofmap",
    "dram_reads_ifmap", "dram_reads_filter", "dram_writes_ofmap",
    # every access of each SRAM, what its energy counts: the array's (real, see below) plus DRAM fills/drain
    "sram_accesses_ifmap", "sram_accesses_filter", "sram_accesses_ofmap",
    "mapped_pe_folds", "folds", "compute_util_sum",
    "energy_mac", "energy_rf", "energy_array", "energy_sram", "energy_dram", "energy",
)


class _Ops(NamedTuple):
    """The few operations the closed form uses, for one kind of operand (array-API style ``xp``).

    The closed form (:meth:`SystolicArray._closed_form`) is written once against this namespace:
    :data:`_BATCH` runs it on numpy float64 arrays (one entry per layer), :data:`_SCALAR` on Python floats
    (one layer, no numpy call overhead). Python floats are IEEE doubles, so with ``ceil``/``floor``
    returning floats the two compute bit-identical numbers.
    """

    ceil: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    asfloat: Callable[[Any], Any]  # a layer field as float64 (array) / float (scalar)
    ones: Callable[[Any], Any]  # 1.0 shaped like the argument
    #: ``each(mask, fn, outputs, inputs)``: ``outputs`` with the layers in ``mask`` replaced by
    #: ``fn(*inputs of that layer)`` (a replay run per layer; the only place the paths differ)
    each: Callable[[Any, Callable[..., tuple], tuple, tuple], tuple]


def _each_batch(mask: np.ndarray, fn: Callable[..., tuple], outputs: tuple, inputs: tuple) -> tuple:
    """:attr:`_Ops.each` on arrays: copies of ``outputs`` with ``fn`` run on each masked layer's inputs
    (an input with no layer axis is passed as is)."""
    index = np.flatnonzero(mask)
    if not len(index):
        return outputs
    outputs = tuple(np.array(np.broadcast_to(o, np.shape(mask)), dtype=np.float64) for o in outputs)
    for i in index.tolist():
        for out, value in zip(outputs, fn(*(a[i] if np.ndim(a) else a for a in inputs))):
            out[i] = value
    return outputs


def _each_scalar(mask: bool, fn: Callable[..., tuple], outputs: tuple, inputs: tuple) -> tuple:
    """:attr:`_Ops.each` on one layer: ``fn``'s values (as floats, like the arrays') if ``mask`` holds."""
    return tuple(float(v) for v in fn(*inputs)) if mask else outputs


def _fceil(x: float) -> float:
    return float(math.ceil(x))


def _ffloor(x: float) -> float:
    return float(math.floor(x))


def _pick(cond: bool, a: Any, b: Any) -> Any:
    return a if cond else b


_BATCH = _Ops(np.ceil, np.floor, np.minimum, np.maximum, np.where,
              lambda a: np.asarray(a, dtype=np.float64), lambda a: np.ones_like(a, dtype=np.float64), _each_batch)
_SCALAR = _Ops(_fceil, _ffloor, min, max, _pick, float, lambda a: 1.0, _each_scalar)

#: Up to this many layers, :meth:`SystolicArray.simulate` runs the closed form per layer on Python floats
#: (~9 us of closed form, ~17 us per call with the row and the :class:`LayerCost`); above it, once on numpy
#: arrays (~140 us of numpy set-up, then ~8 us per layer). Measured crossover (AttentiveNAS layers, one
#: CPU core, ``replay_limit=0``): 10 layers 204 vs 226 us, 12 layers 245 vs 247 us, 16 layers 327 vs 279 us.
SCALAR_MAX_LAYERS = 10
#: The same for :meth:`SystolicArray.evaluate_arrays`, whose input is already arrays (~115 us of numpy
#: against ~15 us per layer on floats): 6 layers 95 vs 116 us, 8 layers 126 vs 117 us.
SCALAR_MAX_ARRAYS = 6


def _touched(size: int, kernel: int, stride: int, pad: int, out: int) -> int:
    """How many of the ``size`` real input rows some conv window reads (padding is never fetched).

    Windows overlap or abut when ``stride <= kernel``, so the union is one interval; otherwise (e.g. a
    1x1 stride-2 shortcut) the gaps between windows are never read and each window is counted alone.
    """
    if stride <= kernel:
        return min(size, (out - 1) * stride + kernel - pad)
    return sum(max(0, min(start + kernel, size) - max(start, 0))
               for start in range(-pad, (out - 1) * stride - pad + 1, stride))


_ROW_LENGTH = 21  # entries of a :func:`_layer_values` row


def _layer_values(layer: Layer) -> tuple[float, ...]:
    """One layer's row of :class:`LayerArrays`: (m, n, k, groups, ifmap footprint, row elements, channels
    per group, weight/act/out/stored-filter bits, then the 10 geometry entries)."""
    if isinstance(layer, ConvLayer):
        m, n, k = layer.gemm
        ch, out_h, out_w = layer.in_ch // layer.groups, layer.out_h, layer.out_w
        th = _touched(layer.in_h, layer.kernel_h, layer.stride_h, layer.pad_h, out_h)
        tw = _touched(layer.in_w, layer.kernel_w, layer.stride_w, layer.pad_w, out_w)
        return (m, n, k, layer.groups, th * tw * ch * layer.batch, layer.stride_h * layer.in_w * ch, ch,
                layer.weight_bits, layer.act_bits, layer.out_bits, layer.stored_weight_bits,
                layer.in_h, layer.in_w, ch, layer.kernel_w, layer.stride_h, layer.stride_w, out_w, layer.batch,
                layer.pad_h, layer.pad_w)
    if not isinstance(layer, GemmLayer):
        raise TypeError(f"expected ConvLayer or GemmLayer, got {type(layer).__name__}: {layer!r}")
    m, n, k = layer.gemm
    return (m, n, k, 1, m * k, k, k, layer.weight_bits, layer.act_bits, layer.out_bits,
            layer.stored_weight_bits, m, k, 1, k, 1, 1, 1, 1, 0, 0)


def _geometry(row: Sequence[Any], m: int) -> ConvGeometry:
    """A :class:`LayerArrays.geometry` row (of a layer with ``m`` output pixels per group) as the replay's
    :class:`~effnn.hw.memory.ConvGeometry`."""
    in_h, in_w, ch, kw, sh, sw, out_w, batch, pad_h, pad_w = (int(v) for v in row)
    return ConvGeometry(in_h, in_w, ch, kw, sh, sw, out_w, pad_h, pad_w, m // batch if batch > 1 else 0)


class _LayerRow(NamedTuple):
    """One layer in :class:`LayerArrays`' fields as Python floats (geometry as ints): the scalar path's
    input, read through the same attribute names as the arrays."""

    name: str
    m: float
    n: float
    k: float
    groups: float
    ifmap_footprint: float
    row_elems: float
    in_ch_per_group: float
    weight_bits: float
    act_bits: float
    out_bits: float
    filter_bits: float
    geometry: tuple[int, ...] | None

    @classmethod
    def of(cls, layer: Layer) -> _LayerRow:
        values = _layer_values(layer)
        return cls(layer.name, *(float(v) for v in values[:11]), values[11:])


def _rows_of(la: LayerArrays) -> list[_LayerRow]:
    """The layers of ``la`` as :class:`_LayerRow` values."""
    columns = [a.tolist() for a in (la.m, la.n, la.k, la.groups, la.ifmap_footprint, la.row_elems,
                                     la.in_ch_per_group, la.weight_bits, la.act_bits, la.out_bits,
                                     la.filter_bits)]
    geometry = [tuple(g) for g in la.geometry.tolist()] if la.geometry is not None else [None] * len(la.m)
    return [_LayerRow(name, *(float(v) for v in values), geo)
            for name, geo, *values in zip(la.names, geometry, *columns)]


@dataclass(frozen=True)
class LayerArrays:
    """A batch of layers as parallel integer/float arrays: the input of the vectorised model."""

    names: tuple[str, ...]
    m: np.ndarray
    n: np.ndarray
    k: np.ndarray
    groups: np.ndarray
    ifmap_footprint: np.ndarray  # distinct ifmap elements one group reads (its DRAM traffic if it fits)
    row_elems: np.ndarray  # ifmap elements one row of output pixels moves the window over (os reuse span)
    in_ch_per_group: np.ndarray  # channels one group reduces over (ws reuse span, in pixels)
    weight_bits: np.ndarray
    act_bits: np.ndarray
    out_bits: np.ndarray
    filter_bits: np.ndarray  # bits per weight in DRAM and the filter SRAM (``stored_weight_bits``)
    #: per layer (in_h, in_w, channels per group, kernel_w, stride_h, stride_w, out_w, batch, pad_h, pad_w):
    #: the ifmap
    #: addressing the read-buffer emulation needs (a GEMM is SCALE-Sim's M x K "image", 1 x K kernel)
    geometry: np.ndarray | None = None

    @classmethod
    def from_layers(cls, layers: Sequence[Layer]) -> LayerArrays:
        if not layers:
            raise ValueError("no layers to evaluate: the workload is empty (did the model run any conv, "
                             "linear or matmul?)")
        values = itertools.chain.from_iterable(_layer_values(layer) for layer in layers)
        table = np.fromiter(values, dtype=np.float64, count=_ROW_LENGTH * len(layers)).reshape(-1, _ROW_LENGTH)
        ints = table[:, :7].astype(np.int64)
        return cls(tuple(layer.name for layer in layers), *ints.T, *table[:, 7:11].T,
                   geometry=table[:, 11:].astype(np.int64))


@dataclass(frozen=True)
class LayerCost:
    """What the systolic model reports for one layer (counts in operand elements, summed over groups)."""

    name: str
    macs: int
    compute_cycles: int
    stall_cycles: int
    total_cycles: int
    prefetch_cycles: int  # cycles the first DRAM fill of the ifmap/filter buffers runs before compute
    #: SCALE-Sim's "Total Cycles (incl. prefetch)": from the first DRAM read to the last ofmap DRAM write
    #: (the first fill, compute with its stalls, the final drain of the ofmap buffer); ``latency_s`` uses it
    total_cycles_incl_prefetch: int
    overall_util: float  # percent of PE-cycles doing a MAC, over total_cycles (SCALE-Sim's "Overall Util %")
    mapping_efficiency: float  # percent of PEs mapped, averaged over folds
    compute_util: float  # percent, SCALE-Sim's "Compute Util %" (per-fold utilisation incl. fill/drain)
    sram_reads_ifmap: int
    sram_reads_filter: int
    sram_writes_ofmap: int
    dram_reads_ifmap: int
    dram_reads_filter: int
    dram_writes_ofmap: int
    energy: float
    energy_breakdown: dict[str, float]
    latency_s: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``tools/hwcost.py --json`` (operand counts nested like SCALE-Sim's reports)."""
        return {
            "name": self.name, "macs": self.macs, "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles, "total_cycles": self.total_cycles,
            "prefetch_cycles": self.prefetch_cycles,
            "total_cycles_incl_prefetch": self.total_cycles_incl_prefetch, "overall_util": self.overall_util,
            "mapping_efficiency": self.mapping_efficiency, "compute_util": self.compute_util,
            "sram_reads": {"ifmap": self.sram_reads_ifmap, "filter": self.sram_reads_filter},
            "sram_writes": {"ofmap": self.sram_writes_ofmap},
            "dram_reads": {"ifmap": self.dram_reads_ifmap, "filter": self.dram_reads_filter},
            "dram_writes": {"ofmap": self.dram_writes_ofmap},
            "energy": self.energy, "energy_breakdown": dict(self.energy_breakdown),
            "latency_s": self.latency_s,
        }


def _positive(name: str, value: Any, what: str = "number") -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0):
        raise ValueError(f"systolic array: {name} must be a positive {what}, got {value!r}")


@dataclass(frozen=True)
class SystolicArray:
    """A ``rows x cols`` systolic array with double-buffered ifmap/filter/ofmap SRAMs in front of DRAM.

    ``dram_bandwidth`` is in ``word_bits``-wide words per cycle per operand interface (SCALE-Sim's
    ``Bandwidth``): one number for all three, an (ifmap, filter, ofmap) triple, or ``None`` for
    SCALE-Sim's ``CALC`` mode (the bandwidth is whatever keeps the array stall-free). SRAM sizes are in kB
    (1024 bytes); an operand of ``b`` bits occupies ``b`` bits of SRAM, so low-precision operands fit more.
    """

    rows: int
    cols: int
    dataflow: str = "os"
    ifmap_sram_kb: float = 64.0
    filter_sram_kb: float = 64.0
    ofmap_sram_kb: float = 64.0
    dram_bandwidth: float | tuple[float, float, float] | None = None
    clock_mhz: float = 1000.0
    word_bits: int = 8
    energy_table: EnergyTable = field(default_factory=lambda: load_energy_table("eyeriss_normalized"))
    name: str = ""
    #: sub-layers (one group) with at most this many SRAM reads (ifmap + filter) and compute cycles are
    #: replayed on SCALE-Sim's memory system (exact); larger ones use the closed-form
    #: estimate (exact whenever every operand fits, approximate when one spills or in USER mode). 0: closed
    #: form only. At the default a new replayed shape costs ~0.3-100 ms (docs/hardware.md, *Speed*).
    replay_limit: int = 1 << 16

    def __post_init__(self) -> None:
        if not isinstance(self.replay_limit, int) or isinstance(self.replay_limit, bool) or self.replay_limit < 0:
            raise ValueError(f"systolic array: replay_limit must be a non-negative integer, got "
                             f"{self.replay_limit!r}")
        for attr in ("rows", "cols", "word_bits"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"systolic array: {attr} must be a positive integer, got {value!r}")
        for attr in ("ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb", "clock_mhz"):
            _positive(attr, getattr(self, attr))
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"systolic array: dataflow must be one of {DATAFLOWS}, got {self.dataflow!r}")
        bw = self.dram_bandwidth
        if bw is not None and not (isinstance(bw, str) and bw.upper() == "CALC"):
            triple = tuple(bw) if isinstance(bw, Sequence) and not isinstance(bw, str) else (bw, bw, bw)
            if len(triple) != 3:
                raise ValueError(f"systolic array: dram_bandwidth must be a number, an (ifmap, filter, "
                                 f"ofmap) triple or None/'CALC', got {bw!r}")
            for value in triple:
                _positive("dram_bandwidth", value, "number of words per cycle")
            object.__setattr__(self, "dram_bandwidth", tuple(float(v) for v in triple))
        else:
            object.__setattr__(self, "dram_bandwidth", None)
        if not isinstance(self.energy_table, EnergyTable):
            object.__setattr__(self, "energy_table", load_energy_table(self.energy_table))
        # min SRAM: the active half must hold at least one SCALE-Sim "set" (1% of the buffer)
        for attr in ("ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb"):
            if getattr(self, attr) * 1024 * 8 / self.word_bits < 100:
                raise ValueError(f"systolic array: {attr}={getattr(self, attr)} holds fewer than 100 words; "
                                 f"give at least {100 * self.word_bits / 8 / 1024:.3f} kB")

    # ----------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> SystolicArray:
        """Build from a config mapping (e.g. ``conf/hardware/*.yaml``'s ``array`` node + ``energy_table``)."""
        known = {f.name for f in fields(cls)}
        data = {str(k): v for k, v in dict(cfg).items()}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"systolic array config: unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(known)}")
        for key in ("rows", "cols", "word_bits", "replay_limit"):
            if key in data and isinstance(data[key], float) and data[key].is_integer():
                data[key] = int(data[key])
        if "energy_table" in data and not isinstance(data["energy_table"], EnergyTable):
            table = data["energy_table"]
            data["energy_table"] = load_energy_table(dict(table) if isinstance(table, Mapping) else table)
        return cls(**data)

    def with_(self, **changes: Any) -> SystolicArray:
        """A copy with some fields changed (e.g. ``array.with_(dataflow="ws")``)."""
        return replace(self, **changes)

    @property
    def num_pes(self) -> int:
        return self.rows * self.cols

    def _active_capacity(self, sram_kb: float, bits: Any, xp: _Ops = _BATCH) -> Any:
        """Elements the active half of an SRAM holds, as SCALE-Sim sizes it.

        SCALE-Sim quirk: the buffer is tracked in 100 sets of ``floor(words / 100)`` words and the active
        half is 50 sets, so a 64 kB SRAM of bytes holds 32750 (not 32768) words before it must evict.
        """
        words = xp.floor(sram_kb * 1024 * 8 / bits)
        return xp.floor(words / 100) * 50

    # ----------------------------------------------------------------------------------------------------
    def evaluate_arrays(self, la: LayerArrays) -> dict[str, np.ndarray]:
        """Every quantity in :data:`METRICS` for a batch of layers, as float64 arrays (one per layer).

        Up to :data:`SCALAR_MAX_ARRAYS` layers run the closed form per layer on Python floats (numpy's
        per-call overhead dominates there), more run it once on arrays; both give the same numbers."""
        if len(la.m) <= SCALAR_MAX_ARRAYS:
            table = np.array([[r[key] for key in METRICS] for r in
                              (self._closed_form(_SCALAR, row) for row in _rows_of(la))], dtype=np.float64)
            return dict(zip(METRICS, table.T.copy()))  # one row per metric, no two keys sharing memory
        out = self._closed_form(_BATCH, la)
        shape = la.m.shape
        # one fresh float64 array per metric (broadcasting the scalars), never two keys sharing one
        return {key: np.array(out[key], dtype=np.float64) if np.shape(out[key]) == shape
                else np.full(shape, out[key], dtype=np.float64) for key in METRICS}

    def _closed_form(self, xp: _Ops, la: LayerArrays | _LayerRow) -> dict[str, Any]:
        """Every quantity in :data:`METRICS` for layers ``la`` with the operations ``xp`` (:class:`_Ops`):
        numpy arrays (:class:`LayerArrays`) or one layer's Python floats (:class:`_LayerRow`).

        Long on purpose: one pass over SCALE-Sim's closed forms (folds, cycles, SRAM and DRAM counts per
        dataflow) that reads top to bottom like the simulator's accounting; split up, the shared
        intermediate values would have to travel between helpers."""
        R, C = self.rows, self.cols
        m, n, k, g = (xp.asfloat(a) for a in (la.m, la.n, la.k, la.groups))
        wb, ab, ob, fb = la.weight_bits, la.act_bits, la.out_bits, la.filter_bits
        if self.dataflow == "os":
            sr, sc, t = m, n, k
        elif self.dataflow == "ws":
            sr, sc, t = k, n, m
        else:
            sr, sc, t = k, m, n
        row_folds = xp.ceil(sr / R)
        col_folds = xp.ceil(sc / C)
        folds = row_folds * col_folds
        if self.dataflow == "os":
            # per fold: T-1 cycles of operand streaming, +rows to shift the outputs out, +cols-1 of skew
            fold_cycles = t + R + C - 2
            util_fold_cycles = fold_cycles
        else:
            # per fold: rows cycles to load the stationary operand, T to stream, rows-1 of skew across the
            # rows, cols-1 to drain across the columns
            fold_cycles = t + 2 * R + C - 2
            # SCALE-Sim's compute-util divides by one more (rows+cols-1) than the fold length (quirk)
            util_fold_cycles = t + 2 * R + 2 * C - 3
        # SCALE-Sim counts cycles as the index of the last demand line (lines - 1); a depthwise/grouped
        # layer runs as one sub-layer per group, so it pays that -1 once per group.
        compute = g * (folds * fold_cycles - 1)
        macs = g * m * n * k

        mk, kn, mn = m * k, k * n, m * n
        if self.dataflow == "os":
            sram_if = col_folds * mk
            sram_f = row_folds * kn
            # SCALE-Sim quirk: os adds rows+cols phantom ofmap writes per fold (it counts the padded fold's
            # shape). Reported as SCALE-Sim does; energy uses the real M*N writes.
            sram_of = mn + folds * (R + C)
            sram_of_real = mn
        elif self.dataflow == "ws":
            sram_if = col_folds * mk
            sram_f = kn
            sram_of = row_folds * mn  # each row fold writes a partial sum of every output
            sram_of_real = sram_of
        else:
            sram_if = mk
            sram_f = col_folds * kn
            sram_of = row_folds * mn
            sram_of_real = sram_of

        cap_if = self._active_capacity(self.ifmap_sram_kb, ab, xp)
        cap_f = self._active_capacity(self.filter_sram_kb, fb, xp)  # weights sit in the SRAM in stored form
        fp_if = xp.asfloat(la.ifmap_footprint)
        # An ifmap that does not fit is streamed again by every column fold; within one pass an element is
        # reused only if its next use comes before the buffer has moved on by cap_if new elements. In os
        # the next use is one output row later (row_elems new elements); in ws it is the same pixels'
        # next kernel offset, C/rows folds later (M*C new elements). Otherwise every read is a miss.
        spills_if = fp_if > cap_if
        spills_f = kn > cap_f
        if self.dataflow == "os":
            per_pass = xp.where(la.row_elems > cap_if, mk, fp_if)
            dram_if = xp.where(spills_if, per_pass * col_folds, fp_if)
            # the filter slice of a column fold is reused across its row folds unless the slice spills
            dram_f = kn * xp.where(k * xp.minimum(n, C) > cap_f, row_folds, 1)
            dram_of = mn
        elif self.dataflow == "ws":
            per_pass = xp.where(m * la.in_ch_per_group > cap_if, mk, fp_if)
            dram_if = xp.where(spills_if, per_pass * col_folds, fp_if)
            dram_f = kn
            dram_of = sram_of  # SCALE-Sim drains every partial-sum write to DRAM
        else:
            dram_if = fp_if
            # every column fold streams all filters again unless they stay in the active buffer
            dram_f = kn * xp.where(spills_f, col_folds, 1)
            dram_of = sram_of

        bandwidths = self._bandwidths(xp, ab, fb, ob)
        replayable = self._replayable(xp, ab, fb, ob, bandwidths)
        limit = self.replay_limit
        sram_reads = sram_if + sram_f
        if self.dram_bandwidth is None and la.geometry is not None:
            # CALC-mode DRAM reads of a spilling ifmap/filter: SCALE-Sim's read buffer replayed (at most
            # replay_limit SRAM reads per group); the others keep the closed form above
            dram_if, dram_f = xp.each((spills_if | spills_f) & replayable & (sram_reads <= limit),
                                      self._calc_reads_one, (dram_if, dram_f),
                                      (la.m, la.n, la.k, la.geometry, spills_if, spills_f, cap_if, cap_f,
                                       dram_if, dram_f))
        # the ofmap buffer's last drain ends ceil(writes / bandwidth) - 1 cycles after the last compute
        # cycle (SCALE-Sim drains one bandwidth-wide line per cycle, from the last demand line's cycle on),
        # unless the ofmap outgrows the buffer's drain threshold and drains during compute (replayed)
        of_bw = bandwidths[2]
        drain = xp.ceil(dram_of / of_bw) - 1
        of_elems = xp.floor(self.ofmap_sram_kb * 1024 * 8 / ob)
        # replayed layers: SCALE-Sim-runnable with at most replay_limit compute cycles per group; in USER
        # mode those with at most replay_limit SRAM reads too are replayed whole below, drain included
        small = replayable & (compute / g <= limit)
        user_bandwidth = self.dram_bandwidth is not None and la.geometry is not None
        drains_early = (dram_of > of_elems - xp.ceil(of_elems * 0.5)) & small
        if user_bandwidth:
            drains_early = drains_early & (sram_reads > limit)
        dram_of, drain = xp.each(drains_early, self._ofmap_drain_one, (dram_of, drain),
                                 (sr, sc, t, of_elems, of_bw))
        stall = self._stalls(xp, compute, g * dram_if, g * dram_f, g * dram_of,
                             g * xp.minimum(fp_if, cap_if), g * xp.minimum(kn, cap_f), ab, fb, ob)
        total = compute + stall
        prefetch = g * self._first_fill(xp, dram_if, dram_f, ab, fb, sr, *bandwidths[:2])
        total_incl = total + prefetch + g * drain
        if user_bandwidth:
            # USER bandwidth: SCALE-Sim's memory system replayed (at most replay_limit SRAM reads and
            # compute cycles per group); the others keep the closed-form estimate
            sizes = tuple(xp.floor(kb * 1024 * 8 / bits) for kb, bits in ((self.ifmap_sram_kb, ab),
                                                                          (self.filter_sram_kb, fb),
                                                                          (self.ofmap_sram_kb, ob)))
            dram_if, dram_f, dram_of, stall, prefetch, total_incl = xp.each(
                small & (sram_reads <= limit), self._user_run_one,
                (dram_if, dram_f, dram_of, stall, prefetch, total_incl),
                (la.m, la.n, la.k, la.groups, la.geometry, sr, sc, t, *bandwidths, *sizes))
            total = compute + stall

        # SRAM is read by the array and written by DRAM fills (ifmap/filter); written by the array and read
        # by the DRAM drain (ofmap). Weights stay in stored form (fb bits) up to the array's edge.
        sram_acc_if, sram_acc_f, sram_acc_of = g * (sram_if + dram_if), g * (sram_f + dram_f), \
            g * (sram_of_real + dram_of)
        e_mac, e_rf, e_array, e_sram, e_dram = self.energy_table.levels(
            macs, sram_acc_if, sram_acc_f, sram_acc_of, g * dram_if, g * dram_f, g * dram_of, wb, ab, ob, fb)
        energy = e_mac + e_rf + e_array + e_sram + e_dram

        mapped = sr * sc  # sum over folds of the PEs each fold maps
        util_sum = mapped * t / (R * C * util_fold_cycles)
        return {
            "macs": macs, "compute_cycles": compute, "stall_cycles": stall, "total_cycles": total,
            "prefetch_cycles": prefetch, "total_cycles_incl_prefetch": total_incl,
            "sram_reads_ifmap": g * sram_if, "sram_reads_filter": g * sram_f,
            "sram_writes_ofmap": g * sram_of,
            "dram_reads_ifmap": g * dram_if, "dram_reads_filter": g * dram_f,
            "dram_writes_ofmap": g * dram_of,
            "sram_accesses_ifmap": sram_acc_if, "sram_accesses_filter": sram_acc_f,
            "sram_accesses_ofmap": sram_acc_of,
            "mapped_pe_folds": g * mapped, "folds": g * folds, "compute_util_sum": g * util_sum,
            "energy_mac": e_mac, "energy_rf": e_rf, "energy_array": e_array, "energy_sram": e_sram,
            "energy_dram": e_dram, "energy": energy,
        }

    def _calc_reads_one(self, m: float, n: float, k: float, geometry: Sequence[int], spill_if: bool,
                        spill_f: bool, cap_if: float, cap_f: float, dram_if: float, dram_f: float
                        ) -> tuple[float, float]:
        """CALC-mode (ifmap, filter) DRAM reads per group of one layer with a spilling operand, SCALE-Sim's
        read buffer replayed on that operand's demand (:func:`effnn.hw.memory.calc_dram_reads`); an operand
        that fits keeps its closed-form count."""
        m, n, k = int(m), int(n), int(k)
        ifmap, filt = calc_dram_reads(self.dataflow, self.rows, self.cols, m, n, k, _geometry(geometry, m),
                                      (int(cap_if), int(cap_f)), (bool(spill_if), bool(spill_f)))
        if ifmap is not None:
            dram_if = ifmap
        if filt is not None:
            dram_f = filt
        return dram_if, dram_f

    def element_bandwidths(self, la: LayerArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per layer, the (ifmap, filter, ofmap) interface bandwidths in *elements* per cycle.

        A ``b``-bit element on ``word_bits``-wide words behaves as SCALE-Sim run with ``b``-bit words
        (docs/hardware.md, *Operand widths*): USER mode moves ``dram_bandwidth * word_bits / b`` elements
        per cycle; CALC mode fills the read buffers at SCALE-Sim's 10 and drains the ofmap at ``cols``
        elements per cycle, whatever their width."""
        return self._bandwidths(_BATCH, la.act_bits, la.filter_bits, la.out_bits)

    def _bandwidths(self, xp: _Ops, ab: Any, fb: Any, ob: Any) -> tuple[Any, Any, Any]:
        """:meth:`element_bandwidths` from the operands' bits, with the operations ``xp``."""
        if self.dram_bandwidth is None:
            ones = xp.ones(ab)
            return 10.0 * ones, 10.0 * ones, float(self.cols) * ones
        return tuple(bw * self.word_bits / b for bw, b in zip(self.dram_bandwidth, (ab, fb, ob)))  # type: ignore

    def _replayable(self, xp: _Ops, ab: Any, fb: Any, ob: Any, bandwidths: tuple[Any, Any, Any]) -> Any:
        """Layers the replay reproduces as a SCALE-Sim run: every operand a whole number of bits (an SRAM
        of ``floor(bits / b)`` elements) and, in USER mode, a whole number of elements per cycle on every
        interface. Others (SmartDeal's fractional storage bits; e.g. 16-bit operands at an odd number of
        byte-words per cycle) keep the closed-form estimate."""
        ok = (ab == xp.floor(ab)) & (ab > 0)
        for bits in (fb, ob):
            ok = ok & (bits == xp.floor(bits)) & (bits > 0)
        if self.dram_bandwidth is not None:
            for bw in bandwidths:
                ok = ok & (bw == xp.floor(bw)) & (bw >= 1)
        return ok

    def _user_run_one(self, m: float, n: float, k: float, g: float, geometry: Sequence[int], sr: float,
                      sc: float, t: float, bw_if: float, bw_f: float, bw_of: float, size_if: float,
                      size_f: float, size_of: float) -> tuple[int, int, int, int, int, int]:
        """USER bandwidth mode, one layer: (dram_if, dram_f, dram_of per group; stall, prefetch, total incl.
        prefetch per layer) replayed on SCALE-Sim's memory system (:func:`effnn.hw.memory.user_run`).
        Counts are in elements (SCALE-Sim run with words of each operand's width)."""
        m, n, k, g = int(m), int(n), int(k), int(g)
        bws = (int(bw_if), int(bw_f), int(bw_of))
        elems = (int(size_if), int(size_f), int(size_of))
        lengths = fetch_lengths(self.dataflow, self.rows, self.cols, m, n, k)
        # a buffer that holds every valid entry never misses; the length bounds the valid ifmap entries,
        # so they are counted (O(kernel / stride), the geometry) only when the length does not fit
        want = (not read_buffer_holds_all(lengths[0], elems[0]), not read_buffer_holds_all(k * n, elems[1]))
        traces = [held_read_buffer(lengths[j], elems[j], bws[j]) for j in (0, 1)]
        geo = _geometry(geometry, m) if any(want) else None
        if geo is not None and want[0]:
            valid = fetch_counts(self.dataflow, self.rows, self.cols, m, n, k, geo)[0][1]
            want = (not read_buffer_holds_all(valid, elems[0]), want[1])
        if geo is not None and any(want):
            table = ifmap_table(geo, m, k) if want[0] else None  # one address table for both orders
            fetch = fetch_streams(self.dataflow, self.rows, self.cols, m, n, k, geo, want, table)
            demand = demand_streams(self.dataflow, self.rows, self.cols, m, n, k, geo, want, table)
            traces = [user_read_buffer(fetch[j], *demand[j], elems[j], bws[j]) if want[j] else traces[j]
                      for j in (0, 1)]
        run = user_run(self.dataflow, self.rows, self.cols, int(sr), int(sc), int(t), traces[0], traces[1],
                       elems[2], bws[2])
        return (traces[0].dram_reads(bws[0]), traces[1].dram_reads(bws[1]), run.dram_writes,
                g * run.stall_cycles, -g * run.first_read_cycle, g * (run.last_write_cycle - run.first_read_cycle))

    def _ofmap_drain_one(self, sr: float, sc: float, t: float, elems: float, bw: float) -> tuple[int, int]:
        """(DRAM ofmap writes, cycles from the last compute cycle to the last DRAM write) per group of one
        layer whose ofmap outgrows the buffer's drain threshold (:func:`effnn.hw.memory.drain_folds`)."""
        result = drain_folds(self.dataflow, self.rows, self.cols, int(sr), int(sc), int(t), int(elems), int(bw))
        return result.dram_writes, result.last_write_cycle - result.last_compute_cycle

    def _first_fill(self, xp: _Ops, dram_if: Any, dram_f: Any, ab: Any, fb: Any, sr: Any, bw_if: Any,
                    bw_f: Any) -> Any:
        """Cycles from SCALE-Sim's first DRAM read of the ifmap/filter buffers to the first compute cycle.

        SCALE-Sim fills the active half in whole sets of ``floor(words / 100)`` words. An operand with at
        most 50 sets is fetched at the end, timed to finish just before compute (all its sets); a bigger
        one when its 50th set is first demanded, timed to finish just before its *first demand*: 50 sets,
        minus the cycles the array runs before it first reads that operand (``rows`` for the streaming
        operand of ws/is, which waits for the stationary one to load; ``rows - Sr`` for a stationary operand
        that does not fill the rows, loaded bottom row first). ``bw_if``/``bw_f``: elements per cycle
        (:meth:`element_bandwidths`: 10 in CALC mode, SCALE-Sim's default backing bandwidth).
        """
        if self.dataflow == "os":
            first_if = first_f = 0
        else:
            unmapped = self.rows - xp.minimum(self.rows, sr)
            first_if, first_f = (self.rows, unmapped) if self.dataflow == "ws" else (unmapped, self.rows)
        fills = []
        for dram, sram_kb, bits, bw, first in ((dram_if, self.ifmap_sram_kb, ab, bw_if, first_if),
                                               (dram_f, self.filter_sram_kb, fb, bw_f, first_f)):
            per_set = xp.floor(xp.floor(sram_kb * 1024 * 8 / bits) / 100)  # elements
            sets = xp.ceil(dram / per_set)
            fills.append(xp.ceil(xp.minimum(sets, 50) * per_set / bw) - xp.where(sets >= 50, first, 0))
        return xp.maximum(fills[0], fills[1])

    def spills(self, layers: Sequence[Layer]) -> np.ndarray:
        """Per layer: does an operand outgrow its SRAM's active half (ifmap/filter) or the ofmap buffer's
        drain threshold, so SCALE-Sim evicts/refetches or drains during compute?"""
        la = LayerArrays.from_layers(layers)
        res = self.evaluate_arrays(la)
        g = la.groups
        cap_if = self._active_capacity(self.ifmap_sram_kb, la.act_bits)
        cap_f = self._active_capacity(self.filter_sram_kb, la.filter_bits)
        cap_of = np.floor(self.ofmap_sram_kb * 1024 * 8 / la.out_bits) / 2
        return ((la.ifmap_footprint > cap_if) | (la.k * la.n > cap_f)
                | (res["dram_writes_ofmap"] / g > cap_of))

    def _stalls(self, xp: _Ops, compute: Any, dram_if: Any, dram_f: Any, dram_of: Any, first_if: Any,
                first_f: Any, ab: Any, fb: Any, ob: Any) -> Any:
        """Stall cycles of a double-buffered memory system with finite DRAM bandwidth (the estimate for
        layers that are not replayed).

        Each operand has its own interface of ``dram_bandwidth`` words per cycle; a ``b``-bit element
        takes ``b / word_bits`` words. Before compute starts, the first active buffers (``first_if``,
        ``first_f`` elements) are filled (the prefetch, :meth:`_first_fill`); afterwards the fill of the
        other half overlaps compute, so the array stalls only when an operand's remaining transfer outlasts
        the compute.
        """
        if self.dram_bandwidth is None:  # CALC: the bandwidth is whatever keeps the array busy
            return 0.0 * xp.ones(compute)
        bw_if, bw_f, bw_of = self.dram_bandwidth
        word = self.word_bits
        rest_if = (dram_if - first_if) * ab / (word * bw_if)
        rest_f = (dram_f - first_f) * fb / (word * bw_f)
        drain_of = dram_of * ob / (word * bw_of)
        stall = xp.ceil(xp.maximum(xp.maximum(rest_if, rest_f), drain_of) - compute)
        return xp.maximum(stall, 0.0)

    # ----------------------------------------------------------------------------------------------------
    def simulate(self, layers: Sequence[Layer]) -> list[LayerCost]:
        """Per-layer results for a workload (see :class:`LayerCost`)."""
        if 0 < len(layers) <= SCALAR_MAX_LAYERS:
            return [self._layer_cost(row.name, self._closed_form(_SCALAR, row))
                    for row in map(_LayerRow.of, layers)]
        la = LayerArrays.from_layers(layers)
        columns = {key: values.tolist() for key, values in self.evaluate_arrays(la).items()}
        return [self._layer_cost(name, {key: values[i] for key, values in columns.items()})
                for i, name in enumerate(la.names)]

    def _layer_cost(self, name: str, res: Mapping[str, float]) -> LayerCost:
        """The :class:`LayerCost` of one layer's :data:`METRICS` values (Python floats)."""
        pes = self.num_pes
        total, folds, macs = res["total_cycles"], res["folds"], res["macs"]
        return LayerCost(
            name=name,
            macs=int(macs),
            compute_cycles=int(res["compute_cycles"]),
            stall_cycles=int(res["stall_cycles"]),
            total_cycles=int(total),
            prefetch_cycles=int(res["prefetch_cycles"]),
            total_cycles_incl_prefetch=int(res["total_cycles_incl_prefetch"]),
            # a 1-PE array running a 1x1x1 GEMM takes 0 cycles (SCALE-Sim counts from 0): infinite utilisation
            overall_util=float(100 * macs / (total * pes)) if total else math.inf,
            mapping_efficiency=float(100 * res["mapped_pe_folds"] / (folds * pes)),
            compute_util=float(100 * res["compute_util_sum"] / folds),
            sram_reads_ifmap=int(res["sram_reads_ifmap"]),
            sram_reads_filter=int(res["sram_reads_filter"]),
            sram_writes_ofmap=int(res["sram_writes_ofmap"]),
            dram_reads_ifmap=int(res["dram_reads_ifmap"]),
            dram_reads_filter=int(res["dram_reads_filter"]),
            dram_writes_ofmap=int(res["dram_writes_ofmap"]),
            energy=float(res["energy"]),
            energy_breakdown={lvl: float(res[f"energy_{lvl}"]) for lvl in ("mac", "rf", "array", "sram", "dram")},
            latency_s=float(res["total_cycles_incl_prefetch"] / (self.clock_mhz * 1e6)),
        )
