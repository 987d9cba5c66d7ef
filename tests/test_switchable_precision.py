"""Switchable-precision supernet training (model.precision, recipe alphanet_quant): real steps on digits, every
stage quantized at the drawn bits, full precision bit-identical to the plain supernet, a checkpoint round trip
that restores the quantized supernet exactly, and one-line errors for bad choices."""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback

from effnn.data import DigitsDataModule
from effnn.errors import CheckpointError, ConfigError
from effnn.lit.supernet import SupernetModule
from effnn.nas.precision import StageBits, stage_modules
from effnn.nas.supernet import Supernet, resize_to
from effnn.nas.switchable import SwitchableSettings, recalibrate_precision, step_groups
from effnn.precision.swap import quantized_layers
from effnn.search import fixed_batches, load_supernet_checkpoint, top1_accuracy
from tests.conftest import compose_config, run_cli

SGD = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-4)
PRECISION = {"weight_choices": [4, 8], "act_choices": [4, 8]}


def make_module(**kwargs: Any) -> SupernetModule:
    defaults = {"optimizer": SGD, "num_classes": 10, "bn_calibration_batches": 2, "channels_last": False,
                "precision": PRECISION}
    return SupernetModule(**{**defaults, **kwargs})


def make_trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    defaults = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 3,
                "limit_val_batches": 2, "num_sanity_val_steps": 0, "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path)}
    return L.Trainer(**{**defaults, **kwargs})


def digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=16, resolution=32)


class BitsProbe(Callback):
    """Checks, at every forward of every quantized layer during training, that the layer runs at its stage's
    drawn bits: the states it reads hold them, and its quantized input has at most 2^act distinct values.
    Records the bits of each supernet forward per step."""

    def __init__(self) -> None:
        self.forwards: list[StageBits | None] = []
        self.steps: list[tuple[list, list]] = []
        self.layer_checks = Counter()

    def on_train_start(self, trainer: L.Trainer, module: SupernetModule) -> None:
        precision = module.stage_precision
        module.net.register_forward_pre_hook(
            lambda m, args: self.forwards.append(precision.bits) if torch.is_grad_enabled() else None)
        stage_of = {id(layer): stage for stage, _, part in stage_modules(module.net)
                    for _, layer in quantized_layers(part)}
        for _, layer in quantized_layers(module.net):
            layer.register_forward_pre_hook(partial(self._check, precision, stage_of[id(layer)]))

    def _check(self, precision, stage: int, layer: nn.Module, args: tuple) -> None:
        if not torch.is_grad_enabled() or precision.bits is None:
            return
        w, a = precision.bits.stage(stage)
        assert layer.quantizer.state.fwd_bits == (None if a == 32 else a)
        assert layer.quantizer.weight_state.fwd_bits == (None if w == 32 else w)
        assert layer.quantizer.hw_bits() == {"weight": w, "act": a}
        assert torch.unique(args[0]).numel() <= 2 ** a  # the input this layer computes with is quantized
        self.layer_checks[stage] += 1

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps.append((list(module.last_groups), list(self.forwards)))
        self.forwards.clear()


def test_training_steps_quantize_every_stage_at_the_drawn_bits(tmp_path: Path) -> None:
    probe = BitsProbe()
    module = make_module()
    trainer = make_trainer(tmp_path, callbacks=[probe])
    trainer.fit(module, digits())
    settings, space = module.precision_settings, module.space
    w8a8, w4a4 = StageBits.uniform(space.num_stages, 8), StageBits.uniform(space.num_stages, 4)
    assert [b.to_dict() for b in settings.ladder] == [w8a8.to_dict(), w4a4.to_dict()]
    assert len(probe.steps) == 3
    for groups, forwards in probe.steps:
        # the group structure: largest@w8a8 (labels), two middles at drawn bits, smallest@w4a4; then the cascade
        # group: largest@w4a4 (taught by largest@w8a8)
        (top, mid1, mid2, low), (cascade_max,) = groups
        assert (top.arch, top.bits) == (space.max_arch(), w8a8) and (low.arch, low.bits) == (space.min_arch(), w4a4)
        assert (cascade_max.arch, cascade_max.bits) == (space.max_arch(), w4a4)
        assert settings.space.contains(mid1.bits) and settings.space.contains(mid2.bits)
        # each of the five subnets ran exactly once, at its own bits (the hooks checked each layer's)
        assert forwards == [c.bits for g in groups for c in g]
    assert sorted(probe.layer_checks) == list(range(space.num_stages))  # every stage was quantized
    drawn = {c.bits for groups, _ in probe.steps for c in groups[0][1:3]}
    assert len(drawn) > 1 and any(len(set(b.weight + b.act)) > 1 for b in drawn)  # mixed per-stage bits
    metrics = trainer.callback_metrics
    for key in ("train/loss_max", "train/loss_kd", "train/loss_cascade", "train/loss"):
        assert math.isfinite(float(metrics[key])), key
    for name in ("max", "min"):
        for label in ("fp", "w8a8", "w4a4"):
            assert 0.0 <= float(metrics[f"val/acc_{name}_{label}"]) <= 1.0
        assert float(metrics[f"val/acc_{name}"]) == float(metrics[f"val/acc_{name}_w8a8"])
    assert module.stage_precision.bits is None  # training leaves full precision behind


