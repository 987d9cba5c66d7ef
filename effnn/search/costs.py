"""Cost metrics of a subnet, optionally on a given accelerator: what the search trades accuracy against.

MACs and parameters come analytically from the search space; latency, energy and EDP from the hardware
plugin's systolic cost model (``effnn.hw.SystolicCostModel``) run on the subnet's layer list
(``SearchSpace.workload``), so scoring an arch takes microseconds and needs no module. The callable is
the pluggable part: anything mapping ``(arch, accelerator)`` to a dict of floats can replace it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from effnn.errors import ConfigError
from effnn.hw import CostModel, SystolicArray, SystolicCostModel
from effnn.nas.space import Arch, SearchSpace
from effnn.search.hardware import Accelerator, HardwareSpace

ANALYTIC_METRICS = ("macs", "params")
HARDWARE_METRICS = ("latency_ms", "energy", "edp")
COST_METRICS = ANALYTIC_METRICS + HARDWARE_METRICS

CostFn = Callable[[Arch, Accelerator | None], Mapping[str, float]]


class SubnetCosts:
    """``costs(arch, accelerator=None)`` -> ``{"macs", "params"[, "latency_ms", "energy", "edp"]}``.

    Hardware metrics are computed only if ``hardware_metrics`` is true (the search asks for them when an
    objective or constraint needs them), on ``array``, or on ``array`` with an ``Accelerator``'s genes in a
    co-search (one cost model per accelerator, each caching per layer shape). Results are memoized.
    """

    def __init__(self, space: SearchSpace, num_classes: int, in_chans: int = 3, array: SystolicArray | None = None,
                 hardware_metrics: bool = True) -> None:
        self.space = space
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.array = array if array is not None else SystolicArray(16, 16, "ws")
        self.hardware_metrics = hardware_metrics
        self._models: dict[Accelerator | None, CostModel] = {}
        self._cache: dict[tuple[Arch, Accelerator | None], dict[str, float]] = {}

    def metric_names(self) -> tuple[str, ...]:
        return COST_METRICS if self.hardware_metrics else ANALYTIC_METRICS

    def cost_model(self, accelerator: Accelerator | None = None) -> CostModel:
        model = self._models.get(accelerator)
        if model is None:
            array = self.array if accelerator is None else accelerator.array(self.array)
            model = self._models[accelerator] = SystolicCostModel(array)
        return model

    def __call__(self, arch: Arch, accelerator: Accelerator | None = None) -> dict[str, float]:
        key = (arch, accelerator)
        cached = self._cache.get(key)
        if cached is None:
            cached = {"macs": float(self.space.macs(arch, self.num_classes, self.in_chans)),
                      "params": float(self.space.params(arch, self.num_classes, self.in_chans))}
            if self.hardware_metrics:
                layers = self.space.workload(arch, self.num_classes, self.in_chans)
                scored = self.cost_model(accelerator).score(layers)
                cached.update({m: float(scored[m]) for m in HARDWARE_METRICS})
            self._cache[key] = cached
        return dict(cached)


def check_metric_names(names: list[str] | tuple[str, ...], where: str, allow_acc: bool) -> None:
    """Raise ConfigError naming an unknown metric and the known ones."""
    known = (("acc",) if allow_acc else ()) + COST_METRICS
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"{where} has unknown metric(s) {bad}; known metrics: {', '.join(known)}")


def best_accelerator(costs: SubnetCosts, arch: Arch, hardware: HardwareSpace, metric: str = "edp",
                     tried: Iterable[Accelerator] = (), max_exhaustive: int = 20000
                     ) -> tuple[Accelerator, dict[str, float]]:
    """The accelerator in ``hardware`` (within budget) that minimizes ``metric`` for ``arch``.

    Small hardware spaces are enumerated exhaustively (the systolic model scores a subnet in well under a
    millisecond); larger ones fall back to the accelerators the search ``tried`` with this arch.
    """
    if metric not in HARDWARE_METRICS:
        raise ConfigError(f"search.hardware.metric={metric!r} must be one of {', '.join(HARDWARE_METRICS)}")
    pool = list(hardware.feasible()) if hardware.size() <= max_exhaustive else list(dict.fromkeys(tried))
    if not pool:
        pool = [hardware.initial()]
    best = min(pool, key=lambda acc: (costs(arch, acc)[metric], acc))
    return best, costs(arch, best)
