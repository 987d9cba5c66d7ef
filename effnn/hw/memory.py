"""SCALE-Sim 3.0.0's ofmap write buffer, emulated per demand line (one line = one cycle), not per element.

SCALE-Sim collects the array's ofmap writes in a buffer of ``S`` elements and, whenever more than
``D = S - ceil(S / 2)`` are held and the previous drain has finished, drains ``ceil(D / bw)`` lines of
``bw`` elements to DRAM (``bw``: the interface bandwidth; the array width in CALC mode). Before a drain
it flushes the partly filled line it is packing, and it counts every slot of a drained line as a DRAM
write except the empty slots of the *last* line of each drain -- so a flushed partial line in the middle
of a drain is counted as full ("drain padding"). After the last compute cycle the rest is drained in the
same chunks. This module reproduces that exactly from the number of writes each cycle, which is a
closed-form trapezoid per fold (:func:`ofmap_writes_per_cycle`): a handful of ``searchsorted`` calls
per drain, no element trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def ofmap_writes_per_cycle(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int) -> np.ndarray:
    """Valid ofmap writes SCALE-Sim issues in each compute cycle of one (sub-)layer.

    Per fold (column folds outer, row folds inner) its demand matrix is ``P`` empty lines, then ``B``
    body lines of which rows ``[b0, B)`` hold ``cu`` valid writes (``cu``: the columns the fold maps),
    skewed by one line per column: os has ``P = T - 1`` and the fold's ``rows`` outputs flipped (the
    unmapped rows first), ws/is have ``P = 2 rows - 1`` and ``T`` rows of partial sums.
    """
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    pieces = []
    for fc in range(col_folds):
        cu = min(cols, sc - fc * cols)
        shapes = []
        if dataflow == "os":
            prefix, body = t - 1, rows
            for fr in range(row_folds):
                shapes.append(rows - min(rows, sr - fr * rows))
        else:
            prefix, body = 2 * rows - 1, t
            shapes = [0] * row_folds
        for b0 in shapes:
            line = np.zeros(prefix + body + cols - 1, dtype=np.int64)
            # count(j) = #{c < cu : b0 <= j - prefix - c < body}: a box convolved with a box
            valid = np.zeros(body, dtype=np.int64)
            valid[b0:] = 1
            line[prefix:prefix + body + cu - 1] = np.convolve(valid, np.ones(cu, dtype=np.int64))
            pieces.append(line)
    return np.concatenate(pieces)


@dataclass(frozen=True)
class DrainResult:
    """What SCALE-Sim's ofmap buffer reports for one (sub-)layer."""

    dram_writes: int  # writes counted at the DRAM interface (drain padding included)
    last_write_cycle: int  # cycle of the last DRAM write, counted from the first compute cycle


def drain_ofmap(writes_per_cycle: np.ndarray, buffer_elems: int, bandwidth: int) -> DrainResult:
    """Emulate SCALE-Sim's ``write_buffer`` on a CALC-mode (stall-free) run: cycle ``i`` issues
    ``writes_per_cycle[i]`` writes; returns the DRAM writes it counts and when the last one happens."""
    cum = np.cumsum(writes_per_cycle)
    total = int(cum[-1])
    last_cycle = len(writes_per_cycle) - 1
    drain = buffer_elems - math.ceil(buffer_elems * 0.5)
    chunk = math.ceil(drain / bandwidth)  # lines per drain
    partial: dict[int, int] = {}  # trace line index -> elements in it, for lines closed while partly full
    lines = 0  # trace lines closed so far
    seg_start = 0  # elements packed before the line being filled
    drained = counted = 0
    next_line = 0  # first trace line not yet drained
    drain_end = 0
    stored = 0
    while drain_end <= last_cycle:
        # the next trigger: an element stored while more than `drain` are held, at a cycle >= drain_end
        need = max(drained + drain + 1, stored + 1,
                   int(cum[drain_end - 1]) + 1 if drain_end > 0 else 1)
        if need > total:
            break
        cycle = int(np.searchsorted(cum, need))  # cycle of the need-th write
        stored = need
        lines, seg_start = _close(lines, seg_start, stored, bandwidth, partial)
        n = min(chunk, lines - next_line)
        data = _drained(next_line, n, bandwidth, partial)
        drained += data
        counted += data
        next_line += n
        drain_end = cycle + n - 1
    lines, seg_start = _close(lines, seg_start, total, bandwidth, partial)
    end = drain_end
    cycle = last_cycle
    while next_line < lines:
        n = min(chunk, lines - next_line)
        counted += _drained(next_line, n, bandwidth, partial)
        next_line += n
        cycle += n  # the next chunk starts the cycle after this one's last write
        end = max(end, cycle - 1)  # a drain started during compute may end later still
    return DrainResult(counted, end)


