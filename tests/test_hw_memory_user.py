"""The USER-bandwidth replay's shortcuts (effnn.hw.memory) against slow, direct references on many random
small layers: the closed-form fetch counts against the (pixel, window) address table, the quiet-ofmap run
against the USER stall loop stepped line by line, the read buffer against the read-by-read window of
docs/hardware.md quirk 14. Every SCALE-Sim reference row stays exact in tests/test_hw_scalesim.py."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from effnn.hw import memory
from effnn.hw.memory import (
    ConvGeometry,
    ReadBufferTrace,
    demand_streams,
    fetch_counts,
    fetch_streams,
    ofmap_writes_per_cycle,
    user_mode,
    user_read_buffer,
    user_run,
)
from tests.hw_references import stepped_user_mode


def _random_geometry(rng: random.Random) -> ConvGeometry:
    """A small conv geometry with any padding, strides, kernel width and (sometimes) a batch."""
    return ConvGeometry(in_h=rng.randint(1, 9), in_w=rng.randint(1, 9), channels=rng.randint(1, 4),
                        kernel_w=rng.randint(1, 5), stride_h=rng.randint(1, 4), stride_w=rng.randint(1, 4),
                        out_w=rng.randint(1, 6), pad_h=rng.randint(0, 3), pad_w=rng.randint(0, 3),
                        image_pixels=rng.choice([0, 0, rng.randint(1, 20)]))


def test_fetch_counts_count_the_address_table() -> None:
    """The valid ifmap entries are the in-bounds (pixel, window element) pairs of the address table, for
    any m and k (partial output rows, partial kernel rows and columns, several images)."""
    rng = random.Random(0)
    for _ in range(3000):
        geo = _random_geometry(rng)
        m, k, n = rng.randint(1, 40), rng.randint(1, 60), rng.randint(1, 9)
        table = geo.ifmap_address(np.arange(m)[:, None], np.arange(k)[None, :])
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 7), rng.randint(1, 7)
        (_, inside), (_, filters) = fetch_counts(dataflow, rows, cols, m, n, k, geo)
        assert inside == int(np.count_nonzero(table >= 0)), (geo, m, k)
        assert filters == k * n


def test_fetch_counts_match_the_fetch_orders() -> None:
    rng = random.Random(1)
    for _ in range(300):
        geo = _random_geometry(rng)
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 7), rng.randint(1, 7)
        m, n, k = rng.randint(1, 30), rng.randint(1, 12), rng.randint(1, 30)
        fetch = fetch_streams(dataflow, rows, cols, m, n, k, geo)
        assert fetch_counts(dataflow, rows, cols, m, n, k, geo) == tuple(
            (len(f), int(np.count_nonzero(f >= 0))) for f in fetch)
        for want in ((True, False), (False, True)):  # one operand only: the same order, the other skipped
            one = fetch_streams(dataflow, rows, cols, m, n, k, geo, want)
            for j in (0, 1):
                assert np.array_equal(one[j], fetch[j]) if want[j] else one[j] is None


def _random_trace(rng: np.random.Generator, lines: int) -> ReadBufferTrace:
    """Read misses on random lines (some with several per line), each moving the window 1-3 times."""
    miss = np.sort(rng.integers(0, lines, size=int(rng.integers(0, 12))))
    counts = rng.integers(1, 4, size=len(miss))
    return ReadBufferTrace(int(rng.integers(1, 30)), int(rng.integers(1, 20)), int(counts.sum()), miss, counts)


def test_user_run_equals_the_line_by_line_stall_loop() -> None:
    """With ofmap buffers around the drain threshold (quiet and draining runs), with and without read
    misses: :func:`user_run` (no per-cycle writes when quiet) and :func:`user_mode` both equal stepping
    every line."""
    rng = np.random.default_rng(0)
    quiet = 0
    for _ in range(400):
        rows, cols = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        dataflow = str(rng.choice(["os", "ws", "is"]))
        sr, sc, t = (int(v) for v in rng.integers(1, 30, size=3))
        writes = ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t)
        traces = [_random_trace(rng, len(writes)) for _ in range(2)]
        total = int(writes.sum())
        size = int(rng.integers(max(4, total // 3), 3 * total + 8))  # drain half below or above the writes
        bandwidth = int(rng.integers(1, 9))
        quiet += total <= size - math.ceil(size / 2)
        want = stepped_user_mode(writes.tolist(), *traces, size, bandwidth)
        first = -max(traces[0].first_fill_lines, traces[1].first_fill_lines)
        for run in (user_run(dataflow, rows, cols, sr, sc, t, *traces, size, bandwidth),
                    user_mode(writes, *traces, size, bandwidth)):
            assert (run.total_cycles, run.stall_cycles, run.dram_writes, run.last_write_cycle) == want
            assert run.first_read_cycle == first
    assert 100 < quiet < 300  # both paths exercised


def test_user_run_skipping_repeated_drains_equals_the_line_by_line_stall_loop() -> None:
    """Many folds, a small ofmap buffer and read misses only early (or none): the drains settle into a
    pattern that repeats per fold or column fold, which :func:`user_run` adds up whole once a buffer state
    recurs; totals, stalls, DRAM writes and the last write equal stepping every line."""
    rng = np.random.default_rng(1)
    skipped = 0
    for _ in range(300):
        rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        dataflow = str(rng.choice(["os", "ws", "is"]))
        sr, sc, t = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
        writes = ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t)
        early = max(1, len(writes) // 8)
        traces = [_random_trace(rng, early) if rng.random() < 0.5 else
                  ReadBufferTrace(int(rng.integers(1, 30)), 5, 0, np.zeros(0, dtype=np.int64),
                                  np.zeros(0, dtype=np.int64)) for _ in range(2)]
        total = int(writes.sum())
        size = int(rng.integers(4, max(5, total // 4)))
        bandwidth = int(rng.integers(1, 5))
        want = stepped_user_mode(writes.tolist(), *traces, size, bandwidth)
        run = user_run(dataflow, rows, cols, sr, sc, t, *traces, size, bandwidth)
        assert (run.total_cycles, run.stall_cycles, run.dram_writes, run.last_write_cycle) == want
        skipped += run.total_cycles > 0 and _skips(dataflow, rows, cols, sr, sc, t, traces, size, bandwidth)
    assert skipped > 60  # the skip itself exercised (91 of 300), not only the stepping


def _skips(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int, traces: list[ReadBufferTrace],
           size: int, bandwidth: int) -> bool:
    """Whether :func:`user_run` skipped repeats (its recurrence moved a line on)."""
    moved = []
    original = memory._Recurrence.skip

    def spy(self: memory._Recurrence, pos: int, *rest: object) -> tuple[int, int, int]:
        out = original(self, pos, *rest)
        moved.append(out[0] != pos)
        return out

    memory._Recurrence.skip = spy  # type: ignore[method-assign]
    try:
        user_run(dataflow, rows, cols, sr, sc, t, *traces, size, bandwidth)
    finally:
        memory._Recurrence.skip = original  # type: ignore[method-assign]
    return any(moved)


def _read_by_read(fetch: list[int], demand: list[int], size: int) -> tuple[list[int], list[int]]:
    """Quirk 14 read by read: (index of each read that moved the window, moves it made). The valid
    fetches are cut into sets of ``ceil(size / 100)``; the window is ``ceil(active / set)`` sets of a ring
    and moves ``ceil(prefetch / set)`` sets at a time until the read's address is in it."""
    per_set, active = -(-size // 100), -(-size // 2)
    valid = [a for a in fetch if a >= 0]
    num_sets = len(valid) // per_set + 1
    holding: dict[int, set[int]] = {}  # address -> the sets that hold it
    for position, address in enumerate(valid):
        holding.setdefault(address, set()).add(position // per_set)
    width = min(-(-active // per_set), num_sets)
    step = min(-(-(size - active) // per_set), num_sets - width)
    start, missed, moves = 0, [], []
    for index, address in enumerate(demand):
        count = 0
        while not any((held - start) % num_sets < width for held in holding[address]):  # window: start + 0..width-1
            start, count = (start + step) % num_sets, count + 1
        if count:
            missed.append(index)
            moves.append(count)
    return missed, moves


def _check_read_buffer(fetch: np.ndarray, demand: np.ndarray, size: int, bandwidth: int) -> None:
    lines = np.arange(len(demand)) * 3 + 1  # any non-decreasing demand lines
    trace = user_read_buffer(fetch, demand, lines, size, bandwidth)
    missed, moves = _read_by_read(fetch.tolist(), demand.tolist(), size)
    assert trace.miss_lines.tolist() == (np.asarray(missed, dtype=np.int64) * 3 + 1).tolist()
    assert trace.miss_prefetches.tolist() == moves and trace.prefetches == sum(moves)
    active = -(-size // 2)
    assert trace.first_fill_lines == min(-(-active // bandwidth), -(-len(fetch) // bandwidth))
    assert trace.prefetch_lines == -(-(size - active) // bandwidth)


def test_user_read_buffer_equals_the_read_by_read_window_on_random_streams() -> None:
    """Random fetch orders with gaps, once-fetched addresses (a read's one set: arithmetic) and repeated
    ones (the sorted (address, set) pairs), read in random and in swept orders, many buffer sizes."""
    rng = np.random.default_rng(3)
    for case in range(240):
        pool = int(rng.integers(5, 400))
        if case % 2:  # each address once
            fetch = rng.permutation(pool)
        else:
            fetch = rng.integers(0, pool, size=int(rng.integers(5, 600)))
        fetch = np.where(rng.random(len(fetch)) < 0.1, -1, fetch)
        present = np.unique(fetch[fetch >= 0])
        if not len(present):
            continue
        if case % 3 == 0:  # a sweep through the fetch order, repeated (a streamed operand per column fold)
            demand = np.tile(fetch[fetch >= 0], int(rng.integers(1, 4)))
        else:
            demand = rng.choice(present, size=int(rng.integers(0, 800)))
        size = int(rng.choice([2, 3, 50, 100, 101, 250, 640, 1000, 3000]))
        _check_read_buffer(fetch, demand, size, int(rng.integers(1, 9)))
        if case % 5 == 0:  # sparse addresses (ranked before the address tables): the same trace
            _check_read_buffer(np.where(fetch >= 0, fetch * 100_003 + 7, -1), demand * 100_003 + 7, size, 2)


def test_user_read_buffer_equals_the_read_by_read_window_on_layers() -> None:
    """SCALE-Sim's own orders: the fetch and demand streams of random small layers, both operands."""
    rng = random.Random(4)
    for _ in range(120):
        geo = ConvGeometry(in_h=rng.randint(3, 8), in_w=rng.randint(3, 8), channels=rng.randint(1, 4),
                           kernel_w=rng.randint(1, 3), stride_h=rng.randint(1, 2), stride_w=rng.randint(1, 2),
                           out_w=rng.randint(1, 5), pad_h=rng.randint(0, 1), pad_w=rng.randint(0, 1))
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 8), rng.randint(1, 8)
        m, n, k = rng.randint(1, 30), rng.randint(1, 16), geo.kernel_w * geo.channels * rng.randint(1, 3)
        fetch = fetch_streams(dataflow, rows, cols, m, n, k, geo)
        demand = demand_streams(dataflow, rows, cols, m, n, k, geo)
        for j in (0, 1):
            size = rng.choice([20, 64, 200, 500])
            _check_read_buffer(fetch[j], demand[j][0], size, rng.randint(1, 4))


def test_user_read_buffer_rejects_an_address_it_never_fetches() -> None:
    for fetch in (np.array([0, 1, 2, 3, 4] * 40), np.arange(200)):  # repeated addresses, and once each
        for absent in (999, 10**9):  # a dense and a sparse address range
            with pytest.raises(ValueError, match=f"address {absent} is not in the fetch order"):
                user_read_buffer(fetch, np.array([0, absent]), np.array([0, 1]), 20, 1)
