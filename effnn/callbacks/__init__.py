"""Lightning callbacks every effnn run uses (conf/callbacks/default.yaml): stop diverged runs, readable progress."""

from effnn.callbacks.nonfinite import NonFiniteError, StopOnNonFinite
from effnn.callbacks.progress import EpochSummary, TerminalProgressBar, TextProgress

__all__ = ["EpochSummary", "NonFiniteError", "StopOnNonFinite", "TerminalProgressBar", "TextProgress"]
