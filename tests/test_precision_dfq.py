"""FracTrain DFQ against an independent statement of the public code's formulas (RICE-EIC/FracTrain,
fractrain_cifar/train_dfq.py and models.py): fixed weight bits, cost, regulariser gradient, gate."""

from __future__ import annotations

import copy
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from effnn.data import DigitsDataModule
from effnn.lit import ClassifierModule
from effnn.models import create_model
from effnn.precision import quantize_model
from effnn.precision.dfq import (
    DFQController,
    DynamicFractionalQuantization,
    GatedBlock,
    RecurrentGate,
    add_precision_gates,
    find_blocks,
    remove_precision_gates,
)

BITS, GRAD_BITS, WEIGHT_BITS = [3, 4, 4, 6, 6], [6, 6, 8, 8, 12], 4  # FracTrain train_dfq.py, README (CIFAR)
# MACs per sample of ResNet-8's three blocks at 16x16 input: 3x3 convs (+ 1x1 shortcut), widths 16/32/64
BLOCK_MACS = [2 * 16 * 16 * 16 * 16 * 9,
              8 * 8 * 32 * 16 * 9 + 8 * 8 * 32 * 32 * 9 + 8 * 8 * 32 * 16,
              4 * 4 * 64 * 32 * 9 + 4 * 4 * 64 * 64 * 9 + 4 * 4 * 64 * 32]


def fractrain_costs(weight_bits: int = WEIGHT_BITS) -> torch.Tensor:
    """train_dfq.py: cost_fw = b/32 * w/32, cost_eb = g/32 * w/32, cost_gc = b g / 32 / 32, summed."""
    return torch.tensor([b / 32 * weight_bits / 32 + g / 32 * weight_bits / 32 + b * g / 32 / 32
                         for b, g in zip(BITS, GRAD_BITS)], dtype=torch.float64)


def fractrain_loss_terms(masks: list[torch.Tensor], conv_info: list[float], target: float, beta: float,
                         relax: float = 0.0) -> tuple[float, torch.Tensor]:
    """cp (fraction) and computation_loss * reg, as train_dfq.py computes them from the gate masks."""
    cost = fractrain_costs()
    batch = masks[0].shape[0]
    computation_cost = sum(m.double().sum(0) @ cost * info for m, info in zip(masks, conv_info))
    cp = float(computation_cost.detach()) / batch / (sum(conv_info) * 3)
    if cp < target - relax:
        reg = -1.0
    elif cp >= target + relax:
        reg = 1.0
    else:
        reg = 0.1 if cp >= target else -0.1
    return cp, computation_cost / (sum(conv_info) / len(conv_info)) * beta * reg


def gated_resnet(gate: str = "rnn", **controller: float) -> tuple[nn.Module, DFQController]:
    torch.manual_seed(0)
    net = create_model("cifar_resnet8", num_classes=10)
    state = quantize_model(net)
    state.set(8, 8)
    ctrl = DFQController(**controller)
    assert add_precision_gates(net, state, ctrl, gate=gate) == ["blocks.0", "blocks.1", "blocks.2"]
    return net, ctrl


def test_candidate_costs_are_fractrains_with_fixed_weight_bits() -> None:
    ctrl = DFQController()
    torch.testing.assert_close(ctrl.relative_costs, fractrain_costs() / 3)
    assert float(ctrl.relative_costs[0]) == pytest.approx(54 / 3072)  # 3/6 at 4-bit weights: 1.758% of fp32
    assert float(ctrl.relative_costs[-1]) == pytest.approx(144 / 3072)  # 6/12: 4.69%
    variant = DFQController(weight_bits=None)  # weights at the forward bits: (a^2 + 2ag)/3
    assert float(variant.relative_costs[0]) == pytest.approx(45 / 3072)  # 1.465%
    assert float(variant.relative_costs[-1]) == pytest.approx(180 / 3072)  # 5.86%


