"""Export one subnet of a trained supernet as a deployable static model, verified against the supernet.

Steps: recalibrate the subnet's BN statistics on training batches (as the search did), slice out the
static model (``Supernet.extract``), then produce every artifact in memory -- the state dict
(safetensors or .pt), a ``torch.export`` program (or TorchScript) and ONNX -- and run each on a real
batch. The static model must match the supernet at the arch, and every artifact must match the static
model, to ``atol``; only then are the files written, into a temporary sibling directory that replaces
the output directory as a whole (``effnn.io.atomic_directory``): a reader sees the old export or the new
one, never new weights beside an old ``arch.yaml`` or stale files of other formats. An existing export is
replaced only with ``overwrite=True``. Any disagreement raises ``ExportError`` and writes nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from effnn.errors import ConfigError, EffnnError
from effnn.export.artifact import (
    ARCH_FILE,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    META_FILE,
    space_to_dict,
)
from effnn.export.quantized import SCHEME, calibrate_quantized, check_bits_fit, quantize_static
from effnn.io import (
    atomic_directory,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    refuse_overwrite,
)
from effnn.nas.precision import BitsSpace, StageBits, StagePrecision
from effnn.nas.space import Arch
from effnn.nas.supernet import MBNet, resize_to
from effnn.search.evaluator import Batch, recalibrate_subnet, top1_accuracy
from effnn.search.supernet_checkpoint import SupernetCheckpoint

PROGRAM_FORMATS = ("export", "torchscript", "none")
WEIGHT_FORMATS = ("safetensors", "pt")


class ExportError(EffnnError, RuntimeError):
    """An exported artifact disagrees with the supernet (or cannot be produced)."""


@dataclass
class ExportResult:
    """What was written and how closely each artifact matched (max absolute logit difference)."""

    directory: Path
    arch: Arch
    static: MBNet
    files: dict[str, str]
    max_abs_diff: dict[str, float]
    accuracy: dict[str, float] = field(default_factory=dict)
    #: export.json's ``checks`` (atol, the differences, and for a quantized ONNX model the samples within atol)
    checks: dict[str, Any] = field(default_factory=dict)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def _check(name: str, diff: float, atol: float) -> None:
    if not diff <= atol:  # also catches NaN
        raise ExportError(f"export check failed: {name} differ by max |diff| = {diff:.3g} > atol = {atol:g}; "
                          f"nothing was written")


def _torch_export(static: MBNet, example: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """A ``torch.export`` program with a dynamic batch dimension, serialized, and its output on ``example``."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(static, (example,), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    loaded = torch.export.load(io.BytesIO(buf.getvalue()))
    return buf.getvalue(), loaded.module()(example)


