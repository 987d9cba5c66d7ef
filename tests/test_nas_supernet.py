"""Supernet: arch switching, static extraction with equal outputs, weight sharing."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from effnn.nas import Arch, MBNet, build_supernet, get_space, resize_to
from effnn.nas.ops import DYNAMIC_OPS

PLAIN = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


@pytest.fixture(scope="module")
def trained_like_supernet():
    """A tiny32 supernet whose BN statistics and affine params are random, as after training."""
    torch.manual_seed(0)
    net = build_supernet(get_space("tiny32"), num_classes=10)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0, 0.3)
    return net


def test_extracted_subnets_compute_what_the_supernet_computes(trained_like_supernet) -> None:
    net, space = trained_like_supernet, trained_like_supernet.space
    rng = random.Random(1)
    for arch in [space.min_arch(), space.max_arch(), *(space.sample(rng) for _ in range(3))]:
        net.set_arch(arch)
        static = net.extract()
        assert static.arch == arch
        assert not any(isinstance(m, DYNAMIC_OPS) for m in static.modules())
        assert any(isinstance(m, PLAIN) for m in static.modules())
        x = torch.randn(3, 3, arch.resolution, arch.resolution)
        with torch.no_grad():
            torch.testing.assert_close(static.eval()(x), net.eval()(x), atol=1e-5, rtol=1e-5)
            features = static.forward_features(x)
            assert features.shape == (3, space.head_expand * arch.width[-2], *features.shape[-2:])
            assert static.forward_head(features, pre_logits=True).shape == (3, arch.width[-1])
            # train mode normalizes with batch statistics on both sides
            torch.testing.assert_close(static.train()(x), net.train()(x), atol=1e-5, rtol=1e-5)
    net.eval()


def test_extract_copies_weights(trained_like_supernet) -> None:
    net = trained_like_supernet
    static = net.extract(net.space.min_arch())
    with torch.no_grad():
        static.conv_stem.weight.add_(1.0)
    assert not torch.equal(static.conv_stem.weight, net.conv_stem.weight[:static.conv_stem.out_channels])


def test_set_arch_is_a_context_manager_and_rejects_foreign_archs() -> None:
    space = get_space("tiny32")
    net = build_supernet(space, num_classes=10)
    assert net.arch == space.max_arch()
    with net.set_arch(space.min_arch()) as active:
        assert active is net and net.arch == space.min_arch()
        assert net(torch.randn(2, 3, 24, 24)).shape == (2, 10)
    assert net.arch == space.max_arch()
    bad = Arch.from_dict({**space.min_arch().to_dict(), "kernel_size": [3, 3, 7, 3]})
    with pytest.raises(ValueError, match=r"arch.kernel_size\[2\]=7 .* allowed values: 3, 5"):
        net.set_arch(bad)
    assert net.arch == space.max_arch()


def test_subnets_share_weights_and_min_arch_only_trains_its_slice() -> None:
    space = get_space("tiny32")
    net = build_supernet(space, num_classes=10, zero_init_last_bn=False)
    arch = space.min_arch()
    net.set_arch(arch)
    x = torch.randn(4, 3, arch.resolution, arch.resolution)
    F.cross_entropy(net(x), torch.arange(4)).backward()
    stem = net.conv_stem.weight.grad
    assert stem[:arch.width[0]].abs().sum() > 0 and stem[arch.width[0]:].abs().max() == 0
    inactive = [i for i in range(len(net.blocks)) if i not in net._active_blocks]
    assert inactive and all(p.grad is None for i in inactive for p in net.blocks[i].parameters())
    # the min subnet's first stage-2 block uses kernel 3: the 5x5 ring gets no gradient
    dw = net.blocks[net._stage_blocks[1][0]].conv_dw.weight.grad
    assert dw[..., 1:4, 1:4].abs().sum() > 0 and dw[..., 0, :].abs().max() == 0


def test_resize_to_matches_interpolate_and_skips_same_size() -> None:
    x = torch.randn(2, 3, 32, 32)
    assert resize_to(x, 32) is x
    torch.testing.assert_close(resize_to(x, 24), F.interpolate(x, size=(24, 24), mode="bilinear"))


def test_build_supernet_by_name_and_static_model_type() -> None:
    net = build_supernet("tiny32", num_classes=3)
    assert isinstance(net.extract(), MBNet) and net.extract().get_classifier().out_features == 3
    with pytest.raises(ValueError, match="num_classes must be positive"):
        build_supernet("tiny32", num_classes=0)
