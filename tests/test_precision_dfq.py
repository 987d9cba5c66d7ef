"""FracTrain DFQ: gated blocks compute the chosen candidate exactly, cost accounting, regularizer, targets."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn as nn

from effnn.data import DigitsDataModule
from effnn.lit import ClassifierModule
from effnn.models import create_model
from effnn.precision import (
    DFQController,
    DynamicFractionalQuantization,
    GatedBlock,
    add_precision_gates,
    bitops_per_mac,
    quantize_model,
    remove_precision_gates,
)
from effnn.precision.dfq import find_blocks


def gated_resnet() -> tuple[nn.Module, DFQController]:
    torch.manual_seed(0)
    net = create_model("cifar_resnet8", num_classes=10)
    state = quantize_model(net)
    controller = DFQController()
    assert add_precision_gates(net, state, controller) == ["blocks.0", "blocks.1", "blocks.2"]
    for block in net.blocks:
        nn.init.normal_(block.gate.fc.weight, std=2.0)  # distinct per-sample choices
    return net, controller


def test_eval_output_is_each_samples_chosen_candidate_exactly() -> None:
    net, controller = gated_resnet()
    block: GatedBlock = net.blocks[1]
    x = torch.randn(6, 16, 16, 16)
    block.train()(x)  # one training batch sets the activation ranges evaluation uses
    block.eval()
    choice = block.gate(x).argmax(-1)
    assert len(set(choice.tolist())) > 1
    out = block(x)
    for i, k in enumerate(choice.tolist()):
        fwd, grad = controller.candidates[k]
        with block.state.override(fwd_bits=fwd, grad_bits=grad):
            reference = block.block(x[i:i + 1])
        torch.testing.assert_close(out[i:i + 1], reference, rtol=1e-5, atol=1e-5)


def test_realised_cost_is_the_mac_weighted_choice_cost() -> None:
    net, controller = gated_resnet()
    net.eval()
    net(torch.randn(8, 3, 16, 16))
    per_mac = [bitops_per_mac(a, g) / bitops_per_mac(32, 32) for a, g in controller.candidates]
    # MACs per sample of each block at 16x16: convs 3x3 (+ 1x1 shortcut) with widths 16/32/64
    expected_macs = [2 * 16 * 16 * 16 * 16 * 9,
                     8 * 8 * 32 * 16 * 9 + 8 * 8 * 32 * 32 * 9 + 8 * 8 * 32 * 16,
                     4 * 4 * 64 * 32 * 9 + 4 * 4 * 64 * 64 * 9 + 4 * 4 * 64 * 32]
    assert [controller.block_macs[i] for i in range(3)] == expected_macs
    total = 0.0
    for i in range(3):
        freq = controller.block_choices[i]
        total += expected_macs[i] / sum(expected_macs) * float((freq * torch.tensor(per_mac)).sum())
    assert float(controller.realised_cost()) == pytest.approx(total)
    assert min(per_mac) <= total <= max(per_mac)


def test_cost_regularizer_gradient_closed_form_and_direction() -> None:
    net, controller = gated_resnet()
    net.train()
    x = torch.randn(4, 3, 16, 16)
    net(x)
    per_mac = torch.tensor([bitops_per_mac(a, g) / bitops_per_mac(32, 32) for a, g in controller.candidates])
    controller.beta, controller.target = 2.0, 0.0  # realised cost above target: sign +1
    grad = controller.cost_gradient(0, 4, torch.device("cpu"))
    torch.testing.assert_close(grad, (2.0 * controller.share(0) * per_mac / 4).expand(4, -1))
    controller.target = 1.0  # below target: the regularizer pushes the cost up
    assert (controller.cost_gradient(0, 4, torch.device("cpu")) < 0).all()
    controller.tolerance = 2.0  # within tolerance: no push
    assert (controller.cost_gradient(0, 4, torch.device("cpu")) == 0).all()

    # in backward the hook adds it to the task gradient: with identical noise, the gate of block 0 gets
    # p_j (c_j - E_p[c]) more per sample: up for the costliest candidate (descent lowers its logit), down for
    # the cheapest
    controller.tolerance, controller.target = 0.0, 0.0
    bias_grads = {}
    for beta in (0.0, 2.0):
        controller.beta = beta
        net.zero_grad()
        torch.manual_seed(5)
        net(x).sum().backward()
        bias_grads[beta] = net.blocks[0].gate.fc.bias.grad.clone()
    diff = bias_grads[2.0] - bias_grads[0.0]
    assert diff[int(per_mac.argmax())] > 0 > diff[int(per_mac.argmin())]


def test_gates_and_revert_keep_the_original_blocks() -> None:
    torch.manual_seed(0)
    net = create_model("cifar_resnet8", num_classes=10)
    originals = list(net.blocks)
    state = quantize_model(net)
    add_precision_gates(net, state, DFQController())
    assert all(isinstance(b, GatedBlock) for b in net.blocks)
    assert all(not hasattr(b.gate.fc, "quantizer") for b in net.blocks)  # gates stay full precision
    remove_precision_gates(net)
    assert list(net.blocks) == originals
    assert find_blocks(net, ["blocks.1"]) == ["blocks.1"]
    with pytest.raises(ValueError, match="no block to gate"):
        add_precision_gates(net, state, DFQController(), blocks=["nothing.*"])
    with pytest.raises(ValueError, match="equally long"):
        DFQController(fwd_bits=[3, 4], grad_bits=[8])


def dfq_run(targets: list[float], beta: float, steps: int, lr: float = 0.05, **kwargs) -> tuple:
    torch.manual_seed(0)
    net = create_model("cifar_resnet8", num_classes=10, width=4)
    module = ClassifierModule(net, partial(torch.optim.SGD, lr=lr, momentum=0.9), num_classes=10)
    cb = DynamicFractionalQuantization(targets=targets, beta=beta, **kwargs)
    trainer = L.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, DigitsDataModule(batch_size=32, resolution=16))
    return cb, trainer


def test_regularizer_moves_the_realised_cost_toward_the_target() -> None:
    per_mac = [bitops_per_mac(a, g) / 1024 for a, g in DFQController().candidates]
    # 30 steps: at 15 the costly run's last-batch cost sat within batch noise of uniform (it flipped when the
    # data order changed, 0.0322 vs 0.0326); at 30 the separation is clear (0.0287 < 0.0326 < 0.0348)
    cheap, _ = dfq_run([min(per_mac)], beta=20.0, steps=30)
    costly, _ = dfq_run([max(per_mac)], beta=20.0, steps=30)
    uniform = sum(per_mac) / len(per_mac)  # the gates start uniform
    assert float(cheap.controller.realised_cost()) < uniform < float(costly.controller.realised_cost())
    assert cheap.meter.relative < costly.meter.relative


def test_fractrain_mode_raises_the_target_at_each_turning_point() -> None:
    cb, trainer = dfq_run([0.02, 0.03, 0.04], beta=1.0, steps=14, lr=0.0, eps=0.5, eps_decay=1.0, window=2,
                          window_unit="steps", history=3)
    assert cb.schedule.switch_steps == [6, 12]
    assert cb.controller.target == 0.04
    assert trainer.callback_metrics["dfq/target"] == pytest.approx(0.04)
    assert 0 < trainer.callback_metrics["dfq/rel_cost"] < 1
