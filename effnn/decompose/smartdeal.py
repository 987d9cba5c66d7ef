"""The SmartDeal API in one namespace: ``from effnn.decompose import smartdeal; smartdeal.convert(...)``."""

from effnn.decompose.convert import (
    LayerFit,
    SmartDealConfig,
    convert,
    materialize,
    project_coefficients_,
    sd_layers,
)
from effnn.decompose.storage import StorageReport, weight_bits_per_module, weight_storage

__all__ = ["LayerFit", "SmartDealConfig", "StorageReport", "convert", "materialize", "project_coefficients_",
           "sd_layers", "weight_bits_per_module", "weight_storage"]
