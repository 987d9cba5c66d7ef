"""Shared behaviour of effnn's datamodules: loaders, seeded splits and the attributes models read."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from effnn.errors import ConfigError


def seeded_split(n: int, fractions: tuple[float, ...], seed: int) -> list[list[int]]:
    """Split ``range(n)`` into disjoint index lists with the given fractions (the rest goes first)."""
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise ConfigError(f"split fractions {fractions} must be >= 0 and sum to < 1")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    sizes = [int(round(f * n)) for f in fractions]
    first = n - sum(sizes)
    out, start = [perm[:first]], first
    for size in sizes:
        out.append(perm[start:start + size])
        start += size
    return out


class EpochShuffle(Sampler[int]):
    """Shuffle whose order depends only on ``(seed, epoch)``, not on the global RNG.

    A run resumed from a checkpoint therefore sees the same batches as the uninterrupted run (Lightning
    calls ``set_epoch`` before every epoch, DDP wrappers forward it). ``generator`` is handed to the
    DataLoader for its worker base seed, and is reseeded per epoch too, so per-worker augmentation streams
    also match.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator()
        self.set_epoch(0)

    def _epoch_seed(self) -> int:
        return (self.seed * 1_000_003 + self.epoch) % (1 << 63)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(self._epoch_seed() + 1)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        order = torch.Generator().manual_seed(self._epoch_seed())
        yield from torch.randperm(self.size, generator=order).tolist()


class ClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses fill ``self.train_set``/``val_set``/``test_set`` in ``setup``.

    ``num_classes``, ``in_chans`` and ``resolution`` are what model configs interpolate, and a
    datamodule rejects a config that disagrees with its data instead of training a wrong head.
    """

    expected_num_classes: int | None = None

    def __init__(self, batch_size: int = 64, num_workers: int = 0, resolution: int = 32, in_chans: int = 3,
                 num_classes: int | None = None, eval_batch_size: int | None = None,
                 pin_memory: bool = False, shuffle_seed: int | None = None) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if resolution <= 0:
            raise ConfigError(f"data.resolution must be positive, got {resolution}")
        if in_chans not in (1, 3):
            raise ConfigError(f"data.in_chans must be 1 or 3, got {in_chans}")
        expected = self.expected_num_classes
        if num_classes is not None and expected is not None and num_classes != expected:
            raise ConfigError(f"data.num_classes={num_classes} but {type(self).__name__} has {expected} "
                              f"classes; remove the override or set data.num_classes={expected}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.resolution = resolution
        self.in_chans = in_chans
        self.num_classes = num_classes if num_classes is not None else expected
        self.pin_memory = pin_memory
        self.shuffle_seed = shuffle_seed  # None: the run's seed (torch.initial_seed() after seed_everything)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        """Loaders that never draw from the global RNG (creating a DataLoader iterator otherwise does), so a
        resumed run's random stream matches the uninterrupted run's; shuffling is seeded by the run's seed."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        seed = torch.initial_seed() if self.shuffle_seed is None else self.shuffle_seed
        sampler = EpochShuffle(len(dataset), seed) if train else None  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=sampler.generator if sampler is not None else torch.Generator().manual_seed(seed),
            drop_last=train and len(dataset) > self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def calibration_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Shuffled training batches without augmentation randomness concerns, for BN recalibration."""
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(self.train_set, batch_size=batch_size or self.batch_size, shuffle=True,
                          drop_last=True, num_workers=self.num_workers)


def subset(dataset: Dataset, indices: list[int]) -> Subset:
    return Subset(dataset, indices)
