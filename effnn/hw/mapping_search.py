"""Searching one layer's mapping space (:class:`effnn.hw.mapping.MappingSpace`) for an objective.

Methods, all counting *true* cost evaluations against a budget (and optionally a wall-time limit):

* ``exhaustive`` -- every mapping, vectorised: the ground truth where the space is small;
* ``random`` -- uniform samples;
* ``annealing`` -- simulated annealing over index vectors, one axis moved per step;
* ``genetic`` -- a genetic algorithm: tournament selection, uniform crossover, per-axis mutation;
* ``gradient`` -- Mind Mappings (Hegde et al., ASPLOS 2021): a small MLP surrogate ``f(layer, mapping) ->
  log cost`` is trained offline on sampled mappings of *other* layers (:func:`train_surrogate`); for a
  new layer, gradient descent moves a continuous relaxation of the mapping (log tile fractions, log group
  spread, softmax logits for dataflow and loop order) downhill on the surrogate, and every few steps the
  point is projected to the nearest valid mapping and evaluated for real.

Every method returns a :class:`SearchResult` with the best mapping, its objective, the evaluations used
and the best-so-far trace, so methods compare at equal evaluations or equal wall time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from effnn.hw.layers import Layer
from effnn.hw.mapping import (
    DATAFLOWS,
    ORDERS,
    Accelerator,
    LayerMapping,
    LayerShape,
    MappedLayer,
    MappingSpace,
    mapped_layer,
)

METHODS = ("exhaustive", "random", "annealing", "genetic", "gradient")


@dataclass
class SearchResult:
    method: str
    best_index: np.ndarray
    best_value: float
    mapping: LayerMapping
    evaluations: int
    seconds: float
    trace: list[float] = field(default_factory=list)  # best value after each evaluation


class _Budget:
    """Counts true evaluations and remembers the best; stops at ``budget`` evaluations or ``time_limit_s``."""

    def __init__(self, space: MappingSpace, objective: str, budget: int, time_limit_s: float | None) -> None:
        self.space, self.objective = space, objective
        self.budget, self.deadline = budget, (time.perf_counter() + time_limit_s) if time_limit_s else None
        self.start = time.perf_counter()
        self.used = 0
        self.best_value, self.best_index = math.inf, np.zeros(len(space.dims), dtype=np.int64)
        self.trace: list[float] = []

    @property
    def done(self) -> bool:
        return self.used >= self.budget or (self.deadline is not None and time.perf_counter() >= self.deadline)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)[: max(0, self.budget - self.used)]
        values = self.space.objective(idx, self.objective)
        for row, value in zip(idx, values):
            self.used += 1
            if value < self.best_value:
                self.best_value, self.best_index = float(value), row.copy()
            self.trace.append(self.best_value)
        return values

    def result(self, method: str) -> SearchResult:
        return SearchResult(method, self.best_index, self.best_value, self.space.decode(self.best_index),
                            self.used, time.perf_counter() - self.start, self.trace)


def _random_indices(space: MappingSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(0, d, n) for d in space.dims], axis=1)


def exhaustive(space: MappingSpace, objective: str = "edp") -> SearchResult:
    """Every mapping in one vectorised evaluation (the optimum the other methods are measured against)."""
    b = _Budget(space, objective, space.size, None)
    idx = space.all_indices()
    values = space.objective(idx, objective)
    best = int(np.argmin(values))
    b.used, b.best_value, b.best_index = len(idx), float(values[best]), idx[best]
    b.trace = list(np.minimum.accumulate(values))
    return b.result("exhaustive")


def random_search(space: MappingSpace, objective: str, budget: int, rng: np.random.Generator,
                  time_limit_s: float | None = None) -> SearchResult:
    b = _Budget(space, objective, budget, time_limit_s)
    while not b.done:
        b(_random_indices(space, 1, rng))
    return b.result("random")


def _neighbour(space: MappingSpace, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move one axis: a step of +-1 on ordered axes (tiles, spread), a fresh choice on categorical ones."""
    y = x.copy()
    dims = space.dims
    movable = [a for a, d in enumerate(dims) if d > 1]
    axis = int(rng.choice(movable)) if movable else 0
    if axis in (0, 5):  # dataflow, loop order: categorical
        y[axis] = rng.integers(0, dims[axis])
    else:
        y[axis] = int(np.clip(y[axis] + rng.choice((-1, 1)), 0, dims[axis] - 1))
    return y


