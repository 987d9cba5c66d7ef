"""FracTrain DFQ: a gate picks, per input and per block, an (activation, gradient) bit pair; weights stay fixed.

Follows the public FracTrain code (RICE-EIC/FracTrain, ``fractrain_cifar/train_dfq.py`` and ``models.py``):

- Weights inside the gated blocks are quantized at a fixed ``weight_bits`` (FracTrain: 4 on CIFAR, 6 on
  ImageNet); the gate chooses the activation bits ``a`` and gradient bits ``g`` only, from the candidates
  (default a = 3,4,4,6,6 / g = 6,6,8,8,12).
- Cost of one MAC, relative to fp32 training: forward ``w a``, error backprop ``w g``, weight gradient
  ``a g``, i.e. ``(w a + w g + a g) / (3 * 32 * 32)``. The realised cost (FracTrain's ``cp``) weighs each
  block by its MACs (FracTrain's ``conv_info``).
- Regulariser: ``beta * reg * sum_blocks sum_batch sum_k mask * (3 * cost_k) * macs_l / mean(macs)``
  with ``reg`` = +1 when the batch's realised cost is at or above the target, -1 below it (+-0.1 inside
  the ``relax`` band). It is summed over the batch, not averaged. Its gradient reaches the gates through a
  tensor hook on each block's mask, so any LightningModule trains with it without changing its loss.
- Gate ("rnn"): per block, avgpool -> 1x1 conv -> ReLU -> 1x1 conv embeds the block input; one LSTM shared
  by all blocks (hidden state carried from block to block within a forward) and a linear projection score
  the candidates; the choice is the argmax, deterministic in training and evaluation, with a
  straight-through gradient through the softmax.
- Training runs every candidate and mixes the outputs with the one-hot mask (exact outputs, K times the
  compute), as the paper's code does.

Variants (not FracTrain, kept for comparison): ``gate="linear"`` (per-block pooled linear gate with
straight-through Gumbel-softmax in training), ``weight_bits=None`` (weights at the candidate's forward bits,
cost ``(a^2 + 2 a g) / 3``), ``regularizer="normalized"`` (per-sample, MAC-share-weighted strength).
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch.nn.utils import parametrize

from effnn.precision.callbacks import PrecisionCallback, TurningPointStages, precision_root, step_loss
from effnn.precision.modules import LayerQuantizer, WeightFakeQuant
from effnn.precision.quantizers import check_bits
from effnn.precision.schedules import bitops_per_mac
from effnn.precision.state import PrecisionState
from effnn.precision.swap import (
    FullPrecision,
    QuantizationConfig,
    candidate_layers,
    is_quantizable,
    quantized_layers,
    stored_weight,
)

DEFAULT_FWD_BITS = (3, 4, 4, 6, 6)  # FracTrain train_dfq.py `bits`
DEFAULT_GRAD_BITS = (6, 6, 8, 8, 12)  # FracTrain train_dfq.py `grad_bits`
DEFAULT_WEIGHT_BITS = 4  # FracTrain README: --weight_bits 4 on CIFAR (6 on ImageNet)
DEFAULT_BETA = 1e-3  # FracTrain train_dfq.py --beta default
BLOCK_CLASS_SUFFIXES = ("Block", "Bottleneck", "InvertedResidual")
GATES = ("rnn", "linear")
REGULARIZERS = ("fractrain", "normalized")


def training_cost_per_mac(weight_bits: int | None, act_bits: int | None, grad_bits: int | None) -> float:
    """Bit-operations of one MAC over a training step: forward ``w a``, error ``w g``, weight grad ``a g``,
    averaged over the three passes (None = 32). Equals ``bitops_per_mac(a, g)`` when ``w == a``."""
    w, a, g = (32 if b is None else b for b in (weight_bits, act_bits, grad_bits))
    return (w * a + w * g + a * g) / 3.0


class DFQController:
    """What all gates of one model share: candidates, weight bits, cost target, and the last forward's choices."""

    def __init__(self, fwd_bits: Sequence[int] = DEFAULT_FWD_BITS,
                 grad_bits: Sequence[int] = DEFAULT_GRAD_BITS, target: float = 0.03,
                 beta: float = DEFAULT_BETA, relax: float = 0.0,
                 weight_bits: int | None = DEFAULT_WEIGHT_BITS, regularizer: str = "fractrain") -> None:
        if not fwd_bits or len(fwd_bits) != len(grad_bits):
            raise ValueError(f"DFQ needs equally long, non-empty candidate lists, got "
                             f"fwd_bits={list(fwd_bits)} and grad_bits={list(grad_bits)}")
        self.candidates = [(check_bits(int(a), "fwd_bits"), check_bits(int(g), "grad_bits"))
                           for a, g in zip(fwd_bits, grad_bits)]
        if beta < 0 or relax < 0:
            raise ValueError(f"beta and relax must be >= 0, got beta={beta}, relax={relax}")
        if regularizer not in REGULARIZERS:
            raise ValueError(f"DFQ regularizer must be one of {REGULARIZERS}, got {regularizer!r}")
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.target, self.beta, self.relax = float(target), float(beta), float(relax)
        self.regularizer = regularizer
        fp32 = training_cost_per_mac(None, None, None)
        self.relative_costs = torch.tensor([
            training_cost_per_mac(a if self.weight_bits is None else self.weight_bits, a, g) / fp32
            for a, g in self.candidates], dtype=torch.float64)
        self.block_macs: dict[int, float] = {}
        self.block_counts: dict[int, torch.Tensor] = {}  # per candidate: samples that chose it (detached)
        self.batch = 0
        self.num_blocks = 0  # gated blocks, set by add_precision_gates

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def record(self, index: int, mask: torch.Tensor) -> None:
        """Store how many samples of the batch chose each candidate in block ``index`` (no device sync)."""
        self.block_counts[index] = mask.detach().double().sum(0)
        self.batch = int(mask.shape[0])

    @property
    def block_choices(self) -> dict[int, torch.Tensor]:
        """Per block, the fraction of the batch that chose each candidate."""
        return {i: c / max(1, self.batch) for i, c in self.block_counts.items()}

    def share(self, index: int) -> float:
        """A block's fraction of the gated MACs."""
        total = sum(self.block_macs.values())
        return self.block_macs.get(index, 0.0) / total if total else 0.0

    def _mac_weight(self, index: int) -> float:
        """FracTrain's ``conv_info[l] / mean(conv_info)``: a block's MACs over the mean block's."""
        mean = sum(self.block_macs.values()) / max(1, len(self.block_macs))
        return self.block_macs.get(index, 0.0) / mean if mean else 0.0

    def realised_cost(self) -> torch.Tensor | None:
        """FracTrain's ``cp`` (as a fraction, not percent): the last batch's training cost of the gated
        blocks relative to fp32, every block weighted by its MACs."""
        if not self.block_counts or not self.batch:
            return None
        return sum(self.share(i) * (c * self.relative_costs.to(c.device)).sum() / self.batch
                   for i, c in self.block_counts.items())  # type: ignore[return-value]

    def reg_sign(self) -> float:
        """FracTrain's ``reg``: +1 at/above target + relax, -1 below target - relax, +-0.1 inside the band."""
        realised = self.realised_cost()
        if realised is None:
            return 0.0
        cp, t, r = float(realised), self.target, self.relax
        if cp < t - r:
            return -1.0
        if cp >= t + r:
            return 1.0
        return 0.1 if cp >= t else -0.1

    def cost_gradient(self, index: int, batch: int, device: torch.device) -> torch.Tensor:
        """d(regulariser)/d(mask) of block ``index``, one row per sample.

        fractrain: ``beta * reg * 3 cost_k * macs_l / mean(macs)`` (the regulariser sums over the batch);
        normalized (variant): ``beta * reg * share_l * cost_k / batch``.
        """
        reg = self.reg_sign() if self.beta > 0 else 0.0
        costs = self.relative_costs.to(device)
        if self.regularizer == "fractrain":
            row = self.beta * reg * 3.0 * costs * self._mac_weight(index)
        else:
            row = self.beta * reg * self.share(index) * costs / batch
        return row.expand(batch, -1)

    def regularizer_value(self) -> float:
        """The regulariser term of the last batch (what FracTrain adds to its loss), for logging."""
        if not self.block_counts:
            return 0.0
        reg = self.reg_sign()
        if self.regularizer == "fractrain":
            total = sum(3.0 * float((c * self.relative_costs.to(c.device)).sum()) * self._mac_weight(i)
                        for i, c in self.block_counts.items())
        else:
            total = sum(self.share(i) * float((c * self.relative_costs.to(c.device)).sum()) / max(1, self.batch)
                        for i, c in self.block_counts.items())
        return self.beta * reg * total


