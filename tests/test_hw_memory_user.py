"""The USER-bandwidth replay's shortcuts (effnn.hw.memory) against slow, direct references on many random
small layers: the closed-form fetch counts against the (pixel, window) address table, the quiet-ofmap run
against the USER stall loop stepped line by line, the read buffer against the read-by-read window of
docs/hardware.md quirk 14. Every SCALE-Sim reference row stays exact in tests/test_hw_scalesim.py."""

from __future__ import annotations

import math
import random

import numpy as np

from effnn.hw.memory import (
    ConvGeometry,
    ReadBufferTrace,
    _read_stall,
    _WriteBuffer,
    fetch_counts,
    fetch_streams,
    ofmap_writes_per_cycle,
    user_mode,
    user_run,
)


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


def _stepped_user_mode(writes: list[int], ifmap: ReadBufferTrace, filt: ReadBufferTrace, size: int,
                       bandwidth: int) -> tuple[int, int, int, int]:
    """The USER stall loop of quirk 15 with every demand line stepped: (total, stall, DRAM writes, last
    write cycle)."""
    buffer = _WriteBuffer(size, bandwidth)
    stall, state = 0, [0, 0, 0, 0]
    if_lines, f_lines = ifmap.miss_lines.tolist() + [-1], filt.miss_lines.tolist() + [-1]
    for line, count in enumerate(writes):
        cycle, worst = line + stall, 0
        if if_lines[state[0]] == line:
            worst, state[0], state[1] = _read_stall(ifmap, state[0], line, cycle, state[1])
        if f_lines[state[2]] == line:
            f_stall, state[2], state[3] = _read_stall(filt, state[2], line, cycle, state[3])
            worst = max(worst, f_stall)
        done = buffer.write(count, cycle) if count else cycle
        stall += max(worst, done - cycle)
    buffer.finish(len(writes) - 1 + stall)
    return len(writes) - 1 + stall, stall, buffer.counted, buffer.last_end


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
        want = _stepped_user_mode(writes.tolist(), *traces, size, bandwidth)
        first = -max(traces[0].first_fill_lines, traces[1].first_fill_lines)
        for run in (user_run(dataflow, rows, cols, sr, sc, t, *traces, size, bandwidth),
                    user_mode(writes, *traces, size, bandwidth)):
            assert (run.total_cycles, run.stall_cycles, run.dram_writes, run.last_write_cycle) == want
            assert run.first_read_cycle == first
    assert 100 < quiet < 300  # both paths exercised
