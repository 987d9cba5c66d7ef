"""Hardware cost plugin: workload extraction, a SCALE-Sim-compatible systolic-array model, energy tables,
cost models that map a module or a (space, arch) to metrics such as latency and energy, and a PPA model
with per-layer mappings (area, power, energy, latency, EDP per PE type and bit-width)."""

from effnn.hw.cost import (
    AnalyticCostModel,
    CostModel,
    SystolicCostModel,
    WorkloadSection,
    build_cost_model,
    hardware_preset,
    hardware_preset_names,
)
from effnn.hw.energy import EnergyTable, energy_table_names, load_energy_table
from effnn.hw.layers import ConvLayer, GemmLayer, Layer
from effnn.hw.mapping import LayerMapping, MappedCostModel, Mapper, MappingSpace, best_mapping
from effnn.hw.ppa import PE_TYPES, AcceleratorPPA, PECost, load_tech, pe_cost, summarize
from effnn.hw.scalesim import read_scalesim_config, read_scalesim_topology
from effnn.hw.systolic import DATAFLOWS, LayerCost, SystolicArray
from effnn.hw.workload import extract_workload

__all__ = [
    "DATAFLOWS", "AnalyticCostModel", "ConvLayer", "CostModel", "EnergyTable", "GemmLayer", "Layer",
    "LayerCost", "SystolicArray", "SystolicCostModel", "WorkloadSection", "build_cost_model", "energy_table_names",
    "extract_workload", "hardware_preset", "hardware_preset_names", "load_energy_table",
    "read_scalesim_config", "read_scalesim_topology",
    # PPA and mappings (effnn.hw.ppa, effnn.hw.mapping; the mapper's Accelerator lives in effnn.hw.mapping)
    "PE_TYPES", "AcceleratorPPA", "LayerMapping", "MappedCostModel", "Mapper", "MappingSpace", "PECost",
    "best_mapping", "load_tech", "pe_cost", "summarize",
]
