"""CALC-mode replay shortcuts (effnn.hw.memory) against the plain replay and read-by-read references.

The shortcuts must give the same numbers as building every demand stream and replaying SCALE-Sim's
read buffer read by read, and as stepping its ofmap buffer write by write: on many random small layers
(convs with every kernel/stride/padding/batch mix, GEMMs) and on every SCALE-Sim reference run in the
repo (there against the previous, array-based implementations kept here as references)."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

import effnn.hw.systolic as systolic
from effnn.hw import SystolicArray, read_scalesim_config, read_scalesim_topology
from effnn.hw.memory import (
    ConvGeometry,
    DrainResult,
    _axis_pairs,
    _box_count,
    _box_inverse,
    _drain,
    _fold_writes,
    _segment_misses,
    calc_dram_reads,
    chunked_misses,
    drain_folds,
    drain_ofmap,
    ofmap_writes_per_cycle,
    operand_passes,
    operand_streams,
    permutation_segments,
)
from effnn.hw.scalesim import SCALESIM_REPLAY_LIMIT, parse_scalesim_topology, reference_array, reference_layers
from tests.hw_references import ifmap_address_by_definition, read_by_read_misses

DATA = Path(__file__).with_name("data") / "scalesim"
EXTRA = Path(__file__).with_name("test_hw_scalesim_extra.json")


def _random_conv(rng: random.Random) -> tuple[ConvGeometry, int, int]:
    """A random conv (or batch of convs) as (geometry, M, K): kernels 1-4, strides 1-4, padding 0-2 and
    SCALE-Sim's extra bottom/right output (its ``ceil`` output size) half of the time."""
    kh, kw, channels = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 3)
    sh, sw, ph, pw = rng.randint(1, 4), rng.randint(1, 4), rng.randint(0, 2), rng.randint(0, 2)
    h, w = rng.randint(1, 9), rng.randint(1, 9)
    oh = max(1, (h + 2 * ph - kh) // sh + 1 + rng.randint(0, 1))
    ow = max(1, (w + 2 * pw - kw) // sw + 1 + rng.randint(0, 1))
    batch = rng.randint(1, 2)
    geo = ConvGeometry(h, w, channels, kw, sh, sw, ow, ph, pw, oh * ow if batch > 1 else 0)
    return geo, batch * oh * ow, kh * kw * channels


def test_ifmap_addresses_match_the_definition() -> None:
    rng = random.Random(5)
    edges = 0
    for _ in range(300):
        if rng.random() < 0.2:  # a GEMM: SCALE-Sim's M x K "image", a 1 x K kernel, never off the edge
            m, k = rng.randint(1, 30), rng.randint(1, 30)
            geo = ConvGeometry(m, k, 1, k, 1, 1, 1)
        else:
            geo, m, k = _random_conv(rng)
        expected = [[ifmap_address_by_definition(geo, i, j) for j in range(k)] for i in range(m)]
        grid = geo.ifmap_address(np.arange(m)[:, None], np.arange(k)[None, :])
        assert grid.tolist() == expected, geo
        pixels = np.array([rng.randrange(m) for _ in range(50)])
        window = np.array([rng.randrange(k) for _ in range(50)])
        assert geo.ifmap_address(pixels, window).tolist() == [expected[i][j] for i, j in zip(pixels, window)]
        edges += -1 in grid
    assert 150 < edges < 270  # windows off the edge and windows all inside both covered


def test_axis_pairs_match_enumeration() -> None:
    for size in range(1, 8):
        for out in range(1, 7):
            for kernel in range(1, 6):
                for stride in range(1, 5):
                    for pad in range(0, 3):
                        coords = [o * stride + j - pad for o in range(out) for j in range(kernel)]
                        inside = [c for c in coords if 0 <= c < size]
                        expected = (len(inside), len(set(inside)) == len(inside))
                        assert _axis_pairs(size, out, kernel, stride, pad) == expected, \
                            (size, out, kernel, stride, pad)


def test_segment_misses_equal_the_read_by_read_reset() -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        segments, stream, base = [], [], 0
        for _ in range(int(rng.integers(1, 4))):
            size, repeats, count = int(rng.integers(0, 40)), int(rng.integers(1, 6)), int(rng.integers(0, 5))
            segments.append((size, size * repeats, count))
            for _ in range(count):  # each segment: its own addresses, a permutation repeated
                order = rng.permutation(size) + base
                stream += np.tile(order, repeats).tolist()
                base += size
        capacity = int(rng.integers(1, 60))
        assert _segment_misses(segments, capacity) == read_by_read_misses(stream, capacity), (segments, capacity)


@pytest.mark.parametrize("seed", range(4))
def test_calc_dram_reads_equal_the_replay_on_random_layers(seed: int) -> None:
    rng = random.Random(seed)
    shortcut = replayed = 0
    for _ in range(150):
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 6), rng.randint(1, 6)
        if rng.random() < 0.2:  # a GEMM: SCALE-Sim's M x K "image", a 1 x K kernel
            m, k = rng.randint(1, 30), rng.randint(1, 30)
            geo = ConvGeometry(m, k, 1, k, 1, 1, 1)
        else:
            geo, m, k = _random_conv(rng)
        n = rng.randint(1, 20)
        caps = (rng.randint(1, 80), rng.randint(1, 80))
        streams = operand_streams(dataflow, rows, cols, m, n, k, geo)
        expected = tuple(read_by_read_misses(s.tolist(), c) for s, c in zip(streams, caps))
        passes = operand_passes(dataflow, rows, cols, m, n, k, geo)
        assert tuple(chunked_misses(p[0], c, p[1]) for p, c in zip(passes, caps)) == expected
        assert calc_dram_reads(dataflow, rows, cols, m, n, k, geo, caps) == expected
        for j, want in ((0, (True, False)), (1, (False, True))):
            got = calc_dram_reads(dataflow, rows, cols, m, n, k, geo, caps, want)
            assert got[j] == expected[j] and got[1 - j] is None
        segments = permutation_segments(dataflow, rows, cols, m, n, k, geo)
        distinct = len(np.unique(passes[0][0])) == len(passes[0][0])
        assert (segments[0] is not None) == distinct  # the shortcut takes exactly the reuse-free ifmaps
        shortcut, replayed = shortcut + distinct, replayed + (not distinct)
    assert shortcut > 20 and replayed > 20  # both paths exercised


def _reference_calc_reads(dataflow: str, rows: int, cols: int, m: int, n: int, k: int, geometry: ConvGeometry,
                          capacities: tuple[int, int], want: tuple[bool, bool] = (True, True)
                          ) -> tuple[int | None, int | None]:
    """The plain replay: build both passes, replay the read buffer on each."""
    passes = operand_passes(dataflow, rows, cols, m, n, k, geometry, want)
    return tuple(None if p is None else chunked_misses(p[0], c, p[1])  # type: ignore[return-value]
                 for p, c in zip(passes, capacities))


def _require(path: Path) -> Path:
    assert path.exists(), f"reference data {path} is missing; restore it from git"
    return path


def _reference_runs() -> list[tuple[SystolicArray, list]]:
    """(array, layers) of every SCALE-Sim reference run in the repo (a missing file is an error)."""
    runs = []
    for name in ("generated.json", "multiword.json"):
        records = json.loads(_require(DATA / name).read_text())["records"]
        runs += [(reference_array(r), reference_layers(r)) for r in records]
    for case in json.loads(_require(EXTRA).read_text())["cases"]:
        kb = case["sram_kb"]
        runs.append((SystolicArray(case["rows"], case["cols"], case["dataflow"], kb, kb, kb, word_bits=8,
                                   replay_limit=SCALESIM_REPLAY_LIMIT),
                     parse_scalesim_topology(case["topology"], gemm=case["gemm"])))
    with open(_require(DATA / "shared" / "results_8x8.csv")) as f:
        for row in csv.DictReader(f):
            layers = read_scalesim_topology(DATA / "shared" / "topologies" / f"{row['layer']}.csv",
                                            gemm=row["kind"] == "gemm")
            runs.append((read_scalesim_config(DATA / "shared" / "configs" / f"calc64k_8x8_{row['dataflow']}.cfg"),
                         layers))
    return runs


def test_every_reference_run_is_unchanged_by_the_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _reference_runs()
    assert len(runs) == 661  # 466 generated + 45 multi-word + 111 extra + 39 shared
    fast = [array.simulate(layers) for array, layers in runs]
    monkeypatch.setattr(systolic, "calc_dram_reads", _reference_calc_reads)
    slow = [array.simulate(layers) for array, layers in runs]
    assert fast == slow


def _write_by_write(writes_per_cycle: list[int], size: int, bandwidth: int) -> tuple[int, int]:
    """SCALE-Sim's CALC-mode ofmap buffer one write at a time (docs/hardware.md quirks 12-13): a write
    held beyond the drain half ``size - ceil(size / 2)``, once the previous drain has finished, closes
    the line being packed and drains up to ``ceil(half / bw)`` lines, one per cycle; every slot of a
    drained line counts except the empty slots of the chunk's last line. After compute the rest drains
    chunk after chunk. Returns (DRAM writes, cycle of the last one)."""
    half = size - math.ceil(size / 2)
    chunk = math.ceil(half / bandwidth)
    fills: list[int] = []  # elements in each closed line
    packed = stored = drained = counted = drain_end = end = 0
    sent = 0  # lines drained so far

    def close() -> None:
        nonlocal packed
        while packed < stored:
            fills.append(min(bandwidth, stored - packed))
            packed += fills[-1]

    def drain_chunk() -> int:
        nonlocal sent
        n = min(chunk, len(fills) - sent)
        sent += n
        return n * bandwidth - (bandwidth - fills[sent - 1])

    for cycle, count in enumerate(writes_per_cycle):
        for _ in range(count):
            stored += 1
            if stored - drained > half and cycle >= drain_end:
                close()
                before = sent
                data = drain_chunk()
                drained, counted = drained + data, counted + data
                drain_end = end = cycle + (sent - before) - 1
    close()
    cycle = len(writes_per_cycle) - 1
    while sent < len(fills):
        before = sent
        counted += drain_chunk()
        cycle += sent - before
        end = max(end, cycle - 1)
    return counted, end


def _array_drain(writes_per_cycle: np.ndarray, buffer_elems: int, bandwidth: int) -> DrainResult:
    """The previous implementation (per-cycle array, a ``searchsorted`` per drain), kept as the reference
    the closed form must reproduce on the reference runs."""
    cum = np.cumsum(writes_per_cycle)
    total, last_cycle = int(cum[-1]), len(writes_per_cycle) - 1
    drain = buffer_elems - math.ceil(buffer_elems * 0.5)
    chunk = math.ceil(drain / bandwidth)
    fills: dict[int, int] = {}
    lines = packed = drained = counted = next_line = drain_end = stored = 0

    def close(upto: int) -> None:
        nonlocal lines, packed
        count = upto - packed
        if count > 0:
            new = -(-count // bandwidth)
            fills[lines + new - 1] = count - (new - 1) * bandwidth
            lines, packed = lines + new, upto

    def chunk_data(n: int) -> int:
        return n * bandwidth - (bandwidth - fills.get(next_line + n - 1, bandwidth))

    while drain_end <= last_cycle:
        need = max(drained + drain + 1, stored + 1, int(cum[drain_end - 1]) + 1 if drain_end > 0 else 1)
        if need > total:
            break
        cycle = int(np.searchsorted(cum, need))
        stored = need
        close(stored)
        n = min(chunk, lines - next_line)
        data = chunk_data(n)
        drained, counted, next_line = drained + data, counted + data, next_line + n
        drain_end = cycle + n - 1
    close(total)
    end, cycle = drain_end, last_cycle
    while next_line < lines:
        n = min(chunk, lines - next_line)
        counted += chunk_data(n)
        next_line += n
        cycle += n
        end = max(end, cycle - 1)
    return DrainResult(counted, end, last_cycle)


def test_box_counts_match_enumeration() -> None:
    for h in range(1, 13):
        for w in range(1, 13):
            diagonals = sorted(x + y for x in range(h) for y in range(w))
            for u in range(-2, h + w + 2):
                assert _box_count(u, h, w) == sum(1 for d in diagonals if d <= u), (u, h, w)
            for r in range(1, h * w + 1):
                assert _box_inverse(r, h, w) == diagonals[r - 1], (r, h, w)


@pytest.mark.parametrize("seed", range(3))
def test_drains_equal_the_write_by_write_buffer(seed: int) -> None:
    rng = random.Random(seed)
    during = padded = 0
    for _ in range(300):
        dataflow, rows, cols = rng.choice(["os", "ws", "is"]), rng.randint(1, 9), rng.randint(1, 9)
        sr, sc, t = rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 30)
        size, bandwidth = rng.randint(2, 300), rng.randint(1, 12)
        writes = ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t)
        expected = _write_by_write(writes.tolist(), size, bandwidth)
        case = (dataflow, rows, cols, sr, sc, t, size, bandwidth)
        for result in (drain_folds(*case), drain_ofmap(writes, size, bandwidth)):
            assert (result.dram_writes, result.last_write_cycle) == expected, case
            assert result.last_compute_cycle == len(writes) - 1
        during += int(writes.sum()) > size - math.ceil(size / 2)  # the buffer drains during compute
        padded += expected[0] > int(writes.sum())  # and closed lines half full inside a chunk
    assert during > 150 and padded > 30, (during, padded)


