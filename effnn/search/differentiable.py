"""Auto-NBA's differentiable joint search of (network, bit-widths, accelerator) over a trained, frozen supernet.

Every choice -- resolution, per-stage width/depth/kernel/expand, per-stage weight and activation bits, and
each accelerator gene (rows, cols, dataflow, SRAMs) -- gets a vector of learnable logits. One step:

* **network and bits, hard** (GDAS / Auto-NBA's single-path forward): a straight-through Gumbel-softmax
  sample picks one option per choice; the supernet runs that one subnet at those bits, and the sampled
  option's gate (1 in the forward pass, its soft Gumbel weight in the backward pass) multiplies what the
  choice produces -- the resized input (resolution), the stem output (stem width), each stage's output
  (its width, depth, kernel, expand, bits) and the pooled head features (head width) -- so cross-entropy
  on a training batch reaches those logits;
* **accelerator, soft** (Auto-NBA's heterogeneous sampling): each gene's soft Gumbel-softmax weights,
  multiplied and renormalised over the configurations within budget (with PEs at the narrowest bit
  choices, the co-search's necessary condition), weight the per-accelerator costs;
* **cost**: the expected latency/energy/EDP of the relaxed network on the relaxed accelerator from exact
  per-section tables (:mod:`effnn.search.diff_cost`); the loss is ``CE + lambda * log(cost)`` (the log makes
  ``lambda`` independent of the cost's unit).

Only the logits train (Adam, betas (0.5, 0.999) as in Auto-NBA's public code); the supernet is frozen and
its state restored afterwards. The Gumbel temperature anneals exponentially from ``tau_start`` to ``tau_end``.
One run per ``lambda``; each ends with its argmax candidate and the most frequent hard samples of its
last steps, which the caller evaluates exactly. Step ``t`` of run ``r`` draws its noise and its batch from
generators seeded with ``(seed, r, t)``, and the logits plus Adam's state are saved atomically every
``save_every`` steps, so a resumed search reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from effnn.errors import CheckpointError, ConfigError
from effnn.io import atomic_write_json
from effnn.nas.precision import BitsSpace, StageBits, StagePrecision
from effnn.nas.space import Arch, SearchSpace
from effnn.nas.supernet import Supernet, resize_to
from effnn.search.candidate import Candidate
from effnn.search.costs import design_bits
from effnn.search.diff_cost import (
    RELAXED_METRICS,
    Decision,
    ExpectedCost,
    arch_from_choice,
    bits_from_choice,
    network_decisions,
)
from effnn.search.hardware import Accelerator, HardwareSpace

STATE_FORMAT = "effnn-differentiable-search"
BN_MODES = ("train", "recalibrate")


@dataclass(frozen=True)
class DifferentiableSettings:
    """Knobs of the differentiable search (``search.differentiable`` in conf/search/evolution.yaml)."""

    steps: int = 200
    lr: float = 0.05
    tau_start: float = 5.0
    tau_end: float = 0.5
    lambdas: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0)
    metric: str = "edp"
    batch_size: int = 64
    seed: int = 0
    bn_mode: str = "train"
    save_every: int = 20
    top_k: int = 3
    tail_fraction: float = 0.25

    def __post_init__(self) -> None:
        lambdas = self.lambdas if isinstance(self.lambdas, Sequence) and not isinstance(self.lambdas, str) \
            else [self.lambdas]
        object.__setattr__(self, "lambdas", tuple(float(v) for v in lambdas))
        where = "search.differentiable"
        for name in ("steps", "batch_size", "save_every", "top_k"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lambdas or any(v < 0 or not math.isfinite(v) for v in self.lambdas):
            raise ConfigError(f"{where}.lambdas={list(self.lambdas)} must be a non-empty list of finite values >= 0")
        if not (self.lr > 0 and self.tau_start > 0 and self.tau_end > 0):
            raise ConfigError(f"{where}: lr, tau_start and tau_end must be > 0, got {self.lr}, {self.tau_start}, "
                              f"{self.tau_end}")
        if self.metric not in RELAXED_METRICS:
            raise ConfigError(f"{where}.metric={self.metric!r}; choose one of {', '.join(RELAXED_METRICS)}")
        if self.bn_mode not in BN_MODES:
            raise ConfigError(f"{where}.bn_mode={self.bn_mode!r}; choose one of {', '.join(BN_MODES)}")
        if not 0.0 < self.tail_fraction <= 1.0:
            raise ConfigError(f"{where}.tail_fraction must be in (0, 1], got {self.tail_fraction}")

    def tau(self, step: int) -> float:
        """Exponential annealing: ``tau_start`` at step 0, ``tau_end`` at the last step."""
        if self.steps == 1:
            return self.tau_start
        return self.tau_start * (self.tau_end / self.tau_start) ** (step / (self.steps - 1))

    def fingerprint(self) -> dict[str, Any]:
        data = asdict(self)
        data["lambdas"] = list(self.lambdas)
        return data


@dataclass
class RunRecord:
    """What one lambda's run ended with (kept in the state file)."""

    lam: float
    argmax: Candidate
    frequent: list[Candidate]
    final_cost: float
    history: list[dict[str, float]] = field(default_factory=list)
    probabilities: dict[str, list[float]] = field(default_factory=dict)  # softmax of the final logits


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def _gumbel(shape: int, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp_(1e-20, 1.0 - 1e-12)
    return (-torch.log(-torch.log(u))).to(torch.float32)


class DifferentiableSearch:
    """Gradient search of the joint space (see the module docstring). The caller evaluates the results."""

    def __init__(self, supernet: Supernet, train_set: Dataset, settings: DifferentiableSettings, cost: ExpectedCost,
                 *, precision: StagePrecision | None = None, bits_space: BitsSpace | None = None,
                 hardware: HardwareSpace | None = None, calib_batches: Sequence[Any] = (),
                 state_path: str | Path | None = None, context: Mapping[str, Any] | None = None,
                 on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> None:
        if (bits_space is None) != (precision is None):
            raise ValueError("searching bits needs both a BitsSpace and the supernet's StagePrecision")
        if settings.bn_mode == "recalibrate" and not calib_batches:
            raise ConfigError("search.differentiable.bn_mode=recalibrate needs calibration batches")
        self.supernet, self.train_set, self.settings, self.cost = supernet, train_set, settings, cost
        self.space: SearchSpace = supernet.space
        self.precision, self.bits_space, self.hardware = precision, bits_space, hardware
        self.calib_batches = list(calib_batches)
        self.state_path = Path(state_path) if state_path is not None else None
        self.context = dict(context or {})
        self.on_step = on_step
        self.net_decisions = network_decisions(self.space, bits_space)
        self.hw_decisions = ([Decision(f"hw.{g}", hardware.genes[g]) for g in hardware.genes]
                             if hardware is not None else [])
        self.accelerators = list(cost.accelerators)
        self.records: list[RunRecord] = []
        self._start_logits()

    # ------------------------------------------------------------------------------------------ parameters

    def _start_logits(self) -> None:
        """Zero logits (uniform choices) and a fresh Adam, as every lambda's run starts."""
        self.logits = {d.name: torch.zeros(d.size, requires_grad=True)
                       for d in self.net_decisions + self.hw_decisions}
        self.optimizer = torch.optim.Adam(list(self.logits.values()), lr=self.settings.lr, betas=(0.5, 0.999))
        self.step_in_run = 0
        self.samples: list[dict[str, int]] = []
        self.history: list[dict[str, float]] = []

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {name: torch.softmax(v, dim=0) for name, v in self.logits.items()}

    def _accelerator_index(self) -> torch.Tensor:
        """(num accelerators, num genes) option indices of every feasible accelerator."""
        rows = [[d.options.index(getattr(acc, d.name[3:])) for d in self.hw_decisions] for acc in self.accelerators]
        return torch.tensor(rows, dtype=torch.long).reshape(len(self.accelerators), len(self.hw_decisions))

    def accelerator_weights(self, gene_weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Product of per-gene weights for every feasible accelerator, renormalised (the budget's mask)."""
        if not self.hw_decisions:
            return torch.ones(1, dtype=torch.float64)
        index = self._accelerator_index()
        w = torch.ones(len(self.accelerators), dtype=torch.float64)
        for g, d in enumerate(self.hw_decisions):
            w = w * gene_weights[d.name].to(torch.float64)[index[:, g]]
        return w / w.sum()

    # ------------------------------------------------------------------------------------------- one step

    def _sample(self, generator: torch.Generator, tau: float) -> tuple[dict[str, int], dict[str, torch.Tensor],
                                                                           dict[str, torch.Tensor]]:
        """Hard straight-through gates for the network, soft Gumbel weights for the accelerator genes."""
        index, gates, soft = {}, {}, {}
        for d in self.net_decisions + self.hw_decisions:
            y = torch.softmax((self.logits[d.name] + _gumbel(d.size, generator)) / tau, dim=0)
            if d.name.startswith("hw."):
                soft[d.name] = y
                continue
            i = int(y.argmax())
            index[d.name] = i
            gates[d.name] = 1.0 - y[i].detach() + y[i]
        return index, gates, soft

    def choice(self, index: Mapping[str, int]) -> Candidate:
        """The discrete point of per-decision option indices (accelerator genes optional)."""
        values = {d.name: d.options[index[d.name]] for d in self.net_decisions}
        arch = arch_from_choice(self.space, values)
        bits = bits_from_choice(self.space.num_stages, values) if self.bits_space is not None else None
        hw = None
        if self.hw_decisions and all(d.name in index for d in self.hw_decisions):
            hw = Accelerator.from_dict({d.name[3:]: d.options[index[d.name]] for d in self.hw_decisions})
        return Candidate(arch, hw, bits)

    def _batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.train_set), generator=generator)[:self.settings.batch_size].tolist()
        x, y = default_collate([self.train_set[i] for i in idx])
        return x, y

    def gated_logits(self, x: torch.Tensor, arch: Arch, gates: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The active subnet's logits with each choice's gate multiplying what that choice produces."""
        net, n = self.supernet, self.space.num_stages
        h = net.forward_stem(resize_to(x, arch.resolution) * gates["resolution"]) * gates["width[0]"]
        stage_of = {b: s for s, blocks in enumerate(net.stage_blocks) for b in blocks}
        active = net.active_blocks
        for k, b in enumerate(active):
            h = net.blocks[b](h)
            s = stage_of[b]
            if k + 1 == len(active) or stage_of[active[k + 1]] != s:
                names = [f"width[{s + 1}]", f"depth[{s}]", f"kernel_size[{s}]", f"expand_ratio[{s}]"]
                if self.bits_space is not None:
                    names += [f"bits.weight[{s}]", f"bits.act[{s}]"]
                h = h * math.prod(gates[name] for name in names)
        pooled = net.forward_head(net.forward_last_conv(h), pre_logits=True) * gates[f"width[{n + 1}]"]
        return net.classifier(net.dropout(pooled))

    def _forward_loss(self, choice: Candidate, gates: Mapping[str, torch.Tensor],
                      batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        from effnn.search.evaluator import recalibrate_subnet

        self.supernet.set_arch(choice.arch)
        if self.precision is not None:
            self.precision.set(choice.bits)
        if self.settings.bn_mode == "recalibrate":
            if self.precision is not None:
                self.precision.reset_activation_ranges()
            self.supernet.train()
            with torch.no_grad():
                recalibrate_subnet(self.supernet, choice.arch, self.calib_batches)
            self.supernet.eval()
        else:
            self.supernet.train()  # BN on batch statistics: the sampled subnet's own, no recalibration
        self.supernet.dropout.eval()  # deterministic (exact resume); the supernet is not being trained
        x, y = batch
        return F.cross_entropy(self.gated_logits(x, choice.arch, gates), y)

    def step(self, run: int, lam: float) -> dict[str, float]:
        """One optimisation step of run ``run`` (its noise and batch depend on (seed, run, step) only)."""
        t = self.step_in_run
        generator = torch.Generator().manual_seed(_seed(self.settings.seed, run, t))
        tau = self.settings.tau(t)
        index, gates, soft = self._sample(generator, tau)
        batch = self._batch(generator)
        choice = self.choice(index)
        ce = self._forward_loss(choice, gates, batch)
        probs = self.probabilities()
        cost = self.cost.expected(probs, self.accelerator_weights(soft), self.settings.metric)
        loss = ce + lam * torch.log(cost).to(ce.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_in_run = t + 1
        if t >= self.settings.steps * (1.0 - self.settings.tail_fraction):
            self.samples.append(dict(index, **self._hw_argmax(soft, choice.bits)))
        record = {"ce": ce.item(), "cost": cost.item(), "loss": loss.item(), "tau": tau}
        self.history.append(record)
        return record

    def _hw_argmax(self, weights: Mapping[str, torch.Tensor], bits: StageBits | None) -> dict[str, int]:
        """The accelerator ``weights`` favour most among those within budget with PEs as wide as ``bits`` need
        (the relaxation masks with the necessary condition, PEs at the narrowest bit choices)."""
        if not self.hw_decisions:
            return {}
        joint = self.accelerator_weights(weights)
        pe_bits = design_bits(bits) if bits is not None else None
        fits = torch.tensor([self.hardware.within_budget(acc, pe_bits) for acc in self.accelerators])
        if bool(fits.any()):
            joint = torch.where(fits, joint, torch.full_like(joint, -1.0))
        best = int(joint.argmax())
        return {d.name: int(i) for d, i in zip(self.hw_decisions, self._accelerator_index()[best])}

    # ---------------------------------------------------------------------------------------- the search

    def discretise(self, lam: float) -> RunRecord:
        """The argmax point (accelerator: the feasible one of highest joint probability) and the most
        frequent distinct samples of the run's last steps."""
        probs = self.probabilities()
        index = {d.name: int(probs[d.name].argmax()) for d in self.net_decisions}
        index.update(self._hw_argmax(probs, self.choice(index).bits))
        argmax = self.choice(index)
        counts = Counter(json.dumps(self.choice(s).to_dict(), sort_keys=True) for s in self.samples)
        frequent = [Candidate.from_dict(json.loads(k)) for k, _ in counts.most_common(self.settings.top_k)]
        with torch.no_grad():
            final = float(self.cost.expected(probs, self.accelerator_weights(probs), self.settings.metric))
        return RunRecord(lam, argmax, frequent, final, list(self.history),
                         {k: v.detach().tolist() for k, v in probs.items()})

    def run(self, resume: bool = False) -> list[RunRecord]:
        """Run every lambda's optimisation (continuing a saved state when resuming); the per-run results."""
        if resume:
            self.load_state()
        saved = {k: v.detach().clone() for k, v in self.supernet.state_dict().items()}
        flags = [p.requires_grad for p in self.supernet.parameters()]
        bits_before = self.precision.bits if self.precision is not None else None
        try:
            for p in self.supernet.parameters():
                p.requires_grad_(False)
            for run in range(len(self.records), len(self.settings.lambdas)):
                self._run_one(run)
        finally:
            self.supernet.load_state_dict(saved)
            for p, flag in zip(self.supernet.parameters(), flags):
                p.requires_grad_(flag)
            if self.precision is not None:
                self.precision.set(bits_before)
            self.supernet.eval()
        return list(self.records)

    def _run_one(self, run: int) -> None:
        lam = self.settings.lambdas[run]
        while self.step_in_run < self.settings.steps:
            record = self.step(run, lam)
            if self.on_step is not None:
                self.on_step(run, self.step_in_run, record)
            if self.step_in_run % self.settings.save_every == 0 and self.step_in_run < self.settings.steps:
                self.save_state(run)
        self.records.append(self.discretise(lam))
        self._start_logits()
        self.save_state(run + 1)

    # ---------------------------------------------------------------------------------------- state file

    def state_dict(self, run: int) -> dict[str, Any]:
        opt = self.optimizer.state_dict()
        return {
            "format": STATE_FORMAT, "settings": self.settings.fingerprint(), "context": self.context,
            "run": run, "step": self.step_in_run,
            "logits": {k: v.detach().tolist() for k, v in self.logits.items()},
            "adam": {str(i): {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in s.items()}
                     for i, s in opt["state"].items()},
            "samples": self.samples, "history": self.history,
            "records": [{"lam": r.lam, "argmax": r.argmax.to_dict(), "frequent": [c.to_dict() for c in r.frequent],
                         "final_cost": r.final_cost, "history": r.history, "probabilities": r.probabilities}
                        for r in self.records],
        }

    def save_state(self, run: int) -> None:
        if self.state_path is not None:
            atomic_write_json(self.state_path, self.state_dict(run))

    def load_state(self) -> bool:
        """Continue from ``state_path`` (False if there is none yet)."""
        if self.state_path is None or not self.state_path.exists():
            return False
        try:
            state = json.loads(self.state_path.read_text())
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format is {state.get('format')!r}, not {STATE_FORMAT!r}")
            settings, context = dict(state["settings"]), dict(state.get("context", {}))
            records = [RunRecord(r["lam"], Candidate.from_dict(r["argmax"]),
                                 [Candidate.from_dict(c) for c in r["frequent"]], r["final_cost"], r["history"],
                                 r["probabilities"])
                       for r in state["records"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.state_path} is corrupt ({err}); delete it to start over or pass "
                                  f"resume=false") from err
        self._check_compatible(settings, context)
        try:
            self._restore_run(state)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.state_path} is corrupt ({err}); delete it to start over or pass "
                                  f"resume=false") from err
        self.records = records
        return True

    def _restore_run(self, state: Mapping[str, Any]) -> None:
        self._start_logits()
        with torch.no_grad():
            for name, values in state["logits"].items():
                self.logits[name].copy_(torch.tensor(values, dtype=torch.float32))
        opt = self.optimizer.state_dict()
        opt["state"] = {int(i): {k: torch.tensor(v, dtype=torch.float32) for k, v in s.items()}
                        for i, s in state["adam"].items()}
        self.optimizer.load_state_dict(opt)
        self.step_in_run = int(state["step"])
        self.samples = [dict(s) for s in state["samples"]]
        self.history = [dict(h) for h in state["history"]]

    def _check_compatible(self, settings: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        ours = self.settings.fingerprint()
        diff = [f"{k}: saved {settings.get(k)!r}, now {v!r}" for k, v in ours.items() if settings.get(k) != v]
        diff += [f"{k}: saved {context.get(k)!r}, now {v!r}" for k, v in self.context.items() if context.get(k) != v]
        if diff:
            raise ConfigError(f"cannot resume {self.state_path}: it was written with other settings "
                              f"({'; '.join(diff)}); use the same settings or a new out= directory")


__all__ = ["BN_MODES", "DifferentiableSearch", "DifferentiableSettings", "Candidate", "RunRecord"]
