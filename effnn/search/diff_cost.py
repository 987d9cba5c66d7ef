"""The differentiable hardware cost of a relaxed (network, bits, accelerator) choice: exact tables, expected.

Latency and energy of a subnet on the systolic model are sums over its workload sections (stem, each
block, head; ``SystolicCostModel`` totals are exact sums of per-section counts). Each section depends on a
few choices only: a block of stage ``s`` at slot ``j`` on its input and output width, the stage's kernel,
expand ratio and bits, and the resolution, and it exists only when the stage's depth exceeds ``j``. With
independent categorical choices the expected latency on accelerator ``a`` is therefore exactly

    E[L | a] = sum_sections P(section runs) * sum_{its choices} prod_i p_i(choice_i) * L_section(a, choices)

a multilinear polynomial in the choice probabilities, computed from tables of exact per-section costs
(one ``score_sections`` call per section configuration and accelerator, once, before the search). The
accelerator itself is a distribution over the feasible configurations (product of per-gene weights,
renormalised over those within budget), so the expected cost is differentiable in every logit.
EDP is priced per accelerator as E[energy | a] * E[latency | a] (a product of expectations, not the
expectation of the product: the one approximation here; the exact EDP of every discretised result is
computed afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
from dataclasses import dataclass
from itertools import product
from typing import Any

import torch

from effnn.nas.precision import BitsSpace, BitsWorkload, StageBits
from effnn.nas.space import Arch, SearchSpace

#: cost metrics the differentiable search can relax (additive over sections, or their product)
RELAXED_METRICS = ("latency_ms", "energy", "edp")


@dataclass(frozen=True)
class Decision:
    """One categorical choice of the search: ``name`` (``width[2]``, ``bits.act[0]``, ``hw.rows``) and options."""

    name: str
    options: tuple[Any, ...]

    @property
    def size(self) -> int:
        return len(self.options)


def network_decisions(space: SearchSpace, bits: BitsSpace | None) -> list[Decision]:
    """The network's decisions in ``SearchSpace.choices()`` order, then per-stage weight and activation bits."""
    out = [Decision(name, tuple(options)) for name, options in space.choices().items()]
    if bits is not None:
        out += [Decision(f"bits.weight[{s}]", bits.weight_choices) for s in range(bits.num_stages)]
        out += [Decision(f"bits.act[{s}]", bits.act_choices) for s in range(bits.num_stages)]
    return out


def arch_from_choice(space: SearchSpace, choice: Mapping[str, Any]) -> Arch:
    """The arch whose genes are ``choice[name]`` for every gene name of ``space.choices()``."""
    n = space.num_stages
    return Arch(choice["resolution"], [choice[f"width[{i}]"] for i in range(n + 2)],
                [choice[f"depth[{i}]"] for i in range(n)], [choice[f"kernel_size[{i}]"] for i in range(n)],
                [choice[f"expand_ratio[{i}]"] for i in range(n)])


def bits_from_choice(num_stages: int, choice: Mapping[str, Any]) -> StageBits:
    return StageBits([choice[f"bits.weight[{s}]"] for s in range(num_stages)],
                     [choice[f"bits.act[{s}]"] for s in range(num_stages)])


@dataclass(frozen=True)
class SectionSlot:
    """One position of the workload: the choices its cost depends on and when it runs (``depth > slot``)."""

    position: int            # index into workload_sections of an arch with every stage at its deepest
    deps: tuple[str, ...]    # decision names the section's shape and bits depend on
    depth_gate: str | None   # depth decision that switches it off, None for the stem and the head
    slot: int = 0


def section_slots(space: SearchSpace, with_bits: bool) -> list[SectionSlot]:
    """Stem, every block slot of every stage (at maximum depth), head -- with their dependencies."""
    n = space.num_stages

    def bits(stage: int) -> tuple[str, ...]:
        return (f"bits.weight[{stage}]", f"bits.act[{stage}]") if with_bits else ()

    slots = [SectionSlot(0, ("width[0]", "resolution", *bits(0)), None)]
    position = 1
    for s, spec in enumerate(space.stages):
        for j in range(max(spec.depths)):
            ins = (f"width[{s}]",) if j == 0 else ()
            deps = (*ins, f"width[{s + 1}]", f"kernel_size[{s}]", f"expand_ratio[{s}]", "resolution", *bits(s))
            slots.append(SectionSlot(position, deps, f"depth[{s}]", j))
            position += 1
    slots.append(SectionSlot(position, (f"width[{n}]", f"width[{n + 1}]", "resolution", *bits(n - 1)), None))
    return slots