def _he_fan_out_(conv: nn.Conv2d) -> None:
    """FracTrain's init of every Conv2d (gates included): N(0, sqrt(2 / (k_h k_w out)))."""
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))


class GateEmbedding(FullPrecision):
    """FracTrain's per-block gate layer: global average pool -> 1x1 conv -> ReLU -> 1x1 conv."""

    def __init__(self, in_channels: int, gate_dim: int = 32, embed_dim: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, gate_dim, 1)
        self.conv2 = nn.Conv2d(gate_dim, embed_dim, 1)
        _he_fan_out_(self.conv1)
        _he_fan_out_(self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim())), keepdim=True) if x.dim() > 2 else x[..., None, None]
        return self.conv2(F.relu(self.conv1(pooled.view(x.shape[0], -1, 1, 1)))).flatten(1)


class RecurrentGate(FullPrecision):
    """FracTrain's ``RNNGate``: one LSTM shared by all blocks, then a linear projection to candidate scores.

    The hidden state runs through the blocks of one forward pass (reset at the first gated block), so each
    block's choice depends on the choices and features before it.
    """

    def __init__(self, embed_dim: int, hidden_dim: int, num_candidates: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(embed_dim, hidden_dim)
        self.proj = nn.Linear(hidden_dim, num_candidates)
        # FracTrain initialises every nn.Linear of the model with N(0, sqrt(2 / (out * in)))
        nn.init.normal_(self.proj.weight, 0.0, math.sqrt(2.0 / self.proj.weight.numel()))
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, feature: torch.Tensor, reset: bool, last: bool = False) -> torch.Tensor:
        if reset or self.hidden is None or self.hidden[0].shape[1] != feature.shape[0]:
            self.hidden = None
        out, hidden = self.lstm(feature.unsqueeze(0), self.hidden)
        # the state is dropped after the last block, so no graph outlives the forward (deepcopy stays legal)
        self.hidden = None if last else hidden
        return self.proj(out.squeeze(0))


