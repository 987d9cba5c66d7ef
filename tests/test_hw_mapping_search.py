"""effnn.hw.mapping_search: every method against the exhaustive optimum of real CNN layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnn.hw.layers import ConvLayer
from effnn.hw.mapping import Accelerator, LayerShape, MappingSpace, best_mapping
from effnn.hw.mapping_search import (
    METHODS,
    _layer_features,
    _mapping_features,
    exhaustive,
    search,
    train_surrogate,
)
from effnn.hw.systolic import SystolicArray

ACC = Accelerator.from_array(SystolicArray(16, 16, "os", dram_bandwidth=16), dataflows=("os", "ws", "is"))
TRAIN = [ConvLayer("a", 32, 64, 28, 28, 3, 3, pad_h=1, pad_w=1),
         ConvLayer("b", 128, 128, 14, 14, 3, 3, pad_h=1, pad_w=1),
         ConvLayer("c", 64, 256, 14, 14), ConvLayer("d", 144, 144, 28, 28, 3, 3, pad_h=1, pad_w=1, groups=144)]
TARGET = ConvLayer("x", 64, 128, 28, 28, 3, 3, pad_h=1, pad_w=1)


@pytest.fixture(scope="module")
def surrogate():
    return train_surrogate([LayerShape.of(layer) for layer in TRAIN], ACC, samples_per_layer=1500, steps=800)


def test_exhaustive_is_best_mapping() -> None:
    space = MappingSpace(LayerShape.of(TARGET), ACC)
    result = exhaustive(space, "edp")
    mapping, _ = best_mapping(space.shape, ACC, "edp")
    assert result.mapping == mapping and result.evaluations == space.size
    assert result.best_value == pytest.approx(space.objective(result.best_index[None], "edp")[0])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "exhaustive"])
def test_methods_respect_the_budget_and_never_beat_the_optimum(method: str, surrogate) -> None:
    space = MappingSpace(LayerShape.of(TARGET), ACC)
    optimum = exhaustive(space, "edp").best_value
    result = search(space, method, "edp", budget=120, seed=1, surrogate=surrogate)
    assert result.evaluations == 120 and len(result.trace) == 120
    assert all(a >= b for a, b in zip(result.trace, result.trace[1:]))
    assert optimum <= result.best_value < 3 * optimum
    assert space.evaluate(result.best_index)["valid"][0]
    assert result.best_value == pytest.approx(space.objective(result.best_index[None], "edp")[0])


def test_surrogate_ranks_mappings_of_an_unseen_layer(surrogate) -> None:
    space = MappingSpace(LayerShape.of(TARGET), ACC)
    rng = np.random.default_rng(3)
    idx = np.stack([rng.integers(0, d, 400) for d in space.dims], axis=1)
    true = space.objective(idx, "edp")
    ok = np.isfinite(true)
    layer = torch.tensor(_layer_features(space.shape), dtype=torch.float32)[None]
    with torch.no_grad():
        pred = surrogate(layer, torch.tensor(_mapping_features(space, idx[ok]), dtype=torch.float32)).numpy()
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = np.corrcoef(rank(pred), rank(np.log(true[ok])))[0, 1]
    assert rho > 0.6


def test_bad_method_and_missing_surrogate_are_explained() -> None:
    space = MappingSpace(LayerShape.of(TARGET), ACC)
    with pytest.raises(ValueError, match="unknown search method"):
        search(space, "tabu")
    with pytest.raises(ValueError, match="needs a surrogate"):
        search(space, "gradient", budget=5)


def test_search_layers_never_beats_the_exhaustive_mapper() -> None:
    from effnn.hw.mapping import Mapper, objective_values
    from effnn.hw.mapping_search import search_layers

    layers = [TARGET, TRAIN[3], TARGET]
    found = search_layers(layers, ACC, "genetic", "edp", budget=100, seed=0)
    best = Mapper(ACC, "edp")
    assert [f.name for f in found] == [layer.name for layer in layers]
    assert found[0].mapping == found[2].mapping  # one search per distinct shape

    def edp(c) -> float:
        cost = {"cycles": np.array([c.cycles]), "dyn_pj": np.array([c.dyn_pj]), "valid": np.array([True])}
        return float(objective_values(cost, ACC, "edp")[0])

    for layer, f in zip(layers, found):
        assert edp(f) >= edp(best(layer)) * (1 - 1e-12)