def test_step_groups_of_each_cascade_and_uniform_middles() -> None:
    from effnn.nas.space import get_space

    space = get_space("tiny32")
    big, small = space.max_arch(), space.min_arch()
    archs = [big, space.sample(torch.Generator().manual_seed(1)), small]
    fp, w8a8, w4a4 = (StageBits.uniform(space.num_stages, b) for b in (32, 8, 4))

    def groups(cascade: str) -> list[list[tuple]]:
        settings = SwitchableSettings.parse({**PRECISION, "cascade": cascade, "middle_bits": "uniform",
                                             "ladder": [32, 8, 4]}, space.num_stages)
        found = step_groups(settings, archs, torch.Generator().manual_seed(0))
        return [[(c.arch, c.bits) for c in g if c.arch != archs[1]] for g in found]  # middles drawn apart

    # off: one sandwich, largest at the top, smallest at the lowest level
    assert groups("off") == [[(big, fp), (small, w4a4)]]
    # largest: then the largest one level down at a time (each taught by the group before)
    assert groups("largest") == [[(big, fp), (small, w4a4)], [(big, w8a8)], [(big, w4a4)]]
    # both: the smallest starts at the top and follows the largest down the ladder
    assert groups("both") == [[(big, fp), (small, fp)], [(big, w8a8), (small, w8a8)], [(big, w4a4), (small, w4a4)]]
    settings = SwitchableSettings.parse({**PRECISION, "middle_bits": "uniform", "ladder": [32, 8, 4]},
                                        space.num_stages)
    rng = torch.Generator().manual_seed(0)
    draws = {step_groups(settings, archs, rng)[0][1].bits for _ in range(30)}
    assert draws == set(settings.ladder)  # uniform middles: one ladder level each


def test_full_precision_is_bit_identical_to_the_plain_supernet() -> None:
    torch.manual_seed(0)
    plain = make_module(precision=None)
    torch.manual_seed(0)
    quantized = make_module()
    assert plain.stage_precision is None and next(quantized_layers(plain.net), None) is None
    # precision off: the plain state-dict keys (checkpoints of earlier runs load as before)
    assert all("parametrizations" not in k and "quantizer" not in k for k in plain.net.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for arch in (plain.space.max_arch(), plain.space.min_arch()):
        plain.net.set_arch(arch)
        quantized.net.set_arch(arch)
        quantized.stage_precision.set(None)
        for training in (True, False):
            plain.net.train(training)
            quantized.net.train(training)
            assert torch.equal(plain.net(x), quantized.net(x))
        quantized.stage_precision.set(StageBits.uniform(plain.space.num_stages, 4))
        assert not torch.equal(plain.net(x), quantized.net(x))  # and 4 bits really is something else


def _accuracy(net: Supernet, precision, arch, bits, calib, evals) -> tuple[float, torch.Tensor]:
    recalibrate_precision(precision, arch, bits, calib, len(calib))
    net.eval()
    with torch.no_grad():
        logits = net(resize_to(evals[0][0], arch.resolution))
    return top1_accuracy(net, evals, arch.resolution), logits


def test_checkpoint_round_trip_restores_the_quantized_supernet(tmp_path: Path) -> None:
    module = make_module()
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=4)
    dm = digits()
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "q.ckpt")
    before = {k: v.clone() for k, v in module.net.state_dict().items()}

    loaded = load_supernet_checkpoint(tmp_path / "q.ckpt")
    assert loaded.quantized and loaded.bits_space == module.precision_settings.space
    assert loaded.settings == module.precision_settings
    after = loaded.supernet.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.endswith("quantizer.running_range") for k in after)  # activation ranges travel along

    dm.setup("fit")
    calib = fixed_batches(dm.train_set, 3, 32, seed=0)
    evals = fixed_batches(dm.val_set, 3, 64, seed=1)
    mixed = loaded.bits_space.sample(torch.Generator().manual_seed(5))
    arch = module.space.sample(torch.Generator().manual_seed(2))
    for bits in (mixed, StageBits.uniform(module.space.num_stages, 4), None):
        acc0, logits0 = _accuracy(module.net, module.stage_precision, arch, bits, calib, evals)
        acc1, logits1 = _accuracy(loaded.supernet, loaded.precision, arch, bits, calib, evals)
        assert acc0 == acc1 and torch.equal(logits0, logits1)