def simulated_annealing(space: MappingSpace, objective: str, budget: int, rng: np.random.Generator,
                        time_limit_s: float | None = None, t_start: float = 1.0, t_end: float = 0.01) -> SearchResult:
    """Annealing on log cost with a geometric temperature schedule over the evaluation budget."""
    b = _Budget(space, objective, budget, time_limit_s)
    x = _random_indices(space, 1, rng)[0]
    fx = math.log(b(x)[0]) if not b.done else math.inf
    step = 0
    while not b.done:
        # from an invalid point (tiles overflowing an SRAM) jump to a fresh random one instead of walking
        y = _neighbour(space, x, rng) if np.isfinite(fx) else _random_indices(space, 1, rng)[0]
        fy_raw = b(y)[0]
        fy = math.log(fy_raw) if np.isfinite(fy_raw) else math.inf
        temp = t_start * (t_end / t_start) ** (step / max(1, budget - 1))
        if fy <= fx or (np.isfinite(fy) and rng.random() < math.exp(-(fy - fx) / temp)) or not np.isfinite(fx):
            x, fx = y, fy
        step += 1
    return b.result("annealing")


def genetic(space: MappingSpace, objective: str, budget: int, rng: np.random.Generator,
            time_limit_s: float | None = None, population: int = 16, mutation: float = 0.2) -> SearchResult:
    """Generational GA with elitism: tournament-of-two parents, uniform crossover, per-axis mutation."""
    b = _Budget(space, objective, budget, time_limit_s)
    pop = _random_indices(space, population, rng)
    fit = b(pop)
    pop = pop[: len(fit)]
    while not b.done and len(pop):
        children = []
        for _ in range(population - 1):
            a, c = (pop[min(rng.integers(0, len(pop), 2), key=lambda i: fit[i])] for _ in range(2))
            child = np.where(rng.random(len(a)) < 0.5, a, c)
            mutate = rng.random(len(child)) < mutation
            child[mutate] = [rng.integers(0, d) for d, m in zip(space.dims, mutate) if m]
            children.append(child)
        kids = np.array(children)
        kid_fit = b(kids)
        elite = int(np.argmin(fit))
        pop = np.vstack([pop[elite:elite + 1], kids[: len(kid_fit)]])
        fit = np.concatenate([fit[elite:elite + 1], kid_fit])
    return b.result("genetic")


# -- Mind Mappings: an MLP surrogate and gradient search on it -------------------------------------------

def _layer_features(shape: LayerShape) -> list[float]:
    return [math.log2(shape.m), math.log2(shape.n), math.log2(shape.k), math.log2(shape.g),
            shape.weight_bits / 16, shape.act_bits / 16]


def _mapping_features(space: MappingSpace, idx: np.ndarray) -> np.ndarray:
    """Continuous features of index vectors: one-hot dataflow (3), log2 spread, log2 tile / dim (3),
    one-hot loop order (6). The gradient search moves exactly these coordinates."""
    s, a = space.shape, space.axes
    idx = np.atleast_2d(idx)
    out = np.zeros((len(idx), 3 + 1 + 3 + len(ORDERS)))
    out[np.arange(len(idx)), _df_slots(space)[idx[:, 0]]] = 1.0
    out[:, 3] = np.log2(a["gs"][idx[:, 1]])
    out[:, 4] = np.log2(a["tm"][idx[:, 2]] / s.m)
    out[:, 5] = np.log2(a["tn"][idx[:, 3]] / s.n)
    out[:, 6] = np.log2(a["tk"][idx[:, 4]] / s.k)
    out[np.arange(len(idx)), 7 + idx[:, 5]] = 1.0
    return out


def _df_slots(space: MappingSpace) -> np.ndarray:
    """Feature slot of each of the accelerator's dataflows (slots follow DATAFLOWS: os, ws, is)."""
    return np.array([DATAFLOWS.index(d) for d in space.acc.dataflows])


