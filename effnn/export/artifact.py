"""The layout of an exported subnet directory, and ``load_exported`` which turns it back into a module.

``DIR/export.json`` describes the export (format, search space spec, classes, input shape, files and
the verification results); ``DIR/arch.yaml`` is the arch; ``DIR/model.safetensors`` (or ``model.pt``)
is the state dict of the static model. The space is stored as its full specification, not only its
name, so a directory stays loadable when the space registry changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from effnn.errors import CheckpointError, ConfigError
from effnn.export.quantized import apply_quant_spec
from effnn.nas.precision import StageBits
from effnn.nas.space import ARCH_KEYS, Arch, SearchSpace, StageSpec
from effnn.nas.supernet import MBNet, build_supernet

EXPORT_FORMAT = "effnn-export"
EXPORT_VERSION = 1
META_FILE = "export.json"
ARCH_FILE = "arch.yaml"
WEIGHT_FILES = ("model.safetensors", "model.pt")
#: Keys besides the arch that an arch YAML from ``tools/search.py`` may carry (ignored by the exporter).
ARCH_FILE_EXTRA_KEYS = frozenset({"name", "metrics", "hardware", "best_hardware", "bits"})


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """Everything ``SearchSpace(...)`` needs, as plain data."""
    return {"name": space.name, "resolutions": list(space.resolutions), "stem_widths": list(space.stem_widths),
            "stages": [{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()}
                       for s in space.stages],
            "head_widths": list(space.head_widths), "stem_stride": space.stem_stride,
            "stem_kernel": space.stem_kernel, "head_expand": space.head_expand, "act": space.act,
            "divisor": space.divisor}


def space_from_dict(data: Mapping[str, Any]) -> SearchSpace:
    values = dict(data)
    stages = [StageSpec(**s) for s in values.pop("stages")]
    return SearchSpace(values.pop("name"), stages=stages, **values)


def _arch_file_data(path: Path) -> Mapping[str, Any]:
    """The checked top-level mapping of an arch YAML."""
    if not path.is_file():
        raise ConfigError(f"arch file {path} does not exist; pass arch=DIR/archs/pareto_000.yaml from a search")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"arch file {path} is not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"arch file {path} must be a mapping with keys {', '.join(ARCH_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in ARCH_KEYS and k not in ARCH_FILE_EXTRA_KEYS)
    if unknown:
        raise ConfigError(f"arch file {path} has unknown keys {unknown}; an arch has {', '.join(ARCH_KEYS)}")
    return data


def read_arch_file(path: str | Path) -> Arch:
    """An arch YAML: AlphaNet's keys, optionally with the ``metrics``/``hardware``/``bits`` a search writes."""
    path = Path(path)
    data = _arch_file_data(path)
    try:
        return Arch.from_dict(data, strict=False)
    except ValueError as err:
        raise ConfigError(f"arch file {path}: {err}") from err


def read_arch_bits(path: str | Path) -> StageBits | None:
    """The ``bits:`` of an arch YAML (per-stage weight/activation bit-widths a precision search wrote), or None."""
    path = Path(path)
    value = _arch_file_data(path).get("bits")
    if value is None:
        return None
    try:
        return StageBits.from_dict(value)
    except ValueError as err:
        raise ConfigError(f"arch file {path}: {err}") from err


def build_static(space: SearchSpace, arch: Arch, num_classes: int, in_chans: int,
                 device: torch.device | str = "cpu",
                 quantization: Mapping[str, Mapping[str, Any]] | None = None) -> MBNet:
    """An uninitialized static subnet of ``arch`` (the exact module ``Supernet.extract`` returns), with the
    layers named in ``quantization`` (export.json's ``quantization.layers``) in their quantized kind.

    The supernet it is sliced from lives on the meta device, so this costs no memory or init time.
    """
    with torch.device("meta"):
        static = build_supernet(space, num_classes, in_chans).extract(arch)
        if quantization:
            apply_quant_spec(static, quantization)
    return static.to_empty(device=device)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # safetensors/zip errors differ; all mean a damaged file to the user
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path} is corrupt ({first}); export the subnet again") from err
    raise CheckpointError(f"{directory} has no {' or '.join(WEIGHT_FILES)}; export the subnet again")


def read_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{directory} is not an exported subnet (no {META_FILE}); create one with "
                              f"`python tools/export.py ckpt=... arch=... out={directory}`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{meta_path} is corrupt ({err}); export the subnet again") from err
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{meta_path} is not an effnn export description (format != {EXPORT_FORMAT!r})")
    return meta


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> MBNet:
    """The static subnet saved in ``path`` (a ``tools/export.py`` output directory), in eval mode.

    It is a plain ``nn.Module`` (Conv2d/BatchNorm2d/Linear, timm-style ``forward_features``/
    ``forward_head``) that expects images at ``model.arch.resolution``; train or fine-tune it like any
    other model. A quantized export (``quantization`` in export.json) has ``QuantConv2d``/``QuantLinear``
    layers instead: stored quantized weights, inputs fake-quantized on calibrated ranges (inference only).
    """
    directory = Path(path)
    meta = read_meta(directory)
    try:
        space = space_from_dict(meta["space"])
        arch = Arch.from_dict(meta["arch"])
        space.validate(arch)
        num_classes, in_chans = int(meta["num_classes"]), int(meta["in_chans"])
        quantization = meta.get("quantization")
        model = build_static(space, arch, num_classes, in_chans, device,
                             None if quantization is None else quantization["layers"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{directory / META_FILE} is inconsistent ({err}); export the subnet again") from err
    weights = _read_weights(directory)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"weights in {directory} do not fit its arch ({first}); export the subnet again") \
            from err
    return model.eval()
