"""ImageNet (or any ImageFolder-style dataset) read from ``root/train`` and ``root/val``."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Subset
from torchvision import datasets, transforms

from effnn.data.base import ClassificationDataModule, seeded_split
from effnn.errors import DatasetNotFoundError

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageNetDataModule(ClassificationDataModule):
    """ImageFolder train/val. Model selection uses a seeded hold-out of train; ``root/val`` is the test set.

    Keeping the official val images out of validation is what lets search report an honest test number.
    """

    def __init__(self, root: str | None = None, val_size: int = 10000, split_seed: int = 0,
                 crop_ratio: float = 0.875, **kwargs) -> None:
        kwargs.setdefault("resolution", 224)
        kwargs.setdefault("num_classes", 1000)
        super().__init__(**kwargs)
        self.root = root
        self.val_size = val_size
        self.split_seed = split_seed
        self.crop_ratio = crop_ratio

    def check_root(self) -> Path:
        layout = "DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (ImageFolder layout)"
        if not self.root:
            raise DatasetNotFoundError(f"ImageNet: set data.root=DIR with {layout}")
        base = Path(self.root).expanduser()
        for split in ("train", "val"):
            if not (base / split).is_dir():
                raise DatasetNotFoundError(f"ImageNet not found at {base}: missing {base / split}; expected {layout}")
        return base

    def prepare_data(self) -> None:
        self.check_root()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        base = self.check_root()
        r = self.resolution
        train_tf = transforms.Compose([transforms.RandomResizedCrop(r), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), transforms.Normalize(_MEAN, _STD)])
        eval_tf = transforms.Compose([transforms.Resize(int(round(r / self.crop_ratio))), transforms.CenterCrop(r),
                                      transforms.ToTensor(), transforms.Normalize(_MEAN, _STD)])
        train_aug = datasets.ImageFolder(str(base / "train"), transform=train_tf)
        train_plain = datasets.ImageFolder(str(base / "train"), transform=eval_tf)
        found = len(train_aug.classes)
        if found != self.num_classes:
            raise DatasetNotFoundError(f"ImageNet at {base} has {found} class folders but data.num_classes="
                                       f"{self.num_classes}; set data.num_classes={found}")
        n = len(train_aug)
        train_idx, val_idx = seeded_split(n, (min(self.val_size, n // 10) / n,), self.split_seed)
        self.train_set = Subset(train_aug, train_idx)
        self.val_set = Subset(train_plain, val_idx)
        self.test_set = datasets.ImageFolder(str(base / "val"), transform=eval_tf)
