"""BN recalibration: cumulative averages of batch statistics, restored modes, supernet == static."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from effnn.nas import build_supernet, get_space, recalibrate_bn, resize_to
from effnn.nas.ops import DynamicBatchNorm2d


def test_running_stats_become_the_average_of_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(DynamicBatchNorm2d(8, momentum=0.1), nn.BatchNorm2d(4, momentum=0.3)).eval()
    batches = [torch.randn(5, 4, 3, 3) * (i + 1) + i for i in range(4)]
    used = recalibrate_bn(model, batches, num_batches=3)
    assert used == 3
    means = torch.stack([b.mean((0, 2, 3)) for b in batches[:3]])
    variances = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches[:3]])
    dyn, static = model[0], model[1]
    torch.testing.assert_close(dyn.running_mean[:4], means.mean(0))
    torch.testing.assert_close(dyn.running_var[:4], variances.mean(0))
    assert dyn.running_mean[4:].abs().max() == 0 and (dyn.running_var[4:] == 1).all()  # reset, unused
    # momenta and modes come back
    assert dyn.momentum == 0.1 and static.momentum == 0.3 and not model.training


def test_supernet_recalibration_equals_static_subnet_recalibration() -> None:
    torch.manual_seed(1)
    space = get_space("tiny32")
    net = build_supernet(space, num_classes=10)
    arch = space.sample(torch.Generator().manual_seed(2))
    net.set_arch(arch)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(3)]

    def forward(model):
        return lambda batch: model(resize_to(batch, arch.resolution))

    static = net.extract(arch)  # before recalibration: stale statistics
    recalibrate_bn(net, batches, num_batches=3, forward=forward(net))
    recalibrate_bn(static, batches, num_batches=3, forward=forward(static))
    x = resize_to(torch.randn(4, 3, 32, 32), arch.resolution)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), static.eval()(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net.extract(arch).eval()(x), static(x), atol=1e-5, rtol=1e-5)


def test_recalibration_without_batches_is_an_error() -> None:
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(nn.BatchNorm2d(3), [], num_batches=4)
    with pytest.raises(ValueError, match="num_batches must be positive"):
        recalibrate_bn(nn.BatchNorm2d(3), [torch.randn(2, 3, 2, 2)], num_batches=0)


def test_callback_recalibrates_a_plain_model_before_validation(tmp_path) -> None:
    import lightning as L

    from effnn.data import DigitsDataModule
    from effnn.lit import ClassifierModule
    from effnn.models import create_model
    from effnn.nas import BNRecalibration

    class Seen(L.Callback):
        def on_validation_epoch_start(self, trainer, module) -> None:  # runs after BNRecalibration's hook
            bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
            self.tracked = {int(m.num_batches_tracked) for m in bns}
            self.momenta = {m.momentum for m in bns}

    seen = Seen()
    module = ClassifierModule(create_model("small_cnn", num_classes=10), torch.optim.SGD, num_classes=10)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=[BNRecalibration(num_batches=2), seen])
    trainer.fit(module, DigitsDataModule(batch_size=16, resolution=16))
    assert seen.tracked == {2}  # statistics re-estimated from exactly two batches, not the 3 training steps
    assert seen.momenta == {0.1}