class PrecisionGate(FullPrecision):
    """Variant gate (not FracTrain's): per-sample logits from the pooled, detached block input."""

    def __init__(self, in_channels: int, num_candidates: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_candidates)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)  # start uniform over candidates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(-1) if x.dim() > 2 else x
        return self.fc(pooled.detach())


def argmax_straight_through(logits: torch.Tensor) -> torch.Tensor:
    """One-hot argmax in forward, the softmax's gradient in backward (FracTrain's ``hard - p.detach() + p``)."""
    prob = F.softmax(logits, dim=-1)
    hard = F.one_hot(prob.argmax(-1), prob.shape[-1]).to(prob.dtype)
    return hard - prob.detach() + prob


def _add_cost_gradient(grad: torch.Tensor, controller: DFQController, index: int) -> torch.Tensor:
    """Tensor hook on a block's choice mask: adds the cost regulariser's gradient to the task gradient."""
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
    """A block run at a per-sample (activation, gradient) precision chosen by its gate.

    ``recurrent`` (FracTrain's gate): this block's ``embed`` feeds the shared LSTM. Without it, the block
    uses the variant ``gate`` (pooled linear, Gumbel-softmax in training).
    """

    def __init__(self, block: nn.Module, in_channels: int, state: PrecisionState, controller: DFQController,
                 index: int, recurrent: RecurrentGate | None = None, gate_dim: int = 32, embed_dim: int = 16,
                 tau: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"Gumbel-softmax temperature tau must be positive, got {tau}")
        self.block = block
        if recurrent is not None:
            self.embed = GateEmbedding(in_channels, gate_dim, embed_dim)
            self.recurrent = recurrent  # the same module in every block: parameters are shared
        else:
            self.gate = PrecisionGate(in_channels, controller.num_candidates)
        self.state = state
        self.controller = controller
        self.index = index
        self.tau = tau

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample candidate logits for this block's input ``x``."""
        if hasattr(self, "recurrent"):
            return self.recurrent(self.embed(x), reset=self.index == 0,
                                  last=self.index == self.controller.num_blocks - 1)
        return self.gate(x)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """One-hot choice per sample, with a straight-through gradient to the logits."""
        if hasattr(self, "recurrent") or not self.training:
            return argmax_straight_through(logits)
        return F.gumbel_softmax(logits, tau=self.tau, hard=True)

    def _run(self, k: int, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        fwd, grad = self.controller.candidates[k]
        with self.state.override(fwd_bits=fwd, grad_bits=grad):
            return self.block(x, *args, **kwargs)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        mask = self.choose(self.scores(x))
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


def fix_weight_bits(block: nn.Module, bits: int | None) -> int:
    """Quantize the weights of ``block``'s quantized layers at ``bits`` whatever the forward bits are
    (None: follow the forward bits again). Returns how many layers it set."""
    count = 0
    for _, layer in quantized_layers(block):
        layer.quantizer.weight_bits = bits
        if parametrize.is_parametrized(layer, "weight"):
            for p in layer.parametrizations.weight:
                if isinstance(p, WeightFakeQuant):
                    p.fixed_bits = bits
        count += 1
    return count


def add_precision_gates(model: nn.Module, state: PrecisionState, controller: DFQController,
                        blocks: Sequence[str] | None = None, gate: str = "rnn", gate_dim: int = 32,
                        embed_dim: int = 16, hidden_dim: int = 16, tau: float = 1.0) -> list[str]:
    """Wrap each block of a quantized ``model`` in a ``GatedBlock`` and fix its weight bits at the
    controller's ``weight_bits``; returns the gated block names. ``gate``: "rnn" (FracTrain) or "linear"."""
    if gate not in GATES:
        raise ValueError(f"DFQ gate must be one of {GATES}, got {gate!r}")
    names = find_blocks(model, blocks)
    if not names:
        raise ValueError(f"no block to gate in {type(model).__name__}: pass blocks=[name patterns] "
                         f"(module names like 'blocks.*' or 'layer1.*')")
    controller.num_blocks = len(names)
    recurrent = None
    if gate == "rnn":
        recurrent = RecurrentGate(embed_dim, hidden_dim, controller.num_candidates)
        recurrent.to(next(model.parameters()).device)
    for index, name in enumerate(names):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block = parent.get_submodule(child)
        fix_weight_bits(block, controller.weight_bits)
        gated = GatedBlock(block, _block_in_channels(block), state, controller, index, recurrent, gate_dim,
                           embed_dim, tau)
        setattr(parent, child, gated.to(stored_weight(candidate_layers(block)[0][1]).device))
    return names


def remove_precision_gates(model: nn.Module) -> nn.Module:
    """Put the original blocks back (the gates are dropped, weights follow the forward bits again)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, GatedBlock):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            fix_weight_bits(module.block, None)
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
    auto-detected). ``targets`` are FracTrain ``cp`` values as fractions of fp32 training cost (0.03 = the
    paper's ``--target_ratio 3``); with more than one, the target moves to the next value at each PFQ
    turning point of the training loss (FracTrain mode). Layers outside the gated blocks run at
    ``outside_bits``. Logs ``dfq/rel_cost`` (FracTrain's cp of the gated blocks), ``dfq/target``,
    ``dfq/reg_loss``, ``dfq/stage`` and ``train/rel_bitops`` (cumulative cost vs static ``reference_bits``).
    """

    def __init__(self, fwd_bits: Sequence[int] = DEFAULT_FWD_BITS,
                 grad_bits: Sequence[int] = DEFAULT_GRAD_BITS, weight_bits: int | None = DEFAULT_WEIGHT_BITS,
                 targets: float | Sequence[float] = 0.03, beta: float = DEFAULT_BETA, relax: float = 0.0,
                 regularizer: str = "fractrain", gate: str = "rnn", gate_dim: int = 32, embed_dim: int = 16,
                 hidden_dim: int = 16, blocks: Sequence[str] | None = None, tau: float = 1.0,
                 outside_bits: tuple[int | None, int | None] = (8, 8),
                 reference_bits: tuple[int | None, int | None] = (8, 8),
                 eps: float = 0.05, eps_decay: float = 0.3, window: int = 1, window_unit: str = "epochs",
                 history: int = 5, scale_windows: int = 10,
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        self.targets = [float(targets)] if isinstance(targets, int | float) else [float(t) for t in targets]
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise ValueError(f"DFQ targets are relative costs in (0, 1] (0.03 = 3% of fp32), got {targets}")
        if gate not in GATES:
            raise ValueError(f"DFQ gate must be one of {GATES}, got {gate!r}")
        self.controller = DFQController(fwd_bits, grad_bits, self.targets[0], beta, relax, weight_bits,
                                        regularizer)
        self.blocks = list(blocks) if blocks else None
        self.gate_options = {"gate": gate, "gate_dim": gate_dim, "embed_dim": embed_dim,
                             "hidden_dim": hidden_dim, "tau": tau}
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
            self.gated = add_precision_gates(root, self._require_state(), self.controller, self.blocks,
                                             **self.gate_options)
            rank_zero_info(f"DFQ: gated {len(self.gated)} blocks ({', '.join(self.gated)}); weights at "
                           f"{self.controller.weight_bits} bits; candidates {self.controller.candidates}")
        self.controller.target = self.targets[self.schedule.stage]

    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        return self.outside_bits

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        realised = self.controller.realised_cost()
        if realised is not None:
            value = float(realised)  # FracTrain's cp / 100: cost per MAC / training_cost_per_mac(32, 32, 32)
            self.meter.add(value * bitops_per_mac(None, None))
            pl_module.log("dfq/rel_cost", value, on_step=True, on_epoch=True, prog_bar=True)
            pl_module.log("dfq/reg_loss", self.controller.regularizer_value(), on_step=True, on_epoch=False)
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


__all__ = ["DFQController", "DynamicFractionalQuantization", "GateEmbedding", "GatedBlock", "PrecisionGate",
           "RecurrentGate", "add_precision_gates", "argmax_straight_through", "find_blocks", "find_controller",
           "fix_weight_bits", "remove_precision_gates", "training_cost_per_mac"]
