"""Training figures in TensorBoard: the loss and precision schedule over steps, and the evaluated subnets'
accuracy against their hardware cost (supernets). Redrawn after every epoch (IMAGES tab)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

STEP_KEYS = ("train/loss_step", "precision/fwd_bits", "precision/grad_bits")
SUBNET_TAGS = ("min", "max")


def _value(v: Any) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


class TrainingFigures(Callback):
    """Record a few step metrics and the per-epoch subnet results; draw them into every TensorBoard logger."""

    def __init__(self) -> None:
        self.steps: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.subnets: list[tuple[int, str, float, float]] = []  # epoch, subnet, cost, accuracy

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        for key in STEP_KEYS:
            if key in trainer.callback_metrics:
                self.steps[key].append((trainer.global_step, _value(trainer.callback_metrics[key])))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        cost = next((k.rsplit("_", 1)[0] for k in sorted(metrics) if k.startswith("hw/") and k.endswith("_min")),
                    None)
        for tag in SUBNET_TAGS:
            if cost and f"val/acc_{tag}" in metrics and f"{cost}_{tag}" in metrics:
                self.subnets.append((trainer.current_epoch, tag, _value(metrics[f"{cost}_{tag}"]),
                                     _value(metrics[f"val/acc_{tag}"])))
        figures = {"figures/training": self.training_figure()}
        if self.subnets:
            figures["figures/subnets_acc_vs_cost"] = self.subnet_figure(cost or "cost")
        for name, fig in figures.items():
            if fig is None:
                continue
            for logger in loggers:
                logger.experiment.add_figure(name, fig, global_step=trainer.global_step, close=False)
            import matplotlib.pyplot as plt

            plt.close(fig)

    def training_figure(self) -> Any:
        if not self.steps.get("train/loss_step"):
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        steps, loss = zip(*self.steps["train/loss_step"])
        ax.plot(steps, loss, color="C0", lw=1, label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        bits = [k for k in ("precision/fwd_bits", "precision/grad_bits") if self.steps.get(k)]
        if bits:
            ax2 = ax.twinx()
            for i, key in enumerate(bits):
                s, b = zip(*self.steps[key])
                ax2.step(s, b, where="post", color=f"C{i + 1}", lw=1.2, label=key.split("/")[1])
            ax2.set_ylabel("bits")
            ax2.legend(loc="upper right", fontsize=8)
        ax.set_title("loss" + (" and precision schedule" if bits else ""))
        fig.tight_layout()
        return fig

    def subnet_figure(self, cost: str) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        for i, tag in enumerate(SUBNET_TAGS):
            points = [(c, a, e) for e, t, c, a in self.subnets if t == tag]
            if points:
                c, a, e = zip(*points)
                ax.plot(c, a, "o-", color=f"C{i}", label=f"{tag} subnet")
                ax.annotate(f"epoch {e[-1] + 1}", (c[-1], a[-1]), fontsize=7)
        ax.set_xlabel(cost)
        ax.set_ylabel("val accuracy")
        ax.set_title("evaluated subnets: accuracy vs cost")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig
