"""What a SmartDeal run reports: the per-layer fit table, the storage tables and the JSON report."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from effnn.decompose.config import SmartDealConfig
from effnn.decompose.conversion import LayerFit
from effnn.decompose.storage import PublicStorage, StorageReport


def console() -> Console:
    """Rich console; 120 columns when writing to a log file, so layer names are not cut."""
    return Console(width=None if sys.stdout.isatty() else 120)


@torch.no_grad()
def top1_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode over ``(images, labels)`` batches."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in loader:
            logits = model(x.to(device))
            correct += int((logits.argmax(dim=-1) == y.to(logits.device)).sum())
            total += y.numel()
    finally:
        model.train(was_training)
    return correct / max(1, total)


def _per_group(counts: tuple[int, ...] | list[int]) -> str:
    """``77 x 2`` when every group prunes the same number of rows, else the list."""
    if counts and len(set(counts)) == 1:
        return f"{counts[0]} x {len(counts)}"
    return ",".join(map(str, counts))


@dataclass
class SmartDealReport:
    """The measurements of one run; ``as_dict`` is the JSON written next to the run's outputs."""

    config: SmartDealConfig
    dense_epochs: int
    fits: Mapping[str, LayerFit] = field(default_factory=dict)
    dense_storage: StorageReport | None = None
    storage: StorageReport | None = None
    public: PublicStorage | None = None
    acc_dense: float | None = None
    acc_converted: float | None = None

    def as_dict(self, acc: float | None) -> dict[str, Any]:
        """Everything the run measured, as plain JSON-ready values (``acc``: the final test accuracy)."""
        return {
            "config": self.config.as_dict(),
            "dense_epochs": self.dense_epochs,
            "storage": self.storage.as_dict() if self.storage else {},
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
                      str(f.iterations), f"{f.storage_ratio:.2f}x")
        return t

    def tables(self, report: dict[str, Any]) -> list[Table]:
        """The storage table and the before/after summary of ``report`` (``as_dict``), for ``Console.print``."""
        summary = Table(title="SmartDeal summary")
        summary.add_column("quantity")
        summary.add_column("dense fp32", justify="right")
        summary.add_column("SmartDeal", justify="right")

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        st, pub = report["storage"], report["storage_public"]
        summary.add_row("parameters (stored values)", f"{report['dense_params']:,}",
                        f"{report['sd_stored_values']:,}")
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
        return [self.storage.table(), summary] if self.storage else [summary]


__all__ = ["SmartDealReport", "console", "top1_accuracy"]
