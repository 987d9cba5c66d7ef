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
