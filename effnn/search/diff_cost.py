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
A co-searched accelerator's PEs are as wide as the candidate's widest weight and activation bits
(``effnn.search.costs.design_bits``), which couples every section to the bits of all stages. That is kept
exact too: the tables have one entry per PE design width, and a section of stage ``s`` at its own width
``u`` is weighted by P(max over all stages = W | stage s at u) = [W = u] F_s(u) + [W > u] (F_s(W) - F_s(W-)),
with F_s the CDF of the maximum over the other stages (a product of per-stage CDFs).
EDP is priced per accelerator as E[energy | a] * E[latency | a] (a product of expectations, not the
expectation of the product: the one approximation here; the exact EDP of every discretised result is
computed afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import torch

from effnn.errors import ConfigError
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
    deps: tuple[str, ...]    # decision names the section's shape depends on (bits excluded)
    depth_gate: str | None   # depth decision that switches it off, None for the stem and the head
    stage: int               # the stage whose bits price it
    slot: int = 0


def section_slots(space: SearchSpace) -> list[SectionSlot]:
    """Stem, every block slot of every stage (at maximum depth), head -- with their dependencies."""
    n = space.num_stages
    slots = [SectionSlot(0, ("width[0]", "resolution"), None, 0)]
    position = 1
    for s, spec in enumerate(space.stages):
        for j in range(max(spec.depths)):
            ins = (f"width[{s}]",) if j == 0 else ()
            deps = (*ins, f"width[{s + 1}]", f"kernel_size[{s}]", f"expand_ratio[{s}]", "resolution")
            slots.append(SectionSlot(position, deps, f"depth[{s}]", s, j))
            position += 1
    slots.append(SectionSlot(position, (f"width[{n}]", f"width[{n + 1}]", "resolution"), None, n - 1))
    return slots


def max_coupling(probs: Sequence[torch.Tensor], stage: int) -> torch.Tensor:
    """``M[u, W]`` = P(max over all stages = option W | ``stage`` at option u), options sorted ascending."""
    cdfs = [torch.cumsum(p.to(torch.float64), 0) for p in probs]
    others = torch.ones_like(cdfs[0])
    for s, cdf in enumerate(cdfs):
        if s != stage:
            others = others * cdf
    step = torch.diff(others, prepend=torch.zeros(1, dtype=torch.float64))  # P(max of the others = W)
    k = len(others)
    u = torch.arange(k).unsqueeze(1)
    w = torch.arange(k).unsqueeze(0)
    return torch.where(w == u, others.unsqueeze(0).expand(k, k), torch.where(w > u, step.unsqueeze(0).expand(k, k),
                                                                             torch.zeros((), dtype=torch.float64)))


#: (accelerator, PE design widths or None, sections) -> (latencies in ms, energies), one per section
SectionCosts = Callable[[Any, tuple[int, int] | None, Sequence[Any]], tuple[Sequence[float], Sequence[float]]]
#: most table entries (accelerators x PE widths x section configurations) built before refusing: about
#: 0.13 ms each on one CPU core in SCALE-Sim mode (tiny32 with 4/8-bit choices: 218k entries for 32 accelerators
#: in 29 s), far more in mapped modes (a mapping search per new layer shape)
MAX_TABLE_ENTRIES = 1_000_000


class ExpectedCost:
    """Exact per-section latency/energy tables over ``accelerators`` and the expected cost of a relaxed choice.

    ``section_costs(accelerator, pe_bits, sections)`` prices each workload section alone (e.g. with
    ``SubnetCosts.cost_model(accelerator, pe_bits)``). ``accelerators`` is the feasible list (``[None]`` for the
    fixed array). ``couple_pe_bits``: the PEs are as wide as the candidate's widest bits (a co-search with
    bits); otherwise ``pe_bits`` is None and the cost model's own widths apply.
    """

    def __init__(self, space: SearchSpace, decisions: Sequence[Decision], accelerators: Sequence[Any],
                 section_costs: SectionCosts, num_classes: int, in_chans: int = 3,
                 bits_space: BitsSpace | None = None, couple_pe_bits: bool = False) -> None:
        self.space = space
        self.decisions = {d.name: d for d in decisions}
        self.accelerators = list(accelerators)
        self.bits_space = bits_space
        self.couple = couple_pe_bits and bits_space is not None
        self.slots = section_slots(space)
        own = list(product(bits_space.weight_choices, bits_space.act_choices)) if bits_space is not None else [None]
        designs = own if self.couple else [None]
        sections, owners, shapes = self._sections(own, num_classes, in_chans)
        entries = len(self.accelerators) * len(designs) * len(sections)
        if entries > MAX_TABLE_ENTRIES:
            raise ConfigError(f"the differentiable cost needs {entries:,} table entries ({len(self.accelerators)} "
                              f"accelerators x {len(designs)} PE widths x {len(sections)} section configurations), "
                              f"more than {MAX_TABLE_ENTRIES:,}; narrow search.hardware.space (e.g. fewer pe_type or "
                              f"mapping choices) or the bit choices")
        lat = torch.zeros(len(self.accelerators), len(designs), len(sections), dtype=torch.float64)
        energy = torch.zeros_like(lat)
        for d, design in enumerate(designs):
            # a stage's own bits never exceed the PE width (the widest bits): those entries stay 0, unused
            needed = [i for i, pair in enumerate(owners)
                      if design is None or (pair[0] <= design[0] and pair[1] <= design[1])]
            for a, acc in enumerate(self.accelerators):
                la, en = section_costs(acc, design, [sections[i] for i in needed])
                lat[a, d, needed] = torch.tensor(la, dtype=torch.float64)
                energy[a, d, needed] = torch.tensor(en, dtype=torch.float64)
        dw = len(bits_space.weight_choices) if self.couple else 1
        da = len(bits_space.act_choices) if self.couple else 1
        self.latency, self.energy = [], []
        start = 0
        for shape in shapes:  # each slot's block: [A, Wd, Ad, u, v, *deps]
            count = math.prod(shape)
            full = (len(self.accelerators), dw, da, *shape)
            self.latency.append(lat[:, :, start:start + count].reshape(full))
            self.energy.append(energy[:, :, start:start + count].reshape(full))
            start += count

    def _sections(self, own: Sequence[tuple[int, int] | None], num_classes: int, in_chans: int
                  ) -> tuple[list[Any], list[Any], list[list[int]]]:
        """Every slot's sections for each own-bits pair and dependency combination, each one's own bits, and
        the slots' shapes."""
        workload = BitsWorkload(self.space) if self.bits_space is not None else None
        nu = len(self.bits_space.weight_choices) if self.bits_space is not None else 1
        sections, owners, shapes = [], [], []
        for slot in self.slots:
            options = [self.decisions[d].options for d in slot.deps]
            shapes.append([nu, len(own) // nu, *(len(o) for o in options)])
            for pair in own:
                for values in product(*options):
                    choice = {name: max(d.options) for name, d in self.decisions.items()}
                    choice.update(zip(slot.deps, values))
                    arch = arch_from_choice(self.space, choice)
                    if workload is None:
                        found = self.space.workload_sections(arch, num_classes, in_chans)
                    else:
                        bits = StageBits.uniform(self.space.num_stages, pair[0], pair[1])
                        found = workload.sections(arch, bits, num_classes, in_chans)
                    sections.append(found[slot.position])
                    owners.append(pair)
        return sections, owners, shapes

    def _bits_probs(self, probs: Mapping[str, torch.Tensor], kind: str) -> list[torch.Tensor]:
        return [probs[f"bits.{kind}[{s}]"].to(torch.float64) for s in range(self.space.num_stages)]

    def per_accelerator(self, probs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[latency | a], E[energy | a])`` for every accelerator ``a`` under independent ``probs``."""
        one = torch.ones(1, dtype=torch.float64)
        if self.bits_space is not None:
            wprobs, aprobs = self._bits_probs(probs, "weight"), self._bits_probs(probs, "act")
        totals = []
        for tables in (self.latency, self.energy):
            total = None
            for slot, table in zip(self.slots, tables):
                x = table
                for p in (probs[d].to(torch.float64) for d in reversed(slot.deps)):
                    x = x @ p
                if self.bits_space is None:
                    pu, pv, m, n = one, one, one.reshape(1, 1), one.reshape(1, 1)
                else:
                    pu, pv = wprobs[slot.stage], aprobs[slot.stage]
                    m = max_coupling(wprobs, slot.stage) if self.couple else torch.ones(len(pu), 1, dtype=torch.float64)
                    n = max_coupling(aprobs, slot.stage) if self.couple else torch.ones(len(pv), 1, dtype=torch.float64)
                x = torch.einsum("awxuv,u,uw,v,vx->a", x, pu, m, pv, n)
                if slot.depth_gate is not None:
                    d = self.decisions[slot.depth_gate]
                    runs = torch.tensor([1.0 if v > slot.slot else 0.0 for v in d.options], dtype=torch.float64)
                    x = x * (probs[slot.depth_gate].to(torch.float64) @ runs)
                total = x if total is None else total + x
            totals.append(total)
        return totals[0], totals[1]

    def expected(self, probs: Mapping[str, torch.Tensor], acc_weights: torch.Tensor, metric: str) -> torch.Tensor:
        """The relaxed ``metric`` (see the module docstring) under network ``probs`` and accelerator weights."""
        lat, energy = self.per_accelerator(probs)
        per_acc = {"latency_ms": lat, "energy": energy, "edp": lat * energy}[metric]
        return acc_weights.to(torch.float64) @ per_acc


__all__ = ["Decision", "ExpectedCost", "MAX_TABLE_ENTRIES", "RELAXED_METRICS", "SectionSlot", "arch_from_choice",
           "bits_from_choice", "max_coupling", "network_decisions", "section_slots"]