def _close(lines: int, seg_start: int, stored: int, bandwidth: int, partial: dict[int, int]) -> tuple[int, int]:
    """Pack the elements stored since the last flush into lines; a partly filled last line is closed."""
    count = stored - seg_start
    if count <= 0:
        return lines, seg_start
    new = -(-count // bandwidth)
    rest = count - (new - 1) * bandwidth
    if rest < bandwidth:
        partial[lines + new - 1] = rest
    return lines + new, stored


def _drained(first: int, n: int, bandwidth: int, partial: dict[int, int]) -> int:
    """Writes SCALE-Sim counts for draining lines ``first .. first + n - 1``: every slot, except the
    empty slots of the last line."""
    last = first + n - 1
    return n * bandwidth - (bandwidth - partial.get(last, bandwidth))


# --------------------------------------------------------------------------------------------------------
# CALC-mode read buffers: which reads reach DRAM when an operand outgrows the buffer's active half

#: Longest operand stream (SRAM reads of one sub-layer) :func:`calc_dram_reads` emulates; longer ones keep
#: the closed-form estimate of :class:`~effnn.hw.systolic.SystolicArray` (documented in docs/hardware.md).
MAX_EMULATED_READS = 1 << 20


@dataclass(frozen=True)
class ConvGeometry:
    """The addressing of one (sub-)layer's ifmap, as SCALE-Sim lays it out (``(y * W + x) * C + c``).

    ``out_w`` output columns; window index ``k`` = ``(ky * S + kx) * C + c``. A GEMM is ``H = M``,
    ``W = K``, a ``1 x K`` kernel, ``C = 1`` (SCALE-Sim's own conversion).
    """

    in_h: int
    in_w: int
    channels: int
    kernel_w: int
    stride_h: int
    stride_w: int
    out_w: int

    def ifmap_address(self, m: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Address of window element ``k`` of output pixel ``m``; -1 where the window runs off the edge."""
        oy, ox = np.divmod(m, self.out_w)
        ky, rest = np.divmod(k, self.kernel_w * self.channels)
        kx, c = np.divmod(rest, self.channels)
        y, x = oy * self.stride_h + ky, ox * self.stride_w + kx
        return np.where((y < self.in_h) & (x < self.in_w), (y * self.in_w + x) * self.channels + c, -1)


def _skewed(t: int, used: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, lane) of a ``t x used`` block in SCALE-Sim's skewed demand order: line ``j`` holds lane
    ``r`` at time ``j - r``, lanes ascending within a line."""
    time, lane = np.meshgrid(np.arange(t), np.arange(used), indexing="ij")
    time, lane = time.ravel(), lane.ravel()
    order = np.lexsort((lane, time + lane))
    return time[order], lane[order]


def _stationary(used_rows: int, used_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of a stationary fold in SCALE-Sim's order: bottom row first, columns ascending."""
    row, col = np.meshgrid(np.arange(used_rows)[::-1], np.arange(used_cols), indexing="ij")
    return row.ravel(), col.ravel()


def operand_streams(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                    want: tuple[bool, bool] = (True, True)) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ifmap, filter) addresses in the order SCALE-Sim's array demands them (folds: columns outer,
    rows inner), without the -1 it never fetches; ``want`` skips either. Filter ``(k, n)`` is address
    ``k * N + n``. A streamed operand's folds repeat for every column fold, so they are built once."""
    sr, sc = {"os": (m, n), "ws": (k, n), "is": (k, m)}[dataflow]
    t = {"os": k, "ws": m, "is": n}[dataflow]
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    skews: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def skewed(used: int) -> tuple[np.ndarray, np.ndarray]:
        if used not in skews:
            skews[used] = _skewed(t, used)
        return skews[used]

    def row_pass(address: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """One pass over the row folds (what each column fold repeats)."""
        return np.concatenate([address(fr * rows, min(rows, sr - fr * rows)) for fr in range(row_folds)])

    def grid(address: Callable[[int, int, int, int], np.ndarray]) -> np.ndarray:
        return np.concatenate([address(fc * cols, min(cols, sc - fc * cols), fr * rows,
                                       min(rows, sr - fr * rows))
                               for fc in range(col_folds) for fr in range(row_folds)])

    def os_ifmap(r0: int, ru: int) -> np.ndarray:
        tt, lane = skewed(ru)
        return geometry.ifmap_address(r0 + lane, tt)

    def os_filter(c0: int, cu: int, r0: int, ru: int) -> np.ndarray:
        tt, lane = skewed(cu)
        return tt * n + c0 + lane

    def ws_ifmap(r0: int, ru: int) -> np.ndarray:
        tt, lane = skewed(ru)
        return geometry.ifmap_address(tt, r0 + lane)

    def ws_filter(c0: int, cu: int, r0: int, ru: int) -> np.ndarray:
        row, col = _stationary(ru, cu)
        return (r0 + row) * n + c0 + col

    def is_ifmap(c0: int, cu: int, r0: int, ru: int) -> np.ndarray:
        row, col = _stationary(ru, cu)
        return geometry.ifmap_address(c0 + col, r0 + row)

    def is_filter(r0: int, ru: int) -> np.ndarray:
        tt, lane = skewed(ru)
        return (r0 + lane) * n + tt

    ifmap = filt = None
    if dataflow == "os":
        if want[0]:
            ifmap = np.tile(row_pass(os_ifmap), col_folds)
        if want[1]:
            filt = grid(os_filter)
    elif dataflow == "ws":
        if want[0]:
            ifmap = np.tile(row_pass(ws_ifmap), col_folds)
        if want[1]:
            filt = grid(ws_filter)
    else:
        if want[0]:
            ifmap = grid(is_ifmap)
        if want[1]:
            filt = np.tile(row_pass(is_filter), col_folds)
    return (None if ifmap is None else ifmap[ifmap >= 0]), filt


def chunked_misses(stream: np.ndarray, capacity: int) -> int:
    """DRAM reads of SCALE-Sim's CALC-mode read buffer for an address stream.

    Its active half holds ``capacity`` distinct addresses (50 sets); a read hits if its address came
    since the buffer last turned over, and the buffer turns over -- forgets everything -- the moment the
    ``capacity``-th distinct address arrives. So the stream splits greedily into pieces of ``capacity``
    distinct addresses, each fetched once.
    """
    size = len(stream)
    order = np.argsort(stream, kind="stable")
    ranked = stream[order]
    prev = np.full(size, -1, dtype=np.int64)  # previous position of the same address, -1 if none
    same = ranked[1:] == ranked[:-1]
    prev[order[1:][same]] = order[:-1][same]
    start, count = 0, 0
    while start < size:
        span = min(size - start, 4 * capacity)
        while True:
            new = np.cumsum(prev[start:start + span] < start)
            if new[-1] >= capacity or start + span == size:
                break
            span = min(size - start, 2 * span)
        if new[-1] < capacity:
            return count + int(new[-1])
        end = int(np.searchsorted(new, capacity))
        count += capacity
        start += end + 1
    return count
