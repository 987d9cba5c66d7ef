"""FracTrain DFQ: a small gate per block picks an (activation, gradient) bit pair for every input.

``add_precision_gates`` wraps each block of a quantized model in ``GatedBlock``: a full-precision gate
(global average pool -> linear) scores the candidate pairs (default forward 3,4,4,6,6 / gradient
6,6,8,8,12) per sample, draws a hard choice (straight-through Gumbel-softmax in training, argmax in
eval), and the block output is the chosen candidate's. As in the paper's code, training simulates every
candidate and mixes with the one-hot mask (exact outputs, K times the compute); the cost is reported
analytically from the choices.

Cost of a sample in a block: its MACs times (b^2 + 2bg)/3, relative to fp32 training (32/32). The model's
realised relative cost weighs blocks by their MACs (measured on the first forward). The regularizer
follows FracTrain: its gradient on the choices is ``beta * sign(realised - target) * d(cost)``, pushing
the realised cost toward the target; a tensor hook adds it to the mask's gradient during backward, so
any LightningModule trains with it without changing its loss.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from effnn.precision.callbacks import PrecisionCallback, TurningPointStages, precision_root, step_loss
from effnn.precision.modules import LayerQuantizer
from effnn.precision.quantizers import check_bits
from effnn.precision.schedules import bitops_per_mac
from effnn.precision.state import PrecisionState
from effnn.precision.swap import (
    FullPrecision,
    QuantizationConfig,
    candidate_layers,
    is_quantizable,
    stored_weight,
)

DEFAULT_FWD_BITS = (3, 4, 4, 6, 6)
DEFAULT_GRAD_BITS = (6, 6, 8, 8, 12)
BLOCK_CLASS_SUFFIXES = ("Block", "Bottleneck", "InvertedResidual")


class DFQController:
    """What all gates of one model share: candidates, cost target and weight, and the realised costs."""

    def __init__(self, fwd_bits: Sequence[int] = DEFAULT_FWD_BITS,
                 grad_bits: Sequence[int] = DEFAULT_GRAD_BITS, target: float = 0.03, beta: float = 1.0,
                 tolerance: float = 0.0) -> None:
        if not fwd_bits or len(fwd_bits) != len(grad_bits):
            raise ValueError(f"DFQ needs equally long, non-empty candidate lists, got "
                             f"fwd_bits={list(fwd_bits)} and grad_bits={list(grad_bits)}")
        self.candidates = [(check_bits(int(a), "fwd_bits"), check_bits(int(g), "grad_bits"))
                           for a, g in zip(fwd_bits, grad_bits)]
        if beta < 0 or tolerance < 0:
            raise ValueError(f"beta and tolerance must be >= 0, got beta={beta}, tolerance={tolerance}")
        self.target = float(target)
        self.beta = float(beta)
        self.tolerance = float(tolerance)
        fp32 = bitops_per_mac(None, None)
        self.relative_costs = torch.tensor([bitops_per_mac(a, g) / fp32 for a, g in self.candidates])
        self.block_macs: dict[int, float] = {}
        self.block_costs: dict[int, torch.Tensor] = {}
        self.block_choices: dict[int, torch.Tensor] = {}

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def record(self, index: int, mask: torch.Tensor) -> None:
        """Store a block's per-candidate choice frequencies and mean relative cost (no device sync)."""
        freq = mask.detach().float().mean(0)
        self.block_choices[index] = freq
        self.block_costs[index] = (freq * self.relative_costs.to(freq.device)).sum()

    def share(self, index: int) -> float:
        """A block's fraction of the gated MACs."""
        total = sum(self.block_macs.values())
        return self.block_macs.get(index, 0.0) / total if total else 0.0

    def realised_cost(self) -> torch.Tensor | None:
        """Relative (vs fp32) training cost of the gated blocks at the last forward, MAC-weighted."""
        if not self.block_costs:
            return None
        return sum(self.share(i) * c for i, c in self.block_costs.items())  # type: ignore[return-value]

    def cost_gradient(self, index: int, batch: int, device: torch.device) -> torch.Tensor:
        """d(regularizer)/d(mask) for one block: beta * sign(realised - target) * share * cost_k / N."""
        realised = self.realised_cost()
        if realised is None or self.beta == 0:
            return torch.zeros(batch, self.num_candidates, device=device)
        gap = realised - self.target
        sign = torch.where(gap.abs() <= self.tolerance, torch.zeros_like(gap), torch.sign(gap))
        row = self.beta * sign * self.share(index) * self.relative_costs.to(device) / batch
        return row.expand(batch, -1)


