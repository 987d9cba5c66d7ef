"""CIFAR-10/100 from a local copy of the python-version archives (never downloaded at run time)."""

from __future__ import annotations

import pickle
from pathlib import Path

from torch.utils.data import Subset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from effnn.data.base import ClassificationDataModule, seeded_split
from effnn.errors import ConfigError, DatasetNotFoundError

_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class _CIFARDataModule(ClassificationDataModule):
    folder: str
    files: tuple[str, ...]
    dataset_cls: type

    def __init__(self, root: str | None = None, val_size: int = 5000, split_seed: int = 0, augment: bool = True,
                 **kwargs) -> None:
        kwargs.setdefault("resolution", 32)
        super().__init__(**kwargs)
        if self.in_chans != 3:
            raise ConfigError("CIFAR images are RGB: data.in_chans must be 3")
        self.root = root
        self.val_size = val_size
        self.split_seed = split_seed
        self.augment = augment

    def check_root(self) -> Path:
        """Fail early, in one line, with the expected layout, instead of torchvision's download hint."""
        name = type(self).__name__.replace("DataModule", "")
        if not self.root:
            raise DatasetNotFoundError(f"{name}: set data.root=DIR where DIR/{self.folder}/ holds the python-"
                                       f"version archive extracted ({', '.join(self.files)})")
        base = Path(self.root).expanduser() / self.folder
        missing = [f for f in self.files if not (base / f).exists()]
        if missing:
            raise DatasetNotFoundError(f"{name} not found at {base}: expected {base}/{{{','.join(self.files)}}} "
                                       f"(extract cifar-*-python.tar.gz into {Path(self.root).expanduser()}); "
                                       f"missing {missing[0]}")
        return base

    def _transforms(self, train: bool) -> transforms.Compose:
        mean, std = _STATS[self.num_classes]
        ops: list = []
        if train and self.augment:
            ops += [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        if self.resolution != 32:
            ops.append(transforms.Resize(self.resolution))
        ops += [transforms.ToTensor(), transforms.Normalize(mean, std)]
        return transforms.Compose(ops)

    def prepare_data(self) -> None:
        self.check_root()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.check_root()
        root = str(Path(self.root).expanduser())
        train_aug = self._dataset(root, True, self._transforms(True))
        train_plain = self._dataset(root, True, self._transforms(False))
        n = len(train_aug)
        train_idx, val_idx = seeded_split(n, (self.val_size / n,), self.split_seed)
        self.train_set = Subset(train_aug, train_idx)
        self.val_set = Subset(train_plain, val_idx)
        self.test_set = self._dataset(root, False, self._transforms(False))

    def _dataset(self, root: str, train: bool, transform: transforms.Compose):
        """torchvision's dataset; a damaged file is named in one line (torchvision's hint, download=True, does
        not apply: effnn never downloads)."""
        try:
            return self.dataset_cls(root, train=train, download=False, transform=transform)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            base = Path(root) / self.folder
            bad = [name for name, md5 in (*self.dataset_cls.train_list, *self.dataset_cls.test_list)
                   if not check_integrity(str(base / name), md5)]
            what = f"{base / bad[0]} is corrupt or truncated (MD5 mismatch)" if bad else f"{base} cannot be read"
            raise DatasetNotFoundError(f"{what}; extract a fresh copy of the official python-version archive "
                                       f"into {root} (effnn never downloads)") from err


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10; validation is a seeded hold-out of the training set, test is the official test set."""

    expected_num_classes = 10
    folder = "cifar-10-batches-py"
    files = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
    dataset_cls = datasets.CIFAR10


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (fine labels); same splits as CIFAR-10."""

    expected_num_classes = 100
    folder = "cifar-100-python"
    files = ("train", "test", "meta")
    dataset_cls = datasets.CIFAR100
