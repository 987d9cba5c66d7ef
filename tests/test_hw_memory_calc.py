"""CALC-mode replay shortcuts (effnn.hw.memory) against the plain replay and read-by-read references.

The shortcuts must give the same numbers as building every demand stream and replaying SCALE-Sim's
read buffer read by read: on many random small layers (convs with every kernel/stride/padding/batch
mix, GEMMs) and on every SCALE-Sim reference run in the repo."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

import effnn.hw.systolic as systolic
from effnn.hw import SystolicArray, read_scalesim_config, read_scalesim_topology
from effnn.hw.memory import (
    ConvGeometry,
    _axis_pairs,
    _segment_misses,
    calc_dram_reads,
    chunked_misses,
    operand_passes,
    operand_streams,
    permutation_segments,
)
from effnn.hw.scalesim import SCALESIM_REPLAY_LIMIT, parse_scalesim_topology, reference_array, reference_layers

DATA = Path(__file__).with_name("data") / "scalesim"
EXTRA = Path(__file__).with_name("test_hw_scalesim_extra.json")


def _read_by_read(stream: list[int], capacity: int) -> int:
    """SCALE-Sim's CALC read buffer one read at a time: a miss adds the address; the ``capacity``-th
    distinct address held empties the buffer (docs/hardware.md quirk 11)."""
    held: set[int] = set()
    misses = 0
    for address in stream:
        if address not in held:
            misses += 1
            held.add(address)
            if len(held) == capacity:
                held = set()
    return misses


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
        assert _segment_misses(segments, capacity) == _read_by_read(stream, capacity), (segments, capacity)


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
        expected = tuple(_read_by_read(s.tolist(), c) for s, c in zip(streams, caps))
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
