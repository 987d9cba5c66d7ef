"""Datamodules: the embedded digits split, synthetic determinism, and one-line errors for missing roots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from effnn.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageNetDataModule, SyntheticDataModule
from effnn.errors import ConfigError, DatasetNotFoundError


def test_digits_split_is_fixed_disjoint_and_complete() -> None:
    a, b = DigitsDataModule(resolution=16), DigitsDataModule(resolution=16)
    a.setup(), b.setup()
    sizes = [len(a.train_set), len(a.val_set), len(a.test_set)]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 270
    for split in ("train_set", "val_set", "test_set"):
        assert torch.equal(getattr(a, split).tensors[0], getattr(b, split).tensors[0])
    xb, yb = next(iter(a.train_dataloader()))
    assert xb.shape == (32 if a.batch_size == 32 else a.batch_size, 3, 16, 16)
    assert set(yb.tolist()) <= set(range(10))
    # no image appears in two splits (digits has no exact duplicates across our split by construction)
    train = {tuple(t.flatten().tolist()) for t in a.train_set.tensors[0][:, 0, ::4, ::4]}
    test = [tuple(t.flatten().tolist()) for t in a.test_set.tensors[0][:, 0, ::4, ::4]]
    assert sum(t in train for t in test) < 10


def test_digits_rejects_wrong_num_classes() -> None:
    with pytest.raises(ConfigError, match="num_classes=10"):
        DigitsDataModule(num_classes=100)


def test_synthetic_is_seeded() -> None:
    a, b = SyntheticDataModule(num_samples=64, seed=3), SyntheticDataModule(num_samples=64, seed=3)
    a.setup(), b.setup()
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])


@pytest.mark.parametrize("cls,folder", [(CIFAR10DataModule, "cifar-10-batches-py"),
                                        (CIFAR100DataModule, "cifar-100-python")])
def test_cifar_missing_root_names_path_and_layout(cls, folder: str, tmp_path: Path) -> None:
    dm = cls(root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / folder) in msg
    assert cls.files[0] in msg


def test_imagenet_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"missing .*train.*ImageFolder"):
        ImageNetDataModule(root=str(tmp_path)).setup()


def test_imagenet_folder_reads_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(12 if split == "train" else 2):
                Image.new("RGB", (40, 40), color=(i * 10, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    dm = ImageNetDataModule(root=str(tmp_path), num_classes=2, resolution=32, batch_size=4, val_size=4)
    dm.setup()
    assert len(dm.test_set) == 4 and len(dm.train_set) + len(dm.val_set) == 24
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape[1:] == (3, 32, 32)
