"""Lightning callbacks that drive the precision of a quantized model: static, CPT, FracTrain PFQ.

Each callback acts on the LightningModule's network, ``pl_module.net`` (the contract of
:mod:`effnn.lit.network`), quantizes it in ``setup`` if nobody did (before ``configure_optimizers`` runs, and before a
checkpoint is restored, so parameters and state-dict keys line up), then sets the shared
``PrecisionState`` at every training batch and switches to the evaluation precision for
validation/test/predict. Because the layers themselves read the state, this works unchanged for
manual optimization (a supernet's sandwich step quantizes every subnet it runs).

Logged per step: ``precision/fwd_bits``, ``precision/grad_bits`` and ``train/rel_bitops`` (training cost so
far relative to a static run at the reference precision, with (b^2 + 2bg)/3 per MAC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from effnn.lit.network import network_of, training_loss
from effnn.precision.quantizers import check_bits
from effnn.precision.schedules import BitOpsMeter, LossPlateau, cyclic_bits, cyclic_period
from effnn.precision.state import PrecisionState
from effnn.precision.swap import QuantizationConfig, find_precision_state, quantize_model


def precision_root(pl_module: nn.Module) -> nn.Module:
    """The network inside a LightningModule that precision callbacks quantize: its ``.net``."""
    return network_of(pl_module)


def step_loss(outputs: Any, trainer: L.Trainer | None = None) -> torch.Tensor | None:
    """The training loss of the batch that just ran: what ``training_step`` returned (``outputs`` of
    ``on_train_batch_end``), under automatic and manual optimization alike. ``trainer`` is not read (kept
    for callers that pass it); no logged metric is looked up by name."""
    return training_loss(outputs)


class PrecisionCallback(Callback):
    """Base class: quantize on setup, set bits per training step, evaluate at ``eval_bits``, count BitOPs.

    Subclasses implement ``bits_for_step``. ``quantization`` is a ``QuantizationConfig`` or a mapping of
    its fields (which layers stay full precision, which quantizers to attach).
    """

    def __init__(self, eval_bits: int | None, reference_bits: tuple[int | None, int | None],
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        self.eval_bits = check_bits(eval_bits, "eval_bits")
        self.quantization = QuantizationConfig.coerce(quantization)
        self.meter = BitOpsMeter(*reference_bits)
        self.state: PrecisionState | None = None
        self._saved_bits: tuple[int | None, int | None] | None = None

    # -- what subclasses define ---------------------------------------------------------------------------
    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        """(forward bits, gradient bits) for the training step about to run."""
        raise NotImplementedError

    def current_eval_bits(self) -> int | None:
        return self.eval_bits

    # -- wiring -------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.state is not None:
            return
        root = precision_root(pl_module)
        self.state = find_precision_state(root) or quantize_model(root, self.quantization)

    def _require_state(self) -> PrecisionState:
        if self.state is None:
            raise RuntimeError(f"{type(self).__name__} used before setup(); pass it to the Trainer's "
                               "callbacks")
        return self.state

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._require_state().set(*self.bits_for_step(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        state = self._require_state()
        self.meter.update(state.fwd_bits, state.grad_bits)
        pl_module.log("precision/fwd_bits", float(state.effective_fwd_bits), on_step=True, on_epoch=False)
        pl_module.log("precision/grad_bits", float(state.effective_grad_bits), on_step=True, on_epoch=False)
        pl_module.log("train/rel_bitops", self.meter.relative, on_step=True, on_epoch=False, prog_bar=True)

    def _enter_eval(self) -> None:
        state = self._require_state()
        if self._saved_bits is None:
            self._saved_bits = (state.fwd_bits, state.grad_bits)
        state.set(self.current_eval_bits(), None)

    def _exit_eval(self) -> None:
        if self._saved_bits is not None:
            self._require_state().set(*self._saved_bits)
            self._saved_bits = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter_eval()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_eval()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter_eval()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_eval()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter_eval()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_eval()

    def state_dict(self) -> dict[str, Any]:
        return {"meter": self.meter.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.meter.load_state_dict(state_dict["meter"])


class StaticPrecision(PrecisionCallback):
    """Fixed forward/gradient bit-widths for the whole run (the baseline CPT and FracTrain compare to)."""

    def __init__(self, fwd_bits: int = 8, grad_bits: int | None = 8, eval_bits: int | None = None,
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        self.fwd_bits = check_bits(fwd_bits, "fwd_bits")
        self.grad_bits = check_bits(grad_bits, "grad_bits")
        super().__init__(self.fwd_bits if eval_bits is None else eval_bits, (self.fwd_bits, self.grad_bits),
                         quantization)

    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        return self.fwd_bits, self.grad_bits


class CyclicPrecision(PrecisionCallback):
    """CPT: forward precision follows ``num_cycles`` cosine cycles from ``q_min`` up to ``q_max``.

    ``b(i) = rint(q_min + 0.5 (q_max - q_min)(1 - cos(pi (i mod T)/T)))``, ``T = int(total / num_cycles)``,
    ``i`` the global step and ``total`` the run's optimizer steps (``trainer.estimated_stepping_batches``
    unless ``total_steps`` is given). Gradient bits stay at ``grad_bits``; evaluation always runs at
    ``eval_bits`` (default ``q_max``). ``train/rel_bitops`` is relative to static ``q_max``/``grad_bits``.
    """

    def __init__(self, q_min: int, q_max: int, num_cycles: int = 32, grad_bits: int | None = 8,
                 eval_bits: int | None = None, total_steps: int | None = None,
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        q_min_v, q_max_v = check_bits(q_min, "q_min"), check_bits(q_max, "q_max")
        if q_min_v is None or q_max_v is None or q_min_v > q_max_v:
            raise ValueError(f"CyclicPrecision needs 1 <= q_min <= q_max < 32, got q_min={q_min}, "
                             f"q_max={q_max}")
        if num_cycles <= 0:
            raise ValueError(f"num_cycles must be positive, got {num_cycles}")
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be positive (or None for the trainer's estimate), "
                             f"got {total_steps}")
        self.q_min, self.q_max, self.num_cycles = q_min_v, q_max_v, num_cycles
        self.grad_bits = check_bits(grad_bits, "grad_bits")
        self.total_steps = total_steps
        super().__init__(q_max_v if eval_bits is None else eval_bits, (q_max_v, self.grad_bits), quantization)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.total_steps is None:
            estimate = trainer.estimated_stepping_batches
            if estimate == float("inf") or estimate <= 0:
                raise ValueError("CyclicPrecision needs a finite run length: set trainer.max_epochs or "
                                 "trainer.max_steps, or pass total_steps")
            self.total_steps = int(estimate)

    @property
    def period(self) -> int:
        if self.total_steps is None:
            raise RuntimeError("CyclicPrecision.period is known once fit starts (or pass total_steps)")
        return cyclic_period(self.total_steps, self.num_cycles)

    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        return cyclic_bits(trainer.global_step, self.period, self.q_min, self.q_max), self.grad_bits

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "total_steps": self.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.total_steps = state_dict.get("total_steps", self.total_steps)


class LossWindow:
    """Averages the training loss over windows of ``size`` steps or epochs, reduced across DDP ranks."""

    def __init__(self, size: int, unit: str) -> None:
        if size <= 0:
            raise ValueError(f"window size must be positive, got {size}")
        if unit not in ("steps", "epochs"):
            raise ValueError(f"window unit must be 'steps' or 'epochs', got {unit!r}")
        self.size, self.unit = size, unit
        self.total: torch.Tensor | None = None
        self.count = 0
        self.units_seen = 0

    def add(self, loss: torch.Tensor | None) -> None:
        if loss is None:
            return
        value = loss.detach().float().reshape(())
        self.total = value.clone() if self.total is None else self.total + value
        self.count += 1

    def tick(self, unit: str, trainer: L.Trainer) -> float | None:
        """Call once per step and once per epoch; returns the window mean when a window closes."""
        if unit != self.unit:
            return None
        self.units_seen += 1
        if self.units_seen < self.size or self.total is None or self.count == 0:
            return None
        mean = trainer.strategy.reduce(self.total / self.count, reduce_op="mean")
        self.total, self.count, self.units_seen = None, 0, 0
        return float(mean)

    def state_dict(self) -> dict[str, Any]:
        return {"total": None if self.total is None else float(self.total), "count": self.count,
                "units_seen": self.units_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = None if state["total"] is None else torch.tensor(float(state["total"]))
        self.count, self.units_seen = int(state["count"]), int(state["units_seen"])


class TurningPointStages:
    """FracTrain's stage counter: windowed training loss -> ``LossPlateau`` -> next stage at a turning point.

    Shared by PFQ (stages are bit-widths) and FracTrain-mode DFQ (stages are cost targets). Every rank
    sees the same (reduced) window losses, so all ranks switch at the same step.
    """

    def __init__(self, num_stages: int, eps: float = 0.05, eps_decay: float = 0.3, window: int = 1,
                 window_unit: str = "epochs", history: int = 5, scale_windows: int = 10,
                 name: str = "PFQ") -> None:
        if num_stages <= 0:
            raise ValueError(f"need at least one stage, got {num_stages}")
        self.num_stages, self.name = num_stages, name
        self.plateau = LossPlateau(eps=eps, decay=eps_decay, history=history, scale_windows=scale_windows)
        self.window = LossWindow(window, window_unit)
        self.stage = 0
        self.switch_steps: list[int] = []

    def add_loss(self, loss: torch.Tensor | None) -> None:
        self.window.add(loss)

    def tick(self, unit: str, trainer: L.Trainer) -> bool:
        """Close a window if one ends at this step/epoch; True when the stage advanced."""
        mean = self.window.tick(unit, trainer)
        if mean is None or self.stage == self.num_stages - 1 or not self.plateau.update(mean):
            return False
        self.stage += 1
        self.switch_steps.append(trainer.global_step)
        rank_zero_info(f"{self.name}: turning point at step {trainer.global_step} (window loss {mean:.4f}); "
                       f"now stage {self.stage} of {self.num_stages - 1}, next eps={self.plateau.eps:.4g}")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "switch_steps": list(self.switch_steps),
                "plateau": self.plateau.state_dict(), "window": self.window.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.switch_steps = [int(s) for s in state["switch_steps"]]
        self.plateau.load_state_dict(state["plateau"])
        self.window.load_state_dict(state["window"])


class ProgressiveFractionalQuantization(PrecisionCallback):
    """FracTrain PFQ: train through precision stages, moving on at each turning point of the loss.

    Stage ``k`` trains at ``fwd_bits[k]``/``grad_bits[k]`` (default 3/6, 4/6, 6/8, 8/8). The loss is averaged
    over windows of ``window`` steps or epochs (``window_unit``); the stage advances when the last
    ``history - 1`` normalized differences are all <= ``eps`` (0.05), then ``eps *= eps_decay`` (0.3).
    Evaluation runs at the current stage's forward bits unless ``eval_bits`` is set. Logs
    ``precision/stage``; ``train/rel_bitops`` is relative to static training at the last stage's precision.
    """

    def __init__(self, fwd_bits: Sequence[int] = (3, 4, 6, 8), grad_bits: Sequence[int] = (6, 6, 8, 8),
                 eps: float = 0.05, eps_decay: float = 0.3, window: int = 1, window_unit: str = "epochs",
                 history: int = 5, scale_windows: int = 10, eval_bits: int | None = None,
                 quantization: QuantizationConfig | Mapping[str, Any] | None = None) -> None:
        if not fwd_bits or len(fwd_bits) != len(grad_bits):
            raise ValueError(f"PFQ needs equally long, non-empty fwd_bits and grad_bits, got "
                             f"{list(fwd_bits)} and {list(grad_bits)}")
        self.stages = [(check_bits(int(b), "fwd_bits"), check_bits(int(g), "grad_bits"))
                       for b, g in zip(fwd_bits, grad_bits)]
        self.schedule = TurningPointStages(len(self.stages), eps, eps_decay, window, window_unit, history,
                                           scale_windows, name="PFQ")
        super().__init__(eval_bits, self.stages[-1], quantization)

    @property
    def stage(self) -> int:
        return self.schedule.stage

    def current_eval_bits(self) -> int | None:
        return self.stages[self.stage][0] if self.eval_bits is None else self.eval_bits

    def bits_for_step(self, trainer: L.Trainer) -> tuple[int | None, int | None]:
        return self.stages[self.stage]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        pl_module.log("precision/stage", float(self.stage), on_step=True, on_epoch=False)
        self.schedule.add_loss(step_loss(outputs, trainer))
        self.schedule.tick("steps", trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.schedule.tick("epochs", trainer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.schedule.load_state_dict(state_dict["schedule"])


__all__ = ["CyclicPrecision", "LossWindow", "PrecisionCallback", "ProgressiveFractionalQuantization",
           "StaticPrecision", "TurningPointStages", "precision_root", "step_loss"]
