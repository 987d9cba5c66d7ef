"""``SmartDealConfig``: every knob of a SmartDeal conversion, as a plain dataclass.

Hydra can validate it: register it with ``ConfigStore.instance().store(group="smartdeal", name="base",
node=SmartDealConfig)`` (field types are OmegaConf-compatible: int, float, bool, str, list, dict), and a
YAML node with a misspelt key or a string where a number belongs fails at composition. Values that a type
cannot express (choices, ranges) are checked in ``__post_init__`` with one line naming the field and the fix.

Defaults follow the public SmartDeal code (github.com/VITA-Group/SmartDeal,
``SmartDeal-Inference/smart_exchange_structural.py`` and ``SmartDeal-Training``): groups of 32 filters share
the pruned rows (``prune_conv_group_size=32``), 40% of the rows of each conv group pruned
(``prune_threshold=0.4``, population), fully connected layers not row-pruned, value threshold 2^-8 and an
element mask that keeps Ce entries zero once they are zero (``SEConv2d.set_mask``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from effnn.decompose.quantize_pow2 import Pow2Spec
from effnn.errors import ConfigError

CHOICES = {"scope": ("layer", "global"), "init": ("fit", "scratch"), "train_mode": ("ste", "project")}


@dataclass(frozen=True)
class SmartDealConfig:
    """What ``conversion.convert`` does to a model.

    block_rows: max rows of Ce per basis (192 = 64 input channels of a 3x3 conv, the public preset).
    vector_basis: row length b for 1x1 convs and Linear layers (k x k convs use b = kW).
    filter_group: consecutive filters that share one row mask; every group prunes the same number of rows.
    row_sparsity: fraction of each group's rows pruned (rounded up, as the public code's ``ceil``).
    layer_sparsity: fnmatch pattern on the module name -> row sparsity for matching layers
        (``scope="layer"`` only; the first matching pattern wins).
    scope: "layer" (every layer at its own ratio) or "global" (one ranking over all layers sets each
        layer's ratio; the pruning inside a layer stays balanced over its groups).
    prune_linear: also row-prune Linear layers (the public code prunes conv layers only).
    element_mask: after fitting, Ce entries that are zero stay zero during fine-tuning (public SEConv2d mask).
    min_exp, max_exp, zero_threshold: the power-of-two grid of Q (see ``Pow2Spec``).
    init: "fit" runs SED on the trained weights; "scratch" takes Ce = W, B = I.
    als_iters, als_tol: SED iteration budget and relative-improvement stopping tolerance.
    train_mode: "ste" keeps a latent fp32 Ce (straight-through Q, fixed masks); "project" also snaps Ce
        back onto mask * Q(Ce) after every optimizer step.
    skip: fnmatch patterns of module names kept dense.
    skip_no_gain: keep a layer dense when its SD form would not store fewer bits (e.g. a depthwise 3x3).
    """

    block_rows: int = 192
    vector_basis: int = 3
    filter_group: int = 32
    row_sparsity: float = 0.4
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    scope: str = "layer"
    prune_linear: bool = False
    element_mask: bool = True
    min_exp: int = -8
    max_exp: int = 5
    zero_threshold: float = 2.0**-8
    init: str = "fit"
    als_iters: int = 30
    als_tol: float = 1e-4
    train_mode: str = "ste"
    skip: list[str] = field(default_factory=list)
    skip_no_gain: bool = True

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"SmartDeal: {name}={getattr(self, name)!r} is not one of {allowed}")
        for name in ("block_rows", "vector_basis", "filter_group", "als_iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"SmartDeal: {name} must be a positive integer, got {getattr(self, name)}")
        for where, value in [("row_sparsity", self.row_sparsity), *self.layer_sparsity.items()]:
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"SmartDeal: row sparsity for {where!r} must be in [0, 1), got {value}")
        if self.layer_sparsity and self.scope == "global":
            raise ConfigError("SmartDeal: layer_sparsity overrides need scope='layer'; drop them or the "
                              "global scope")
        if isinstance(self.skip, str):
            raise ConfigError(f"SmartDeal: skip must be a list of name patterns, got the string {self.skip!r}; "
                              f"write skip: [{self.skip!r}]")
        object.__setattr__(self, "layer_sparsity", dict(self.layer_sparsity))
        object.__setattr__(self, "skip", list(self.skip))
        Pow2Spec(self.min_exp, self.max_exp, self.zero_threshold)  # raises on a bad exponent range

    @classmethod
    def from_mapping(cls, values: Any) -> SmartDealConfig:
        """Build from a config object, a dict or a Hydra/OmegaConf node; an unknown key is one-line error."""
        if values is None:
            return cls()
        if isinstance(values, cls):
            return values
        from omegaconf import DictConfig, OmegaConf

        if isinstance(values, DictConfig):
            values = OmegaConf.to_container(values, resolve=True)
        if not isinstance(values, dict):
            raise ConfigError(f"SmartDeal: config must be a SmartDealConfig or a mapping of its fields, got "
                              f"{type(values).__name__}")
        try:
            return cls(**values)
        except TypeError as err:  # unexpected keyword
            known = sorted(cls.__dataclass_fields__)
            unknown = sorted(set(values) - set(known))
            raise ConfigError(f"SmartDeal: unknown config keys {unknown}; allowed keys are {known}") from err

    @property
    def spec(self) -> Pow2Spec:
        return Pow2Spec(self.min_exp, self.max_exp, self.zero_threshold)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["SmartDealConfig"]