def test_weights_stay_at_weight_bits_whatever_the_candidate() -> None:
    net, _ = gated_resnet()
    block: GatedBlock = net.blocks[1]
    conv = block.block.conv1
    original = conv.parametrizations.weight.original.detach().flatten(1)
    lo, hi = original.min(1, keepdim=True).values, original.max(1, keepdim=True).values
    s = (hi - lo) / (2 ** WEIGHT_BITS - 1)
    reference = (lo + s * torch.round((original - lo) / s)).view_as(conv.weight)
    for fwd in (3, 6, 8):
        with block.state.override(fwd_bits=fwd):
            torch.testing.assert_close(conv.weight, reference)
            assert conv.hw_bits() == {"weight": WEIGHT_BITS, "act": fwd}
    with block.state.override(fwd_bits=None):  # full precision stays full precision
        torch.testing.assert_close(conv.weight, conv.parametrizations.weight.original)
    remove_precision_gates(net)
    with net.blocks[1].conv1.quantizer.state.override(fwd_bits=6):
        assert net.blocks[1].conv1.hw_bits() == {"weight": 6, "act": 6}


def capture_gate_logits(net: nn.Module) -> tuple[list[torch.Tensor], list]:
    logits: list[torch.Tensor] = []
    recurrent = next(m for m in net.modules() if isinstance(m, RecurrentGate))
    handle = recurrent.register_forward_hook(lambda mod, args, out: logits.append(out))
    return logits, [handle]


def test_realised_cost_and_regulariser_gradient_equal_fractrains_formulas() -> None:
    for target in (0.01, 0.05):  # below the realised cost (reg = +1) and above it (reg = -1)
        net, ctrl = gated_resnet(beta=0.5, target=target)
        net.train()
        x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
        gate_params = [p for n, p in net.named_parameters() if ".embed." in n or ".recurrent." in n]

        # effnn: the task loss only; the regulariser enters through the mask hooks
        torch.manual_seed(5)
        logits, handles = capture_gate_logits(net)
        F.cross_entropy(net(x), y).backward()
        ours = [p.grad.clone() for p in gate_params]
        cp_ours = float(ctrl.realised_cost())
        assert ctrl.block_macs == dict(enumerate(BLOCK_MACS))

        # reference: same forward without the hook, FracTrain's loss = CE + computation_loss * reg, where the
        # masks are FracTrain's RNNGate output (hard argmax - p.detach() + p) rebuilt from the gate logits
        net.zero_grad()
        ctrl.beta = 0.0
        logits.clear()
        torch.manual_seed(5)
        task = F.cross_entropy(net(x), y)
        for h in handles:
            h.remove()
        masks = []
        for lg in logits:
            p = F.softmax(lg, dim=1)
            hard = (p == p.max(1, keepdim=True).values).float()
            masks.append(hard.detach() - p.detach() + p)
        cp_ref, reg_loss = fractrain_loss_terms(masks, BLOCK_MACS, target, beta=0.5)
        (task + reg_loss).backward()
        reference = [p.grad.clone() for p in gate_params]

        assert cp_ours == pytest.approx(cp_ref, rel=1e-6)
        ctrl.beta = 0.5
        assert ctrl.regularizer_value() == pytest.approx(float(reg_loss.detach()), rel=1e-6)
        assert any(float(r.abs().max()) > 0 for r in reference)
        for a, b in zip(ours, reference):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_relax_band_gives_fractrains_tenth_strength() -> None:
    net, ctrl = gated_resnet()
    net.eval()
    net(torch.randn(8, 3, 16, 16))
    cp = float(ctrl.realised_cost())
    for target, relax, expected in ((cp - 0.001, 0.01, 0.1), (cp + 0.001, 0.01, -0.1), (cp, 0.0, 1.0),
                                    (cp + 0.001, 0.0, -1.0)):
        ctrl.target, ctrl.relax = target, relax
        assert ctrl.reg_sign() == expected
        masks = [F.one_hot(c, 5) for c in _choices(ctrl)]  # eval masks are exactly one-hot
        cp_ref, reg_loss = fractrain_loss_terms(masks, BLOCK_MACS, target, ctrl.beta, relax)
        assert cp_ref == pytest.approx(cp, rel=1e-9)
        assert ctrl.regularizer_value() == pytest.approx(float(reg_loss), rel=1e-9)


def _choices(ctrl: DFQController) -> list[torch.Tensor]:
    """Per-block candidate index of every sample, recovered from the recorded counts (eval: one-hot)."""
    out = []
    for i in range(3):
        counts = ctrl.block_counts[i]
        out.append(torch.repeat_interleave(torch.arange(5), counts.long()))
    return out


