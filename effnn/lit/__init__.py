"""LightningModules (classifier, supernet) and the callbacks they share."""

from effnn.lit.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
