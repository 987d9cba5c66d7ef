"""Weight-sharing NAS: elastic ops, spaces and ``Arch``, supernet, KD losses, samplers, BN recalibration."""

from effnn.nas.bn_calibration import BNRecalibration, bn_layers, recalibrate_bn
from effnn.nas.losses import AlphaDivergence, LabelSmoothingCrossEntropy, SoftTargetKL, build_kd_loss
from effnn.nas.samplers import (
    AttentiveSampler,
    CostPrior,
    SandwichSampler,
    UniformSampler,
    build_sampler,
    macs_cost,
)
from effnn.nas.sandwich import sandwich_backward
from effnn.nas.space import Arch, BlockConfig, SearchSpace, StageSpec, get_space, list_spaces
from effnn.nas.supernet import MBNet, Supernet, build_supernet, resize_to

__all__ = [
    "AlphaDivergence", "Arch", "AttentiveSampler", "BNRecalibration", "BlockConfig", "CostPrior",
    "LabelSmoothingCrossEntropy", "MBNet", "SandwichSampler", "SearchSpace", "SoftTargetKL", "StageSpec",
    "Supernet", "UniformSampler", "bn_layers", "build_kd_loss", "build_sampler", "build_supernet",
    "get_space", "list_spaces", "macs_cost", "recalibrate_bn", "resize_to", "sandwich_backward",
]