class Surrogate(nn.Module):
    """MLP: (layer features, mapping features) -> standardised log objective."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6 + 13, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, layer: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([layer.expand(len(mapping), -1), mapping], dim=1)).squeeze(1)


def train_surrogate(shapes: Sequence[LayerShape], acc: Accelerator, objective: str = "edp",
                    samples_per_layer: int = 2000, steps: int = 1500, seed: int = 0) -> Surrogate:
    """Fit the surrogate on valid random mappings of ``shapes`` (training layers, not the searched ones)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    xs_l, xs_m, ys = [], [], []
    for shape in shapes:
        space = MappingSpace(shape, acc)
        idx = _random_indices(space, samples_per_layer, rng)
        values = space.objective(idx, objective)
        ok = np.isfinite(values)
        xs_m.append(_mapping_features(space, idx[ok]))
        xs_l.append(np.tile(_layer_features(shape), (int(ok.sum()), 1)))
        ys.append(np.log(values[ok]))
    xl, xm = (torch.tensor(np.concatenate(x), dtype=torch.float32) for x in (xs_l, xs_m))
    y = torch.tensor(np.concatenate(ys), dtype=torch.float32)
    model = Surrogate()
    model.mean.fill_(float(y.mean()))
    model.std.fill_(float(y.std()))
    target = (y - model.mean) / model.std
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(y), (512,))
        loss = nn.functional.mse_loss(model.net(torch.cat([xl[batch], xm[batch]], 1)).squeeze(1), target[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _project(space: MappingSpace, z: np.ndarray) -> np.ndarray:
    """Nearest index vector to continuous features ``z`` (argmax on one-hots, nearest log value on tiles),
    then shrink tiles until the mapping fits the SRAMs."""
    a, s = space.axes, space.shape
    idx = np.array([int(np.argmax(z[_df_slots(space)])),
                    int(np.argmin(abs(np.log2(a["gs"]) - z[3]))),
                    int(np.argmin(abs(np.log2(a["tm"] / s.m) - z[4]))),
                    int(np.argmin(abs(np.log2(a["tn"] / s.n) - z[5]))),
                    int(np.argmin(abs(np.log2(a["tk"] / s.k) - z[6]))),
                    int(np.argmax(z[7:]))])
    for _ in range(sum(space.dims[2:5])):
        if space.evaluate(idx)["valid"][0]:
            break
        biggest = max((2, 3, 4), key=lambda ax: idx[ax])
        idx[biggest] = max(0, idx[biggest] - 1)
    return idx


def gradient_search(space: MappingSpace, objective: str, budget: int, rng: np.random.Generator,
                    surrogate: Surrogate, time_limit_s: float | None = None, steps_per_eval: int = 5,
                    lr: float = 0.1, restarts_every: int = 20) -> SearchResult:
    """Mind Mappings' search: gradient descent on the surrogate, projecting to a valid mapping and paying
    one true evaluation every ``steps_per_eval`` steps; restarts from a random mapping now and then."""
    b = _Budget(space, objective, budget, time_limit_s)
    layer = torch.tensor(_layer_features(space.shape), dtype=torch.float32)[None]
    z = None
    opt: torch.optim.Optimizer | None = None
    while not b.done:
        if z is None or (b.used and b.used % restarts_every == 0):
            start = _random_indices(space, 1, rng)
            z = torch.tensor(_mapping_features(space, start), dtype=torch.float32, requires_grad=True)
            opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps_per_eval):
            soft = torch.cat([torch.softmax(z[:, :3] * 4, 1), z[:, 3:7], torch.softmax(z[:, 7:] * 4, 1)], dim=1)
            loss = surrogate(layer, soft).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        b(_project(space, z.detach().numpy()[0]))
    return b.result("gradient")


def search(space: MappingSpace, method: str, objective: str = "edp", budget: int = 1000, seed: int = 0,
           time_limit_s: float | None = None, surrogate: Surrogate | None = None) -> SearchResult:
    """Run one method on one layer's space (``surrogate`` is required for ``gradient``)."""
    rng = np.random.default_rng(seed)
    runners: dict[str, Callable[[], SearchResult]] = {
        "exhaustive": lambda: exhaustive(space, objective),
        "random": lambda: random_search(space, objective, budget, rng, time_limit_s),
        "annealing": lambda: simulated_annealing(space, objective, budget, rng, time_limit_s),
        "genetic": lambda: genetic(space, objective, budget, rng, time_limit_s),
        "gradient": lambda: gradient_search(space, objective, budget, rng, _need(surrogate), time_limit_s),
    }
    if method not in runners:
        raise ValueError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
    return runners[method]()


def search_layers(layers: Sequence[Layer], acc: Accelerator, method: str, objective: str = "edp",
                  budget: int = 1000, seed: int = 0) -> list[MappedLayer]:
    """Every layer on the mapping ``method`` finds (once per distinct shape). ``gradient`` first trains its
    surrogate on random mappings of the same shapes (Mind Mappings trains per accelerator, offline)."""
    shapes = {LayerShape.of(layer): None for layer in layers}
    surrogate = train_surrogate(list(shapes), acc, objective, seed=seed) if method == "gradient" else None
    found: dict[LayerShape, tuple[LayerMapping, dict]] = {}
    for shape in shapes:
        space = MappingSpace(shape, acc)
        result = search(space, method, objective, budget, seed, surrogate=surrogate)
        if not math.isfinite(result.best_value):
            raise ValueError(f"{method} search found no mapping of GEMM (M={shape.m}, N={shape.n}, K={shape.k}) that "
                             f"fits the SRAMs in {budget} evaluations; raise --budget or use exhaustive")
        found[shape] = (result.mapping, space.evaluate(result.best_index))
    return [mapped_layer(layer.name, LayerShape.of(layer), acc, *found[LayerShape.of(layer)]) for layer in layers]


def _need(surrogate: Surrogate | None) -> Surrogate:
    if surrogate is None:
        raise ValueError("gradient search needs a surrogate: train one with train_surrogate(shapes, acc)")
    return surrogate


__all__ = ["METHODS", "SearchResult", "Surrogate", "exhaustive", "genetic", "gradient_search", "random_search",
           "search", "search_layers", "simulated_annealing", "train_surrogate"]
