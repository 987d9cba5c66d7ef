"""Rebuild a trained supernet from a Lightning checkpoint, with one-line errors for anything else.

The supernet's search space is read from the checkpoint's saved hyper-parameters (any ``space`` entry,
a name or a ``SearchSpace``), else from the run's ``.hydra/config.yaml`` beside the checkpoint, else
found by matching the checkpoint's tensor shapes against every registered space. The number of classes
and input channels come from the weights themselves, so they cannot disagree with them.

A checkpoint trained with ``model.precision`` (switchable precision, ``effnn.nas.switchable``) comes back
quantized: ``precision`` is the ``StagePrecision`` wrapping the supernet (at full precision until
``precision.set(bits)``), ``bits_space`` the ``BitsSpace`` it was trained for, and the activation-range
buffers of every quantizer are restored with the weights. Other checkpoints have both None.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from effnn.errors import CheckpointError
from effnn.lit.checkpoint_io import load_checkpoint_file
from effnn.nas.precision import BitsSpace, StagePrecision
from effnn.nas.space import SearchSpace, get_space, list_spaces
from effnn.nas.supernet import Supernet, build_supernet
from effnn.nas.switchable import SwitchableSettings, attach_precision

SPACE_KEYS = ("space", "space_name", "search_space")
_STEM = "conv_stem.weight"
_PREFERRED_PREFIXES = ("net.", "supernet.", "model.", "")
#: what quantize_model's weight parametrization and activation quantizer add to a layer's state-dict keys
_PARAMETRIZED = ".parametrizations.weight.original"
_QUANTIZER = ".quantizer."


@dataclass
class SupernetCheckpoint:
    """A supernet with the checkpoint's weights (eval mode, on CPU unless moved) and where it came from."""

    supernet: Supernet
    space: SearchSpace
    num_classes: int
    in_chans: int
    path: Path
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    #: the supernet's per-stage quantization (switchable-precision checkpoints), else None
    precision: StagePrecision | None = None
    #: the bit-width choices it was trained for (with ``precision``), else None
    bits_space: BitsSpace | None = None
    #: the validated ``model.precision`` settings (ladder, evaluated precisions), else None
    settings: SwitchableSettings | None = None

    @property
    def space_name(self) -> str:
        return self.space.name

    @property
    def quantized(self) -> bool:
        return self.precision is not None