def test_gate_is_deterministic_and_not_collapsed_at_init() -> None:
    net, ctrl = gated_resnet()
    x = torch.randn(16, 3, 16, 16)
    net.eval()
    net(x)
    choices = {i: c.clone() for i, c in ctrl.block_counts.items()}
    net.train()  # training uses the same argmax (no sampling noise)
    torch.manual_seed(1)
    net(x)
    assert all(torch.equal(choices[i], ctrl.block_counts[i]) for i in choices)
    net.eval()
    second = net(x)
    torch.testing.assert_close(net(x), second)
    copy.deepcopy(net)  # no LSTM state (and so no autograd graph) outlives a forward
    # FracTrain's random gate init (N(0, sqrt(2/n)) projection): which candidate an untrained gate prefers
    # depends on the init, it is not the cheapest one by construction (a zero-initialised gate's argmax is)
    preferred = set()
    for seed in range(6):
        torch.manual_seed(seed)
        net = create_model("cifar_resnet8", num_classes=10)
        state = quantize_model(net)
        state.set(8, 8)
        ctrl = DFQController()
        add_precision_gates(net, state, ctrl)
        net.eval()(x)
        preferred |= {int(c.argmax()) for c in ctrl.block_counts.values()}
    assert len(preferred) >= 3


def test_eval_output_is_each_samples_chosen_candidate_exactly() -> None:
    net, ctrl = gated_resnet(gate="linear")
    for block in net.blocks:
        nn.init.normal_(block.gate.fc.weight, std=2.0)  # distinct per-sample choices
    block: GatedBlock = net.blocks[1]
    x = torch.randn(6, 16, 16, 16)
    block.train()(x)  # one training batch sets the activation ranges evaluation uses
    block.eval()
    choice = block.scores(x).argmax(-1)
    assert len(set(choice.tolist())) > 1
    out = block(x)
    for i, k in enumerate(choice.tolist()):
        fwd, grad = ctrl.candidates[k]
        with block.state.override(fwd_bits=fwd, grad_bits=grad):
            reference = block.block(x[i:i + 1])
        torch.testing.assert_close(out[i:i + 1], reference, rtol=1e-5, atol=1e-5)


def test_gates_and_revert_keep_the_original_blocks() -> None:
    torch.manual_seed(0)
    net = create_model("cifar_resnet8", num_classes=10)
    originals = list(net.blocks)
    state = quantize_model(net)
    add_precision_gates(net, state, DFQController())
    assert all(isinstance(b, GatedBlock) for b in net.blocks)
    assert all(not hasattr(b.embed.conv1, "quantizer") for b in net.blocks)  # gates stay full precision
    assert net.blocks[0].recurrent is net.blocks[2].recurrent  # one LSTM shared by all blocks
    lstm_params = {id(p) for p in net.blocks[0].recurrent.parameters()}
    assert sum(id(p) in lstm_params for p in net.parameters()) == len(lstm_params)  # counted once
    remove_precision_gates(net)
    assert list(net.blocks) == originals
    assert find_blocks(net, ["blocks.1"]) == ["blocks.1"]
    with pytest.raises(ValueError, match="no block to gate"):
        add_precision_gates(net, state, DFQController(), blocks=["nothing.*"])
    with pytest.raises(ValueError, match="equally long"):
        DFQController(fwd_bits=[3, 4], grad_bits=[8])
    with pytest.raises(ValueError, match="gate must be one of"):
        DynamicFractionalQuantization(gate="lstm2")


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
    costs = DFQController().relative_costs
    cheap, _ = dfq_run([float(costs.min())], beta=0.5, steps=30)
    costly, _ = dfq_run([float(costs.max())], beta=0.5, steps=30)
    assert float(cheap.controller.realised_cost()) < float(costly.controller.realised_cost())
    assert cheap.meter.relative < costly.meter.relative


def test_fractrain_mode_raises_the_target_at_each_turning_point() -> None:
    cb, trainer = dfq_run([0.015, 0.02, 0.025], beta=1e-3, steps=14, lr=0.0, eps=0.5, eps_decay=1.0, window=2,
                          window_unit="steps", history=3)
    assert cb.schedule.switch_steps == [6, 12]
    assert cb.controller.target == 0.025
    assert trainer.callback_metrics["dfq/target"] == pytest.approx(0.025)
    costs = DFQController().relative_costs
    assert float(costs.min()) <= trainer.callback_metrics["dfq/rel_cost"] <= float(costs.max())