def _torchscript(static: MBNet, example: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(static, example)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        reloaded = torch.jit.load(io.BytesIO(buf.getvalue()))
    return buf.getvalue(), reloaded(example)


def _onnx(static: MBNet, example: torch.Tensor, opset: int) -> tuple[bytes, torch.Tensor]:
    """ONNX bytes (TorchScript-based exporter, dynamic batch), checked by the onnx checker, run by onnxruntime."""
    import onnx
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(static, (example,), buf, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)
    data = buf.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as err:  # onnx raises ValidationError and friends
        raise ExportError(f"the ONNX model failed the onnx checker: {str(err).splitlines()[0]}") from err
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": example.detach().cpu().numpy()})
    return data, torch.from_numpy(out)


def _onnx_agreement(out_onnx: torch.Tensor, ours: torch.Tensor, atol: float, diffs: dict[str, float],
                    checks: dict[str, Any]) -> None:
    """A quantized model in onnxruntime vs the static model: same top-1 on every sample, or an error.

    onnxruntime sums convolutions in another order than torch; where a value lands within float rounding of
    a quantization level's boundary, it rounds to the neighbouring level, and that one-level step propagates
    to the logits. So a quantized ONNX model cannot match to ``atol`` on every sample: the check is top-1
    agreement, and how many samples also agree to ``atol`` is recorded.
    """
    per_sample = (out_onnx.float() - ours.detach().float().cpu()).abs().flatten(1).amax(1)
    diffs["model.onnx_vs_static"] = float(per_sample.max())
    checks["onnx_samples_within_atol"] = f"{int((per_sample <= atol).sum())}/{per_sample.numel()}"
    same = out_onnx.argmax(1).eq(ours.detach().cpu().argmax(1))
    if not bool(same.all()):
        raise ExportError(f"export check failed: the quantized ONNX model (onnxruntime) and the static model predict "
                          f"different classes on {int((~same).sum())} of {same.numel()} images; nothing was written")


def _program_files(static: MBNet, example: torch.Tensor, ours: torch.Tensor, diffs: dict[str, float],
                   checks: dict[str, Any], atol: float, program: str, onnx: bool, opset: int,
                   quantized: bool) -> dict[str, bytes]:
    """The program (torch.export / TorchScript) and ONNX files, each checked against the static model's
    outputs ``ours`` (differences recorded in ``diffs``; see ``_onnx_agreement`` for quantized ONNX)."""
    files: dict[str, bytes] = {}
    with torch.no_grad():
        if program != "none":
            name, make = ("model.pt2", _torch_export) if program == "export" else ("model.ts", _torchscript)
            files[name], out_program = make(static, example)
            diffs[f"{name}_vs_static"] = _max_diff(out_program, ours)
            _check(f"{name} and the static model", diffs[f"{name}_vs_static"], atol)
        if onnx:
            files["model.onnx"], out_onnx = _onnx(static, example, opset)
            if quantized:
                _onnx_agreement(out_onnx, ours, atol, diffs, checks)
            else:
                diffs["model.onnx_vs_static"] = _max_diff(out_onnx, ours)
                _check("the ONNX model (onnxruntime) and the static model", diffs["model.onnx_vs_static"], atol)
    return files


def _onnx_accuracy(data: bytes, batches: Sequence[Batch], resolution: int) -> float:
    """Top-1 accuracy (percent) of an ONNX model run by onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in batches:
        x = resize_to(x, resolution).detach().cpu().contiguous().numpy()
        (logits,) = session.run(["logits"], {"input": x})
        correct += int((torch.from_numpy(logits).argmax(1) == y.cpu()).sum())
        total += y.numel()
    return 100.0 * correct / max(total, 1)


def _metadata(loaded: SupernetCheckpoint, arch: Arch, written: dict[str, str], checks: dict[str, Any],
              accuracy: dict[str, float], calibration_batches: int,
              quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """``export.json``: what was exported, from where, and how it was checked (and, for a quantized
    export, ``quantization``: the bits, the number scheme and every quantized layer's bits and range)."""
    space = loaded.space
    meta = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "space": space_to_dict(space),
        "arch": arch.to_dict(), "num_classes": loaded.num_classes, "in_chans": loaded.in_chans,
        "input_shape": [None, loaded.in_chans, arch.resolution, arch.resolution],
        "macs": space.macs(arch, loaded.num_classes, loaded.in_chans),
        "params": space.params(arch, loaded.num_classes, loaded.in_chans),
        "files": written, "checks": checks, "accuracy": accuracy,
        "source_checkpoint": str(loaded.path.resolve()), "calibration_batches": calibration_batches,
    }
    if quantization is not None:
        meta["quantization"] = quantization
    return meta


def _placed(batches: Sequence[Batch], device: torch.device, fmt: torch.memory_format) -> list[Batch]:
    return [(x.to(device).to(memory_format=fmt), y.to(device)) for x, y in batches]


def _extract(loaded: SupernetCheckpoint, arch: Arch, calib_batches: Sequence[Batch], bits: StageBits | None,
             precision: StagePrecision | None) -> tuple[MBNet, dict[str, Any] | None]:
    """The recalibrated static subnet, quantized at ``bits`` (with export.json's ``quantization``) if given."""
    supernet = loaded.supernet
    if bits is None:
        if precision is not None:
            precision.set(None)  # a quantized supernet exported at full precision
        recalibrate_subnet(supernet, arch, calib_batches)
        supernet.eval()
        return supernet.extract(arch).eval(), None
    assert precision is not None  # check_bits_fit ran
    calibrate_quantized(precision, arch, bits, calib_batches)
    supernet.eval()
    static = supernet.extract(arch)
    with precision.use(None):
        float_static = supernet.extract(arch)
    try:
        layers = quantize_static(static, float_static, supernet)
    except RuntimeError as err:
        raise ExportError(f"cannot export the quantized subnet: {err}") from err
    return static.eval(), {"bits": bits.to_dict(), "scheme": SCHEME, "layers": layers}


def export_subnet(loaded: SupernetCheckpoint, arch: Arch, calib_batches: Sequence[Batch], out: str | Path, *,
                  verify_batch: torch.Tensor, atol: float = 1e-4, weights_format: str = "safetensors",
                  program: str = "export", onnx: bool = True, opset: int = 17,
                  eval_splits: dict[str, Sequence[Batch]] | None = None, overwrite: bool = False,
                  bits: StageBits | None = None, precision: StagePrecision | None = None,
                  bits_space: BitsSpace | None = None, channels_last: bool = False) -> ExportResult:
    """Recalibrate, extract, verify and write the subnet ``arch`` of ``loaded`` to ``out``.

    ``verify_batch`` holds real images (any resolution; resized to the arch's). ``eval_splits`` maps a
    split name (``val``, ``test``) to batches on which the accuracy of the exported model and of the
    supernet at ``arch`` are reported side by side. ``overwrite`` allows replacing an existing ``out``.
    ``bits`` (with ``precision``, the supernet's ``StagePrecision``, and optionally ``bits_space``, the
    choices it was trained for) exports the subnet quantized at those per-stage bit-widths, calibrated as the
    search evaluates it (``effnn.export.quantized``). ``channels_last`` calibrates and evaluates in NHWC, as
    the search does with ``search.channels_last``: convolutions sum in another order per memory format, and a
    quantized model's rounding follows, so the format must be the search's for the same accuracy.
    """
    if weights_format not in WEIGHT_FORMATS:
        raise ConfigError(f"weights_format={weights_format!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    if program not in PROGRAM_FORMATS:
        raise ConfigError(f"program={program!r}; choose one of {', '.join(PROGRAM_FORMATS)}")
    supernet, space = loaded.supernet, loaded.space
    try:
        space.validate(arch)
    except ValueError as err:
        raise ConfigError(f"the arch is not in the checkpoint's search space: {err}") from err
    if bits is not None:
        check_bits_fit(bits, precision, bits_space, str(loaded.path))
    out = Path(out)
    refuse_overwrite(out, "an export", overwrite)  # before the expensive part
    device = supernet.conv_stem.weight.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    supernet.to(memory_format=fmt)

    static, quantization = _extract(loaded, arch, _placed(calib_batches, device, fmt), bits, precision)
    static.to(memory_format=fmt)
    example = resize_to(verify_batch.to(device), arch.resolution).to(memory_format=fmt)
    with torch.no_grad():
        reference = supernet(example)
        ours = static(example)
    diffs = {"static_vs_supernet": _max_diff(ours, reference)}
    checks: dict[str, Any] = {"atol": atol, "max_abs_diff": diffs}
    _check("the static model and the supernet at this arch", diffs["static_vs_supernet"], atol)

    accuracy: dict[str, float] = {}
    for split, batches in (eval_splits or {}).items():  # in the search's memory format, on its device
        placed = _placed(batches, device, fmt)
        accuracy[f"{split}_acc_exported"] = top1_accuracy(static, placed, arch.resolution)
        with supernet.set_arch(arch):
            accuracy[f"{split}_acc_supernet"] = top1_accuracy(supernet, placed, arch.resolution)

    static_cpu = static.to("cpu", memory_format=torch.contiguous_format)  # programs and files: plain NCHW
    example_cpu = example.cpu().contiguous()
    with torch.no_grad():
        ours_cpu = static_cpu(example_cpu)
    files = _program_files(static_cpu, example_cpu, ours_cpu, diffs, checks, atol, program, onnx, opset,
                           quantization is not None)
    if quantization is not None and "model.onnx" in files:
        for split, batches in (eval_splits or {}).items():
            accuracy[f"{split}_acc_onnx"] = _onnx_accuracy(files["model.onnx"], batches, arch.resolution)

    state = {k: v.detach().cpu().contiguous() for k, v in static_cpu.state_dict().items()}
    weights_name = f"model.{weights_format}"
    written = {"arch": ARCH_FILE, "weights": weights_name}
    written.update({"program" if n != "model.onnx" else "onnx": n for n in files})
    meta = _metadata(loaded, arch, written, checks, accuracy, len(calib_batches), quantization)
    with atomic_directory(out, "an export", overwrite=overwrite) as tmp:
        write_export_files(tmp, state, weights_name, files, arch, meta)
    return ExportResult(out, arch, static_cpu, written, diffs, accuracy, checks)


def write_export_files(directory: Path, state: dict[str, torch.Tensor], weights_name: str, files: dict[str, bytes],
                       arch: Arch, meta: dict[str, Any]) -> None:
    """Every file of an export into ``directory`` (a fresh temporary one; see ``atomic_directory``)."""
    if weights_name.endswith(".safetensors"):
        from safetensors.torch import save

        atomic_write(directory / weights_name, lambda f: f.write(save(state, metadata={"format": EXPORT_FORMAT})))
    else:
        atomic_torch_save(state, directory / weights_name)
    for name, data in files.items():
        atomic_write(directory / name, lambda f, data=data: f.write(data))
    atomic_write_text(directory / ARCH_FILE, yaml.safe_dump(arch.to_dict(), sort_keys=False))
    atomic_write_json(directory / META_FILE, meta)
