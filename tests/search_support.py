"""Shared by the search/export tests: a small search space and a supernet trained on digits for seconds.

The micro space (512 subnets, 12-16 px inputs) keeps every evaluation in the tens of milliseconds, so the
tests can run real searches; its supernet is trained once per test session with the sandwich rule
(largest, one random and the smallest subnet per step) and written as a Lightning-style checkpoint whose
hyper-parameters carry the space, as a supernet module's would.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from effnn.data import DigitsDataModule
from effnn.nas import SearchSpace, StageSpec, Supernet, build_supernet, resize_to

RESOLUTION = 16


def micro_space() -> SearchSpace:
    return SearchSpace("micro", resolutions=(12, 16), stem_widths=(8,), stages=(
        StageSpec((8,), (1,), (3,), (1,), 1),
        StageSpec((8, 16), (1, 2), (3, 5), (2, 3), 2, se=True),
        StageSpec((16, 24), (1, 2), (3,), (2, 3), 2)), head_widths=(32, 48), stem_stride=1)


def digits(batch_size: int = 64) -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=batch_size, resolution=RESOLUTION)
    dm.setup("fit")
    return dm


@functools.cache
def _trained_state(epochs: int = 1) -> tuple[dict[str, torch.Tensor], SearchSpace]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # layers this small gain nothing from threads, and lose a lot on a busy machine
    try:
        return _train(epochs)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int) -> tuple[dict[str, torch.Tensor], SearchSpace]:
    torch.manual_seed(0)
    space = micro_space()
    net = build_supernet(space, 10, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    rng = random.Random(0)
    for _ in range(epochs):
        for x, y in digits().train_dataloader():
            opt.zero_grad()
            for arch in (space.max_arch(), space.sample(rng), space.min_arch()):
                net.set_arch(arch)
                F.cross_entropy(net(resize_to(x, arch.resolution)), y).backward()
            opt.step()
    return {k: v.clone() for k, v in net.state_dict().items()}, space


def trained_supernet() -> Supernet:
    """A fresh copy of the session's trained micro supernet (callers may change its BN statistics)."""
    state, space = _trained_state()
    net = build_supernet(space, 10, 3)
    net.load_state_dict(state)
    return net.eval()


def write_checkpoint(path: Path, prefix: str = "net.", hyper_parameters: dict | None = None) -> Path:
    """The trained supernet as a Lightning-style checkpoint (``state_dict`` + ``hyper_parameters``)."""
    state, space = _trained_state()
    hparams = {"space": space, "num_classes": 10} if hyper_parameters is None else hyper_parameters
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}, "hyper_parameters": hparams,
                "epoch": 1, "global_step": 40}, path)
    return path


#: the bit-width choices of the quantized test checkpoint (``model.precision`` of a switchable-precision run)
PRECISION = {"weight_choices": [4, 8], "act_choices": [4, 8]}


def quantized_supernet():
    """The session's trained micro supernet quantized per stage as ``train.py +recipe=alphanet_quant`` does
    (``effnn.nas.switchable.attach_precision``); returns (supernet, StagePrecision)."""
    from effnn.nas.switchable import SwitchableSettings, attach_precision

    net = trained_supernet()
    return net, attach_precision(net, SwitchableSettings.parse(PRECISION, net.space.num_stages))


def write_quantized_checkpoint(path: Path, prefix: str = "net.") -> Path:
    """A switchable-precision checkpoint: the quantized supernet's state (quantizer buffers included) and the
    ``precision`` hyper-parameters the loader rebuilds its ``StagePrecision`` from."""
    net, _ = quantized_supernet()
    hparams = {"space": net.space, "num_classes": 10, "precision": dict(PRECISION)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {prefix + k: v for k, v in net.state_dict().items()}, "hyper_parameters": hparams,
                "epoch": 1, "global_step": 40}, path)
    return path