def test_bad_precision_settings_are_one_line_errors(tmp_path: Path) -> None:
    cases = {
        "weight_choices[0] must be in [1, 32]": {"weight_choices": [0]},
        "act_choices must list at least one": {"act_choices": []},
        "unknown model.precision option 'bits'": {"bits": [4]},
        "middle_bits='random' is unknown": {**PRECISION, "middle_bits": "random"},
        "ladder level 6 is not in both": {**PRECISION, "ladder": [8, 6]},
        "cascade='all' is unknown": {**PRECISION, "cascade": "all"},
        "share no bit-width": {"weight_choices": [4], "act_choices": [8]},
    }
    for expected, value in cases.items():
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")) as err:
            make_module(precision=value)
        assert "\n" not in str(err.value) and "model.precision" in str(err.value)
    # a checkpoint with quantizer buffers but no precision hyper-parameters names the recipe to use
    module = make_module()
    ckpt = {"state_dict": {f"net.{k}": v for k, v in module.net.state_dict().items()}, "hyper_parameters": {}}
    torch.save(ckpt, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="no model.precision hyper-parameters"):
        load_supernet_checkpoint(tmp_path / "bare.ckpt")


def test_recipe_composes_a_validated_precision_schema(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_config(["+recipe=alphanet_quant"], tmp_path)
    assert cfg.task_name == "alphanet_quant" and list(cfg.model.precision.weight_choices) == [4, 8]
    module = instantiate(cfg.model)
    assert module.stage_precision is not None and module.kd is not None
    assert set(module.eval_targets) == {f"{n}_{b}" for n in ("max", "min") for b in ("fp", "w8a8", "w4a4")}
    with pytest.raises(Exception, match="weight_choice"):  # the schema rejects unknown keys at compose time
        compose_config(["+recipe=alphanet_quant", "model.precision.weight_choice=[4]"], tmp_path)
    with pytest.raises(Exception, match="act_momentum"):  # and wrong types
        compose_config(["+recipe=alphanet_quant", "model.precision.act_momentum=fast"], tmp_path)
    with pytest.raises(Exception, match="weight_choices"):
        compose_config(["+recipe=alphanet_quant", "model.precision.weight_choices=4"], tmp_path)


DDP_WORKER = r'''
"""Trains a switchable-precision tiny32 supernet for a few steps on 2 ranks; every rank writes what it saw."""
import hashlib
import json
import sys
from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from effnn.data import DigitsDataModule
from effnn.lit.supernet import SupernetModule

torch.set_num_threads(1)
REDUCED = []


def counting_allreduce(state, bucket):
    REDUCED.append(bucket.index())
    return allreduce_hook(state, bucket)


class Record(Callback):
    def __init__(self):
        self.steps = []

    def on_train_start(self, trainer, module):
        trainer.strategy.model.register_comm_hook(None, counting_allreduce)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({"groups": [[[c.arch.to_dict(), c.bits.to_dict()] for c in g] for g in module.last_groups],
                           "buckets": list(REDUCED)})
        REDUCED.clear()

    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten() for p in module.net.parameters()])
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"steps": self.steps, "params": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
                       "val": metrics}, f)


if __name__ == "__main__":
    L.seed_everything(0)
    module = SupernetModule(optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9), num_classes=10,
                            precision={"weight_choices": [4, 8], "act_choices": [4, 8]},
                            bn_calibration_batches=2, channels_last=False)
    strategy = DDPStrategy(process_group_backend="gloo", find_unused_parameters=True)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=1, limit_train_batches=3,
                        limit_val_batches=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(module, DigitsDataModule(batch_size=32, resolution=32))
'''


@pytest.mark.slow
def test_ddp_ranks_draw_the_same_bits_and_sync_once_per_step(tmp_path: Path) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_WORKER)
    res = run_cli([str(script), str(tmp_path)], env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["steps"]) == 3
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert s0["groups"] == s1["groups"]  # the same archs at the same bits on both ranks
        counts = Counter(s0["buckets"])  # five backward passes, every bucket all-reduced exactly once
        assert counts and set(counts.values()) == {1}, counts
    assert ranks[0]["params"] == ranks[1]["params"]
    # BN statistics and activation ranges are averaged over ranks: both evaluate the same quantized models
    assert ranks[0]["val"] == ranks[1]["val"] and "val/acc_min_w4a4" in ranks[0]["val"]
