"""Structured configs (dataclasses) that Hydra validates: the hardware preset, the search, quantization
(:class:`QuantizationConfig`, what ``effnn.precision.quantize_model`` instruments) and SmartDeal.

:func:`register_configs` stores them in Hydra's ConfigStore. Config files extend them through their
defaults list (``defaults: [_schema, _self_]`` in ``effnn/conf/hardware/*.yaml`` and
``conf/search/evolution.yaml``), so a misspelled key or a value of the wrong type fails when Hydra
composes the config, before anything is built. The same dataclasses validate plain mappings given to the
library (:func:`validated`), so the library and the command line share one validator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from effnn.errors import ConfigError

#: the accelerator every effnn entry point (train, search, export, tools/hwcost.py) uses unless told otherwise
DEFAULT_HARDWARE = "systolic_16x16_os"

T = TypeVar("T")


@dataclass
class ArrayConfig:
    """A systolic array (the fields of :class:`effnn.hw.SystolicArray`; units as documented there)."""

    rows: int = 16
    cols: int = 16
    dataflow: str = "os"
    ifmap_sram_kb: float = 64.0
    filter_sram_kb: float = 64.0
    ofmap_sram_kb: float = 64.0
    dram_bandwidth: Any = None  # words/cycle, one number or [ifmap, filter, ofmap]; None: never stalls
    clock_mhz: float = 1000.0
    word_bits: int = 8
    energy_table: Any = "eyeriss_normalized"  # a name of effnn/hw/energy_tables.yaml or such a mapping


@dataclass
class PPAConfig:
    """The silicon a preset models (:class:`effnn.hw.ppa.AcceleratorPPA` fields): PE type and operand widths,
    DRAM kind and technology table, and ``models``, the published design it is modelled on (a citation)."""

    pe_type: str = "int_mac"  # int_mac | bit_serial | bit_fusion | shift_add (effnn.hw.ppa.PE_TYPES)
    weight_bits: int = 16
    act_bits: int = 16
    dram: str = "ddr3_horowitz"  # a DRAM kind of effnn/hw/ppa_tables.yaml
    tech: str = "horowitz_45nm"  # a technology table of effnn/hw/ppa_tables.yaml
    models: str = ""


@dataclass
class HardwareConfig:
    """One ``hardware`` group option: what :func:`effnn.hw.build_cost_model` takes."""

    name: str = ""
    kind: str = "systolic"  # systolic | analytic
    array: ArrayConfig | None = None
    default_bits: float = 16.0  # bits of layers that declare none
    ppa: PPAConfig | None = None  # area/power model of the array (tools/hwcost.py, effnn.hw.mapping)


@dataclass
class CalibrationConfig:
    batches: int = 8
    batch_size: int = 64
    reuse_mb: float = 1024.0  # prefix-reuse cache (effnn.search.prefix_reuse); 0: every subnet from scratch


@dataclass
class PredictorConfig:
    enabled: bool = False
    prescreen_factor: int = 4
    min_points: int = 16


@dataclass
class CoSearchConfig:
    """The accelerator half of a co-search; the base array is the ``hardware`` group's."""

    co_search: bool = False
    metric: str = "edp"
    space: dict[str, list[Any]] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    area: dict[str, Any] = field(default_factory=dict)


@dataclass
class DifferentiableConfig:
    """``search.differentiable``: Auto-NBA's gradient search (``effnn.search.differentiable`` documents each)."""

    steps: int = 200
    lr: float = 0.05
    tau_start: float = 5.0
    tau_end: float = 0.5
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.3, 1.0, 3.0])
    metric: str = "edp"
    batch_size: int = 64
    seed: int = 0
    bn_mode: str = "train"
    save_every: int = 20
    top_k: int = 3
    tail_fraction: float = 0.25


@dataclass
class BitsConfig:
    """Per-stage bit-widths as search genes (needs a supernet trained with precision, ``+recipe=alphanet_quant``)."""

    enabled: bool = False
    weight_choices: list[int] = field(default_factory=lambda: [4, 8])
    act_choices: list[int] = field(default_factory=lambda: [4, 8])


@dataclass
class SearchConfig:
    """``conf/search/evolution.yaml``: the evolutionary search (its comments document each knob)."""

    objectives: list[str] = field(default_factory=lambda: ["acc", "macs"])
    constraints: dict[str, Any] = field(default_factory=dict)
    population: int = 16
    generations: int = 8
    parents: int = 8
    num_mutations: int = 8
    num_crossovers: int = 8
    mutate_prob: float = 0.2
    seed: int = 0
    max_tries: int = 200
    channels_last: bool = True
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    hardware: CoSearchConfig = field(default_factory=CoSearchConfig)
    bits: BitsConfig = field(default_factory=BitsConfig)
    method: str = "evolution"  # evolution | differentiable
    differentiable: DifferentiableConfig = field(default_factory=DifferentiableConfig)


