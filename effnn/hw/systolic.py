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
replayed on its memory system (:mod:`effnn.hw.memory`), the rest use a closed-form estimate. All
closed-form arithmetic is numpy over a batch of layers, so a whole network costs microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from effnn.hw.energy import EnergyTable, load_energy_table
from effnn.hw.layers import ConvLayer, GemmLayer, Layer
from effnn.hw.memory import (
    ConvGeometry,
    calc_dram_reads,
    demand_streams,
    drain_folds,
    fetch_counts,
    fetch_streams,
    held_read_buffer,
    ofmap_writes_per_cycle,
    read_buffer_holds_all,
    user_mode,
    user_read_buffer,
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


def _touched(size: np.ndarray, kernel: np.ndarray, stride: np.ndarray, pad: np.ndarray,
             out: np.ndarray) -> np.ndarray:
    """How many of the ``size`` real input rows some conv window reads (padding is never fetched).

    Windows overlap or abut when ``stride <= kernel``, so the union is one interval; otherwise (e.g. a
    1x1 stride-2 shortcut) the gaps between windows are never read and each window is counted alone.
    """
    size, kernel, stride, pad, out = (np.asarray(a, dtype=np.int64) for a in (size, kernel, stride, pad, out))
    result = np.minimum(size, (out - 1) * stride + kernel - pad)
    for i in np.flatnonzero(stride > kernel):
        starts = np.arange(out[i]) * stride[i] - pad[i]
        covered = np.minimum(starts + kernel[i], size[i]) - np.maximum(starts, 0)
        result[i] = int(np.clip(covered, 0, None).sum())
    return result


def _geometry(row: np.ndarray, m: int) -> ConvGeometry:
    """A :class:`LayerArrays.geometry` row (of a layer with ``m`` output pixels per group) as the replay's
    :class:`~effnn.hw.memory.ConvGeometry`."""
    in_h, in_w, ch, kw, sh, sw, out_w, batch, pad_h, pad_w = (int(v) for v in row)
    return ConvGeometry(in_h, in_w, ch, kw, sh, sw, out_w, pad_h, pad_w, m // batch if batch > 1 else 0)


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
        rows = []
        conv_idx: list[int] = []
        for i, layer in enumerate(layers):
            if isinstance(layer, ConvLayer):
                conv_idx.append(i)
            elif not isinstance(layer, GemmLayer):
                raise TypeError(f"expected ConvLayer or GemmLayer, got {type(layer).__name__}: {layer!r}")
            m, n, k = layer.gemm
            rows.append((m, n, k, layer.groups, m * k, layer.weight_bits, layer.act_bits, layer.out_bits,
                         k, k, layer.stored_weight_bits))
        table = np.array(rows, dtype=np.float64)
        footprint = table[:, 4].astype(np.int64)
        row_elems = table[:, 8].astype(np.int64)
        channels = table[:, 9].astype(np.int64)
        if conv_idx:
            convs = [layers[i] for i in conv_idx]
            geo = np.array([(c.in_h, c.in_w, c.kernel_h, c.kernel_w, c.stride_h, c.stride_w, c.pad_h, c.pad_w,
                             c.out_h, c.out_w, c.in_ch // c.groups, c.batch) for c in convs], dtype=np.int64)
            th = _touched(geo[:, 0], geo[:, 2], geo[:, 4], geo[:, 6], geo[:, 8])
            tw = _touched(geo[:, 1], geo[:, 3], geo[:, 5], geo[:, 7], geo[:, 9])
            footprint[conv_idx] = th * tw * geo[:, 10] * geo[:, 11]
            row_elems[conv_idx] = geo[:, 4] * geo[:, 1] * geo[:, 10]
            channels[conv_idx] = geo[:, 10]
        ints = table[:, :4].astype(np.int64)
        one, zero = np.ones_like(ints[:, 0]), np.zeros_like(ints[:, 0])
        geometry = np.stack([ints[:, 0], ints[:, 2], one, ints[:, 2], one, one, one, one, zero, zero], axis=1)
        if conv_idx:
            geometry[conv_idx] = geo[:, [0, 1, 10, 3, 4, 5, 9, 11, 6, 7]]
        return cls(tuple(layer.name for layer in layers), ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3],
                   footprint, row_elems, channels, table[:, 5], table[:, 6], table[:, 7], table[:, 10],
                   geometry)


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

    def _active_capacity(self, sram_kb: float, bits: np.ndarray) -> np.ndarray:
        """Elements the active half of an SRAM holds, as SCALE-Sim sizes it.

        SCALE-Sim quirk: the buffer is tracked in 100 sets of ``floor(words / 100)`` words and the active
        half is 50 sets, so a 64 kB SRAM of bytes holds 32750 (not 32768) words before it must evict.
        """
        words = np.floor(sram_kb * 1024 * 8 / bits)
        return np.floor(words / 100) * 50

    # ----------------------------------------------------------------------------------------------------
    def evaluate_arrays(self, la: LayerArrays) -> dict[str, np.ndarray]:
        """Every quantity in :data:`METRICS` for a batch of layers, as float64 arrays (one per layer).

        Long on purpose: one vectorised pass over SCALE-Sim's closed forms (folds, cycles, SRAM and DRAM
        counts per dataflow) that reads top to bottom like the simulator's accounting; split up, the shared
        intermediate arrays would have to travel between helpers."""
        R, C = self.rows, self.cols
        m, n, k, g = (a.astype(np.float64) for a in (la.m, la.n, la.k, la.groups))
        wb, ab, ob, fb = la.weight_bits, la.act_bits, la.out_bits, la.filter_bits
        if self.dataflow == "os":
            sr, sc, t = m, n, k
        elif self.dataflow == "ws":
            sr, sc, t = k, n, m
        else:
            sr, sc, t = k, m, n
        row_folds = np.ceil(sr / R)
        col_folds = np.ceil(sc / C)
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

        cap_if = self._active_capacity(self.ifmap_sram_kb, ab)
        cap_f = self._active_capacity(self.filter_sram_kb, fb)  # weights sit in the SRAM in stored form
        fp_if = la.ifmap_footprint.astype(np.float64)
        # An ifmap that does not fit is streamed again by every column fold; within one pass an element is
        # reused only if its next use comes before the buffer has moved on by cap_if new elements. In os
        # the next use is one output row later (row_elems new elements); in ws it is the same pixels'
        # next kernel offset, C/rows folds later (M*C new elements). Otherwise every read is a miss.
        spills_if = fp_if > cap_if
        if self.dataflow == "os":
            per_pass = np.where(la.row_elems > cap_if, mk, fp_if)
            dram_if = np.where(spills_if, per_pass * col_folds, fp_if)
            # the filter slice of a column fold is reused across its row folds unless the slice spills
            dram_f = kn * np.where(k * np.minimum(n, C) > cap_f, row_folds, 1)
            dram_of = mn
        elif self.dataflow == "ws":
            per_pass = np.where(m * la.in_ch_per_group > cap_if, mk, fp_if)
            dram_if = np.where(spills_if, per_pass * col_folds, fp_if)
            dram_f = kn
            dram_of = sram_of  # SCALE-Sim drains every partial-sum write to DRAM
        else:
            dram_if = fp_if
            # every column fold streams all filters again unless they stay in the active buffer
            dram_f = kn * np.where(kn > cap_f, col_folds, 1)
            dram_of = sram_of

        if self.dram_bandwidth is None and la.geometry is not None:
            dram_if, dram_f = self._calc_reads(la, np.asarray(dram_if * np.ones_like(m)),
                                               np.asarray(dram_f * np.ones_like(m)), spills_if,
                                               kn > cap_f, cap_if, cap_f, sram_if + sram_f)
        # the ofmap buffer's last drain ends ceil(writes / bandwidth) - 1 cycles after the last compute
        # cycle (SCALE-Sim drains one bandwidth-wide line per cycle, from the last demand line's cycle on),
        # unless the ofmap outgrows the buffer and drains during compute (emulated, effnn.hw.memory)
        of_bw = self.element_bandwidths(la)[2]
        drain = np.ceil(dram_of / of_bw) - 1
        dram_of, drain = self._ofmap_drain(la, sr, sc, t, np.asarray(dram_of * np.ones_like(m)),
                                           drain * np.ones_like(m), ob, of_bw, compute)
        stall, _ = self._stalls(compute, g * dram_if, g * dram_f, g * dram_of,
                                g * np.minimum(fp_if, cap_if), g * np.minimum(kn, cap_f), ab, fb, ob)
        total = compute + stall
        prefetch = g * self._first_fill(dram_if, dram_f, ab, fb, sr, *self.element_bandwidths(la)[:2])
        total_incl = total + prefetch + g * drain
        if self.dram_bandwidth is not None and la.geometry is not None:
            dram_if, dram_f, dram_of, stall, prefetch, total_incl = self._user_runs(
                la, sr, sc, t, compute, [np.asarray(a * np.ones_like(m), dtype=np.float64) for a in
                                         (dram_if, dram_f, dram_of, stall, prefetch, total_incl)],
                sram_if + sram_f)
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
        out = {
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
        # one fresh float64 array per metric (broadcasting the scalars), never two keys sharing one
        return {key: np.array(out[key], dtype=np.float64) if np.shape(out[key]) == m.shape
                else np.full(m.shape, out[key], dtype=np.float64) for key in METRICS}

    def _calc_reads(self, la: LayerArrays, dram_if: np.ndarray, dram_f: np.ndarray, spill_if: np.ndarray,
                    spill_f: np.ndarray, cap_if: np.ndarray, cap_f: np.ndarray,
                    sram_reads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CALC-mode DRAM reads per group of the layers with a spilling ifmap/filter, by replaying
        SCALE-Sim's read buffer on the operand's address stream (:func:`effnn.hw.memory.calc_dram_reads`);
        sub-layers with more than ``replay_limit`` SRAM reads and the layers :meth:`_replayable` rejects
        keep the closed form."""
        todo = np.flatnonzero((spill_if | spill_f) & self._replayable(la) & (sram_reads <= self.replay_limit))
        if not len(todo):
            return dram_if, dram_f
        dram_if, dram_f = dram_if.copy(), dram_f.copy()
        for i in todo:
            m, n, k = int(la.m[i]), int(la.n[i]), int(la.k[i])
            want = (bool(spill_if[i]), bool(spill_f[i]))
            ifmap, filt = calc_dram_reads(self.dataflow, self.rows, self.cols, m, n, k,
                                          _geometry(la.geometry[i], m), (int(cap_if[i]), int(cap_f[i])), want)
            if ifmap is not None:
                dram_if[i] = ifmap
            if filt is not None:
                dram_f[i] = filt
        return dram_if, dram_f

    def element_bandwidths(self, la: LayerArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per layer, the (ifmap, filter, ofmap) interface bandwidths in *elements* per cycle.

        A ``b``-bit element on ``word_bits``-wide words behaves as SCALE-Sim run with ``b``-bit words
        (docs/hardware.md, *Operand widths*): USER mode moves ``dram_bandwidth * word_bits / b`` elements
        per cycle; CALC mode fills the read buffers at SCALE-Sim's 10 and drains the ofmap at ``cols``
        elements per cycle, whatever their width."""
        bits = (la.act_bits, la.filter_bits, la.out_bits)
        if self.dram_bandwidth is None:
            ones = np.ones_like(la.act_bits, dtype=np.float64)
            return 10.0 * ones, 10.0 * ones, float(self.cols) * ones
        return tuple(bw * self.word_bits / b for bw, b in zip(self.dram_bandwidth, bits))  # type: ignore

    def _replayable(self, la: LayerArrays) -> np.ndarray:
        """Layers the replay reproduces as a SCALE-Sim run: every operand a whole number of bits (an SRAM
        of ``floor(bits / b)`` elements) and, in USER mode, a whole number of elements per cycle on every
        interface. Others (SmartDeal's fractional storage bits; e.g. 16-bit operands at an odd number of
        byte-words per cycle) keep the closed-form estimate."""
        ok = np.ones(len(la.m), dtype=bool)
        for bits in (la.act_bits, la.filter_bits, la.out_bits):
            ok &= (bits == np.floor(bits)) & (bits > 0)
        if self.dram_bandwidth is not None:
            for bw in self.element_bandwidths(la):
                ok &= (bw == np.floor(bw)) & (bw >= 1)
        return ok

    def _user_runs(self, la: LayerArrays, sr: np.ndarray, sc: np.ndarray, t: np.ndarray, compute: np.ndarray,
                   values: list[np.ndarray], sram_reads: np.ndarray) -> list[np.ndarray]:
        """USER bandwidth mode: (dram_if, dram_f, dram_of per group; stall, prefetch, total incl. prefetch
        per layer) replayed on SCALE-Sim's memory system (:func:`effnn.hw.memory.user_mode`) for the
        layers :meth:`_replayable` accepts with at most ``replay_limit`` SRAM reads and compute cycles;
        the others keep the closed-form estimate. Counts are in elements (SCALE-Sim run with words of
        each operand's width)."""
        ok = self._replayable(la) & (compute / la.groups <= self.replay_limit) & (sram_reads <= self.replay_limit)
        if not ok.any():
            return values
        values = [v.copy() for v in values]
        bandwidths = self.element_bandwidths(la)
        sizes = [np.floor(kb * 1024 * 8 / bits) for kb, bits in ((self.ifmap_sram_kb, la.act_bits),
                                                                  (self.filter_sram_kb, la.filter_bits),
                                                                  (self.ofmap_sram_kb, la.out_bits))]
        for i in np.flatnonzero(ok):
            m, n, k, g = int(la.m[i]), int(la.n[i]), int(la.k[i]), int(la.groups[i])
            bws = [int(b[i]) for b in bandwidths]
            elems = [int(e[i]) for e in sizes]
            geometry = _geometry(la.geometry[i], m)
            counts = fetch_counts(self.dataflow, self.rows, self.cols, m, n, k, geometry)
            want = tuple(not read_buffer_holds_all(counts[j][1], elems[j]) for j in (0, 1))  # else no misses
            traces = [held_read_buffer(counts[j][0], elems[j], bws[j]) for j in (0, 1)]
            if any(want):
                fetch = fetch_streams(self.dataflow, self.rows, self.cols, m, n, k, geometry)
                demand = demand_streams(self.dataflow, self.rows, self.cols, m, n, k, geometry, want)
                traces = [user_read_buffer(fetch[j], *demand[j], elems[j], bws[j]) if want[j] else traces[j]
                          for j in (0, 1)]
            writes = ofmap_writes_per_cycle(self.dataflow, self.rows, self.cols, int(sr[i]), int(sc[i]),
                                            int(t[i]))
            run = user_mode(writes, traces[0], traces[1], elems[2], bws[2])
            values[0][i] = traces[0].dram_reads(bws[0])
            values[1][i] = traces[1].dram_reads(bws[1])
            values[2][i] = run.dram_writes
            values[3][i] = g * run.stall_cycles
            values[4][i] = -g * run.first_read_cycle
            values[5][i] = g * (run.last_write_cycle - run.first_read_cycle)
        return values

    def _ofmap_drain(self, la: LayerArrays, sr: np.ndarray, sc: np.ndarray, t: np.ndarray, dram_of: np.ndarray,
                     drain: np.ndarray, ob: np.ndarray, of_bw: np.ndarray,
                     compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(DRAM ofmap writes, cycles from the last compute cycle to the last DRAM write) per group, with
        the :meth:`_replayable` layers whose ofmap outgrows the buffer's drain threshold replayed
        (:func:`effnn.hw.memory.drain_folds`, at most ``replay_limit`` compute cycles per group)."""
        elems = np.floor(self.ofmap_sram_kb * 1024 * 8 / ob)
        spill = ((dram_of > elems - np.ceil(elems * 0.5)) & self._replayable(la)
                 & (compute / la.groups <= self.replay_limit))
        if not spill.any():
            return dram_of, drain
        dram_of, drain = dram_of.copy(), drain.copy()
        for i in np.flatnonzero(spill):
            bw = int(of_bw[i])
            result = drain_folds(self.dataflow, self.rows, self.cols, int(sr[i]), int(sc[i]), int(t[i]),
                                 int(elems[i]), bw)
            dram_of[i] = result.dram_writes
            drain[i] = result.last_write_cycle - result.last_compute_cycle
        return dram_of, drain

    def _first_fill(self, dram_if: np.ndarray, dram_f: np.ndarray, ab: np.ndarray, fb: np.ndarray,
                    sr: np.ndarray, bw_if: np.ndarray, bw_f: np.ndarray) -> np.ndarray:
        """Cycles from SCALE-Sim's first DRAM read of the ifmap/filter buffers to the first compute cycle.

        SCALE-Sim fills the active half in whole sets of ``floor(words / 100)`` words. An operand with at
        most 50 sets is fetched at the end, timed to finish just before compute (all its sets); a bigger
        one when its 50th set is first demanded, timed to finish just before its *first demand*: 50 sets,
        minus the cycles the array runs before it first reads that operand (``rows`` for the streaming
        operand of ws/is, which waits for the stationary one to load; ``rows - Sr`` for a stationary operand
        that does not fill the rows, loaded bottom row first). ``bw_if``/``bw_f``: elements per cycle
        (:meth:`element_bandwidths`: 10 in CALC mode, SCALE-Sim's default backing bandwidth).
        """
        unmapped = self.rows - np.minimum(self.rows, sr)
        first_if = {"os": 0, "ws": self.rows, "is": unmapped}[self.dataflow]
        first_f = {"os": 0, "ws": unmapped, "is": self.rows}[self.dataflow]
        fills = []
        for dram, sram_kb, bits, bw, first in ((dram_if, self.ifmap_sram_kb, ab, bw_if, first_if),
                                               (dram_f, self.filter_sram_kb, fb, bw_f, first_f)):
            per_set = np.floor(np.floor(sram_kb * 1024 * 8 / bits) / 100)  # elements
            sets = np.ceil(dram / per_set)
            big = sets >= 50
            fills.append(np.ceil(np.minimum(sets, 50) * per_set / bw) - np.where(big, first, 0))
        return np.maximum(fills[0], fills[1])

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

    def _stalls(self, compute: np.ndarray, dram_if: np.ndarray, dram_f: np.ndarray, dram_of: np.ndarray,
                first_if: np.ndarray, first_f: np.ndarray, ab: np.ndarray, fb: np.ndarray,
                ob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stall cycles, prefetch cycles) of a double-buffered memory system with finite DRAM bandwidth.

        Each operand has its own interface of ``dram_bandwidth`` words per cycle; a ``b``-bit element
        takes ``b / word_bits`` words. Before compute starts, the first active buffers are filled
        (``prefetch``, reported apart as SCALE-Sim does); afterwards the fill of the other half overlaps
        compute, so the array stalls only when an operand's remaining transfer outlasts the compute.
        """
        if self.dram_bandwidth is None:  # CALC: the bandwidth is whatever keeps the array busy
            zero = np.zeros_like(compute)
            return zero, zero
        bw_if, bw_f, bw_of = self.dram_bandwidth
        word = self.word_bits
        rest_if = (dram_if - first_if) * ab / (word * bw_if)
        rest_f = (dram_f - first_f) * fb / (word * bw_f)
        drain_of = dram_of * ob / (word * bw_of)
        stall = np.ceil(np.maximum(np.maximum(rest_if, rest_f), drain_of) - compute)
        prefetch = np.ceil(np.maximum(first_if * ab / (word * bw_if), first_f * fb / (word * bw_f)))
        return np.maximum(stall, 0.0), prefetch

    # ----------------------------------------------------------------------------------------------------
    def simulate(self, layers: Sequence[Layer]) -> list[LayerCost]:
        """Per-layer results for a workload (see :class:`LayerCost`)."""
        la = LayerArrays.from_layers(layers)
        res = self.evaluate_arrays(la)
        pes = self.num_pes
        out = []
        for i, name in enumerate(la.names):
            total = res["total_cycles"][i]
            folds = res["folds"][i]
            out.append(LayerCost(
                name=name,
                macs=int(res["macs"][i]),
                compute_cycles=int(res["compute_cycles"][i]),
                stall_cycles=int(res["stall_cycles"][i]),
                total_cycles=int(total),
                prefetch_cycles=int(res["prefetch_cycles"][i]),
                total_cycles_incl_prefetch=int(res["total_cycles_incl_prefetch"][i]),
                overall_util=float(100 * res["macs"][i] / (total * pes)),
                mapping_efficiency=float(100 * res["mapped_pe_folds"][i] / (folds * pes)),
                compute_util=float(100 * res["compute_util_sum"][i] / folds),
                sram_reads_ifmap=int(res["sram_reads_ifmap"][i]),
                sram_reads_filter=int(res["sram_reads_filter"][i]),
                sram_writes_ofmap=int(res["sram_writes_ofmap"][i]),
                dram_reads_ifmap=int(res["dram_reads_ifmap"][i]),
                dram_reads_filter=int(res["dram_reads_filter"][i]),
                dram_writes_ofmap=int(res["dram_writes_ofmap"][i]),
                energy=float(res["energy"][i]),
                energy_breakdown={lvl: float(res[f"energy_{lvl}"][i])
                                  for lvl in ("mac", "rf", "array", "sram", "dram")},
                latency_s=float(res["total_cycles_incl_prefetch"][i] / (self.clock_mhz * 1e6)),
            ))
        return out
