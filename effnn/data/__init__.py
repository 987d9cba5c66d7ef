"""LightningDataModules. ``digits`` is embedded (scikit-learn ships it), so effnn trains with no download."""

from effnn.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from effnn.data.digits import DigitsDataModule
from effnn.data.imagenet import ImageNetDataModule
from effnn.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "ImageNetDataModule",
    "SyntheticDataModule",
]
