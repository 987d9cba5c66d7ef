"""The SmartDeal API in one namespace: ``from effnn.decompose import smartdeal; smartdeal.convert(...)``."""

from effnn.decompose.config import SmartDealConfig
from effnn.decompose.conversion import (
    LayerFit,
    convert,
    materialize,
    project_coefficients_,
    sd_layers,
)
from effnn.decompose.storage import (
    PublicStorage,
    StorageReport,
    public_storage,
    weight_bits_per_module,
    weight_storage,
)

__all__ = ["LayerFit", "PublicStorage", "SmartDealConfig", "StorageReport", "convert", "materialize",
           "project_coefficients_", "public_storage", "sd_layers", "weight_bits_per_module", "weight_storage"]
