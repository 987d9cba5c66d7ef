"""SCALE-Sim 3.0.0's memory system, replayed at the granularity of its own events, not per element.

SCALE-Sim double-buffers an ifmap and a filter read buffer and an ofmap write buffer in front of DRAM and
simulates them read by read. The array's demand order is a closed form per fold, so this module builds
each operand's address stream with numpy (:func:`fold_streams`: every distinct fold pattern built once
and gathered for all folds; :func:`operand_streams`, :func:`demand_streams`, :func:`fetch_streams`) and
applies SCALE-Sim's buffer rules to it in vectorised blocks:

* CALC-mode read buffers (:func:`calc_dram_reads`): a reset every 50 sets. A stream of repeated
  permutations over disjoint address sets (every filter; an ifmap whose windows share no element) is
  counted from its segments' sizes, with no stream (:func:`permutation_segments`); other ifmaps are
  built and replayed (:func:`chunked_misses`): one block scan per reset, and on a repeated pass only
  until a reset's offset in the pass recurs;
* USER-mode read buffers (:func:`user_read_buffer`): a ring window over a fixed prefetch order -- one
  arithmetic block test per window move (a read's one set, or the one gap between its address's sets a
  window must lie in to miss it), or, when moves are dense, one Python step per run of same-set reads;
  none, and no streams, when the first window holds the whole order (:func:`fetch_counts`: closed form);
* the ofmap write buffer (:func:`drain_ofmap`, :class:`_WriteBuffer`): from the number of writes each
  cycle, a closed-form trapezoid per fold (:func:`ofmap_writes_per_cycle`) -- a few operations per drain;
  in CALC mode (:func:`drain_folds`) without the per-cycle array, and only until the drains repeat;
* the USER-mode stall loop (:func:`user_mode`, :func:`user_run`): one step per demand line with a read
  miss or an ofmap drain-threshold crossing; the writing lines between them are stored at once, and
  when all writes fit the drain half only the miss lines are stepped (no per-cycle writes built).

Every rule, and the SCALE-Sim quirk behind it, is listed in ``docs/hardware.md`` (quirks 10-15).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


def ofmap_writes_per_cycle(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int) -> np.ndarray:
    """Valid ofmap writes SCALE-Sim issues in each compute cycle of one (sub-)layer.

    The ofmap buffer collects them and, whenever more than its drain half ``D = S - ceil(S / 2)`` is held
    and the previous drain has finished, drains ``ceil(D / bw)`` lines of ``bw`` (quirk 13 in the docs).

    Per fold (column folds outer, row folds inner) its demand matrix is ``P`` empty lines, then ``B``
    body lines of which rows ``[b0, B)`` hold ``cu`` valid writes (``cu``: the columns the fold maps),
    skewed by one line per column: os has ``P = T - 1`` and the fold's ``rows`` outputs flipped (the
    unmapped rows first), ws/is have ``P = 2 rows - 1`` and ``T`` rows of partial sums.
    """
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    prefix, body = (t - 1, rows) if dataflow == "os" else (2 * rows - 1, t)
    # only the last column fold maps fewer columns, only the last row fold (os) fewer rows: 2 x 2 patterns
    last_cu, last_ru = sc - (col_folds - 1) * cols, sr - (row_folds - 1) * rows
    first_rows = (0, rows - last_ru) if dataflow == "os" else (0, 0)
    used = np.array([[cols], [cols], [last_cu], [last_cu]])
    first = np.array([[first_rows[0]], [first_rows[1]]] * 2)
    j = np.arange(body + cols - 1)
    patterns = np.zeros((4, prefix + body + cols - 1), dtype=np.int64)
    # count(j) = #{c < used : first <= j - c < body}: a box convolved with a box, in closed form
    patterns[:, prefix:] = np.maximum(0, np.minimum(used - 1, j - first) - np.maximum(0, j - body + 1) + 1)
    index = np.zeros((col_folds, row_folds), dtype=np.int64)  # column folds outer, row folds inner
    index[-1] += 2
    index[:, -1] += 1
    return patterns[index.ravel()].ravel()  # every fold has the same length


@dataclass(frozen=True)
class DrainResult:
    """What SCALE-Sim's ofmap buffer reports for one (sub-)layer."""

    dram_writes: int  # writes counted at the DRAM interface (drain padding included)
    last_write_cycle: int  # cycle of the last DRAM write, counted from the first compute cycle
    last_compute_cycle: int = -1  # the run's last compute cycle, where the final drain starts


def drain_ofmap(writes_per_cycle: np.ndarray, buffer_elems: int, bandwidth: int) -> DrainResult:
    """Emulate SCALE-Sim's ``write_buffer`` on a CALC-mode (stall-free) run: cycle ``i`` issues
    ``writes_per_cycle[i]`` writes; returns the DRAM writes it counts and when the last one happens."""
    cum = np.cumsum(writes_per_cycle)
    return _drain(lambda cycle: int(cum[cycle]), lambda need: int(cum.searchsorted(need)), int(cum[-1]),
                  len(writes_per_cycle) - 1, int(writes_per_cycle.max()), buffer_elems, bandwidth)


def drain_folds(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int, buffer_elems: int,
                bandwidth: int) -> DrainResult:
    """``drain_ofmap(ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t), buffer_elems, bandwidth)``
    without the per-cycle array: the write count through a cycle, and the cycle of the ``r``-th write,
    in closed form per fold (:func:`_fold_writes`), so the work is per drain, not per cycle (and not
    even that once the drains settle into a steady pattern, :func:`_drain`)."""
    through, cycle_of, total, cycles, peak = _fold_writes(dataflow, rows, cols, sr, sc, t)
    return _drain(through, cycle_of, total, cycles - 1, peak, buffer_elems, bandwidth)


