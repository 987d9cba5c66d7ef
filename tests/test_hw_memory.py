"""The replay's vectorised builders (effnn.hw.memory) against element-by-element references written from
the definitions in docs/hardware.md: SCALE-Sim's demand order per fold and line, its prefetch order, and
its USER-mode ofmap buffer stepped one demand line at a time."""

from __future__ import annotations

import random

import numpy as np
import pytest

from effnn.hw.memory import (
    ConvGeometry,
    ReadBufferTrace,
    _antidiagonal,
    _skew_order,
    chunked_misses,
    demand_streams,
    fetch_counts,
    fetch_streams,
    held_read_buffer,
    ofmap_writes_per_cycle,
    operand_passes,
    operand_streams,
    read_buffer_holds_all,
    user_mode,
    user_read_buffer,
)
from tests.hw_references import ifmap_address_by_definition as conv_address
from tests.hw_references import read_by_read_misses, stepped_user_mode


def _brute_demand(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geo: ConvGeometry
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(address, line) per operand, fold by fold (columns outer), line by line, lanes ascending."""
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]
    length = t + rows + cols - 2 if dataflow == "os" else t + 2 * rows + cols - 2
    ifmap: list[tuple[int, int]] = []
    filt: list[tuple[int, int]] = []
    fold = 0
    for c0 in range(0, sc, cols):
        cu = min(cols, sc - c0)
        for r0 in range(0, sr, rows):
            ru, base = min(rows, sr - r0), fold * length
            if dataflow == "os":
                for j in range(length):
                    ifmap += [(conv_address(geo, r0 + r, j - r), base + j) for r in range(ru) if 0 <= j - r < t]
                    filt += [((j - c) * n + c0 + c, base + j) for c in range(cu) if 0 <= j - c < t]
            else:
                stationary = [((r0 + row), c0 + col, base + rows - 1 - row)
                              for row in range(ru - 1, -1, -1) for col in range(cu)]
                for j in range(length - rows):
                    for r in range(ru):
                        if 0 <= j - r < t:
                            if dataflow == "ws":
                                ifmap.append((conv_address(geo, j - r, r0 + r), base + rows + j))
                            else:
                                filt.append(((r0 + r) * n + j - r, base + rows + j))
                if dataflow == "ws":
                    filt += [(kk * n + col, line) for kk, col, line in stationary]
                else:
                    ifmap += [(conv_address(geo, col, kk), line) for kk, col, line in stationary]
            fold += 1
    key = lambda pair: pair[1]  # noqa: E731 -- a stable sort by line keeps the lane order within a line
    return sorted([p for p in ifmap if p[0] >= 0], key=key), sorted(filt, key=key)


@pytest.mark.parametrize("seed", range(6))
def test_demand_streams_match_the_element_by_element_order(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        rows, cols, dataflow = rng.randint(1, 6), rng.randint(1, 6), rng.choice(["os", "ws", "is"])
        kernel, stride, pad = rng.choice([1, 3]), rng.choice([1, 2]), rng.choice([0, 1])
        size, channels, filters, batch = rng.randint(kernel, 7), rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 2)
        out = (size + 2 * pad - kernel) // stride + 1
        geo = ConvGeometry(size, size, channels, kernel, stride, stride, out, pad, pad,
                           out * out if batch > 1 else 0)
        m, n, k = batch * out * out, filters, kernel * kernel * channels
        (ia, il), (fa, fl) = demand_streams(dataflow, rows, cols, m, n, k, geo)
        ifmap, filt = _brute_demand(dataflow, rows, cols, m, n, k, geo)
        assert list(zip(ia.tolist(), il.tolist())) == ifmap
        assert list(zip(fa.tolist(), fl.tolist())) == filt


def test_diagonal_orders_match_a_sort() -> None:
    for height in range(1, 12):
        for width in range(1, 12):
            cells = [(i, j) for i in range(height) for j in range(width)]
            skew = sorted(cells, key=lambda c: (c[0] + c[1], c[1]))  # (time, lane): lanes ascending
            anti = sorted(cells, key=lambda c: (c[0] + c[1], -c[0]))  # (row, col): bottom row first
            assert list(zip(*(a.tolist() for a in _skew_order(height, width)))) == skew
            assert list(zip(*(a.tolist() for a in _antidiagonal(height, width)))) == anti


def test_user_mode_skipping_quiet_lines_equals_stepping_every_line() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows, cols = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        dataflow = str(rng.choice(["os", "ws", "is"]))
        sr, sc, t = (int(v) for v in rng.integers(1, 40, size=3))
        writes = ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t)
        traces = []
        for _ in range(2):
            lines = np.unique(rng.integers(0, len(writes), size=int(rng.integers(0, 12))))
            counts = rng.integers(1, 3, size=len(lines))
            traces.append(ReadBufferTrace(3, int(rng.integers(1, 20)), int(counts.sum()), lines, counts))
        size, bandwidth = int(rng.integers(100, 400)), int(rng.integers(1, 9))
        run = user_mode(writes, traces[0], traces[1], size, bandwidth)
        assert (run.stall_cycles, run.dram_writes, run.last_write_cycle) == stepped_user_mode(
            writes, traces[0], traces[1], size, bandwidth)[1:]


def _brute_writes(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int) -> list[int]:
    """Valid ofmap writes per cycle, fold by fold (columns outer): ``P`` empty lines, then body row ``b``
    of output column ``c`` written at line ``P + b + c`` when the row maps an output (os: the fold's rows
    flipped, the unmapped ones first)."""
    prefix, body = (t - 1, rows) if dataflow == "os" else (2 * rows - 1, t)
    out: list[int] = []
    for c0 in range(0, sc, cols):
        for r0 in range(0, sr, rows):
            first = rows - min(rows, sr - r0) if dataflow == "os" else 0
            line = [0] * (prefix + body + cols - 1)
            for b in range(first, body):
                for c in range(min(cols, sc - c0)):
                    line[prefix + b + c] += 1
            out += line
    return out


def test_ofmap_writes_per_cycle_match_the_fold_by_fold_definition() -> None:
    rng = random.Random(0)
    for _ in range(300):
        dataflow = rng.choice(["os", "ws", "is"])
        rows, cols = rng.randint(1, 9), rng.randint(1, 9)
        sr, sc, t = rng.randint(1, 30), rng.randint(1, 30), rng.randint(1, 20)
        got = ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t)
        assert got.tolist() == _brute_writes(dataflow, rows, cols, sr, sc, t), (dataflow, rows, cols, sr, sc, t)


@pytest.mark.parametrize("high", [50, 70_000, 1 << 20, 1 << 40])  # one or two 16-bit sort passes, int64
def test_chunked_misses_equals_the_read_by_read_reset(high: int) -> None:
    rng = np.random.default_rng(high)
    for _ in range(60):
        pool = rng.integers(0, high, size=int(rng.integers(1, 300)))
        one_pass, repeats = rng.choice(pool, size=int(rng.integers(1, 400))), int(rng.integers(1, 40))
        capacity = int(rng.integers(1, 120))
        expected = read_by_read_misses(np.tile(one_pass, repeats).tolist(), capacity)
        assert chunked_misses(np.tile(one_pass, repeats), capacity) == expected
        assert chunked_misses(one_pass, capacity, repeats) == expected  # periodic: pieces counted per period


def _brute_read_buffer(fetch: list[int], demand: list[int], size: int) -> tuple[int, int]:
    """(window moves, reads that moved it) of quirk 14 read by read: the valid fetches cut into sets of
    ``ceil(size / 100)``, a window of ``ceil(active / set)`` sets, moved ``ceil(prefetch / set)`` at a miss."""
    per_set, active = -(-size // 100), -(-size // 2)
    valid = [a for a in fetch if a >= 0]
    num_sets = len(valid) // per_set + 1
    sets = [set(valid[i * per_set:(i + 1) * per_set]) for i in range(num_sets)]
    width = min(-(-active // per_set), num_sets)
    step = min(-(-(size - active) // per_set), num_sets - width)
    start = moves = missed = 0
    for address in demand:
        moved = False
        while not any(address in sets[(start + i) % num_sets] for i in range(width)):
            start, moves, moved = (start + step) % num_sets, moves + 1, True
        missed += moved
    return moves, missed


def test_user_read_buffer_matches_the_read_by_read_window() -> None:
    geo = ConvGeometry(in_h=10, in_w=10, channels=8, kernel_w=3, stride_h=1, stride_w=1, out_w=8)
    fetch = fetch_streams("ws", 8, 8, 64, 16, 72, geo)
    demand = demand_streams("ws", 8, 8, 64, 16, 72, geo)
    held = 0
    for j in (0, 1):
        for size in (256, 1024, 4096, 16384, 65536):
            trace = user_read_buffer(fetch[j], *demand[j], size, 4)
            assert (trace.prefetches, len(trace.miss_lines)) == _brute_read_buffer(
                fetch[j].tolist(), demand[j][0].tolist(), size), (j, size)
            if read_buffer_holds_all(fetch[j], size):  # then the demand is not even needed
                held += 1
                none = np.zeros(0, dtype=np.int64)
                assert trace.prefetches == 0 and user_read_buffer(fetch[j], none, none, size, 4).prefetches == 0
    assert held == 5  # 4,608 ifmap fetches fit 50 sets from 16 k elements on, 1,152 filter ones from 4 k;
    # below that the window moves (ifmap: 107, 26, 6 times at 256, 1024, 4096 elements; filter: 80, 6)


def test_operand_passes_repeated_are_the_operand_streams() -> None:
    rng = random.Random(1)
    for _ in range(60):
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 6), rng.randint(1, 6)
        geo = ConvGeometry(in_h=rng.randint(3, 7), in_w=rng.randint(3, 7), channels=rng.randint(1, 3),
                           kernel_w=2, stride_h=1, stride_w=rng.randint(1, 2), out_w=3)
        m, n, k = rng.randint(1, 9), rng.randint(1, 20), 4 * geo.channels
        streams = operand_streams(dataflow, rows, cols, m, n, k, geo)
        passes = operand_passes(dataflow, rows, cols, m, n, k, geo)
        for stream, (one_pass, repeats) in zip(streams, passes):
            assert np.array_equal(np.tile(one_pass, repeats), stream)
        assert max(p[1] for p in passes) == -(-(m if dataflow == "is" else n) // cols)


def test_fetch_counts_are_the_fetch_orders_lengths_and_valid_entries() -> None:
    rng = random.Random(2)
    for _ in range(80):
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 7), rng.randint(1, 7)
        geo = ConvGeometry(in_h=rng.randint(3, 7), in_w=rng.randint(3, 7), channels=rng.randint(1, 3),
                           kernel_w=2, stride_h=rng.randint(1, 2), stride_w=rng.randint(1, 2), out_w=3,
                           pad_h=rng.randint(0, 1), pad_w=rng.randint(0, 1))
        m, n, k = rng.randint(1, 9), rng.randint(1, 20), 4 * geo.channels
        counts = fetch_counts(dataflow, rows, cols, m, n, k, geo)
        fetch = fetch_streams(dataflow, rows, cols, m, n, k, geo)
        assert counts == tuple((len(f), int(np.count_nonzero(f >= 0))) for f in fetch)
        for (length, valid), order in zip(counts, fetch):
            size = int(rng.choice([64, 1024, 65536]))
            if read_buffer_holds_all(valid, size):
                got = held_read_buffer(length, size, 3)
                want = user_read_buffer(order, order, np.arange(len(order)), size, 3)
                assert (got.first_fill_lines, got.prefetch_lines, got.prefetches) == (
                    want.first_fill_lines, want.prefetch_lines, want.prefetches)
