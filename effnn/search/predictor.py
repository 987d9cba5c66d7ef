"""An accuracy predictor fit on the archs evaluated so far, used to pre-screen candidates.

Each gene -- the arch's (``SearchSpace.choices``) and, in a precision search, every stage's weight and
activation bit-width (``BitsSpace``) -- is one-hot encoded over its allowed values and a ridge regression
maps the encoding to accuracy. It is cheap, has no hyper-parameters worth tuning at a few hundred
points, and only has to rank candidates well enough to decide which ones are worth a real evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import Ridge

from effnn.nas.precision import BitsSpace, StageBits
from effnn.nas.space import Arch, SearchSpace

Key = Arch | tuple[Arch, StageBits | None]


class AccuracyPredictor:
    """``fit(keys, accs)`` then ``predict(keys)``, a key being an arch or an ``(arch, bits)`` pair (bits
    encoded when ``bits_space`` is given); ``alpha`` is the ridge penalty on the one-hot weights."""

    def __init__(self, space: SearchSpace, bits_space: BitsSpace | None = None, alpha: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"predictor alpha must be >= 0, got {alpha}")
        self.space = space
        self.bits_space = bits_space
        self.alpha = alpha
        self._columns: list[dict[object, int]] = []
        offset = 0
        gene_values = list(space.choices().values())
        if bits_space is not None:
            gene_values += [bits_space.weight_choices] * bits_space.num_stages
            gene_values += [bits_space.act_choices] * bits_space.num_stages
        for values in gene_values:
            self._columns.append({v: offset + i for i, v in enumerate(values)})
            offset += len(values)
        self.num_features = offset
        self._model: Ridge | None = None

    def _genes(self, key: Key) -> tuple:
        arch, bits = key if isinstance(key, tuple) else (key, None)
        genes = self.space.validate(arch).genes()
        if self.bits_space is not None:
            if bits is None:
                raise ValueError("this predictor encodes bits: pass (arch, bits) pairs")
            genes = (*genes, *self.bits_space.validate(bits).genes())
        return genes

    def encode(self, keys: Sequence[Key]) -> np.ndarray:
        """One row per arch (or (arch, bits)), one column per (gene, allowed value)."""
        x = np.zeros((len(keys), self.num_features), dtype=np.float64)
        for row, key in enumerate(keys):
            for col_of, value in zip(self._columns, self._genes(key), strict=True):
                x[row, col_of[value]] = 1.0
        return x

    @property
    def fitted(self) -> bool:
        return self._model is not None

    def fit(self, archs: Sequence[Key], accs: Sequence[float]) -> AccuracyPredictor:
        if len(archs) != len(accs) or len(archs) < 2:
            raise ValueError(f"the predictor needs >= 2 (arch, accuracy) pairs, got {len(archs)} archs and "
                             f"{len(accs)} accuracies")
        self._model = Ridge(alpha=self.alpha).fit(self.encode(archs), np.asarray(accs, dtype=np.float64))
        return self

    def predict(self, archs: Sequence[Key]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("AccuracyPredictor.predict called before fit")
        return self._model.predict(self.encode(archs))
