"""SmartDeal as a Lightning callback: train dense, measure, convert in place, fine-tune in SD form, report.

The callback only wires three parts together: the phase schedule (``phases``), the conversion
(``conversion.convert`` and the storage formulas) and the report (``report``). One ``trainer.fit`` runs
both phases. After epoch ``dense_epochs`` the callback measures the dense test accuracy
(``test/acc_dense``), converts ``pl_module.net`` with SED, re-estimates BN statistics, measures again before
any fine-tuning (``test/acc_converted``), logs ``smartdeal/storage_ratio`` and rebuilds the optimizer (the
module's own ``configure_optimizers``, sized for the fine-tuning phase). ``trainer.test`` then logs
``test/acc`` of the SD model through Lightning's test loop, and the callback prints the report and writes
it as JSON next to the run's outputs.

``dense_epochs=0`` converts before the optimizer exists (SD training from scratch with ``init: scratch``,
or from a model loaded elsewhere); that path also works under DDP. Converting mid-fit swaps modules under
the optimizer, which is single-process only. Resuming a run from a checkpoint taken after the conversion is
not supported (the freshly built model is dense): fine-tune from a converted model with ``dense_epochs=0``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from effnn.decompose.config import SmartDealConfig
from effnn.decompose.conversion import convert, project_coefficients_
from effnn.decompose.phases import SmartDealPhases, rebuild_optimizers
from effnn.decompose.report import SmartDealReport, console, top1_accuracy
from effnn.decompose.storage import public_storage, weight_storage
from effnn.errors import ConfigError
from effnn.io import atomic_write_json
from effnn.nas.bn_calibration import recalibrate_bn

log = logging.getLogger("effnn")


def trained_network(pl_module: L.LightningModule) -> nn.Module:
    """The network an effnn LightningModule trains: ``pl_module.net``."""
    net = getattr(pl_module, "net", None)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"SmartDeal: {type(pl_module).__name__}.net is not an nn.Module; the callback "
                          f"converts the network a LightningModule exposes as `.net`")
    return net


class SmartDealCallback(Callback):
    """Dense phase for ``dense_epochs`` epochs, then SED conversion and SD fine-tuning for the rest.

    ``config`` is a ``SmartDealConfig`` or its fields as a mapping (the Hydra node).
    ``bn_recalibration_batches`` training batches re-estimate BatchNorm statistics right after conversion
    (the dense statistics no longer match the SD weights), so ``test/acc_converted`` measures the SED fit
    rather than stale statistics; 0 skips it. Batches must be ``(images, labels)``.
    """

    def __init__(self, dense_epochs: int = 5, config: SmartDealConfig | Mapping[str, Any] | None = None,
                 bn_recalibration_batches: int = 20,
                 report_file: str | None = "smartdeal_report.json") -> None:
        self.phases = SmartDealPhases(dense_epochs)
        self.config = SmartDealConfig.from_mapping(config)
        self.bn_recalibration_batches = bn_recalibration_batches
        self.report_file = report_file
        self.report = SmartDealReport(self.config, dense_epochs)

    @property
    def dense_epochs(self) -> int:
        return self.phases.dense_epochs

    @property
    def converted(self) -> bool:
        return bool(self.report.fits)

    # -- phases ---------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.converted:
            return
        self.phases.check(trainer.max_epochs, trainer.world_size)
        if self.phases.converts_in_setup:  # before the strategy wraps the model and builds the optimizer
            self._convert(trainer, pl_module, measure=False)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.phases.in_dense_phase(trainer.current_epoch):  # also on a resume inside the dense phase
            rebuild_optimizers(trainer, self.dense_epochs, keep_state=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.converted or not self.phases.converts_after(trainer.current_epoch):
            return
        self._convert(trainer, pl_module, measure=True)
        rebuild_optimizers(trainer, self.phases.fine_tune_epochs(trainer.max_epochs), keep_state=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.converted and self.config.train_mode == "project":
            project_coefficients_(trained_network(pl_module))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.converted or not trainer.is_global_zero:
            return
        acc = trainer.callback_metrics.get("test/acc")
        report = self.report.as_dict(None if acc is None else float(acc))
        console().print(*self.report.tables(report))
        if self.report_file:
            path = Path(trainer.default_root_dir) / self.report_file
            atomic_write_json(path, report)
            log.info("SmartDeal report written to %s", path)

    # -- conversion -----------------------------------------------------------------------------------

    def _convert(self, trainer: L.Trainer, pl_module: L.LightningModule, measure: bool) -> None:
        net = trained_network(pl_module)
        report = self.report
        report.dense_storage = weight_storage(net)
        if measure:
            report.acc_dense = self._test_accuracy(trainer, pl_module)
        report.fits = convert(net, self.config, progress=trainer.is_global_zero)
        report.storage, report.public = weight_storage(net), public_storage(net)
        if measure and self.bn_recalibration_batches > 0 and trainer.datamodule is not None:
            recalibrate_bn(net, trainer.datamodule.train_dataloader(), self.bn_recalibration_batches,
                           forward=lambda batch: net(batch[0].to(pl_module.device)))
        metrics = {"smartdeal/storage_ratio": report.public.ratio,
                   "smartdeal/storage_ratio_effnn": report.storage.ratio,
                   "smartdeal/weight_kib": report.public.stored_bits / 8192,
                   "smartdeal/relative_error": sum(f.relative_error for f in report.fits.values())
                   / len(report.fits)}
        if measure:
            report.acc_converted = self._test_accuracy(trainer, pl_module)
            metrics.update({"test/acc_dense": report.acc_dense, "test/acc_converted": report.acc_converted})
            for name, value in metrics.items():
                if value is not None:
                    pl_module.log(name, float(value), on_step=False, on_epoch=True)
        else:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=0)
        if trainer.is_global_zero:
            console().print(report.fit_table())

    @staticmethod
    def _test_accuracy(trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        """Top-1 accuracy of ``pl_module`` on the datamodule's test split (None without a datamodule).

        Lightning cannot run its test loop inside ``fit``, so this is the small shared evaluator."""
        datamodule = trainer.datamodule
        if datamodule is None:
            log.warning("SmartDeal: no datamodule, so no dense test accuracy is measured")
            return None
        try:
            loader = datamodule.test_dataloader()
        except RuntimeError:  # test split not built yet by this datamodule
            datamodule.setup("test")
            loader = datamodule.test_dataloader()
        return top1_accuracy(pl_module, loader, pl_module.device)


__all__ = ["SmartDealCallback", "trained_network"]