@dataclass
class QuantizationConfig:
    """What ``quantize_model`` instruments.

    ``keep_full_precision``: fnmatch patterns of module names (``"stem.*"``, ``"fc"``) left alone.
    ``keep_classifier``: leave the final classifier (timm ``get_classifier()``, else the last layer with a
    2-D weight) full precision, as CPT/FracTrain do. ``keep_first``: also the first quantizable layer.
    ``weights``/``activations``/``gradients``: which of the three quantizers to attach.
    ``act_momentum``: EMA weight of the old activation range (0.9 in both papers).
    """

    keep_full_precision: tuple[str, ...] = ()
    keep_classifier: bool = True
    keep_first: bool = False
    weights: bool = True
    activations: bool = True
    gradients: bool = True
    act_momentum: float = 0.9

    def __post_init__(self) -> None:
        if isinstance(self.keep_full_precision, str):
            self.keep_full_precision = (self.keep_full_precision,)
        self.keep_full_precision = tuple(self.keep_full_precision)

    @classmethod
    def coerce(cls, value: QuantizationConfig | Mapping[str, Any] | None) -> QuantizationConfig:
        """Accept a config object, a plain/Hydra mapping of its fields, or None (defaults); the mapping is
        validated as a structured config (unknown keys and wrong types are one-line ConfigErrors)."""
        if isinstance(value, cls):
            return value
        return validated(cls, value, "quantization")


@dataclass
class SwitchablePrecisionConfig:
    """``model.precision`` of the supernet module: switchable-precision (InstantNet-style) training.

    ``weight_choices``/``act_choices``: per-stage bit-widths the supernet is trained (and later searched) at.
    ``ladder``: uniform precisions of the cascade, applied to weights and activations alike (32 = full
    precision), highest first after sorting; null = the widths common to both choice lists.
    ``middle_bits``: how the sandwich's middle subnets draw bits: ``mixed`` (per stage, BitsSpace.sample)
    or ``uniform`` (one random ladder level). ``cascade``: ``largest`` runs the largest subnet at every
    lower ladder level too, each distilled from the level above; ``both`` also the smallest (distilled from
    the largest at its level); ``off``: neither. ``eval_bits``: uniform precisions
    validated (null: full precision + the ladder). ``keep_classifier``/``act_momentum``: as
    :class:`QuantizationConfig`.
    """

    weight_choices: list[int] = field(default_factory=lambda: [4, 8])
    act_choices: list[int] = field(default_factory=lambda: [4, 8])
    ladder: list[int] | None = None
    middle_bits: str = "mixed"
    cascade: str = "largest"
    eval_bits: list[int] | None = None
    keep_classifier: bool = False
    act_momentum: float = 0.9


def validated(schema: type[T], value: Any, where: str) -> T:
    """``value`` (a mapping or DictConfig) checked against ``schema``: unknown keys and wrong types raise
    one-line ConfigErrors naming ``where``; returns the filled-in dataclass instance."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), value if value is not None else {})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        if isinstance(err, ConfigKeyError):
            known = ", ".join(schema.__dataclass_fields__)  # type: ignore[attr-defined]
            raise ConfigError(f"unknown {where} option {key!r}; known options: {known}") from err
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise ConfigError(f"bad value for {where}.{key}: {first}") from err


def register_schemas() -> None:
    """Store the schemas the shipped config files extend (``_schema`` of the ``hardware`` and ``search``
    groups). Runs on ``import effnn`` (cheap: no torch), so every Hydra compose of effnn's configs finds
    them -- the CLIs, the tests and the benchmarks alike. Storing again replaces the same entries."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="hardware", name="_schema", node=HardwareConfig)
    cs.store(group="search", name="_schema", node=SearchConfig)
    cs.store(group="precision", name="_quantization_schema", node=QuantizationConfig)
    cs.store(group="precision", name="_switchable_schema", node=SwitchablePrecisionConfig)


def register_configs() -> None:
    """:func:`register_schemas` plus SmartDeal's structured config (``smartdeal/_schema``, where
    effnn/decompose/config.py exists; importing it imports torch, so only the CLIs call this)."""
    from hydra.core.config_store import ConfigStore

    register_schemas()
    if not (Path(__file__).parents[1] / "decompose" / "config.py").is_file():
        return  # (checked by path: importing effnn.decompose to find out would import torch)
    from effnn.decompose import config as smartdeal_config

    schema = getattr(smartdeal_config, "SmartDealConfig", None)
    if schema is not None:
        from omegaconf import OmegaConf

        node = OmegaConf.structured(schema)
        OmegaConf.set_readonly(node, False)  # a frozen dataclass; the YAML values must merge onto its schema
        ConfigStore.instance().store(group="smartdeal", name="_schema", node=node)


__all__ = ["DEFAULT_HARDWARE", "ArrayConfig", "BitsConfig", "CalibrationConfig", "CoSearchConfig",
           "DifferentiableConfig", "HardwareConfig", "PPAConfig", "PredictorConfig", "QuantizationConfig",
           "SearchConfig", "SwitchablePrecisionConfig", "register_configs", "register_schemas", "validated"]
