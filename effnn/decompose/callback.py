"""SmartDeal as a Lightning callback: train dense, measure, convert in place, fine-tune in SD form, report.

One ``trainer.fit`` runs both phases. After epoch ``dense_epochs`` the callback measures the dense test
accuracy (``test/acc_dense``), converts the model with SED, measures it again before any fine-tuning
(``test/acc_converted``), logs ``smartdeal/storage_ratio`` and rebuilds the optimizer (the module's own
``configure_optimizers``) for the SD parameters. Each phase gets its own full LR schedule (warmup +
cosine over that phase's epochs: ``configure_optimizers`` is run while ``trainer.max_epochs`` reads as the
phase length), so the dense model is annealed before conversion and the fine-tuning ends at the
schedule's final LR. ``trainer.test`` then logs ``test/acc`` of the SD
model and the callback prints the report and writes it as JSON next to the run's outputs.

``dense_epochs=0`` converts before the optimizer exists (SD training from scratch with
``init: scratch``, or from a model loaded elsewhere); that path also works under DDP. Converting mid-fit
swaps modules under the optimizer, which is single-process only. Resuming a run from a checkpoint taken
after the conversion is not supported (the freshly built model is dense): fine-tune from a converted model
with ``dense_epochs=0`` instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table
from torch import nn

from effnn.decompose.config import SmartDealConfig
from effnn.decompose.conversion import LayerFit, convert, project_coefficients_
from effnn.decompose.storage import PublicStorage, StorageReport, public_storage, weight_storage
from effnn.errors import ConfigError
from effnn.io import atomic_write_json
from effnn.nas.bn_calibration import recalibrate_bn

log = logging.getLogger("effnn")


def _console() -> Console:
    """Rich console; 120 columns when writing to a log file, so layer names are not cut."""
    return Console(width=None if sys.stdout.isatty() else 120)


def _per_group(counts: tuple[int, ...]) -> str:
    """``77 x 2`` when every group prunes the same number of rows, else the list."""
    if counts and len(set(counts)) == 1:
        return f"{counts[0]} x {len(counts)}"
    return ",".join(map(str, counts))


class SmartDealCallback(Callback):
    """Dense phase for ``dense_epochs`` epochs, then SED conversion and SD fine-tuning for the rest.

    ``config`` is a ``SmartDealConfig`` or its fields as a mapping (the Hydra node). The network converted
    is ``pl_module.net`` (every effnn LightningModule exposes its trained network there).
    ``bn_recalibration_batches`` training batches re-estimate BatchNorm statistics right after conversion
    (the dense statistics no longer match the SD weights), so ``test/acc_converted`` measures the SED fit
    rather than stale statistics; 0 skips it. Batches must be ``(images, labels)``.
    """

    def __init__(self, dense_epochs: int = 5, config: SmartDealConfig | Mapping[str, Any] | None = None,
                 bn_recalibration_batches: int = 20,
                 report_file: str | None = "smartdeal_report.json") -> None:
        if dense_epochs < 0:
            raise ConfigError(f"SmartDeal: dense_epochs must be >= 0, got {dense_epochs}")
        self.dense_epochs = dense_epochs
        self.config = SmartDealConfig.from_mapping(config)
        self.bn_recalibration_batches = bn_recalibration_batches
        self.report_file = report_file
        self.fits: dict[str, LayerFit] = {}
        self.storage: StorageReport | None = None
        self.public: PublicStorage | None = None
        self.dense_storage: StorageReport | None = None
        self.acc_dense: float | None = None
        self.acc_converted: float | None = None

    @property
    def converted(self) -> bool:
        return bool(self.fits)

    @staticmethod
    def _network(pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise ConfigError(f"SmartDeal: {type(pl_module).__name__}.net is not an nn.Module; the callback "
                              f"converts the network a LightningModule exposes as `.net`")
        return net

    # -- phases ---------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.converted:
            return
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        if max_epochs != -1 and self.dense_epochs >= max_epochs:
            raise ConfigError(f"SmartDeal: dense_epochs={self.dense_epochs} leaves no fine-tuning epochs "
                              f"with trainer.max_epochs={max_epochs}; raise max_epochs or lower dense_epochs")
        if self.dense_epochs == 0:  # before the strategy wraps the model and builds the optimizer
            self._convert(trainer, pl_module, measure=False)
        elif trainer.world_size > 1:
            raise ConfigError("SmartDeal: converting mid-fit needs a single process; under DDP use "
                              "dense_epochs=0 on a trained (or freshly initialised) model")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch < self.dense_epochs:  # also on a resume inside the dense phase
            self._rebuild_optimizers(trainer, self.dense_epochs, keep_state=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.converted or trainer.current_epoch != self.dense_epochs - 1:
            return
        self._convert(trainer, pl_module, measure=True)
        remaining = trainer.max_epochs - self.dense_epochs if trainer.max_epochs not in (None, -1) else -1
        self._rebuild_optimizers(trainer, remaining, keep_state=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.converted and self.config.train_mode == "project":
            project_coefficients_(self._network(pl_module))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.converted or not trainer.is_global_zero:
            return
        acc = trainer.callback_metrics.get("test/acc")
        report = self.report(None if acc is None else float(acc))
        _console().print(*self.report_tables(report))
        if self.report_file:
            path = Path(trainer.default_root_dir) / self.report_file
            atomic_write_json(path, report)
            log.info("SmartDeal report written to %s", path)

    # -- work -----------------------------------------------------------------------------------------

    def _convert(self, trainer: L.Trainer, pl_module: L.LightningModule, measure: bool) -> None:
        net = self._network(pl_module)
        self.dense_storage = weight_storage(net)
        if measure:
            self.acc_dense = self._test_accuracy(trainer, pl_module)
        self.fits = convert(net, self.config, progress=trainer.is_global_zero)
        self.storage = weight_storage(net)
        self.public = public_storage(net)
        if measure and self.bn_recalibration_batches > 0 and trainer.datamodule is not None:
            recalibrate_bn(net, trainer.datamodule.train_dataloader(), self.bn_recalibration_batches,
                           forward=lambda batch: net(batch[0].to(pl_module.device)))
        mean_error = sum(f.relative_error for f in self.fits.values()) / len(self.fits)
        metrics = {"smartdeal/storage_ratio": self.public.ratio,
                   "smartdeal/storage_ratio_effnn": self.storage.ratio,
                   "smartdeal/weight_kib": self.public.stored_bits / 8192,
                   "smartdeal/relative_error": mean_error}
        if measure:
            self.acc_converted = self._test_accuracy(trainer, pl_module)
            metrics.update({"test/acc_dense": self.acc_dense, "test/acc_converted": self.acc_converted})
            for name, value in metrics.items():
                if value is not None:
                    pl_module.log(name, float(value), on_step=False, on_epoch=True)
        else:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=0)
        if trainer.is_global_zero:
            _console().print(self.fit_table())

    def _rebuild_optimizers(self, trainer: L.Trainer, epochs: int | None, keep_state: bool) -> None:
        """Re-run ``configure_optimizers`` as if the run lasted ``epochs`` epochs (sizes the LR schedule).

        ``keep_state`` carries the optimizer and scheduler states over (same parameters, e.g. restored from
        a checkpoint); after a conversion the parameters are new, so the states start fresh.
        """
        states = ([o.state_dict() for o in trainer.optimizers],
                  [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]) if keep_state else None
        fit_loop = trainer.fit_loop
        saved = fit_loop.max_epochs
        fit_loop.max_epochs = epochs
        try:
            trainer.strategy.setup_optimizers(trainer)
        finally:
            fit_loop.max_epochs = saved
        if states is not None:
            for optimizer, state in zip(trainer.optimizers, states[0]):
                optimizer.load_state_dict(state)
            for config, state in zip(trainer.lr_scheduler_configs, states[1]):
                config.scheduler.load_state_dict(state)

    @torch.no_grad()
    def _test_accuracy(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        """Top-1 accuracy of ``pl_module`` on the datamodule's test split (None without a datamodule)."""
        datamodule = trainer.datamodule
        if datamodule is None:
            log.warning("SmartDeal: no datamodule, so no dense test accuracy is measured")
            return None
        try:
            loader = datamodule.test_dataloader()
        except RuntimeError:  # test split not built yet by this datamodule
            datamodule.setup("test")
            loader = datamodule.test_dataloader()
        was_training = pl_module.training
        pl_module.eval()
        correct = total = 0
        for x, y in loader:
            logits = pl_module(x.to(pl_module.device))
            correct += int((logits.argmax(dim=-1) == y.to(logits.device)).sum())
            total += y.numel()
        pl_module.train(was_training)
        return correct / max(1, total)

    # -- reporting ------------------------------------------------------------------------------------

    def report(self, acc: float | None) -> dict[str, Any]:
        """Everything the run measured, as plain JSON-ready values."""
        storage = self.storage.as_dict() if self.storage else {}
        return {
            "config": self.config.as_dict(),
            "dense_epochs": self.dense_epochs,
            "storage": storage,
            "storage_public": self.public.as_dict() if self.public else {},
            "dense_params": (self.dense_storage.weights + self.dense_storage.other_params
                             if self.dense_storage else None),
            "sd_stored_values": (self.storage.stored_values + self.storage.other_params
                                 if self.storage else None),
            "test/acc_dense": self.acc_dense,
            "test/acc_converted": self.acc_converted,
            "test/acc": acc,
            "layers": [{"name": f.name, "kind": f.kind, "weight_shape": list(f.weight_shape),
                        "blocks": [f.layout.num_blocks, f.layout.block_rows, f.layout.basis_size],
                        "row_sparsity": f.row_sparsity, "relative_error": f.relative_error,
                        "storage_ratio": f.storage_ratio,
                        "pruned_rows_per_group": list(f.pruned_rows_per_group)} for f in self.fits.values()],
        }

    def fit_table(self) -> Table:
        t = Table(title="SmartDeal SED fit (per layer)", caption="blocks: count x rows of Ce x basis size")
        for col in ("layer", "type", "blocks", "row sparsity", "rows pruned/group", "rel. error", "ALS iters",
                    "ratio"):
            t.add_column(col, justify="left" if col in ("layer", "type") else "right")
        for f in self.fits.values():
            l = f.layout
            t.add_row(f.name, f.kind, f"{l.num_blocks}x{l.block_rows}x{l.basis_size}",
                      f"{f.row_sparsity:.2f}", _per_group(f.pruned_rows_per_group), f"{f.relative_error:.3f}",
                      str(f.iterations),
                      f"{f.storage_ratio:.2f}x")
        return t

    def report_tables(self, report: dict[str, Any]) -> list[Table]:
        """The storage table and the before/after summary, ready for ``Console.print``."""
        summary = Table(title="SmartDeal summary")
        summary.add_column("quantity")
        summary.add_column("dense fp32", justify="right")
        summary.add_column("SmartDeal", justify="right")

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        st = report["storage"]
        summary.add_row("parameters (stored values)", f"{report['dense_params']:,}",
                        f"{report['sd_stored_values']:,}")
        pub = report["storage_public"]
        summary.add_row("weight storage (public SmartDeal formula)", f"{st['dense_weight_bits'] / 8192:.1f} KiB",
                        f"{pub['stored_bits'] / 8192:.1f} KiB")
        summary.add_row("compression ratio (public formula)", "1.00x", f"{pub['storage_ratio']:.2f}x")
        summary.add_row("compression ratio (effnn formula: fixed code + row mask)", "1.00x",
                        f"{st['storage_ratio']:.2f}x")
        summary.add_row("test accuracy", pct(report["test/acc_dense"]), pct(report["test/acc"]))
        summary.add_row("test accuracy after SED, before fine-tuning", "", pct(report["test/acc_converted"]))
        if report["test/acc_dense"] is not None and report["test/acc"] is not None:
            delta = 100 * (report["test/acc"] - report["test/acc_dense"])
            summary.add_row("accuracy change", "", f"{delta:+.2f} points")
        return [self.storage.table(), summary]
