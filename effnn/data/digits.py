"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset (no download, 1,797 images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from effnn.data.base import ClassificationDataModule, seeded_split


def load_digits_tensors(resolution: int, in_chans: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as normalized float images (N, C, resolution, resolution) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    if in_chans == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return x, torch.as_tensor(digits.target, dtype=torch.int64)


class DigitsDataModule(ClassificationDataModule):
    """Digits upsampled to the model's resolution, with a fixed seeded train/val/test split.

    The split seed is separate from the training seed, so every run and every sweep trial sees the same
    held-out images.
    """

    expected_num_classes = 10

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits_tensors(self.resolution, self.in_chans)
        train_idx, val_idx, test_idx = seeded_split(len(y), (self.val_fraction, self.test_fraction),
                                                    self.split_seed)
        self.train_set = TensorDataset(x[train_idx], y[train_idx])
        self.val_set = TensorDataset(x[val_idx], y[val_idx])
        self.test_set = TensorDataset(x[test_idx], y[test_idx])