class PrecisionGate(FullPrecision):
    """Per-sample logits over the bit-width candidates from the globally pooled block input."""

    def __init__(self, in_channels: int, num_candidates: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_candidates)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)  # start uniform over candidates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(-1) if x.dim() > 2 else x
        return self.fc(pooled.detach())


def _add_cost_gradient(grad: torch.Tensor, controller: DFQController, index: int) -> torch.Tensor:
    """Tensor hook on a block's choice mask: adds the cost regularizer's gradient to the task gradient."""
    return grad + controller.cost_gradient(index, grad.shape[0], grad.device).to(grad.dtype)


def _count_macs(block: nn.Module, run: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    """MACs per sample of ``block``'s conv/linear layers: output elements x weight fan-in, for each layer."""
    total = [0.0]

    def hook(layer: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() >= 2:
            total[0] += out[0].numel() * stored_weight(layer)[0].numel()

    handles = [m.register_forward_hook(hook) for _, m in candidate_layers(block)]
    try:
        out = run()
    finally:
        for h in handles:
            h.remove()
    return total[0], out


class GatedBlock(nn.Module):
    """A block run at a per-sample (forward, gradient) precision chosen by its ``PrecisionGate``."""

    def __init__(self, block: nn.Module, in_channels: int, state: PrecisionState, controller: DFQController,
                 index: int, tau: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"Gumbel-softmax temperature tau must be positive, got {tau}")
        self.block = block
        self.gate = PrecisionGate(in_channels, controller.num_candidates)
        self.state = state
        self.controller = controller
        self.index = index
        self.tau = tau

    def _run(self, k: int, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        fwd, grad = self.controller.candidates[k]
        with self.state.override(fwd_bits=fwd, grad_bits=grad):
            return self.block(x, *args, **kwargs)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        logits = self.gate(x)
        if self.training:
            mask = F.gumbel_softmax(logits, tau=self.tau, hard=True)
        else:
            mask = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        outs = []
        for k in range(self.controller.num_candidates):
            if self.index not in self.controller.block_macs:
                macs, out = _count_macs(self.block, lambda k=k: self._run(k, x, args, kwargs))
                self.controller.block_macs[self.index] = macs
            else:
                out = self._run(k, x, args, kwargs)
            outs.append(out)
        self.controller.record(self.index, mask)
        if mask.requires_grad and self.controller.beta > 0:
            # backward reaches the mask after the whole forward, so the realised cost covers every block
            mask.register_hook(functools.partial(_add_cost_gradient, controller=self.controller,
                                                 index=self.index))
        shape = (-1,) + (1,) * (outs[0].dim() - 1)
        return sum(mask[:, k].view(shape).to(o.dtype) * o for k, o in enumerate(outs))


def _block_in_channels(block: nn.Module) -> int:
    layers = candidate_layers(block)
    if not layers:
        raise ValueError(f"block {type(block).__name__} has no conv/linear layer to infer its input channels")
    layer = layers[0][1]
    return int(stored_weight(layer).shape[1]) * int(getattr(layer, "groups", 1))


def find_blocks(model: nn.Module, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the outermost blocks to gate: fnmatch ``patterns`` on module names, else modules whose
    class name ends with Block/Bottleneck/InvertedResidual (ResNet, MobileNet, timm, effnn models)."""
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or isinstance(module, FullPrecision | LayerQuantizer) or is_quantizable(module):
            continue
        if any(name.startswith(p + ".") for p in names):
            continue
        hit = (any(fnmatch.fnmatchcase(name, p) for p in patterns) if patterns
               else type(module).__name__.endswith(BLOCK_CLASS_SUFFIXES))
        if hit:
            names.append(name)
    return names


def add_precision_gates(model: nn.Module, state: PrecisionState, controller: DFQController,
                        blocks: Sequence[str] | None = None, tau: float = 1.0) -> list[str]:
    """Wrap each block of a quantized ``model`` in a ``GatedBlock``; returns the gated block names."""
    names = find_blocks(model, blocks)
    if not names:
        raise ValueError(f"no block to gate in {type(model).__name__}: pass blocks=[name patterns] "
                         f"(module names like 'blocks.*' or 'layer1.*')")
    for index, name in enumerate(names):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block = parent.get_submodule(child)
        setattr(parent, child, GatedBlock(block, _block_in_channels(block), state, controller, index, tau))
    return names


def remove_precision_gates(model: nn.Module) -> nn.Module:
    """Put the original blocks back (the gates are dropped)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, GatedBlock):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.block)
    return model


def find_controller(model: nn.Module) -> DFQController | None:
    for module in model.modules():
        if isinstance(module, GatedBlock):
            return module.controller
    return None


class DynamicFractionalQuantization(PrecisionCallback):
    """FracTrain DFQ (and, with several ``targets``, full FracTrain) as a callback.

    In ``setup`` it quantizes the model, then gates every block (``blocks``: name patterns, default
    auto-detected). ``targets`` are relative costs vs fp32 training (0.03 = 3%); with more than one, the
    target moves to the next value at each PFQ turning point of the training loss (FracTrain mode: the
    budget rises as training converges). Layers outside the gated blocks run at ``outside_bits``.
    Logs ``dfq/rel_cost`` (realised, vs fp32), ``dfq/target``, ``dfq/stage`` and ``train/rel_bitops``
    (cumulative cost vs static training at ``reference_bits``).
    """

    def __init__(self, fwd_bits: Sequence[int] = DEFAULT_FWD_BITS,
                 grad_bits: Sequence[int] = DEFAULT_GRAD_BITS,
                 targets: float | Sequence[float] = 0.03, beta: float = 1.0, tolerance: float = 0.0,
                 blocks: Sequence[str] | None = None, tau: float = 1.0,
                 outside_bits: tuple[int | None, int | None] = (8, 8),
                 reference_bits: tuple[int | None, int | None] = (8, 8),
                 eps: float = 0.05, eps_decay: float = 0.3, window: int = 1, window_unit: str = "epochs",
                 history: int = 5, scale_windows: int = 10,
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        self.targets = [float(targets)] if isinstance(targets, int | float) else [float(t) for t in targets]
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise ValueError(f"DFQ targets are relative costs in (0, 1] (0.03 = 3% of fp32), got {targets}")
        self.controller = DFQController(fwd_bits, grad_bits, self.targets[0], beta, tolerance)
        self.blocks = list(blocks) if blocks else None
        self.tau = tau
        self.outside_bits = (check_bits(outside_bits[0], "outside_bits[0]"),
                             check_bits(outside_bits[1], "outside_bits[1]"))
        self.schedule = TurningPointStages(len(self.targets), eps, eps_decay, window, window_unit, history,
                                           scale_windows, name="FracTrain")
        self.gated: list[str] = []
        super().__init__(self.outside_bits[0], reference_bits, quantization)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        fresh = self.state is None
        super().setup(trainer, pl_module, stage)
        root = precision_root(pl_module)
        existing = find_controller(root)
        if existing is not None:
            self.controller = existing
        elif fresh:
            self.gated = add_precision_gates(root, self._require_state(), self.controller, self.blocks, self.tau)
            rank_zero_info(f"DFQ: gated {len(self.gated)} blocks ({', '.join(self.gated)}); candidates "
                           f"{self.controller.candidates}")
        self.controller.target = self.targets[self.schedule.stage]

    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        return self.outside_bits

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        realised = self.controller.realised_cost()
        if realised is not None:
            value = float(realised)  # relative to fp32, i.e. cost per MAC / bitops_per_mac(32, 32)
            self.meter.add(value * bitops_per_mac(None, None))
            pl_module.log("dfq/rel_cost", value, on_step=True, on_epoch=True, prog_bar=True)
            pl_module.log("train/rel_bitops", self.meter.relative, on_step=True, on_epoch=False)
        pl_module.log("dfq/target", self.controller.target, on_step=True, on_epoch=False)
        pl_module.log("dfq/stage", float(self.schedule.stage), on_step=True, on_epoch=False)
        self.schedule.add_loss(step_loss(outputs, trainer))
        if self.schedule.tick("steps", trainer):
            self.controller.target = self.targets[self.schedule.stage]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.schedule.tick("epochs", trainer):
            self.controller.target = self.targets[self.schedule.stage]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "schedule": self.schedule.state_dict(),
                "target": self.controller.target}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.schedule.load_state_dict(state_dict["schedule"])
        self.controller.target = float(state_dict["target"])


__all__ = ["DFQController", "DynamicFractionalQuantization", "GatedBlock", "PrecisionGate",
           "add_precision_gates", "find_blocks", "find_controller", "remove_precision_gates"]
