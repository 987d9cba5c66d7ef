"""Precision callbacks in real (tiny) Lightning runs on digits: schedules, eval precision, resume, guard."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from effnn.data import DigitsDataModule
from effnn.lit import ClassifierModule
from effnn.models import create_model
from effnn.precision import (
    CyclicPrecision,
    NonFiniteGuard,
    ProgressiveFractionalQuantization,
    StaticPrecision,
    bitops_per_mac,
    cyclic_bits,
    find_precision_state,
)


class BitsRecorder(Callback):
    """Reads the shared PrecisionState as the quantized layers see it, in training and validation."""

    def __init__(self) -> None:
        self.train: list[tuple[int | None, int | None]] = []
        self.val: set[tuple[int | None, int | None]] = set()

    def _state(self, pl_module: L.LightningModule):
        return find_precision_state(pl_module.net)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        s = self._state(pl_module)
        self.train.append((s.fwd_bits, s.grad_bits))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        s = self._state(pl_module)
        self.val.add((s.fwd_bits, s.grad_bits))


def digits(batch_size: int = 64) -> DigitsDataModule:
    return DigitsDataModule(batch_size=batch_size, resolution=16)


def classifier(lr: float = 0.05, model: str = "small_cnn", **kwargs: Any) -> ClassifierModule:
    torch.manual_seed(0)
    net = create_model(model, num_classes=10, **({"width": 8} if model == "small_cnn" else {}), **kwargs)
    return ClassifierModule(net, partial(torch.optim.SGD, lr=lr, momentum=0.9), num_classes=10)


def trainer(callbacks: list[Callback], tmp_path: Path | None = None, **kwargs: Any) -> L.Trainer:
    opts = dict(max_epochs=3, limit_train_batches=6, limit_val_batches=2, logger=False,
                enable_checkpointing=tmp_path is not None, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    opts.update(kwargs)
    return L.Trainer(callbacks=callbacks, **opts)


def test_cpt_follows_the_cosine_schedule_and_evaluates_at_q_max() -> None:
    module, rec = classifier(), BitsRecorder()
    cpt = CyclicPrecision(3, 8, num_cycles=3, grad_bits=8)
    trainer([cpt, rec]).fit(module, digits())
    assert cpt.total_steps == 18 and cpt.period == 6
    assert rec.train == [(cyclic_bits(i, 6, 3, 8), 8) for i in range(18)]
    assert rec.val == {(8, None)}  # evaluation at q_max, not the current cycle's precision
    expected = sum(bitops_per_mac(b, g) for b, g in rec.train) / (18 * bitops_per_mac(8, 8))
    assert cpt.meter.relative == pytest.approx(expected)
    assert module.trainer.callback_metrics["train/rel_bitops"].item() == pytest.approx(expected)
    assert module.trainer.callback_metrics["precision/fwd_bits"].item() == rec.train[-1][0]


def test_quantized_training_learns_digits() -> None:
    module = classifier(model="cifar_resnet8", width=8)
    fit = trainer([StaticPrecision(4, 8), NonFiniteGuard()], max_epochs=3, limit_train_batches=None,
                  limit_val_batches=None)
    fit.fit(module, digits(batch_size=32))
    assert fit.callback_metrics["val/acc"] > 0.8  # chance is 0.1; fp32 reaches ~0.97 in the same 3 epochs
    assert fit.callback_metrics["train/skipped_steps"] == 0


class SandwichModule(L.LightningModule):
    """Manual optimization with two forward/backward passes per step, like a supernet's sandwich rule."""

    def __init__(self, poison_step: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = create_model("small_cnn", num_classes=10, width=8)
        self.automatic_optimization = False
        self.poison_step = poison_step
        self.seen_bits: list[int | None] = []
        self.net.features[3].register_forward_pre_hook(
            lambda m, a: self.seen_bits.append(m.quantizer.state.fwd_bits) if self.training else None)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad()
        total = torch.zeros(())
        for half in (x[: len(x) // 2], x[len(x) // 2:]):
            target = y[: len(half)] if half is x[: len(x) // 2] else y[len(x) // 2:]
            loss = F.cross_entropy(self.net(half), target)
            if self.global_step == self.poison_step:
                loss = loss * float("nan")
            self.manual_backward(loss)
            total = total + loss.detach()
        opt.step()
        self.log("train/loss", total / 2)
        return total / 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)


class Snapshots(Callback):
    """Parameters and buffers before and after one chosen step."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    @staticmethod
    def _grab(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.before = self._grab(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step + 1:
            self.after = self._grab(pl_module)


def test_manual_optimization_quantizes_every_forward_and_guard_skips_a_nan_step() -> None:
    module, snaps = SandwichModule(poison_step=3), Snapshots(3)
    guard = NonFiniteGuard(warn=False)
    cpt = CyclicPrecision(3, 8, num_cycles=2, grad_bits=8)
    trainer([cpt, guard, snaps], max_epochs=1, limit_train_batches=8).fit(module, digits())
    schedule = [cyclic_bits(i, 4, 3, 8) for i in range(8)]
    assert module.seen_bits == [b for b in schedule for _ in range(2)]  # both passes of every step
    assert guard.skipped_steps == 1
    assert snaps.before and snaps.before.keys() == snaps.after.keys()
    for key, value in snaps.before.items():
        assert torch.equal(value, snaps.after[key]), key  # the NaN step changed nothing
    assert all(torch.isfinite(p).all() for p in module.parameters())


class NaNInputOnce(Callback):
    """Corrupts the input of one training batch (after the guard snapshot), as an overflow would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch[0][0].fill_(float("nan"))


def test_guard_restores_bn_statistics_after_a_non_finite_forward() -> None:
    module, snaps = classifier(), Snapshots(2)
    guard = NonFiniteGuard(warn=False)
    fit = trainer([StaticPrecision(3, 6), guard, NaNInputOnce(2), snaps], max_epochs=1,
                  limit_train_batches=5, limit_val_batches=0)
    fit.fit(module, digits())
    assert guard.skipped_steps == 1
    for key, value in snaps.before.items():
        assert torch.equal(value, snaps.after[key]), key  # weights and BN running stats untouched
    assert all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


def flat_loss_pfq(**kwargs: Any) -> ProgressiveFractionalQuantization:
    """lr=0 keeps the loss flat, so every full history of windows is a turning point (deterministic)."""
    return ProgressiveFractionalQuantization(eps=0.5, eps_decay=1.0, window=2, window_unit="steps",
                                             history=3, **kwargs)


def test_pfq_switches_stages_at_turning_points_and_evaluates_at_the_stage_precision() -> None:
    module, rec = classifier(lr=0.0), BitsRecorder()
    pfq = flat_loss_pfq()
    trainer([pfq, rec], max_epochs=4).fit(module, digits())
    # windows of 2 steps close at steps 2, 4, 6, ...; 3 windows per turning point -> switches at 6, 12, 18
    assert pfq.schedule.switch_steps == [6, 12, 18]
    stages = [(3, 6)] * 6 + [(4, 6)] * 6 + [(6, 8)] * 6 + [(8, 8)] * 6
    assert rec.train == stages
    # validation at the stage's forward bits; the first switch happens at the end of epoch 1 (step 6)
    assert rec.val == {(4, None), (6, None), (8, None)}


def test_pfq_resumes_exactly_from_a_checkpoint(tmp_path: Path) -> None:
    full = flat_loss_pfq()
    trainer([full], max_epochs=4).fit(classifier(lr=0.0), digits())

    first = flat_loss_pfq()
    run1 = trainer([first], tmp_path, max_epochs=2)
    run1.fit(classifier(lr=0.0), digits())
    ckpt = tmp_path / "mid.ckpt"
    run1.save_checkpoint(ckpt)
    assert first.schedule.stage == 2  # switched at steps 6 and 12

    resumed, rec = flat_loss_pfq(), BitsRecorder()
    trainer([resumed, rec], tmp_path, max_epochs=4).fit(classifier(lr=0.0), digits(), ckpt_path=ckpt,
                                                                      weights_only=False)
    assert resumed.schedule.switch_steps == full.schedule.switch_steps
    assert resumed.schedule.plateau.eps == full.schedule.plateau.eps
    assert resumed.meter.state_dict() == pytest.approx(full.meter.state_dict())
    assert rec.train[0] == (6, 8)  # step 12 onward, already in stage 2 on resume


def test_precision_callbacks_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="equally long"):
        ProgressiveFractionalQuantization(fwd_bits=[3, 4], grad_bits=[8])
    with pytest.raises(ValueError, match="window unit"):
        ProgressiveFractionalQuantization(window_unit="minutes")
    with pytest.raises(ValueError, match="fwd_bits"):
        StaticPrecision(fwd_bits=0)


def test_cpt_on_a_supernet_quantizes_every_subnet_of_the_sandwich_step() -> None:
    supernet_mod = pytest.importorskip("effnn.lit.supernet")
    hw = pytest.importorskip("effnn.hw")
    torch.manual_seed(0)
    module = supernet_mod.SupernetModule(partial(torch.optim.SGD, lr=0.05, momentum=0.9), num_classes=10)
    seen: list[int | None] = []
    cpt = CyclicPrecision(3, 8, num_cycles=1, grad_bits=8)

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                stem = pl_module.net.conv_stem
                stem.register_forward_pre_hook(
                    lambda m, a: seen.append(m.quantizer.state.fwd_bits) if m.training else None)

    trainer([cpt, NonFiniteGuard(), Spy()], max_epochs=1, limit_train_batches=3, limit_val_batches=0).fit(
        module, DigitsDataModule(batch_size=16, resolution=32))
    per_step = len(module.last_archs)  # max + middle + min subnets in one sandwich step
    assert per_step == 4
    expected = [cyclic_bits(i, 3, 3, 8) for i in range(3)]
    assert seen == [b for b in expected for _ in range(per_step)]
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # the quantized supernet's active subnet reports bit-aware hardware cost
    state = find_precision_state(module.net)
    state.set(4, 8)
    with module.net.set_arch(module.space.min_arch()):
        layers = hw.extract_workload(module.net, (1, 3, 32, 32))
    quantized = [la for la in layers if la.weight_bits == 4]
    assert quantized and len(quantized) == len(layers) - 1  # all but the full-precision classifier
