"""The systolic model's scalar path (one layer on Python floats) against its numpy batch path.

:meth:`SystolicArray.simulate` and :meth:`SystolicArray.evaluate_arrays` run the closed form per layer on
Python floats for small calls and once on numpy arrays for big ones; both are the same code
(``SystolicArray._closed_form``) over two operation namespaces, so every metric must be bit-identical.
Checked on every SCALE-Sim reference run in the repo (``tests/data/scalesim``; a missing file fails) and
on a few hundred random small layers and arrays that reach every branch: all dataflows, CALC and USER
bandwidth, spilling SRAMs (replayed), grouped/depthwise/padded/strided/batched convs, GEMMs, odd and
fractional bit-widths (closed-form estimate).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from effnn.hw import ConvLayer, GemmLayer, SystolicArray, read_scalesim_config, read_scalesim_topology
from effnn.hw.energy import load_energy_table
from effnn.hw.layers import Layer
from effnn.hw.scalesim import (
    SCALESIM_REPLAY_LIMIT,
    parse_scalesim_topology,
    reference_array,
    reference_layers,
)
from effnn.hw.systolic import (
    _BATCH,
    _SCALAR,
    METRICS,
    SCALAR_MAX_ARRAYS,
    SCALAR_MAX_LAYERS,
    LayerArrays,
    _LayerRow,
    _touched,
)

TESTS = Path(__file__).parent
DATA = TESTS / "data" / "scalesim"


def _reference_runs() -> list[tuple[str, SystolicArray, list[Layer]]]:
    """(id, array, layers) of every SCALE-Sim reference run in the repo; a missing file raises."""
    runs = []
    with open(DATA / "shared" / "results_8x8.csv") as f:
        for row in csv.DictReader(f):
            array = read_scalesim_config(DATA / "shared" / "configs" / f"calc64k_8x8_{row['dataflow']}.cfg")
            layers = read_scalesim_topology(DATA / "shared" / "topologies" / f"{row['layer']}.csv",
                                            gemm=row["kind"] == "gemm")
            runs.append((f"shared-{row['layer']}-{row['dataflow']}", array, layers))
    for name in ("generated.json", "multiword.json"):
        for record in json.loads((DATA / name).read_text())["records"]:
            runs.append((record["id"], reference_array(record), reference_layers(record)))
    for case in json.loads((TESTS / "test_hw_scalesim_extra.json").read_text())["cases"]:
        kb = case["sram_kb"]
        layers = parse_scalesim_topology(case["topology"] + "\n", gemm=case["gemm"], source=case["id"])
        runs.append((case["id"], SystolicArray(case["rows"], case["cols"], case["dataflow"], kb, kb, kb,
                                               word_bits=8, replay_limit=SCALESIM_REPLAY_LIMIT), layers))
    return runs


def _scalar(array: SystolicArray, layer: Layer) -> dict[str, float]:
    return array._closed_form(_SCALAR, _LayerRow.of(layer))


def _assert_same(array: SystolicArray, layers: Sequence[Layer], what: str) -> None:
    """The numpy path over all ``layers`` at once equals the scalar path of each layer, metric by metric."""
    batch = array._closed_form(_BATCH, LayerArrays.from_layers(layers))
    for i, layer in enumerate(layers):
        scalar = _scalar(array, layer)
        for key in METRICS:
            expected = float(np.broadcast_to(batch[key], (len(layers),))[i])
            assert float(scalar[key]) == expected, f"{what} {layer}: {key} scalar {scalar[key]!r} != {expected!r}"


def test_every_reference_run_is_the_same_on_both_paths() -> None:
    runs = _reference_runs()
    assert len(runs) >= 661
    by_array: dict[SystolicArray, list[Layer]] = {}
    for run_id, array, layers in runs:
        _assert_same(array, layers, run_id)  # one layer on each path
        by_array.setdefault(array, []).extend(layers)
    # and each array's runs as one numpy batch: replayed and closed-form layers side by side
    for array, layers in by_array.items():
        if len(layers) > 1:
            _assert_same(array, layers, f"batch on {array}")


def _random_layer(rng: random.Random, i: int) -> Layer:
    bits = [rng.choice((2, 3, 4, 5, 8, 8, 8, 16)) for _ in range(3)]
    storage = rng.choice((None, None, None, 3.5, 2.25, 6.0))
    if rng.random() < 0.2:
        return GemmLayer(f"gemm{i}", m=rng.randint(1, 40), n=rng.randint(1, 40), k=rng.randint(1, 40),
                         weight_bits=bits[0], act_bits=bits[1], out_bits=bits[2], weight_storage_bits=storage)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    kind = rng.choice(("plain", "grouped", "depthwise"))
    groups = {"plain": 1, "grouped": rng.choice((2, 3)), "depthwise": rng.randint(2, 6)}[kind]
    in_ch = groups * rng.randint(1, 1 if kind == "depthwise" else 4)
    out_ch = groups * rng.randint(1, 4)
    pad_h, pad_w = rng.randint(0, 2), rng.randint(0, 1)
    return ConvLayer(f"conv{i}", in_ch=in_ch, out_ch=out_ch, in_h=rng.randint(max(1, kh - 2 * pad_h), 12),
                     in_w=rng.randint(max(1, kw - 2 * pad_w), 12), kernel_h=kh, kernel_w=kw,
                     stride_h=rng.randint(1, 4), stride_w=rng.randint(1, 3), pad_h=pad_h, pad_w=pad_w,
                     groups=groups, batch=rng.choice((1, 1, 2, 3)), weight_bits=bits[0], act_bits=bits[1],
                     out_bits=bits[2], weight_storage_bits=storage)


def _random_array(rng: random.Random) -> SystolicArray:
    bandwidth = rng.choice((None, None, 1.0, 2.0, 3.0, 8.0, (1.0, 2.0, 4.0)))
    return SystolicArray(rng.randint(1, 8), rng.randint(1, 8), rng.choice(("os", "ws", "is")),
                         *(rng.choice((0.25, 0.5, 1.0, 4.0)) for _ in range(3)),
                         dram_bandwidth=bandwidth, word_bits=rng.choice((8, 8, 16)))


def _random_cases(seed: int = 0, arrays: int = 40) -> list[tuple[SystolicArray, list[Layer]]]:
    rng = random.Random(seed)
    layer_id = itertools.count()
    return [(_random_array(rng), [_random_layer(rng, next(layer_id)) for _ in range(SCALAR_MAX_LAYERS + 2)])
            for _ in range(arrays)]


def test_random_layers_are_the_same_on_both_paths() -> None:
    cases = _random_cases()
    assert sum(len(layers) for _, layers in cases) >= 300
    replayed = estimated = 0
    for array, layers in cases:
        _assert_same(array, layers, f"random on {array}")
        closed = array.with_(replay_limit=0)._closed_form(_BATCH, LayerArrays.from_layers(layers))
        full = array._closed_form(_BATCH, LayerArrays.from_layers(layers))
        replayed += int(np.count_nonzero(np.broadcast_to(full["dram_reads_ifmap"] != closed["dram_reads_ifmap"],
                                                         (len(layers),))
                                         | (full["total_cycles_incl_prefetch"]
                                            != closed["total_cycles_incl_prefetch"])))
        estimated += sum(layer.stored_weight_bits % 1 != 0 for layer in layers)
    # the draw reaches both the replays and the fractional-bit closed-form estimate
    assert replayed >= 30 and estimated >= 30


def test_simulate_of_a_list_equals_each_layer_alone() -> None:
    for array, layers in _random_cases(seed=1, arrays=12):
        together = array.simulate(layers)  # more than SCALAR_MAX_LAYERS: the numpy path
        alone = [array.simulate([layer])[0] for layer in layers]  # the scalar path
        assert together == alone
        small = array.simulate(layers[:2])
        assert small == alone[:2]
        few = SCALAR_MAX_ARRAYS
        small_arrays = array.evaluate_arrays(LayerArrays.from_layers(layers[:few]))  # scalar, as arrays
        big_arrays = array.evaluate_arrays(LayerArrays.from_layers(layers))  # numpy
        for key in METRICS:
            assert small_arrays[key].dtype == np.float64 and small_arrays[key].shape == (few,)
            np.testing.assert_array_equal(small_arrays[key], big_arrays[key][:few], err_msg=key)
        small_arrays["macs"][0] = -1.0  # metrics never share memory
        assert all(small_arrays[key][0] != -1.0 for key in METRICS if key != "macs")


def test_energy_levels_on_floats_equal_arrays() -> None:
    rng = np.random.default_rng(0)
    for name in ("eyeriss_normalized", "horowitz_45nm"):
        table = load_energy_table(name)
        counts = rng.integers(0, 10**9, size=(7, 50)).astype(np.float64)
        bits = rng.choice([2.0, 3.5, 4.0, 8.0, 16.0], size=(4, 50))
        arrays = table.levels(*counts, *bits)
        for j in range(50):
            floats = table.levels(*(float(c[j]) for c in counts), *(float(b[j]) for b in bits))
            assert [float(a[j]) for a in arrays] == list(floats)


@pytest.mark.parametrize("seed", range(3))
def test_touched_rows_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        kernel, stride, pad = rng.randint(1, 4), rng.randint(1, 5), rng.randint(0, 3)
        size = rng.randint(max(1, kernel - 2 * pad), 20)
        out = (size + 2 * pad - kernel) // stride + 1
        read = {y for o in range(out) for y in range(o * stride - pad, o * stride - pad + kernel) if 0 <= y < size}
        assert _touched(size, kernel, stride, pad, out) == len(read), (size, kernel, stride, pad, out)


def test_layer_rows_and_arrays_agree() -> None:
    layers = [layer for _, ls in _random_cases(seed=2, arrays=5) for layer in ls]
    la = LayerArrays.from_layers(layers)
    for i, layer in enumerate(layers):
        row = _LayerRow.of(layer)
        assert row.name == la.names[i]
        for field in dataclasses.fields(LayerArrays)[1:-1]:
            assert getattr(row, field.name) == float(getattr(la, field.name)[i]), field.name
        assert row.geometry == tuple(la.geometry[i].tolist())


def test_bad_input_raises_on_both_paths() -> None:
    array = SystolicArray(4, 4)
    with pytest.raises(ValueError, match="workload is empty"):
        array.simulate([])
    for count in (1, SCALAR_MAX_LAYERS + 1):
        with pytest.raises(TypeError, match="expected ConvLayer or GemmLayer"):
            array.simulate([GemmLayer("g", 2, 2, 2)] * (count - 1) + ["not a layer"])  # type: ignore[list-item]


def test_a_zero_cycle_layer_reports_infinite_utilisation_on_both_paths() -> None:
    """A 1x1 os array runs a 1x1x1 GEMM in 0 cycles (SCALE-Sim counts from 0): no division error."""
    array = SystolicArray(1, 1, "os")
    layer = GemmLayer("g", 1, 1, 1)
    alone = array.simulate([layer])[0]
    together = array.simulate([layer] * (SCALAR_MAX_LAYERS + 1))[0]
    assert alone == together and alone.total_cycles == 0 and alone.overall_util == float("inf")
