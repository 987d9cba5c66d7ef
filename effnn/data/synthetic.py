"""Seeded random images with a learnable class signal: fast, deterministic data for tests."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from effnn.data.base import ClassificationDataModule


class SyntheticDataModule(ClassificationDataModule):
    """Each class has a fixed random prototype image; samples are prototype + Gaussian noise."""

    def __init__(self, num_samples: int = 512, num_classes: int = 10, noise: float = 1.0, seed: int = 0,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(num_classes=num_classes, **kwargs)
        if num_samples < 3 or num_classes < 2:
            raise ValueError("synthetic data needs num_samples >= 3 and num_classes >= 2")
        self.num_samples = num_samples
        self.noise = noise
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def _make(self, n: int, offset: int) -> TensorDataset:
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.in_chans, self.resolution, self.resolution)
        prototypes = torch.randn(self.num_classes, *shape, generator=g)
        g.manual_seed(self.seed + 1000 * (offset + 1))
        y = torch.randint(0, self.num_classes, (n,), generator=g)
        x = prototypes[y] + self.noise * torch.randn(n, *shape, generator=g)
        return TensorDataset(x, y)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        n_val = max(1, int(self.val_fraction * self.num_samples))
        n_test = max(1, int(self.test_fraction * self.num_samples))
        self.train_set = self._make(self.num_samples - n_val - n_test, 0)
        self.val_set = self._make(n_val, 1)
        self.test_set = self._make(n_test, 2)
