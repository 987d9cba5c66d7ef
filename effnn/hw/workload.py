"""Workload extraction: run a module once and list every conv/linear/matmul it executes as a layer shape.

Interception happens at the ATen level (a ``TorchDispatchMode``, like ``torch.utils.flop_counter``), not
by module type, so anything that ends in ``aten.convolution``/``mm``/``addmm``/``bmm``/``baddbmm`` or a
fused attention kernel is seen with its real shapes: static models, elastic supernet ops that call
``F.conv2d`` on sliced weights, quantized and decomposed layers. Forward hooks only name the layers and
read the bit-widths a module declares.

Bit-widths: a module may declare the operand widths the hardware should assume, either as a
``hw_bits`` attribute (a mapping with any of ``weight``/``act``/``out``/``storage``, or a
``(weight, act)`` / ``(weight, act, out)`` tuple, or a zero-argument callable returning one, for
precisions that change during training), or as numeric ``weight_bits``/``act_bits``/``out_bits``
attributes; the caller can also pass ``module_bits={name: bits}``. The innermost module running the op
that declares a width wins; otherwise ``default_bits`` applies.

``storage`` is the average bits a weight occupies in memory when that differs from the width the array
computes with: a compressed weight (SmartDeal's ``storage_bits_per_weight``, read automatically) costs
its storage bits in DRAM traffic and filter-SRAM space, but its MACs run at ``weight`` bits. It becomes
``ConvLayer.weight_storage_bits``; unset, storage follows ``weight``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from effnn.hw.layers import ConvLayer, GemmLayer, Layer

aten = torch.ops.aten

_BIT_KEYS = ("weight", "act", "out", "storage")


def _parse_bits(spec: Any, where: str) -> dict[str, float]:
    """Operand widths from a mapping, a ``(weight, act[, out[, storage]])`` tuple, a number (weight bits) or a callable
    returning one of those."""
    if callable(spec):
        spec = spec()
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        unknown = set(spec) - set(_BIT_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown bit-width keys {sorted(unknown)}; use {list(_BIT_KEYS)}")
        found = {k: float(v) for k, v in spec.items() if v is not None}
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        found = {k: float(v) for k, v in zip(_BIT_KEYS, spec) if v is not None}
    elif isinstance(spec, int | float) and not isinstance(spec, bool):
        found = {"weight": float(spec)}
    else:
        raise ValueError(f"{where}: bit-widths must be a mapping, a (weight, act[, out[, storage]]) tuple or a number, "
                         f"got {spec!r}")
    for key, value in found.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{where} declares {key} bits = {value}; bit-widths must be positive")
    return found


def _declared_bits(module: nn.Module) -> dict[str, float]:
    """The operand widths a module declares (possibly none), see the module docstring."""
    where = type(module).__name__
    found = _parse_bits(getattr(module, "hw_bits", None), where)
    for key, attr in (("weight", "weight_bits"), ("act", "act_bits"), ("out", "out_bits"),
                      ("storage", "storage_bits_per_weight")):
        if key in found:
            continue
        value = getattr(module, attr, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.update(_parse_bits({key: value}, where))
    return found


class _Recorder(TorchDispatchMode):
    """Records a layer for every GEMM-like ATen op; ``context`` says which module is running."""

    def __init__(self, context: Callable[[], tuple[str, dict[str, float]]]) -> None:
        super().__init__()
        self.context = context
        self.layers: list[Layer] = []
        self._counts: dict[str, int] = {}
        self._handlers = {
            aten.convolution: self._conv, aten._convolution: self._conv,
            aten.mm: self._mm, aten.addmm: self._addmm, aten.bmm: self._bmm, aten.baddbmm: self._baddbmm,
        }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        handler = self._handlers.get(packet)
        if handler is None and packet.__name__.startswith("_scaled_dot_product_") \
                and "backward" not in packet.__name__:
            handler = self._attention
        if handler is not None:
            handler(args, kwargs)
        return out

    # -- naming and bits ------------------------------------------------------------------------------
    def _emit(self, kind: str, make: Callable[[str, dict[str, float]], Layer]) -> None:
        module_name, bits = self.context()
        index = self._counts.get(module_name, 0)
        self._counts[module_name] = index + 1
        # a module's first op carries its name (``layer1.0.conv1``); further ops get ``name:kind<i>``
        self.layers.append(make(module_name if index == 0 else f"{module_name}:{kind}{index}", bits))

    @staticmethod
    def _bits(bits: dict[str, float]) -> dict[str, float | None]:
        return {"weight_bits": bits["weight"], "act_bits": bits["act"], "out_bits": bits["out"],
                "weight_storage_bits": bits.get("storage")}

    # -- op handlers ----------------------------------------------------------------------------------
    def _conv(self, args: tuple, kwargs: dict) -> None:
        x, w = args[0], args[1]
        stride, padding, dilation, transposed, _, groups = args[3:9]
        spatial = w.dim() - 2
        batch = x.shape[0]
        in_ch = x.shape[1]
        kernel = tuple(w.shape[2:])
        in_size = tuple(x.shape[2:])
        stride, padding, dilation = (tuple(v) * (spatial if len(v) == 1 else 1)
                                     for v in (stride, padding, dilation))
        if transposed:
            # a transposed conv is a GEMM per input pixel followed by a scatter (col2im): per group
            # (N*input pixels) x (Cin/g) @ (Cin/g) x (Cout/g * kernel volume)
            out_per_group = w.shape[1]
            kvol = math.prod(kernel)
            h, wd = (math.prod(in_size[:-1]), in_size[-1]) if spatial > 1 else (1, in_size[0])
            self._emit("conv_transpose", lambda name, bits: ConvLayer(
                name, in_ch=in_ch, out_ch=out_per_group * groups * kvol, in_h=h, in_w=wd, groups=groups,
                batch=batch, **self._bits(bits)))
            return
        if spatial == 1:
            in_size, kernel = (1, in_size[0]), (1, kernel[0])
            stride, padding, dilation = (1, stride[0]), (0, padding[0]), (1, dilation[0])
        if spatial <= 2 and all(d == 1 for d in dilation):
            self._emit("conv", lambda name, bits: ConvLayer(
                name, in_ch=in_ch, out_ch=w.shape[0], in_h=in_size[0], in_w=in_size[1], kernel_h=kernel[0],
                kernel_w=kernel[1], stride_h=stride[0], stride_w=stride[1], pad_h=padding[0],
                pad_w=padding[1], groups=groups, batch=batch, **self._bits(bits)))
            return
        # dilated or 3-D: keep the exact GEMM (output pixels x filters x window) as a 1x1 conv over the
        # im2col'd input; only the ifmap footprint (DRAM reuse) is approximate.
        out_size = [(i + 2 * p - d * (k - 1) - 1) // s + 1
                    for i, k, s, p, d in zip(in_size, kernel, stride, padding, dilation)]
        kvol = math.prod(kernel)
        h, wd = math.prod(out_size[:-1]), out_size[-1]
        self._emit("conv", lambda name, bits: ConvLayer(
            name, in_ch=in_ch * kvol, out_ch=w.shape[0], in_h=h, in_w=wd, groups=groups, batch=batch,
            **self._bits(bits)))

    def _gemm(self, kind: str, a: torch.Tensor, b: torch.Tensor) -> None:
        m, k = a.shape
        n = b.shape[1]
        self._emit(kind, lambda name, bits: GemmLayer(name, m=m, n=n, k=k, **self._bits(bits)))

    def _mm(self, args: tuple, kwargs: dict) -> None:
        self._gemm("mm", args[0], args[1])

    def _addmm(self, args: tuple, kwargs: dict) -> None:
        self._gemm("mm", args[1], args[2])

    def _batched(self, kind: str, a: torch.Tensor, b: torch.Tensor) -> None:
        # B independent GEMMs (M x K) @ (K x N): a grouped 1x1 conv with B groups is exactly that
        batch, m, k = a.shape
        n = b.shape[-1]
        self._emit(kind, lambda name, bits: ConvLayer(
            name, in_ch=batch * k, out_ch=batch * n, in_h=m, in_w=1, groups=batch, **self._bits(bits)))

    def _bmm(self, args: tuple, kwargs: dict) -> None:
        self._batched("bmm", args[0], args[1])

    def _baddbmm(self, args: tuple, kwargs: dict) -> None:
        self._batched("bmm", args[1], args[2])

    def _attention(self, args: tuple, kwargs: dict) -> None:
        q, k, v = args[:3]
        heads = math.prod(q.shape[:-2])
        length, dim = q.shape[-2], q.shape[-1]
        src, vdim = k.shape[-2], v.shape[-1]
        self._emit("attn_qk", lambda name, bits: ConvLayer(
            name, in_ch=heads * dim, out_ch=heads * src, in_h=length, in_w=1, groups=heads,
            **self._bits(bits)))
        self._emit("attn_pv", lambda name, bits: ConvLayer(
            name, in_ch=heads * src, out_ch=heads * vdim, in_h=length, in_w=1, groups=heads,
            **self._bits(bits)))


@contextmanager
def _module_context(model: nn.Module, default_bits: Mapping[str, float],
                    module_bits: Mapping[str, Any]) -> Iterator[Callable[[], tuple]]:
    """Track which named module is running (pre/post forward hooks) and the bits in force there."""
    stack: list[tuple[str, dict[str, float]]] = [("model", dict(default_bits))]
    handles = []
    names = {name for name, _ in model.named_modules()}
    unknown = sorted(set(module_bits) - names)
    if unknown:
        raise ValueError(f"module_bits names modules the model does not have: {unknown[:5]}")
    given = {name: _parse_bits(spec, f"module_bits[{name!r}]") for name, spec in module_bits.items()}

    def push(name: str) -> Callable:
        def hook(module: nn.Module, _inputs: Any) -> None:
            bits = dict(stack[-1][1])
            bits.update(_declared_bits(module))
            bits.update(given.get(name, {}))
            stack.append((name or "model", bits))
        return hook

    def pop(_module: nn.Module, _inputs: Any, _output: Any) -> None:
        stack.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(push(name)))
        handles.append(module.register_forward_hook(pop, always_call=True))
    try:
        yield lambda: stack[-1]
    finally:
        for handle in handles:
            handle.remove()


def extract_workload(model: nn.Module, input_shape: Sequence[int] | None = None, *,
                     example_input: Any = None, default_bits: float = 16.0,
                     module_bits: Mapping[str, Any] | None = None) -> list[Layer]:
    """Every GEMM-like op ``model`` runs on one input, in execution order, as layer shapes.

    Give either ``input_shape`` (a zero tensor of that shape is used, on the model's device and dtype) or
    ``example_input`` (a tensor or a tuple of positional inputs). The model runs once in eval mode under
    ``no_grad``; its train/eval flags are restored afterwards and its weights and buffers are untouched.
    ``module_bits`` maps module names to bit-widths (a number is the weight width, a mapping may also set
    ``storage``), overriding what the modules declare. SmartDeal layers declare their storage themselves
    (``storage_bits_per_weight``), so their DRAM weight traffic is the compressed size with no extra
    argument.
    """
    if (input_shape is None) == (example_input is None):
        raise ValueError("extract_workload needs exactly one of input_shape=(N, C, H, W) or example_input")
    param = next(iter(model.parameters()), None)
    if example_input is None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"input_shape must be positive sizes such as (1, 3, 224, 224), "
                             f"got {input_shape}")
        example_input = torch.zeros(shape, device=param.device if param is not None else None,
                                    dtype=param.dtype if param is not None and param.is_floating_point()
                                    else None)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    bits = {key: float(default_bits) for key in ("weight", "act", "out")}  # storage follows weight
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with _module_context(model, bits, module_bits or {}) as context, torch.no_grad():
            recorder = _Recorder(context)
            with recorder:
                model(*inputs)
    finally:
        for module, training in modes.items():
            module.training = training
    return recorder.layers


def workload_macs(layers: Sequence[Layer]) -> int:
    return sum(layer.macs for layer in layers)
