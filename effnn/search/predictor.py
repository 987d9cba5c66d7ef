"""An accuracy predictor fit on the archs evaluated so far, used to pre-screen candidates.

Each gene is one-hot encoded over its allowed values (``SearchSpace.choices``) and a ridge regression
maps the encoding to accuracy. It is cheap, has no hyper-parameters worth tuning at a few hundred
points, and only has to rank candidates well enough to decide which ones are worth a real evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import Ridge

from effnn.nas.space import Arch, SearchSpace


class AccuracyPredictor:
    """``fit(archs, accs)`` then ``predict(archs)``; ``alpha`` is the ridge penalty on the one-hot weights."""

    def __init__(self, space: SearchSpace, alpha: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"predictor alpha must be >= 0, got {alpha}")
        self.space = space
        self.alpha = alpha
        self._columns: list[dict[object, int]] = []
        offset = 0
        for values in space.choices().values():
            self._columns.append({v: offset + i for i, v in enumerate(values)})
            offset += len(values)
        self.num_features = offset
        self._model: Ridge | None = None

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """One row per arch, one column per (gene, allowed value)."""
        x = np.zeros((len(archs), self.num_features), dtype=np.float64)
        for row, arch in enumerate(archs):
            for col_of, value in zip(self._columns, self.space.validate(arch).genes()):
                x[row, col_of[value]] = 1.0
        return x

    @property
    def fitted(self) -> bool:
        return self._model is not None

    def fit(self, archs: Sequence[Arch], accs: Sequence[float]) -> AccuracyPredictor:
        if len(archs) != len(accs) or len(archs) < 2:
            raise ValueError(f"the predictor needs >= 2 (arch, accuracy) pairs, got {len(archs)} archs and "
                             f"{len(accs)} accuracies")
        self._model = Ridge(alpha=self.alpha).fit(self.encode(archs), np.asarray(accs, dtype=np.float64))
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("AccuracyPredictor.predict called before fit")
        return self._model.predict(self.encode(archs))
