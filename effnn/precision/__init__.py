"""Low-precision training hooks: fake quantizers, model instrumentation, CPT and FracTrain callbacks.

Typical use is a callback in the Trainer (``CyclicPrecision(3, 8)``): it quantizes the model's conv/linear
layers in ``setup`` and drives their shared ``PrecisionState`` per step. ``quantize_model`` /
``dequantize_model`` do the instrumentation by hand.
"""

from effnn.precision.callbacks import (
    CyclicPrecision,
    PrecisionCallback,
    ProgressiveFractionalQuantization,
    StaticPrecision,
    precision_root,
)
from effnn.precision.dfq import (
    DFQController,
    DynamicFractionalQuantization,
    GatedBlock,
    add_precision_gates,
    remove_precision_gates,
)
from effnn.precision.guard import NonFiniteGuard
from effnn.precision.quantizers import fake_quantize, quantize_activation, quantize_gradient, quantize_weight
from effnn.precision.range_test import PrecisionRangeTest, find_q_min
from effnn.precision.schedules import (
    BitOpsMeter,
    LossPlateau,
    bitops_per_mac,
    cyclic_bits,
    cyclic_period,
    schedule_saving,
)
from effnn.precision.state import PrecisionState
from effnn.precision.swap import (
    QuantizationConfig,
    dequantize_model,
    find_precision_state,
    layer_bitwidths,
    quantize_model,
    quantized_layers,
)

__all__ = [
    "BitOpsMeter",
    "CyclicPrecision",
    "DFQController",
    "DynamicFractionalQuantization",
    "GatedBlock",
    "LossPlateau",
    "NonFiniteGuard",
    "PrecisionCallback",
    "PrecisionRangeTest",
    "PrecisionState",
    "ProgressiveFractionalQuantization",
    "QuantizationConfig",
    "StaticPrecision",
    "add_precision_gates",
    "bitops_per_mac",
    "cyclic_bits",
    "cyclic_period",
    "dequantize_model",
    "fake_quantize",
    "find_precision_state",
    "find_q_min",
    "layer_bitwidths",
    "precision_root",
    "quantize_activation",
    "quantize_gradient",
    "quantize_model",
    "quantize_weight",
    "quantized_layers",
    "remove_precision_gates",
    "schedule_saving",
]