def _walk(obj: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(key, value) pairs of nested mappings (Lightning hyper-parameters, DictConfigs, YAML)."""
    if depth > 6 or not isinstance(obj, Mapping):
        return
    for key, value in obj.items():
        yield str(key), value
        yield from _walk(value, depth + 1)


def _space_hint(obj: Any) -> SearchSpace | str | None:
    for key, value in _walk(obj):
        if key in SPACE_KEYS:
            if isinstance(value, SearchSpace):
                return value
            if isinstance(value, str) and value in list_spaces():
                return value
            if isinstance(value, Mapping) and isinstance(value.get("name"), str):
                return value["name"]
    return None


def _run_config(path: Path) -> dict[str, Any] | None:
    """The Hydra config of the run that wrote ``RUN_DIR/checkpoints/x.ckpt`` (unresolved), if present."""
    cfg_path = path.resolve().parent.parent / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        return None
    try:
        data = yaml.safe_load(cfg_path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _plain_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as an unquantized model's: parametrized weights under their plain names, no quantizer
    buffers (to recognise the space of a switchable-precision supernet by its shapes)."""
    return {k.replace(_PARAMETRIZED, ".weight"): v for k, v in state_dict.items() if _QUANTIZER not in k}


def _precision_hparams(hparams: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = hparams.get("precision")
    return value if isinstance(value, Mapping) else None


def _prefixes(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    found = [k[: -len(_STEM)] for k in state_dict if k.endswith(_STEM)]
    found = [p for p in found if f"{p}classifier.weight" in state_dict and f"{p}blocks.0.conv_dw.weight" in state_dict]
    rank = {p: i for i, p in enumerate(_PREFERRED_PREFIXES)}
    return sorted(found, key=lambda p: (rank.get(p, len(rank)), len(p), p))


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _shape_mismatch(space: SearchSpace, weights: Mapping[str, torch.Tensor], num_classes: int,
                    in_chans: int) -> str | None:
    """None if ``weights`` are exactly a supernet of ``space``, else the first difference."""
    with torch.device("meta"):
        expected = build_supernet(space, num_classes, in_chans).state_dict()
    missing = [k for k in expected if k not in weights]
    if missing:
        return f"missing {missing[0]}"
    extra = [k for k in weights if k not in expected]
    if extra:
        return f"unexpected {extra[0]}"
    for k, v in expected.items():
        if tuple(v.shape) != tuple(weights[k].shape):
            return f"{k} has shape {tuple(weights[k].shape)}, space {space.name!r} needs {tuple(v.shape)}"
    return None


def _is_finetuned_export(path: Path, prefixes: list[str]) -> bool:
    """A ``train.py model=exported`` checkpoint: its run config names the exported model, or its weights sit
    under ``ResizeInput``'s ``model.`` (a supernet's never do)."""
    model = (_run_config(path) or {}).get("model") or {}
    target = model.get("_target_", "") if isinstance(model, dict) else ""
    return str(target).endswith("exported_classifier") or any(p.endswith("net.model.") for p in prefixes)


def _build(space: SearchSpace, num_classes: int, in_chans: int, weights: dict[str, torch.Tensor], path: Path,
           hparams: dict[str, Any]) -> SupernetCheckpoint:
    """The supernet of ``space`` holding ``weights``, quantized first if it was trained with precision."""
    supernet = Supernet(space, num_classes, in_chans)
    config = _precision_hparams(hparams)
    quantized = any(_QUANTIZER in k for k in weights)
    if config is None and quantized:
        raise CheckpointError(f"{path} holds quantizer buffers but no model.precision hyper-parameters; was it "
                              f"written by `python train.py +recipe=alphanet_quant`?")
    settings = precision = None
    if config is not None:
        try:
            settings = SwitchableSettings.parse(config, space.num_stages, "precision (checkpoint hyper-parameters)")
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from err
        precision = attach_precision(supernet, settings)
    try:
        supernet.load_state_dict(weights)
    except RuntimeError as err:
        first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise CheckpointError(f"{path}: the weights do not fit a {'quantized ' if precision else ''}supernet "
                              f"of space {space.name!r} ({first})") from err
    return SupernetCheckpoint(supernet.eval(), space, num_classes, in_chans, path, hparams, precision,
                              None if settings is None else settings.space, settings)


def load_supernet_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> SupernetCheckpoint:
    """The supernet stored in a ``train.py +recipe=alphanet`` checkpoint (CheckpointError on anything else)."""
    path = Path(path)
    ckpt = load_checkpoint_file(path, map_location)
    stored = ckpt["state_dict"]
    state_dict = _plain_keys(stored)
    prefixes = _prefixes(state_dict)
    if not prefixes:
        example = next(iter(state_dict), "nothing")
        raise CheckpointError(f"{path} is not a supernet checkpoint (its weights, e.g. {example!r}, are not a "
                              f"weight-sharing supernet); pass a checkpoint from `python train.py +recipe=alphanet`")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    hint = _space_hint(hparams) or _space_hint(_run_config(path) or {})
    if isinstance(hint, str):
        hint = get_space(hint)
    problems = []
    for prefix in prefixes:
        weights = _strip(state_dict, prefix)
        num_classes = int(weights["classifier.weight"].shape[0])
        in_chans = int(weights[_STEM].shape[1])
        candidates = [hint] if hint is not None else [get_space(n) for n in dict.fromkeys(
            get_space(name).name for name in list_spaces())]
        for space in candidates:
            problem = _shape_mismatch(space, weights, num_classes, in_chans)
            if problem is None:
                return _build(space, num_classes, in_chans, _strip(stored, prefix), path, hparams)
            problems.append(f"space {space.name!r}: {problem}")
    if _is_finetuned_export(path, prefixes):
        raise CheckpointError(f"{path} is a fine-tuned exported subnet (a static model), not a supernet; search the "
                              f"supernet checkpoint it was exported from (source_checkpoint in its export.json)")
    raise CheckpointError(f"{path} holds a supernet that fits no known search space ({problems[0]}); "
                          f"was it trained with a space that is not registered in effnn.nas.get_space?")
