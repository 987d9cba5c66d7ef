"""LightningModules (classifier, supernet), their optimizer setup, and the contract callbacks rely on
(:mod:`effnn.lit.network`: the network is ``.net``; ``training_step`` returns the loss)."""

from effnn.lit.classifier import ClassifierModule
from effnn.lit.network import network_of, training_loss
from effnn.lit.supernet import SupernetModule

__all__ = ["ClassifierModule", "SupernetModule", "network_of", "training_loss"]
