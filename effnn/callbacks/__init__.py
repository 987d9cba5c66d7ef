"""Lightning callbacks every effnn run uses (conf/callbacks/default.yaml): stop diverged runs, readable progress."""

from effnn.callbacks.faults import KillAtStep
from effnn.callbacks.figures import TrainingFigures
from effnn.callbacks.nonfinite import NonFiniteError, StopOnNonFinite
from effnn.callbacks.progress import EpochSummary, TerminalProgressBar, TextProgress
from effnn.callbacks.rng import RestoreRNG

__all__ = ["EpochSummary", "KillAtStep", "NonFiniteError", "RestoreRNG", "StopOnNonFinite", "TerminalProgressBar",
           "TextProgress", "TrainingFigures"]
