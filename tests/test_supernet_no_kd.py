"""The supernet's no-KD arm (``kd_loss: {name: none}``): every subnet of the sandwich trains on the labels."""

from __future__ import annotations

import random
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from effnn.errors import ConfigError
from effnn.lit.supernet import SupernetModule
from effnn.nas import resize_to


def module(**kd: object) -> SupernetModule:
    torch.manual_seed(0)
    return SupernetModule(partial(torch.optim.SGD, lr=0.05), num_classes=10, kd_loss=kd,
                          bn_calibration_batches=2, hardware=None)


def test_no_kd_step_gradient_is_the_sum_of_label_smoothed_ce_over_the_sandwich() -> None:
    from effnn.lit.supernet import LabelTargets
    from effnn.nas.sandwich import sandwich_backward

    mod = module(name="none")
    space = mod.space
    archs = [space.max_arch(), space.sample(random.Random(1)), space.min_arch()]
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    mod.net.train()
    sandwich_backward(mod.net, archs, x, y, mod.ce, LabelTargets(mod.ce, y))
    ours = {n: p.grad.clone() for n, p in mod.net.named_parameters() if p.grad is not None}
    mod.net.zero_grad()
    for arch in archs:  # reference: label-smoothed CE (0.1) for every arch, written out
        mod.net.set_arch(arch)
        logits = mod.net(resize_to(x, arch.resolution))
        logp = F.log_softmax(logits, dim=1)
        loss = (0.9 * -logp.gather(1, y[:, None]).squeeze(1) - 0.1 * logp.mean(1)).mean()
        loss.backward()
    for name, p in mod.net.named_parameters():
        if name in ours:
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-5)


def test_no_kd_is_selected_by_name_and_takes_no_options() -> None:
    assert module(name="none").kd is None
    assert module(name="kl").kd is not None
    with pytest.raises(ConfigError, match="name=none takes no options"):
        module(name="none", temperature=2.0)