SectionCosts = Callable[[Any, Sequence[Any]], tuple[Sequence[float], Sequence[float]]]


class ExpectedCost:
    """Exact per-section latency/energy tables over ``accelerators`` and the expected cost of a relaxed choice.

    ``section_costs(accelerator, sections)`` -> ``(latencies_ms, energies)``, one per workload section (e.g.
    a ``SystolicCostModel``'s ``score_many`` over the sections' layers: one vectorised batch per
    accelerator). ``accelerators`` is the feasible list (``[None]`` when only the network is searched on a
    fixed array).
    """

    def __init__(self, space: SearchSpace, decisions: Sequence[Decision], accelerators: Sequence[Any],
                 section_costs: SectionCosts, num_classes: int, in_chans: int = 3,
                 bits_space: BitsSpace | None = None) -> None:
        self.space = space
        self.decisions = {d.name: d for d in decisions}
        self.accelerators = list(accelerators)
        self.bits_space = bits_space
        self.slots = section_slots(space, bits_space is not None)
        workload = BitsWorkload(space) if bits_space is not None else None
        sections, shapes = [], []
        for slot in self.slots:
            options = [self.decisions[d].options for d in slot.deps]
            shapes.append([len(o) for o in options])
            for values in product(*options):
                arch, bits = self._representative(slot, values)
                found = (workload.sections(arch, bits, num_classes, in_chans) if workload is not None
                         else space.workload_sections(arch, num_classes, in_chans))
                sections.append(found[slot.position])
        lat = torch.zeros(len(self.accelerators), len(sections), dtype=torch.float64)
        energy = torch.zeros_like(lat)
        for a, acc in enumerate(self.accelerators):
            la, en = section_costs(acc, sections)
            lat[a] = torch.tensor(la, dtype=torch.float64)
            energy[a] = torch.tensor(en, dtype=torch.float64)
        self.latency: list[torch.Tensor] = []
        self.energy: list[torch.Tensor] = []
        start = 0
        for shape in shapes:
            count = math.prod(shape)
            self.latency.append(lat[:, start:start + count].reshape(len(self.accelerators), *shape))
            self.energy.append(energy[:, start:start + count].reshape(len(self.accelerators), *shape))
            start += count

    def _representative(self, slot: SectionSlot, values: Sequence[Any]) -> tuple[Arch, StageBits | None]:
        """An arch (every stage deepest) and bits with ``slot``'s dependencies at ``values``."""
        choice = {name: max(d.options) for name, d in self.decisions.items()}
        choice.update(zip(slot.deps, values))
        arch = arch_from_choice(self.space, choice)
        bits = bits_from_choice(self.space.num_stages, choice) if self.bits_space is not None else None
        return arch, bits

    def per_accelerator(self, probs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[latency | a], E[energy | a])`` for every accelerator ``a`` under independent ``probs``."""
        total_lat = total_energy = None
        for slot, lat, energy in zip(self.slots, self.latency, self.energy):
            for p in (probs[d].to(torch.float64) for d in reversed(slot.deps)):
                lat, energy = lat @ p, energy @ p
            if slot.depth_gate is not None:
                d = self.decisions[slot.depth_gate]
                runs = torch.tensor([1.0 if v > slot.slot else 0.0 for v in d.options], dtype=torch.float64)
                active = probs[slot.depth_gate].to(torch.float64) @ runs
                lat, energy = lat * active, energy * active
            total_lat = lat if total_lat is None else total_lat + lat
            total_energy = energy if total_energy is None else total_energy + energy
        return total_lat, total_energy

    def expected(self, probs: Mapping[str, torch.Tensor], acc_weights: torch.Tensor, metric: str) -> torch.Tensor:
        """The relaxed ``metric`` (see the module docstring) under network ``probs`` and accelerator weights."""
        lat, energy = self.per_accelerator(probs)
        per_acc = {"latency_ms": lat, "energy": energy, "edp": lat * energy}[metric]
        return acc_weights.to(torch.float64) @ per_acc


__all__ = ["Decision", "ExpectedCost", "RELAXED_METRICS", "SectionSlot", "arch_from_choice", "bits_from_choice",
           "network_decisions", "section_slots"]