def test_steady_drains_are_counted_at_once() -> None:
    """A long layer drains hundreds of times in one repeating pattern: its writes never outrun a drain, so
    no trigger's cycle is looked up but the last, and once a drain repeats the one before, the rest are
    counted at once -- with the write-by-write result."""
    case = ("ws", 4, 16, 24, 72, 196)  # 30 folds of 196 x 16 writes into a 1,024-element buffer
    through, cycle_of, total, cycles, peak = _fold_writes(*case)
    lookups = []
    result = _drain(through, lambda r: lookups.append(r) or cycle_of(r), total, cycles - 1, peak, 1024, 16)
    writes = ofmap_writes_per_cycle(*case)
    assert (result.dram_writes, result.last_write_cycle) == _write_by_write(writes.tolist(), 1024, 16)
    assert total // 512 > 150 and len(lookups) < 5, len(lookups)


def _folds_via_array(dataflow: str, rows: int, cols: int, sr: int, sc: int, t: int, buffer_elems: int,
                     bandwidth: int) -> DrainResult:
    return _array_drain(ofmap_writes_per_cycle(dataflow, rows, cols, sr, sc, t), buffer_elems, bandwidth)


def test_every_reference_run_is_unchanged_by_the_closed_form_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _reference_runs()
    fast = [array.simulate(layers) for array, layers in runs]
    monkeypatch.setattr(systolic, "drain_folds", _folds_via_array)
    slow = [array.simulate(layers) for array, layers in runs]
    assert fast == slow
