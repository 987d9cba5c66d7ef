"""CPT on ImageNet-style models keeps the first (7x7) conv at full precision, as the public CPT code does."""

from __future__ import annotations

import hydra
import torch

from effnn.precision import CyclicPrecision, quantize_model, quantized_layers
from effnn.precision.swap import QuantizationConfig


def test_recipe_keeps_the_stem_conv_and_the_classifier_full_precision(make_cfg) -> None:
    cfg = make_cfg("+recipe=cpt_imagenet", "data.root=/nonexistent")
    assert cfg.data._target_.endswith("ImageNetDataModule") and cfg.model.net.name == "resnet34"
    callback = hydra.utils.instantiate(cfg.callbacks.cyclic_precision)
    assert isinstance(callback, CyclicPrecision)
    config = QuantizationConfig.coerce(cfg.callbacks.cyclic_precision.quantization)
    assert config.keep_first and config.keep_classifier
    net = hydra.utils.instantiate(cfg.model.net)
    assert net.conv1.kernel_size == (7, 7)
    quantize_model(net, config).set(3, 8)
    names = {name for name, _ in quantized_layers(net)}
    assert "conv1" not in names and "fc" not in names
    assert "layer1.0.conv1" in names and "layer4.2.conv2" in names
    # the stem really runs in fp32: its output equals a plain conv with the stored weight
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(net.conv1(x), torch.nn.functional.conv2d(x, net.conv1.weight, None, 2, 3))