def _drain(through: Callable[[int], int], cycle_of: Callable[[int], int], total: int, last_cycle: int,
           peak: int, buffer_elems: int, bandwidth: int) -> DrainResult:
    """SCALE-Sim's CALC-mode ofmap buffer, drain by drain: ``through(c)`` is the number of writes issued
    in cycles ``0 .. c``, ``cycle_of(r)`` the cycle of the ``r``-th write (from 1), ``total`` all of them,
    at most ``peak`` per cycle.

    A drain starts at the first write held beyond the drain half once the previous drain has finished
    (docs/hardware.md quirk 13); it closes the line being packed (:func:`_close`) and drains up to a
    chunk of lines (:func:`_drained`), written out inline here: this loop runs once per drain. A
    trigger's cycle is looked up only when its writes could arrive before the last drain ends (at most
    ``peak`` per cycle). When a drain leaves the buffer as the one before did, relative to the writes
    stored, and the next writes cannot overtake it, every later drain repeats it: counted at once."""
    drain = buffer_elems - math.ceil(buffer_elems * 0.5)
    chunk = math.ceil(drain / bandwidth)  # lines per drain
    pending: deque[tuple[int, int]] = deque()  # (line, elements) of lines closed partly full, not drained
    lines = 0  # trace lines closed so far
    stored = 0  # elements stored (and packed into closed lines) up to the last drain's trigger
    drained = counted = n = 0  # n: lines of the last drain
    next_line = 0  # first trace line not yet drained
    trigger: int | None = 0  # cycle of the last drain's trigger (None: not looked up); it ends at trigger + n - 1
    previous: tuple = ()
    while True:
        # the next trigger: an element stored while more than `drain` are held, at a cycle >= the last drain's end
        need = max(drained + drain + 1, stored + 1)
        if need > total:
            break
        bound, cycle = False, None
        if -(-(need - stored + 1 - peak) // peak) < n - 1:  # its writes could arrive before the drain ends
            if trigger is None:
                trigger = cycle_of(stored)
            if trigger + n - 1 > last_cycle:
                break
            cycle = cycle_of(need)
            bound = cycle < trigger + n - 1  # the buffer filled up while the last drain ran
            if bound:
                need = through(trigger + n - 2) + 1  # the first write after it
                if need > total:
                    break
                cycle = cycle_of(need)
        step = need - stored
        new = -(-step // bandwidth)  # _close: pack the elements since the last trigger
        lines += new
        rest = step - (new - 1) * bandwidth
        if rest < bandwidth:
            pending.append((lines - 1, rest))
        stored, trigger = need, cycle
        n = min(chunk, lines - next_line)
        next_line += n
        fill = bandwidth  # elements in the chunk's last line (_drained)
        while pending and pending[0][0] < next_line:
            line, elements = pending.popleft()
            if line == next_line - 1:
                fill = elements
        data = n * bandwidth - (bandwidth - fill)
        drained += data
        counted += data
        if bound or -(-(step + 1 - peak) // peak) < n - 1:  # the next writes may overtake this drain
            previous = ()
            continue
        key = (stored - drained, lines - next_line, step, n, *((line - next_line, e) for line, e in pending))
        if key == previous:
            repeats = (total - stored) // step
            stored, drained, counted = stored + repeats * step, drained + repeats * step, counted + repeats * data
            lines, next_line = lines + repeats * new, next_line + repeats * n
            pending = deque((line + repeats * n, e) for line, e in pending)
            trigger = None
        previous = key
    drain_end = 0 if n == 0 else (cycle_of(stored) if trigger is None else trigger) + n - 1
    return _final_drain(lines, stored, total, next_line, counted, drain_end, last_cycle, chunk, bandwidth,
                        dict(pending))


def _final_drain(lines: int, stored: int, total: int, next_line: int, counted: int, drain_end: int,
                 last_cycle: int, chunk: int, bandwidth: int, partial: dict[int, int]) -> DrainResult:
    """SCALE-Sim's ``empty_all_buffers`` after the last compute cycle: the line being packed is closed
    and every line left drains, chunk after chunk."""
    lines, _ = _close(lines, stored, total, bandwidth, partial)
    end = drain_end
    cycle = last_cycle
    while next_line < lines:
        n = min(chunk, lines - next_line)
        counted += _drained(next_line, n, bandwidth, partial)
        next_line += n
        cycle += n  # the next chunk starts the cycle after this one's last write
        end = max(end, cycle - 1)  # a drain started during compute may end later still
    return DrainResult(counted, end, last_cycle)


def _fold_writes(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int
                 ) -> tuple[Callable[[int], int], Callable[[int], int], int, int, int]:
    """:func:`ofmap_writes_per_cycle` in closed form: (writes through cycle ``c``, cycle of the ``r``-th
    write, all writes, cycles, most writes in one cycle). A fold's writes are a ``h x cu`` box (valid
    body rows x mapped columns) sheared by one line per column, so the writes through body line ``u`` of
    the box are its cells on anti-diagonals ``<= u`` (:func:`_box_count`); folds run column folds outer,
    row folds inner, and only the last of each differs."""
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    prefix, body = (t - 1, rows) if dataflow == "os" else (2 * rows - 1, t)
    fold = prefix + body + cols - 1
    last_ru, last_cu = sr - (row_folds - 1) * rows, sc - (col_folds - 1) * cols
    heights = (rows, last_ru) if dataflow == "os" else (t, t)  # os: a fold's unmapped rows come first
    # per (last column fold?, last row fold?): (first cycle of the box in its fold, valid rows, columns)
    kinds = tuple(tuple((prefix + body - h, h, cu) for h in heights) for cu in (cols, last_cu))
    row_total = (heights[0] * cols, heights[0] * last_cu)  # a full row fold, per column-fold kind
    col_total = (row_folds - 1) * row_total[0] + heights[1] * cols  # a full column fold
    total = (col_folds - 1) * col_total + (row_folds - 1) * row_total[1] + heights[1] * last_cu

    def through(cycle: int) -> int:
        """Writes issued in cycles ``0 .. cycle``."""
        f, offset = divmod(cycle, fold)
        cf, rf = divmod(f, row_folds)
        if cf >= col_folds:
            return total
        last = cf == col_folds - 1
        start, h, cu = kinds[last][rf == row_folds - 1]
        return cf * col_total + rf * row_total[last] + _box_count(offset - start, h, cu)

    def cycle_of(r: int) -> int:
        """Cycle of the ``r``-th write (``1 <= r <= total``)."""
        cf = (r - 1) // col_total
        if cf >= col_folds:
            cf = col_folds - 1
        r -= cf * col_total
        last = cf == col_folds - 1
        rf = (r - 1) // row_total[last]
        if rf >= row_folds:
            rf = row_folds - 1
        r -= rf * row_total[last]
        start, h, cu = kinds[last][rf == row_folds - 1]
        return (cf * row_folds + rf) * fold + start + _box_inverse(r, h, cu)

    peak = min(max(heights), cols)  # a box's longest anti-diagonal: min(h, cu)
    return through, cycle_of, total, row_folds * col_folds * fold, peak


def _box_count(u: int, h: int, w: int) -> int:
    """Cells ``(x, y)`` of an ``h x w`` box with ``x + y <= u``: a triangle, then a band of ``min(h, w)``
    per anti-diagonal, then the box minus the triangle left over."""
    a, b = min(h, w), max(h, w)
    if u < 0:
        return 0
    if u < a:
        return (u + 1) * (u + 2) // 2
    if u < b:
        return a * (a + 1) // 2 + (u - a + 1) * a
    v = h + w - 2 - u  # cells beyond anti-diagonal u: a triangle of side v
    return h * w - v * (v + 1) // 2 if v > 0 else h * w


def _box_inverse(r: int, h: int, w: int) -> int:
    """The smallest ``u`` with :func:`_box_count` ``(u, h, w) >= r`` (``1 <= r <= h * w``)."""
    a, b = min(h, w), max(h, w)
    triangle = a * (a + 1) // 2
    if r <= triangle:  # smallest s = u + 1 with s (s + 1) / 2 >= r
        s = (math.isqrt(8 * r + 1) - 1) // 2
        return s - 1 if s * (s + 1) // 2 >= r else s
    if r <= triangle + (b - a) * a:
        return a - 1 + -(-(r - triangle) // a)
    # largest v with v (v + 1) / 2 <= h w - r cells left beyond anti-diagonal u = h + w - 2 - v
    v = (math.isqrt(8 * (h * w - r) + 1) - 1) // 2
    return h + w - 2 - v


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

@dataclass(frozen=True)
class ConvGeometry:
    """The addressing of one (sub-)layer's ifmap, as SCALE-Sim lays it out (``(y * W + x) * C + c``).

    ``out_w`` output columns; window index ``k`` = ``(ky * S + kx) * C + c``. A GEMM is ``H = M``,
    ``W = K``, a ``1 x K`` kernel, ``C = 1`` (SCALE-Sim's own conversion). ``pad_h``/``pad_w`` (top/left
    padding of a PyTorch conv; SCALE-Sim topologies are pre-padded, 0) are never fetched, like the
    bottom/right overhang SCALE-Sim marks -1. A batch (``image_pixels`` > 0: output pixels per image) is
    images stored one after the other, output pixel ``m`` of image ``m // image_pixels``: what SCALE-Sim
    would see for a ``batch * H x W`` ifmap whose windows never straddle two images.
    """

    in_h: int
    in_w: int
    channels: int
    kernel_w: int
    stride_h: int
    stride_w: int
    out_w: int
    pad_h: int = 0
    pad_w: int = 0
    image_pixels: int = 0

    def ifmap_address(self, m: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Address of window element ``k`` of output pixel ``m``; -1 where the window runs off the edge.

        The address separates into a pixel part and a window part, so the divisions run on the distinct
        pixels and window elements only and each element is one sum; only the pixels whose window
        leaves the ifmap (padding, SCALE-Sim's bottom/right overhang) are tested element by element."""
        pixels, window = int(m.max()) + 1 if m.size else 1, int(k.max()) + 1 if k.size else 1
        pix = np.arange(pixels)
        image = 0
        if self.image_pixels:
            image, pix = np.divmod(pix, self.image_pixels)
        oy, ox = np.divmod(pix, self.out_w)
        ky, rest = np.divmod(np.arange(window), self.kernel_w * self.channels)
        kx, c = np.divmod(rest, self.channels)
        y0, x0 = oy * self.stride_h - self.pad_h, ox * self.stride_w - self.pad_w
        row = ((y0 + image * self.in_h) * self.in_w + x0) * self.channels
        address = row[m] + ((ky * self.in_w + kx) * self.channels + c)[k]
        if not self._may_leave(pixels, window):
            return address
        edge = (y0 < 0) | (y0 + ky[-1] >= self.in_h) | (x0 < 0) | (x0 + kx.max() >= self.in_w)
        if edge.any():
            at = np.flatnonzero(np.broadcast_to(edge[m], address.shape))
            mm, kk = (np.broadcast_to(a, address.shape).ravel()[at] for a in (m, k))
            y, x = y0[mm] + ky[kk], x0[mm] + kx[kk]
            np.put(address, at[(y < 0) | (y >= self.in_h) | (x < 0) | (x >= self.in_w)], -1)
        return address


    def _may_leave(self, pixels: int, window: int) -> bool:
        """Whether a window of the first ``pixels`` output pixels (per image), over window elements
        ``0 .. window - 1``, can leave the ifmap: scalar bounds of the per-pixel edge test, so inner
        layers (GEMMs, unpadded convs) skip it."""
        if self.pad_h > 0 or self.pad_w > 0:
            return True
        last = min(pixels, self.image_pixels) - 1 if self.image_pixels else pixels - 1
        span = self.kernel_w * self.channels
        ky_max = (window - 1) // span
        kx_max = self.kernel_w - 1 if window > span else (window - 1) // self.channels
        ox_max = self.out_w - 1 if last >= self.out_w else last
        return (last // self.out_w * self.stride_h + ky_max >= self.in_h
                or ox_max * self.stride_w + kx_max >= self.in_w)


def _skew_order(t: int, used: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, lane) of a ``t x used`` block in SCALE-Sim's skewed demand order: line ``j`` holds lane
    ``r`` at time ``j - r``, lanes ascending within a line (built diagonal by diagonal, no sort)."""
    line, offset = _diagonals(t, used)
    lane = np.maximum(0, line - t + 1) + offset
    return line - lane, lane


def _diagonals(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(diagonal ``d = row + col``, position within it) of every cell of a ``height x width`` matrix,
    diagonal by diagonal."""
    d = np.arange(height + width - 1)
    count = np.minimum(d, width - 1) - np.maximum(0, d - height + 1) + 1
    diagonal = np.repeat(d, count)
    return diagonal, np.arange(len(diagonal)) - np.repeat(np.cumsum(count) - count, count)


def _load_order(used_rows: int, used_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of a stationary fold in SCALE-Sim's order: bottom row first, columns ascending."""
    row, col = np.meshgrid(np.arange(used_rows)[::-1], np.arange(used_cols), indexing="ij")
    return row.ravel(), col.ravel()


def _per_fold(keys: np.ndarray, pattern: Callable[[int], tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fold of each element, pattern's first array, its second) over folds whose element pattern depends
    only on an integer key (the lanes a fold maps): each distinct pattern is built once and gathered, so
    the work is numpy over the elements, not Python per fold."""
    if len(keys) > 1 and keys[0] == keys[-2] and np.all(keys[:-1] == keys[0]):  # only the last fold differs
        full = pattern(int(keys[0]))
        last = full if keys[-1] == keys[0] else pattern(int(keys[-1]))
        count = len(keys) - 1
        return (np.concatenate([np.repeat(np.arange(count), len(full[0])), np.full(len(last[0]), count)]),
                np.concatenate([np.tile(full[0], count), last[0]]), np.concatenate([np.tile(full[1], count), last[1]]))
    distinct = sorted(set(keys.tolist()))  # a few (full and last, partial folds)
    inverse = np.searchsorted(np.array(distinct), keys)
    built = [pattern(u) for u in distinct]
    lengths = np.array([len(b[0]) for b in built], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    sizes = lengths[inverse]
    fold = np.repeat(np.arange(len(keys)), sizes)
    index = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes - starts[inverse], sizes)
    first = np.concatenate([b[0] for b in built])
    second = np.concatenate([b[1] for b in built])
    return fold, first[index], second[index]


Stream = tuple[np.ndarray, np.ndarray]  # (address, demand line), -1 addresses (nothing fetched) included


def fold_streams(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                 want: tuple[bool, bool] = (True, True), one_pass: bool = False, table: np.ndarray | None = None
                 ) -> tuple[Stream | None, Stream | None]:
    """((ifmap address, demand line), (filter address, demand line)) in SCALE-Sim's demand order (folds:
    columns outer, rows inner); ``want`` skips either. Filter ``(k, n)`` is address ``k * N + n``.

    A fold lasts ``T + rows + cols - 2`` lines (os) or ``T + 2 rows + cols - 2`` (ws/is); inside it a
    streamed operand's lane ``r`` reads time step ``t`` at line ``t + r`` (after ``rows`` lines of loading
    in ws/is), a stationary fold is loaded bottom row first, one row per line. A streamed operand depends
    on the row fold only, so one pass over the row folds is built and repeated per column fold (with
    ``one_pass``, not repeated: the caller knows it repeats ``ceil(Sc / cols)`` times). ``table``: the
    :func:`ifmap_table` when the caller has it (else built here if the ifmap is wanted)."""
    if want[0] and table is None:
        table = ifmap_table(geometry, m, k)
    sr, sc = {"os": (m, n), "ws": (k, n), "is": (k, m)}[dataflow]
    t = {"os": k, "ws": m, "is": n}[dataflow]
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    length = t + rows + cols - 2 if dataflow == "os" else t + 2 * rows + cols - 2
    lead = 0 if dataflow == "os" else rows
    r0 = np.arange(row_folds) * rows
    ru = np.minimum(rows, sr - r0)
    c0 = np.arange(col_folds) * cols
    cu = np.minimum(cols, sc - c0)

    def streamed(scale: int, offset: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 table: np.ndarray | None = None) -> Stream:
        """One pass over the row folds (skewed lanes), repeated for every column fold: element ``(tt,
        lane)`` of the fold at row ``r0`` is ``r0 * scale + offset(tt, lane)``, looked up in ``table``
        when given. The full folds share one skew pattern, broadcast over their starting rows."""
        full = row_folds - int(ru[-1] != rows)
        tt, lane = _skew_order(t, rows)
        index = [(r0[:full, None] * scale + offset(tt, lane)).ravel()]
        line = [((np.arange(full) * length)[:, None] + (lead + tt + lane)).ravel()]
        if full < row_folds:  # a partial last row fold
            tt, lane = _skew_order(t, int(ru[-1]))
            index.append(r0[-1] * scale + offset(tt, lane))
            line.append(full * length + lead + tt + lane)
        addr = np.concatenate(index) if len(index) > 1 else index[0]
        lines = np.concatenate(line) if len(line) > 1 else line[0]
        if table is not None:
            addr = table[addr]
        if one_pass:
            return addr, lines
        shift = np.repeat(np.arange(col_folds) * (row_folds * length), len(addr))
        return np.tile(addr, col_folds), np.tile(lines, col_folds) + shift

    def stationary(address: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Stream:
        """Every fold's stationary block, bottom row first; keyed by (mapped rows, mapped columns)."""
        keys = (ru[None, :] * (cols + 1) + cu[:, None]).ravel()  # column folds outer, row folds inner
        f, row, col = _per_fold(keys, lambda key: _load_order(key // (cols + 1), key % (cols + 1)))
        fc, fr = np.divmod(f, row_folds)
        return address(fc, fr, row, col), f * length + rows - 1 - row

    if dataflow == "os":
        ifmap = streamed(k, lambda tt, lane: lane * k + tt, table) if want[0] else None
        filt = None
        if want[1]:  # a column fold's filters stream again in each of its row folds
            f, tt, lane = _per_fold(np.repeat(cu, row_folds), lambda used: _skew_order(t, used))
            filt = tt * n + c0[f // row_folds] + lane, f * length + tt + lane
    elif dataflow == "ws":
        ifmap = streamed(1, lambda tt, lane: tt * k + lane, table) if want[0] else None
        filt = stationary(lambda fc, fr, row, col: (r0[fr] + row) * n + c0[fc] + col) if want[1] else None
    else:
        ifmap = stationary(lambda fc, fr, row, col: table[(c0[fc] + col) * k + r0[fr] + row]) \
            if want[0] else None
        filt = streamed(n, lambda tt, lane: lane * n + tt) if want[1] else None
    return ifmap, filt


def ifmap_table(geometry: ConvGeometry, m: int, k: int) -> np.ndarray:
    """Every ifmap address of ``m`` output pixels x ``k`` window elements, flat (pixel-major)."""
    return geometry.ifmap_address(np.arange(m)[:, None], np.arange(k)[None, :]).ravel()


def operand_streams(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                    want: tuple[bool, bool] = (True, True)) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ifmap, filter) addresses in the order SCALE-Sim's array demands them, without the -1 it never
    fetches; ``want`` skips either (what the CALC-mode read buffers see)."""
    ifmap, filt = fold_streams(dataflow, rows, cols, m, n, k, geometry, want)
    return (None if ifmap is None else ifmap[0][ifmap[0] >= 0]), (None if filt is None else filt[0])


def operand_passes(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                   want: tuple[bool, bool] = (True, True)
                   ) -> tuple[tuple[np.ndarray, int] | None, tuple[np.ndarray, int] | None]:
    """:func:`operand_streams` as (one pass, times it repeats): the streamed operand (the ifmap of os and
    ws, the filter of is) reads the same pass over the row folds once per column fold; the others are
    one pass."""
    ifmap, filt = fold_streams(dataflow, rows, cols, m, n, k, geometry, want, one_pass=True)
    col_folds = -(-{"os": n, "ws": n, "is": m}[dataflow] // cols)
    repeats = (1, col_folds) if dataflow == "is" else (col_folds, 1)
    return (None if ifmap is None else (ifmap[0][ifmap[0] >= 0], repeats[0])), \
        (None if filt is None else (filt[0], repeats[1]))


def chunked_misses(stream: np.ndarray, capacity: int, repeats: int = 1) -> int:
    """DRAM reads of SCALE-Sim's CALC-mode read buffer for an address stream (``stream`` read ``repeats``
    times over).

    Its active half holds ``capacity`` distinct addresses (50 sets); a read hits if its address came
    since the buffer last turned over, and the buffer turns over -- forgets everything -- the moment the
    ``capacity``-th distinct address arrives. So the stream splits greedily into pieces of ``capacity``
    distinct addresses, each fetched once. A repeated pass is periodic: a piece's length depends only on
    where in the pass it starts, so once a start offset recurs the pieces repeat and are counted by
    multiplication (:func:`_periodic_chunks`).
    """
    if repeats > 1 and len(stream):
        return _periodic_chunks(stream, capacity, repeats)
    prev = _previous(stream)
    size, start, count = len(stream), 0, 0
    while start < size:
        new, end = _next_chunk(prev, start, size, capacity)
        if end < 0:
            return count + new
        count += capacity
        start = end + 1
    return count


def _previous(stream: np.ndarray) -> np.ndarray:
    """Previous position of each read's address in ``stream``, -1 if none."""
    order = _stable_order(stream)
    ranked = stream[order]
    before = np.empty_like(order)  # in sorted order: the position ranked just before, if the same address
    before[:1] = -1
    before[1:] = np.where(ranked[1:] == ranked[:-1], order[:-1], -1)
    prev = np.empty_like(order)
    prev[order] = before
    return prev


def _next_chunk(prev: np.ndarray, start: int, stop: int, capacity: int) -> tuple[int, int]:
    """(distinct addresses, -1) if positions ``start .. stop - 1`` hold fewer than ``capacity`` addresses
    new since ``start``, else (capacity, the position where the ``capacity``-th arrives). Scans blocks of
    growing length, each read once: a read is new iff its address's previous read came before ``start``."""
    need, pos, span = capacity, start, min(stop - start, 2 * capacity)
    while True:
        new = np.flatnonzero(prev[pos:pos + span] < start)
        if len(new) >= need:
            return capacity, pos + int(new[need - 1])
        need -= len(new)
        pos += span
        if pos >= stop:
            return capacity - need, -1
        span = min(stop - pos, 2 * span)


def _periodic_chunks(stream: np.ndarray, capacity: int, repeats: int) -> int:
    """:func:`chunked_misses` of ``stream`` repeated ``repeats`` times, stepping pieces only until a start
    offset within the pass recurs, then skipping whole periods. A piece that starts at offset ``o`` meets
    every address of the pass within ``len(stream)`` reads, so (when the pass has ``capacity`` distinct
    addresses or more) it ends within the next ``len(stream)`` reads: two copies are all it needs."""
    size, total = len(stream), len(stream) * repeats
    prev = _previous(np.concatenate([stream, stream]))
    distinct = int(np.count_nonzero(prev[:size] < 0))
    if distinct < capacity:  # the buffer never turns over: each address is fetched once
        return distinct

    def piece(start: int, count: int) -> tuple[int, int, bool]:
        """The piece starting at read ``start``: (next start, pieces' misses, whether the stream ended)."""
        offset = start % size
        new, end = _next_chunk(prev, offset, offset + min(size, total - start), capacity)
        if end < 0:
            return start, count + new, True
        return start + end - offset + 1, count + capacity, False

    return _skip_recurrences(0, total, 0, lambda start: start % size, piece)


def _skip_recurrences(position: int, total: int, count: int, key: Callable[[int], int],
                      step: Callable[[int, int], tuple[int, int, bool]]) -> int:
    """``count`` after stepping ``(position, count) = step(position, count)`` until ``position`` reaches
    ``total`` (or ``step`` says stop). The steps depend only on ``key(position)``: once a key recurs, the
    steps since its earlier visit repeat, so the whole periods that fit are added at once."""
    seen: dict[int, tuple[int, int]] = {}  # key -> (position, count) at its visit
    while position < total:
        state = key(position)
        if state in seen:
            earlier, before = seen[state]
            period = position - earlier
            skip = (total - position) // period
            position, count = position + skip * period, count + skip * (count - before)
            seen.clear()
            if position >= total:
                break
            state = key(position)
        seen[state] = position, count
        position, count, stop = step(position, count)
        if stop:
            break
    return count


def _stable_order(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` for non-negative integers, as one or two 16-bit passes: numpy
    radix-sorts 16-bit keys, several times faster than its merge sort on int64 addresses."""
    if values.size == 0 or values.min() < 0 or values.max() >= 1 << 32:
        return np.argsort(values, kind="stable")
    if values.max() < 1 << 16:
        return np.argsort(values.astype(np.uint16), kind="stable")
    low = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")  # least significant digit first
    return low[np.argsort((values[low] >> 16).astype(np.uint16), kind="stable")]


def calc_dram_reads(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                    capacities: tuple[int, int], want: tuple[bool, bool] = (True, True)
                    ) -> tuple[int | None, int | None]:
    """(ifmap, filter) DRAM reads of SCALE-Sim's CALC-mode read buffers (``None`` where not wanted):
    :func:`chunked_misses` of :func:`operand_passes` at the active capacities (50 sets each).

    Most streams need no replay: one made of segments over disjoint address sets, each a permutation
    repeated, is counted by arithmetic on the segments' sizes (:func:`_segment_misses`). Every filter
    stream is one, and so is an ifmap stream whose windows never share an element (GEMMs, 1x1 or
    non-overlapping convs). Only the other ifmaps are built and replayed."""
    segments = permutation_segments(dataflow, rows, cols, m, n, k, geometry)
    out: list[int | None] = [None, None]
    replay = [False, False]
    for j in (0, 1):
        if want[j] and segments[j] is not None and capacities[j] >= 1:
            out[j] = _segment_misses(segments[j], capacities[j])
        else:
            replay[j] = want[j]
    if any(replay):
        passes = operand_passes(dataflow, rows, cols, m, n, k, geometry, (replay[0], replay[1]))
        for j in (0, 1):
            if replay[j]:
                stream, repeats = passes[j]  # type: ignore[misc]
                out[j] = chunked_misses(stream, capacities[j], repeats)
    return out[0], out[1]


Segment = tuple[int, int, int]  # (distinct addresses s, reads L = repeats * s, identical segments in a row)


def permutation_segments(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry
                         ) -> tuple[list[Segment] | None, list[Segment] | None]:
    """(ifmap, filter) demand streams of :func:`operand_streams` as runs of segments -- each a permutation
    of its own address set, repeated, the sets pairwise disjoint -- or ``None`` where an ifmap's windows
    share elements (then its stream has reuse at irregular distances).

    A streamed operand's pass covers each of its elements once and repeats once per column fold; the os
    filter streams column fold by column fold, each fold's ``K x cu`` block once per row fold; a
    stationary operand is loaded once, element by element."""
    sr, sc = {"os": (m, n), "ws": (k, n), "is": (k, m)}[dataflow]
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    pairs = _window_pairs(geometry, m, k)
    ifmap = None
    if pairs is not None and pairs[1]:
        ifmap = [(pairs[0], pairs[0] * (1 if dataflow == "is" else col_folds), 1)]
    if dataflow == "os":
        last = sc - (col_folds - 1) * cols
        filt = [(k * cols, k * cols * row_folds, col_folds - 1), (k * last, k * last * row_folds, 1)]
    else:
        filt = [(k * n, k * n * (col_folds if dataflow == "is" else 1), 1)]
    return ifmap, filt


def _segment_misses(segments: list[Segment], capacity: int) -> int:
    """:func:`chunked_misses` of a stream of permutation segments (:func:`permutation_segments`).

    Any ``s`` consecutive reads of a repeated permutation of ``s`` addresses are distinct, and an address
    set meets no other. So a piece entering a segment gains new addresses with every read until it has
    read ``s`` of them, then none: the state between segments is only how many addresses the open piece
    holds, ``x``. A segment with ``s >= capacity`` is all misses (``x`` advances by ``L`` mod capacity);
    a smaller one adds ``min(s, L)`` to ``x``, or completes the piece and opens one holding what is left
    of the segment (at most ``s``). Runs of identical segments skip whole periods of ``x``."""
    x = misses = 0
    for size, length, count in segments:
        if count <= 0:
            continue
        if size >= capacity:
            misses += count * length
            x = (x + count * length) % capacity
            continue
        x, misses = _segment_run(x, misses, size, length, count, capacity)
    return misses


def _segment_run(x: int, misses: int, size: int, length: int, count: int, capacity: int) -> tuple[int, int]:
    """(``x``, misses) after ``count`` identical segments of ``size < capacity`` addresses read ``length``
    times each, entered with the open piece holding ``x`` (:func:`_segment_misses`)."""
    held = [x]

    def segment(done: int, misses: int) -> tuple[int, int, bool]:
        x = held[0]
        gain = min(size, length)
        if x + gain < capacity:
            held[0], misses = x + gain, misses + gain
        else:  # the piece completes after capacity - x reads; the next holds the rest of the segment
            rest = min(size, length - (capacity - x))
            held[0], misses = rest, misses + capacity - x + rest
        return done + 1, misses, False

    misses = _skip_recurrences(0, count, misses, lambda _: held[0], segment)
    return held[0], misses


def _window_pairs(geometry: ConvGeometry, m: int, k: int) -> tuple[int, bool] | None:
    """(valid (output pixel, window element) pairs of ``m`` pixels and ``k`` window elements, whether no two
    of them read the same ifmap address), or ``None`` when ``m`` or ``k`` is not a whole number of output
    rows / kernel rows (then the pairs are not a product of per-axis pairs)."""
    g = geometry
    if k % (g.kernel_w * g.channels) or g.out_w < 1:
        return None
    pixels = g.image_pixels if g.image_pixels else m
    if m % pixels or pixels % g.out_w:
        return None
    images, out_h = m // pixels, pixels // g.out_w
    ys, y_distinct = _axis_pairs(g.in_h, out_h, k // (g.kernel_w * g.channels), g.stride_h, g.pad_h)
    xs, x_distinct = _axis_pairs(g.in_w, g.out_w, g.kernel_w, g.stride_w, g.pad_w)
    inside = images * ys * xs * g.channels
    return inside, inside == 0 or (y_distinct and x_distinct)


def _axis_pairs(size: int, out: int, kernel: int, stride: int, pad: int) -> tuple[int, bool]:
    """(pairs (o, j), ``o < out``, ``j < kernel``, whose coordinate ``o * stride + j - pad`` is in
    ``[0, size)``; whether no two share a coordinate). Two share one iff some inside pair with
    ``j >= stride`` has a successor ``o + 1 < out`` (then ``(o + 1, j - stride)`` lands on it). Both are
    counts of :func:`_axis_inside`, O(kernel / stride) each."""
    inside = _axis_inside(0, out, stride, pad, 0, kernel, size)
    shared = stride < kernel and _axis_inside(0, out - 1, stride, pad, stride, kernel, size) > 0
    return inside, not shared


# --------------------------------------------------------------------------------------------------------
# USER bandwidth mode: read buffers that prefetch a fixed order, an ofmap buffer that can stall the array

def demand_streams(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                   want: tuple[bool, bool] = (True, True), table: np.ndarray | None = None
                   ) -> tuple[Stream | None, Stream | None]:
    """((ifmap address, demand line), (filter address, demand line)) in SCALE-Sim's demand order, -1s
    dropped (:func:`fold_streams`); ``want`` skips either. The streamed operand's pass over the row folds
    is cut (its -1s dropped) once and then repeated per column fold, each repeat ``row_folds`` folds later."""
    ifmap, filt = fold_streams(dataflow, rows, cols, m, n, k, geometry, want, one_pass=True, table=table)
    if ifmap is not None:
        keep = ifmap[0] >= 0
        ifmap = ifmap[0][keep], ifmap[1][keep]
    sr, sc = {"os": (m, n), "ws": (k, n), "is": (k, m)}[dataflow]
    t = {"os": k, "ws": m, "is": n}[dataflow]
    fold = t + rows + cols - 2 if dataflow == "os" else t + 2 * rows + cols - 2
    period, repeats = -(-sr // rows) * fold, -(-sc // cols)
    if dataflow == "is":
        return ifmap, (None if filt is None else _repeat_pass(filt, repeats, period))
    return (None if ifmap is None else _repeat_pass(ifmap, repeats, period)), filt


def _repeat_pass(stream: Stream, repeats: int, period: int) -> Stream:
    """``stream`` read ``repeats`` times, each repeat ``period`` demand lines after the one before."""
    if repeats == 1:
        return stream
    address, line = stream
    return (np.broadcast_to(address, (repeats, len(address))).ravel(),
            (line[None, :] + (np.arange(repeats, dtype=line.dtype) * period)[:, None]).ravel())


def _antidiagonal(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of a ``height x width`` matrix read by anti-diagonals, bottom row first in each."""
    diagonal, offset = _diagonals(height, width)
    row = np.minimum(diagonal, height - 1) - offset
    return row, diagonal - row


def fetch_streams(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                  want: tuple[bool, bool] = (True, True), table: np.ndarray | None = None
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ifmap, filter) in the order SCALE-Sim's USER-mode read buffers prefetch them, -1 (nothing)
    included: each operand's folds stacked once (not per column fold), streamed operands read by
    anti-diagonals, stationary ones row by row. ``want`` skips either (None): a buffer that holds its
    whole operand needs no order. ``table``: the :func:`ifmap_table` when the caller has it."""
    if want[0] and table is None:
        table = ifmap_table(geometry, m, k)
    sr, sc = {"os": (m, n), "ws": (k, n), "is": (k, m)}[dataflow]
    t = {"os": k, "ws": m, "is": n}[dataflow]
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)

    def stacked(blocks: int, height: int, width: int, diagonal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block, row in block, col) of ``blocks`` stacked ``height x width`` blocks in fetch order."""
        if diagonal:
            row, col = _antidiagonal(blocks * height, width)
        else:
            row, col = np.divmod(np.arange(blocks * height * width), width)
        block, row = np.divmod(row, height)
        return block, row, col

    def os_ifmap() -> np.ndarray:
        fr, tt, lane = stacked(row_folds, t, rows, True)
        pix = fr * rows + lane
        return np.where(pix < m, table[np.minimum(pix, m - 1) * k + tt], -1)

    def os_filter() -> np.ndarray:
        fc, tt, lane = stacked(col_folds, t, cols, True)
        col = fc * cols + lane
        return np.where(col < n, tt * n + np.minimum(col, n - 1), -1)

    def ws_ifmap() -> np.ndarray:
        fr, tt, lane = stacked(row_folds, t, rows, True)
        kk = fr * rows + lane
        return np.where(kk < k, table[tt * k + np.minimum(kk, k - 1)], -1)

    def ws_filter() -> np.ndarray:
        fc, kk, lane = stacked(col_folds, k, cols, False)
        col = fc * cols + lane
        return np.where(col < n, kk * n + np.minimum(col, n - 1), -1)

    def is_ifmap() -> np.ndarray:
        fc, kk, lane = stacked(col_folds, k, cols, False)
        pix = fc * cols + lane
        return np.where(pix < m, table[np.minimum(pix, m - 1) * k + kk], -1)

    def is_filter() -> np.ndarray:
        fr, tt, lane = stacked(row_folds, t, rows, True)
        kk = fr * rows + lane
        return np.where(kk < k, np.minimum(kk, k - 1) * n + tt, -1)

    ifmap, filt = {"os": (os_ifmap, os_filter), "ws": (ws_ifmap, ws_filter), "is": (is_ifmap, is_filter)}[dataflow]
    return (ifmap() if want[0] else None), (filt() if want[1] else None)


class ReadBufferTrace(NamedTuple):
    """What a USER-mode read buffer did, independent of timing: SCALE-Sim's prefetches run back to back
    (each starts the cycle after the previous one's last response), whenever the array needs them.
    (A named tuple: built twice per replayed layer, where a frozen dataclass's set-up showed.)"""

    first_fill_lines: int  # lines of ``bw`` words of the first fill (before compute)
    prefetch_lines: int  # lines of every later prefetch
    prefetches: int  # later prefetches issued
    miss_lines: np.ndarray  # demand line of each prefetch-triggering read, in order
    miss_prefetches: np.ndarray  # prefetches that read triggered (the while loop's iterations)

    def dram_reads(self, bandwidth: int) -> int:
        """SCALE-Sim counts whole lines: every slot of every line fetched."""
        return (self.first_fill_lines + self.prefetches * self.prefetch_lines) * bandwidth


def user_read_buffer(fetch: np.ndarray, demand: np.ndarray, demand_line: np.ndarray, buffer_elems: int,
                     bandwidth: int) -> ReadBufferTrace:
    """Replay SCALE-Sim's USER-mode ``read_buffer`` on a demand stream.

    The fetch order is cut into sets of ``ceil(buffer / 100)`` valid entries; the active window is the
    next ``ceil(active / set)`` sets (a ring), and a read whose address is in none of them moves the
    window on by ``ceil(prefetch / set)`` sets -- repeatedly, until it hits. Hits are tested per block of
    reads (:class:`_SetLookup`), so the work is per window move, not per read.
    """
    active = math.ceil(buffer_elems * 0.5)
    per_set = math.ceil(buffer_elems / 100)
    valid = fetch[fetch >= 0]
    num_sets = len(valid) // per_set + 1
    act_sets = min(math.ceil(active / per_set), num_sets)
    pf_sets = min(math.ceil((buffer_elems - active) / per_set), num_sets - act_sets)
    first = min(math.ceil(active / bandwidth), math.ceil(len(fetch) / bandwidth))
    pf_lines = math.ceil((buffer_elems - active) / bandwidth)
    if act_sets >= num_sets:  # the first window holds every set: no read moves it (the demand is not read)
        return ReadBufferTrace(first, pf_lines, 0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    lookup = _SetLookup(valid, demand, per_set, num_sets, act_sets)
    misses, counts = _block_misses(lookup, (act_sets, pf_sets, num_sets), max(256, 2 * pf_sets * per_set))
    return ReadBufferTrace(first, pf_lines, sum(counts), demand_line[np.asarray(misses, dtype=np.int64)],
                           np.asarray(counts, dtype=np.int64))


def _moves(sets: list[int], start: int, window: tuple[int, int, int], demand: np.ndarray, pos: int) -> int:
    """How many moves of ``pf_sets`` take the window (``act_sets`` sets from ``start`` on a ring of
    ``num_sets``) to one of ``sets``; at least one (the read missed)."""
    act_sets, pf_sets, num_sets = window
    count = 0
    while True:
        if not sets or pf_sets == 0 or count * pf_sets > num_sets + pf_sets:  # a full turn: not there
            raise ValueError(f"SCALE-Sim read buffer replay: address {int(demand[pos])} is not in the "
                             f"fetch order (internal error; please report the layer)")
        start = (start + pf_sets) % num_sets
        count += 1
        if any((s - start) % num_sets < act_sets for s in sets):
            return count


def _run_misses(first_reads: list[int], run_sets: list[int], start: int, window: tuple[int, int, int],
                demand: np.ndarray) -> tuple[list[int], list[int]]:
    """(read index, moves) of each window move from window ``start`` on, stepping runs of reads of one set
    (only a run's first read can miss: the rest read a set the window then holds)."""
    act_sets, pf_sets, num_sets = window
    misses: list[int] = []
    counts: list[int] = []
    for read, one in zip(first_reads, run_sets):
        if (one - start) % num_sets >= act_sets:
            count = _moves([one], start, window, demand, read)
            start = (start + count * pf_sets) % num_sets
            misses.append(read)
            counts.append(count)
    return misses, counts


def _block_misses(lookup: _SetLookup, window: tuple[int, int, int], step: int) -> tuple[list[int], list[int]]:
    """(read index, moves) of each window move, testing blocks of reads with numpy: a block of ``step``
    reads after a move (a move brings ``pf_sets`` sets' worth of entries), doubled while all hit.

    With one set per read, a block test costs about as much as stepping 60 runs of same-set reads in
    Python, so once the moves come more often than that the rest is stepped run by run."""
    act_sets, pf_sets, num_sets = window
    misses: list[int] = []
    counts: list[int] = []
    runs: np.ndarray | None = None  # first read of each run of same-set reads but the first
    start, pos, size, block = 0, 0, len(lookup.demand), step
    while pos < size:
        hit = lookup.hits(pos, pos + block, start, act_sets)
        miss = int(hit.argmin())
        if hit[miss]:  # every read of the block hits
            pos += len(hit)
            block *= 2
            continue
        block = step
        pos += miss
        count = _moves(lookup.sets_of(pos), start, window, lookup.addresses, pos)
        start = (start + count * pf_sets) % num_sets
        misses.append(pos)
        counts.append(count)
        pos += 1
        if len(misses) % 4 == 0 and lookup.keys is None:
            if runs is None:
                runs = np.flatnonzero(lookup.one_set[1:] != lookup.one_set[:-1]) + 1
            if int(np.searchsorted(runs, pos)) < 60 * len(misses) and pos < size:  # dense moves: by runs
                first_reads = [pos, *runs[np.searchsorted(runs, pos, side="right"):].tolist()]
                more, more_counts = _run_misses(first_reads, lookup.one_set[first_reads].tolist(), start, window,
                                                lookup.addresses)
                return misses + more, counts + more_counts
    return misses, counts


class _SetLookup:
    """Which sets of a USER-mode fetch order hold each demanded address, for window tests on blocks of
    reads (local to one :func:`user_read_buffer` call, whose window is ``width`` sets wide).

    An operand fetched once per address (filters; ifmaps whose windows do not overlap) has one set per
    read: an address -> position table (a scatter, no sort) gives it, and a window test is arithmetic.
    Otherwise the sorted (address, set) pairs come out of a stable address order (a 16-bit radix sort)
    already sorted. A window misses an address exactly when it lies inside one of the gaps between the
    address's sets (on the ring); when no address has two gaps of ``width`` sets or more, that one gap
    per read makes the test arithmetic again, else the pairs are searched (:func:`_in_window`).
    """

    def __init__(self, valid: np.ndarray, demand: np.ndarray, per_set: int, num_sets: int, width: int) -> None:
        self.addresses, self.num_sets = demand, num_sets  # the demand as read (for messages)
        top = max(int(valid.max()), int(demand.max()) if len(demand) else 0) + 1
        if top > 4 * (len(valid) + len(demand)) + 4096:  # sparse addresses: rank them (a sort), small tables
            distinct = np.unique(valid)
            rank = np.minimum(np.searchsorted(distinct, demand), len(distinct) - 1)
            valid, demand = np.searchsorted(distinct, valid), np.where(distinct[rank] == demand, rank, len(distinct))
            top = len(distinct) + 1
        self.demand = demand
        position = np.full(top, -1, dtype=np.int64)
        order = np.arange(len(valid))
        position[valid] = order  # a repeated address keeps its last position
        found = position[demand]
        if len(found) and found.min() < 0:  # a read of it could never hit
            raise ValueError(f"SCALE-Sim read buffer replay: address {int(self.addresses[found.argmin()])} is "
                             f"not in the fetch order (internal error; please report the layer)")
        self.keys: np.ndarray | None = None
        self.gap_after: np.ndarray | None = None  # per read: first set of its address's one wide gap
        if np.array_equal(position[valid], order):  # every address once
            self.one_set = found // per_set
            return
        order = _stable_order(valid)
        address, sets = valid[order], order // per_set
        self.keys = address * num_sets + sets
        self._one_gap(address, sets, top, width)

    def _one_gap(self, address: np.ndarray, sets: np.ndarray, top: int, width: int) -> None:
        """Per read, the gap a window must lie in to miss it, if every address has at most one gap of
        ``width`` sets or more: a window starting at ``w`` misses iff ``(w - gap_after) % num_sets <=
        room`` (``room = gap - width``; -1: no wide gap, always a hit)."""
        num_sets = self.num_sets  # (address, set) sorted; a pair repeated within a set is a gap of -1
        first = np.flatnonzero(np.concatenate(([True], address[1:] != address[:-1])))  # of each address
        following = np.empty_like(sets)
        following[:-1] = sets[1:]
        following[np.append(first[1:] - 1, len(sets) - 1)] = sets[first] + num_sets  # the last wraps around
        gap = following - sets - 1
        wide = gap >= width
        # two gaps of `width` leave room for at most num_sets - 2 * width sets, so need checking only then
        if 2 * width + 2 <= num_sets and np.add.reduceat(wide.astype(np.int64), first).max() > 1:
            return
        after = np.zeros(top, dtype=np.int64)
        room = np.full(top, -1, dtype=np.int64)
        after[address[wide]] = sets[wide] + 1
        room[address[wide]] = gap[wide] - width
        self.gap_after, self.room = after[self.demand], room[self.demand]

    def hits(self, begin: int, end: int, start: int, width: int) -> np.ndarray:
        """Whether reads ``begin .. end - 1`` are in one of the sets ``start .. start + width - 1`` (ring)."""
        if self.keys is None:
            return (self.one_set[begin:end] - start) % self.num_sets < width
        if self.gap_after is not None:
            return (start - self.gap_after[begin:end]) % self.num_sets > self.room[begin:end]
        return _in_window(self.keys, self.demand[begin:end], start, width, self.num_sets)

    def sets_of(self, pos: int) -> list[int]:
        """The sets that fetch the address of read ``pos``."""
        if self.keys is None:
            return [int(self.one_set[pos])]
        base = int(self.demand[pos]) * self.num_sets
        lo, hi = np.searchsorted(self.keys, (base, base + self.num_sets)).tolist()
        return (self.keys[lo:hi] - base).tolist()


def read_buffer_holds_all(fetch: np.ndarray | int, buffer_elems: int) -> bool:
    """Whether a USER-mode read buffer's first active window already holds every set of ``fetch`` (the
    operand's prefetch order, -1 gaps included, or the number of its valid entries), so
    :func:`user_read_buffer` never moves it and needs no demand stream."""
    valid = fetch if isinstance(fetch, int) else int(np.count_nonzero(fetch >= 0))
    per_set = math.ceil(buffer_elems / 100)
    return math.ceil(math.ceil(buffer_elems * 0.5) / per_set) >= valid // per_set + 1


def held_read_buffer(fetch_length: int, buffer_elems: int, bandwidth: int) -> ReadBufferTrace:
    """:func:`user_read_buffer` of a buffer that :func:`read_buffer_holds_all`: the first fill only."""
    active = math.ceil(buffer_elems * 0.5)
    none = np.zeros(0, dtype=np.int64)
    return ReadBufferTrace(min(math.ceil(active / bandwidth), math.ceil(fetch_length / bandwidth)),
                           math.ceil((buffer_elems - active) / bandwidth), 0, none, none)


def fetch_counts(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((length, valid entries) of the ifmap's :func:`fetch_streams` order, the same for the filter),
    without building them: the stacked folds cover every (pixel, window element) and every filter
    element once, padded to whole folds, so the valid ifmap entries are the window elements inside the
    ifmap (:func:`_inside_count`) and the valid filter entries ``K * N``."""
    length = fetch_lengths(dataflow, rows, cols, m, n, k)
    return (length[0], _inside_count(geometry, m, k)), (length[1], k * n)


def fetch_lengths(dataflow: str, rows: int, cols: int, m: int, n: int, k: int) -> tuple[int, int]:
    """(ifmap, filter) lengths of the :func:`fetch_streams` orders, -1 gaps included: the folds padded
    whole. An upper bound of the valid entries, so a buffer that :func:`read_buffer_holds_all` of this
    many holds the operand without counting its valid entries."""
    if dataflow == "os":
        return -(-m // rows) * rows * k, -(-n // cols) * cols * k
    if dataflow == "ws":
        return -(-k // rows) * rows * m, -(-n // cols) * cols * k
    return -(-m // cols) * cols * k, -(-k // rows) * rows * n


def _inside_count(geometry: ConvGeometry, m: int, k: int) -> int:
    """How many (output pixel ``< m``, window element ``< k``) pairs :meth:`ConvGeometry.ifmap_address`
    puts inside the ifmap, in O(kernel / stride) arithmetic rather than an ``m x k`` table.

    Inside-ness is a row test times a column test, so over a rectangle of pixels x window elements the
    count is (row pairs inside) x (column pairs inside) x channels. The first ``m`` pixels of an image are
    whole output rows plus one partial row, the first ``k`` window elements whole kernel rows plus a
    partial row (whole columns plus a partial column): at most 2 x 3 rectangles; images repeat."""
    g = geometry
    per_image = g.image_pixels or m
    images, rest = divmod(m, per_image) if m else (0, 0)
    span = g.kernel_w * g.channels
    full_ky, left = divmod(k, span)
    full_kx, last_c = divmod(left, g.channels)
    # window rectangles: (ky range, kx range, channels)
    windows = [(0, full_ky, 0, g.kernel_w, g.channels), (full_ky, full_ky + 1, 0, full_kx, g.channels),
               (full_ky, full_ky + 1, full_kx, full_kx + 1, last_c)]

    def pixels(count: int) -> int:
        full_oy, last_ox = divmod(count, g.out_w)
        total = 0
        for oy0, oy1, ox1 in ((0, full_oy, g.out_w), (full_oy, full_oy + 1, last_ox)):
            if oy1 <= oy0 or ox1 <= 0:
                continue
            for ky0, ky1, kx0, kx1, channels in windows:
                if ky1 > ky0 and kx1 > kx0 and channels:
                    total += (_axis_inside(oy0, oy1, g.stride_h, g.pad_h, ky0, ky1, g.in_h)
                              * _axis_inside(0, ox1, g.stride_w, g.pad_w, kx0, kx1, g.in_w) * channels)
        return total

    return images * pixels(per_image) + (pixels(rest) if rest else 0)


def _axis_inside(o0: int, o1: int, stride: int, pad: int, k0: int, k1: int, size: int) -> int:
    """Pairs (``o`` in ``[o0, o1)``, ``j`` in ``[k0, k1)``) with ``0 <= o * stride - pad + j < size``.

    Outputs whose whole kernel range lies inside count ``k1 - k0`` each; only the few at the edges
    (``kernel / stride`` of them) are counted one by one."""
    lo = max(o0, -(-(pad - k0) // stride))  # first output with o * stride - pad + k0 >= 0
    hi = min(o1, (size + pad - k1) // stride + 1)  # past the last with o * stride - pad + k1 <= size
    total = 0
    if hi > lo:
        total += (hi - lo) * (k1 - k0)
        edges = (*range(o0, lo), *range(hi, o1))
    else:
        edges = range(o0, o1)
    for o in edges:
        base = o * stride - pad
        total += max(0, min(k1, size - base) - max(k0, -base))
    return total


def _in_window(keys: np.ndarray, addr: np.ndarray, start: int, width: int, num_sets: int) -> np.ndarray:
    """Whether each address is in one of the sets ``start .. start + width - 1`` (mod ``num_sets``)."""
    if width >= num_sets:
        return np.ones(len(addr), dtype=bool)
    base = addr * num_sets
    end = start + width
    nxt = np.searchsorted(keys, base + start)
    found = keys[np.minimum(nxt, len(keys) - 1)]
    hit = (nxt < len(keys)) & (found < base + min(end, num_sets))
    if end > num_sets:  # the window wraps around to the first sets
        first = np.searchsorted(keys, base)
        found = keys[np.minimum(first, len(keys) - 1)]
        hit |= (first < len(keys)) & (found < base + (end - num_sets))
    return hit


@dataclass(frozen=True)
class UserRun:
    """What SCALE-Sim reports for one (sub-)layer in USER bandwidth mode."""

    total_cycles: int  # its "Total Cycles": the last demand line's cycle, stalls included
    stall_cycles: int
    dram_writes: int
    last_write_cycle: int  # the ofmap buffer's last DRAM write
    first_read_cycle: int  # the first DRAM read of the ifmap/filter first fills (negative)


def _read_stall(trace: ReadBufferTrace, index: int, line: int, cycle: int, done: int) -> tuple[int, int, int]:
    """(stall of this line, next miss index, prefetches done) for the misses a read buffer has on
    ``line``. SCALE-Sim's quirk, reproduced: each prefetch moves the read's service time by
    ``p = ready - (cycle + offset)``, added once when negative and twice when positive."""
    offset = 1
    while index < len(trace.miss_lines) and trace.miss_lines[index] == line:
        for _ in range(int(trace.miss_prefetches[index])):
            done += 1
            ready = -1 + done * (trace.prefetch_lines + 1)
            gap = ready - (cycle + offset)
            offset += gap + max(gap, 0)
        index += 1
    return offset - 1, index, done


def _miss_stall(ifmap: ReadBufferTrace, filt: ReadBufferTrace, if_lines: list[int], f_lines: list[int],
                state: list[int], line: int, cycle: int) -> int:
    """The read-miss stall of demand line ``line`` (issued at ``cycle``): the worse of its ifmap and filter
    misses (:func:`_read_stall`). ``if_lines``/``f_lines``: the miss lines, each list ending in -1;
    ``state`` (ifmap miss index, ifmap prefetches done, filter miss index, filter prefetches) moves on."""
    worst = 0
    if if_lines[state[0]] == line:
        worst, state[0], state[1] = _read_stall(ifmap, state[0], line, cycle, state[1])
    if f_lines[state[2]] == line:
        f_stall, state[2], state[3] = _read_stall(filt, state[2], line, cycle, state[3])
        worst = max(worst, f_stall)
    return worst


@dataclass
class _WriteBuffer:
    """SCALE-Sim's ofmap ``write_buffer`` state (mutable, local to one :func:`user_mode` run)."""

    size: int
    bandwidth: int
    free: int = 0
    drain_end: int = 0
    stored: int = 0
    lines: int = 0
    seg_start: int = 0
    next_line: int = 0
    counted: int = 0
    last_end: int = 0

    def __post_init__(self) -> None:
        self.free = self.size
        self.active = math.ceil(self.size * 0.5)
        self.chunk = math.ceil((self.size - self.active) / self.bandwidth)
        self.partial: dict[int, int] = {}

    def drain(self, cycle: int) -> int:
        """Flush the line being packed and drain one chunk from ``cycle``; returns its last cycle."""
        self.lines, self.seg_start = _close(self.lines, self.seg_start, self.stored, self.bandwidth, self.partial)
        n = min(self.chunk, self.lines - self.next_line)
        data = _drained(self.next_line, n, self.bandwidth, self.partial)
        self.next_line += n
        self.counted += data
        self.free += data
        self.last_end = max(self.last_end, cycle + n - 1)
        return cycle + n - 1

    def write(self, count: int, cycle: int) -> int:
        """Store ``count`` writes issued at ``cycle``; returns the cycle the line is done (stalls included).

        Per write SCALE-Sim stores it, then: while a drain runs, stalls to its end if the buffer is full;
        otherwise drains as soon as fewer than ``active`` slots are free. Runs of writes between those
        events are stored at once."""
        if cycle < self.drain_end:
            if self.free - count > 0:
                self.store(count)
                return cycle
        elif self.free - count >= self.active:
            self.store(count)
            return cycle
        while count > 0:
            if cycle < self.drain_end:
                step = count if self.free - count > 0 else max(1, self.free)
                self.store(step)
                count -= step
                if self.free <= 0:
                    cycle = self.drain_end
            else:
                step = max(1, self.free - self.active + 1)
                if step > count:
                    self.store(count)
                    count = 0
                else:
                    self.store(step)
                    count -= step
                    self.drain_end = self.drain(cycle)
        return cycle

    def store(self, count: int) -> None:
        """Hold ``count`` more writes (no drain, no stall)."""
        self.free -= count
        self.stored += count

    def finish(self, cycle: int) -> None:
        """SCALE-Sim's ``empty_all_buffers``: drain everything, chunk after chunk, from ``cycle``."""
        self.lines, self.seg_start = _close(self.lines, self.seg_start, self.stored, self.bandwidth, self.partial)
        while self.next_line < self.lines:
            cycle = self.drain(cycle) + 1


def user_mode(writes_per_cycle: np.ndarray, ifmap: ReadBufferTrace, filt: ReadBufferTrace,
              ofmap_elems: int, ofmap_bandwidth: int) -> UserRun:
    """Replay SCALE-Sim's USER-mode memory system over one (sub-)layer's demand lines: each line waits
    for the worst of its ifmap, filter and ofmap stalls, and every later line shifts by them
    (:func:`_user_steps` on the running write count of ``writes_per_cycle``)."""
    total_writes = int(writes_per_cycle.sum())
    if total_writes <= ofmap_elems - math.ceil(ofmap_elems * 0.5):  # never drains during compute
        return _quiet_ofmap_run(len(writes_per_cycle), total_writes, ifmap, filt, ofmap_elems, ofmap_bandwidth)
    return _user_steps(*_array_writes(writes_per_cycle), ifmap, filt, ofmap_elems, ofmap_bandwidth)


def _array_writes(writes_per_cycle: np.ndarray
                  ) -> tuple[Callable[[int], int], Callable[[int], int], int, int, int]:
    """(writes through line ``c``, line of the ``r``-th write, all writes, lines, most writes in a line) of
    a per-line writes array: list lookups and bisects on its running count."""
    cum = np.cumsum(writes_per_cycle).tolist()
    lines, total = len(cum), cum[-1] if cum else 0
    return (lambda line: cum[line] if line < lines else total), (lambda r: bisect.bisect_left(cum, r)), \
        total, lines, int(writes_per_cycle.max()) if lines else 0


def _user_steps(through: Callable[[int], int], line_of: Callable[[int], int], total_writes: int, lines: int,
                peak: int, ifmap: ReadBufferTrace, filt: ReadBufferTrace, ofmap_elems: int, ofmap_bandwidth: int,
                period: tuple[int, int] | None = None) -> UserRun:
    """:func:`user_mode` given ``through(c)`` (writes issued in lines ``0 .. c``), ``line_of(r)`` (line of
    the ``r``-th write, ``1 <= r <= total_writes``) and ``peak`` (most writes in one line) rather than the
    per-line writes.

    Only lines where something can happen are stepped one by one: a read-buffer miss, or a write that
    fills the ofmap buffer past its drain threshold (or, during a drain, fills it up). The lines in
    between cannot stall, so their writes are stored in one step: the next stepped line is the line of
    the write that crosses the threshold (``line_of``), or the next miss line.

    ``period`` = (lines ``p``, end ``e``): the writes of lines ``c + p`` equal those of ``c`` for every
    ``c + p < e`` (the column folds before the last). After the last miss, once a stepped line meets the
    buffer in the state (relative to its line, stall and writes) a line a multiple of ``p`` earlier met,
    everything in between repeats: whole repeats are added at once (:class:`_Recurrence`), as long as
    they and the buffer's look-ahead stay before ``e``."""
    buffer = _WriteBuffer(ofmap_elems, ofmap_bandwidth)
    recurrence = _Recurrence(period, total_writes, ofmap_elems) if period is not None else None
    if_lines, f_lines = ifmap.miss_lines.tolist() + [-1], filt.miss_lines.tolist() + [-1]
    misses = sorted(set(if_lines[:-1]) | set(f_lines[:-1])) + [lines]
    stall, pos, next_miss, base = 0, 0, 0, 0  # base: writes in lines before pos
    state = [0, 0, 0, 0]  # ifmap miss index, ifmap prefetches done, filter miss index, filter prefetches
    while pos < lines:
        while misses[next_miss] < pos:
            next_miss += 1
        if recurrence is not None and next_miss == len(misses) - 1:
            pos, base, stall = recurrence.skip(pos, base, stall, buffer)
        draining_from = buffer.drain_end - stall  # first line at or after the running drain's end
        # the first write the buffer cannot take quietly: it fills up (during a drain) or crosses the half
        crossing = buffer.free + base if pos < draining_from else buffer.free - buffer.active + base + 1
        crossing = max(crossing, base + 1)
        if crossing > total_writes:
            end = lines
        elif crossing - base > peak * (misses[next_miss] - pos):  # at most `peak` a line: not before the miss
            end = misses[next_miss]
        else:
            end = line_of(crossing)
        if draining_from <= min(end, misses[next_miss] - 1) and pos < draining_from:  # the drain ends first
            written = through(draining_from - 1)
            buffer.store(written - base)
            pos, base = draining_from, written
            continue
        end = min(end, misses[next_miss])
        if end > pos:  # store the quiet lines, then step the line that stopped them
            written = through(end - 1)
            buffer.store(written - base)
            pos, base = end, written
            if pos == lines:
                break
        written = through(pos)
        count, cycle = written - base, pos + stall
        worst = _miss_stall(ifmap, filt, if_lines, f_lines, state, pos, cycle)
        done = buffer.write(count, cycle) if count else cycle
        stall += max(worst, done - cycle)
        pos, base = pos + 1, written
    total = lines - 1 + stall
    buffer.finish(total)
    return UserRun(total, stall, buffer.counted, buffer.last_end,
                   -max(ifmap.first_fill_lines, filt.first_fill_lines))


class _Recurrence:
    """The "skip whole periods once a state recurs" step of :func:`_user_steps` (local to one run): the
    stepped lines' states after the last miss, by (line mod period, buffer state relative to the line,
    stall and writes); a recurring state means the run between the two repeats as long as the writes
    do, so whole repeats are added to the line, writes, stall and buffer at once."""

    def __init__(self, period: tuple[int, int], total_writes: int, ofmap_elems: int) -> None:
        self.lines, self.end = period
        self.seen: dict[tuple, tuple[int, ...]] = {}
        self.elems = ofmap_elems
        self.done = self.lines <= 0

    def skip(self, pos: int, base: int, stall: int, buffer: _WriteBuffer) -> tuple[int, int, int]:
        """(line, writes before it, stall) after skipping the repeats that fit; the buffer is moved on."""
        if self.done or pos >= self.end:
            return pos, base, stall
        b, cycle = buffer, pos + stall
        key = (pos % self.lines, b.free, b.drain_end - cycle, b.last_end - cycle, b.stored - base,
               b.seg_start - base, b.lines - b.next_line,
               *sorted((line - b.next_line, e) for line, e in b.partial.items() if line >= b.next_line))
        now = (pos, base, stall, b.lines, b.next_line, b.counted)
        then = self.seen.get(key)
        if then is None:
            self.seen[key] = now
            return pos, base, stall
        d = [x - y for x, y in zip(now, then)]  # one repeat: lines, writes, stall, trace lines, drained, counted
        # the buffer looks at most its size in writes ahead (>= writes of one repeat each repeat ahead)
        reach = d[0] * (self.elems // max(d[1], 1) + 2)
        repeats = (self.end - reach - pos) // d[0]
        if repeats <= 0:
            return pos, base, stall
        self.done = True
        shift = repeats * (d[0] + d[2])
        b.drain_end += shift
        b.last_end += shift
        b.stored += repeats * d[1]
        b.seg_start += repeats * d[1]
        b.lines += repeats * d[3]
        b.partial = {line + repeats * d[4]: e for line, e in b.partial.items() if line >= b.next_line}
        b.next_line += repeats * d[4]
        b.counted += repeats * d[5]
        return pos + repeats * d[0], base + repeats * d[1], stall + repeats * d[2]


def _write_period(dataflow: str, rows: int, cols: int, sr: int, sc: int, fold: int) -> tuple[int, int]:
    """(``p``, ``e``): the per-line ofmap writes (:func:`ofmap_writes_per_cycle`) of line ``c + p`` equal
    those of ``c`` whenever ``c + p < e``. Folds differ only in the last column fold (fewer columns) and,
    in os, the last row fold (fewer rows); folds run column folds outer, row folds inner."""
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    same_rows = dataflow != "os" or sr % rows == 0
    same_cols = sc % cols == 0
    if same_rows:  # every fold of a column fold alike
        return fold, row_folds * col_folds * fold if same_cols else (col_folds - 1) * row_folds * fold
    if col_folds == 1:
        return fold, (row_folds - 1) * fold
    return row_folds * fold, row_folds * col_folds * fold if same_cols else (col_folds - 1) * row_folds * fold


def _quiet_ofmap_run(lines: int, writes: int, ifmap: ReadBufferTrace, filt: ReadBufferTrace, ofmap_elems: int,
                     ofmap_bandwidth: int) -> UserRun:
    """:func:`user_mode` when all ``writes`` of the ``lines`` demand lines fit the ofmap buffer's drain half:
    it then never drains or stalls during compute, so only the read misses' lines are stepped, and the
    final drain (:meth:`_WriteBuffer.finish`) is a closed form: ``ceil(writes / bw)`` lines, one a cycle
    from the last line's cycle, and only the last one partly empty, so exactly ``writes`` are counted."""
    stall = 0
    state = [0, 0, 0, 0]  # ifmap miss index, ifmap prefetches done, filter miss index, filter prefetches
    if len(ifmap.miss_lines) or len(filt.miss_lines):
        if_lines, f_lines = ifmap.miss_lines.tolist() + [-1], filt.miss_lines.tolist() + [-1]
        for line in sorted(set(if_lines[:-1]) | set(f_lines[:-1])):
            stall += max(_miss_stall(ifmap, filt, if_lines, f_lines, state, line, line + stall), 0)
    total = lines - 1 + stall
    last_write = total + -(-writes // ofmap_bandwidth) - 1 if writes > 0 else 0
    return UserRun(total, stall, writes, last_write, -max(ifmap.first_fill_lines, filt.first_fill_lines))


def user_run(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int, ifmap: ReadBufferTrace,
             filt: ReadBufferTrace, ofmap_elems: int, ofmap_bandwidth: int) -> UserRun:
    """:func:`user_mode` of one (sub-)layer given its shape (as :func:`ofmap_writes_per_cycle`). When the
    writes fit the ofmap buffer's drain half, the run depends on the number of lines and writes alone,
    both closed forms: ``P + B + cols - 1`` lines per fold; ``Sr * Sc`` writes in os, ``T`` per mapped
    column and row fold in ws/is. Else the lines are stepped on the closed-form running write count
    (:func:`_fold_writes`: no per-cycle array), unless the misses and drains are so many per line that
    bisecting the per-cycle array's running count is cheaper than the closed forms' extra cost per step."""
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    prefix, body = (t - 1, rows) if dataflow == "os" else (2 * rows - 1, t)
    writes = sr * sc if dataflow == "os" else row_folds * t * sc
    if writes <= ofmap_elems - math.ceil(ofmap_elems * 0.5):
        return _quiet_ofmap_run(row_folds * col_folds * (prefix + body + cols - 1), writes, ifmap, filt,
                                ofmap_elems, ofmap_bandwidth)
    lines = row_folds * col_folds * (prefix + body + cols - 1)
    steps = len(ifmap.miss_lines) + len(filt.miss_lines) + writes // (ofmap_elems - math.ceil(ofmap_elems * 0.5))
    period = _write_period(dataflow, rows, cols, sr, sc, prefix + body + cols - 1)
    if steps > 5 + lines // 200:  # measured: a step costs ~2 us more on the closed forms than on the list
        writes_of = _array_writes(ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t))
    else:
        writes_of = _fold_writes(dataflow, rows, cols, sr, sc, t)
    return _user_steps(*writes_of, ifmap, filt, ofmap_elems, ofmap_bandwidth, period)
