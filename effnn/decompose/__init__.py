"""SmartDeal weight decomposition: W = (mask * Q(Ce)) @ B with power-of-two Ce and a small fp32 basis B.

``from effnn.decompose import smartdeal; smartdeal.convert(model, cfg)`` is the one-call entry point.
"""

from effnn.decompose import smartdeal
from effnn.decompose.config import SmartDealConfig
from effnn.decompose.conversion import (
    LayerFit,
    convert,
    materialize,
    project_coefficients_,
    sd_layers,
)
from effnn.decompose.quantize_pow2 import Pow2Spec, round_pow2, round_pow2_ste
from effnn.decompose.sd_layers import SDConv2d, SDLayout, SDLinear, SDWeight
from effnn.decompose.storage import (
    PublicStorage,
    StorageReport,
    public_storage,
    weight_bits_per_module,
    weight_storage,
)

__all__ = [
    "LayerFit", "Pow2Spec", "PublicStorage", "SDConv2d", "SDLayout", "SDLinear", "SDWeight", "SmartDealConfig",
    "StorageReport", "convert", "materialize", "project_coefficients_", "public_storage", "round_pow2",
    "round_pow2_ste", "sd_layers", "smartdeal", "weight_bits_per_module", "weight_storage",
]
