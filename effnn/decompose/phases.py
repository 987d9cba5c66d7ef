"""The two phases of a SmartDeal run in one ``trainer.fit``: ``dense_epochs`` dense, then SD fine-tuning.

``SmartDealPhases`` only answers questions about the schedule (is the setup valid, is this the epoch to
convert after, how long is the fine-tuning); ``rebuild_optimizers`` re-runs the module's own
``configure_optimizers`` sized for one phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L

from effnn.errors import ConfigError


@dataclass(frozen=True)
class SmartDealPhases:
    """Dense for ``dense_epochs`` epochs, then SD for the rest; ``dense_epochs=0`` converts before training."""

    dense_epochs: int

    def __post_init__(self) -> None:
        if self.dense_epochs < 0:
            raise ConfigError(f"SmartDeal: dense_epochs must be >= 0, got {self.dense_epochs}")

    @property
    def converts_in_setup(self) -> bool:
        """Convert before the optimizer exists (SD training from scratch or from a loaded model)."""
        return self.dense_epochs == 0

    def check(self, max_epochs: int | None, world_size: int) -> None:
        """One-line errors for a run that has no fine-tuning phase or converts mid-fit under DDP."""
        max_epochs = -1 if max_epochs is None else max_epochs
        if max_epochs != -1 and self.dense_epochs >= max_epochs:
            raise ConfigError(f"SmartDeal: dense_epochs={self.dense_epochs} leaves no fine-tuning epochs "
                              f"with trainer.max_epochs={max_epochs}; raise max_epochs or lower dense_epochs")
        if not self.converts_in_setup and world_size > 1:
            raise ConfigError("SmartDeal: converting mid-fit needs a single process; under DDP use "
                              "dense_epochs=0 on a trained (or freshly initialised) model")

    def in_dense_phase(self, epoch: int) -> bool:
        return epoch < self.dense_epochs

    def converts_after(self, epoch: int) -> bool:
        """True at the end of the last dense epoch."""
        return not self.converts_in_setup and epoch == self.dense_epochs - 1

    def fine_tune_epochs(self, max_epochs: int | None) -> int:
        """Epochs left after the dense phase (-1: unbounded run)."""
        return -1 if max_epochs in (None, -1) else max_epochs - self.dense_epochs


def rebuild_optimizers(trainer: L.Trainer, epochs: int, keep_state: bool) -> None:
    """Re-run the module's ``configure_optimizers`` as if the run lasted ``epochs`` epochs.

    effnn's modules size their warmup + cosine schedule from ``trainer.max_epochs``; Lightning has no public
    way to ask ``configure_optimizers`` for a shorter horizon, so the fit loop's ``max_epochs`` (the value
    ``trainer.max_epochs`` reads) is set for the call and restored right after. ``keep_state`` carries the
    optimizer and scheduler states over (same parameters, e.g. restored from a checkpoint); after a
    conversion the parameters are new, so the states start fresh.
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


__all__ = ["SmartDealPhases", "rebuild_optimizers"]
