"""SD training on real digits: STE fine-tuning with a fixed mask, project-after-step, the Lightning recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effnn.data.digits import load_digits_tensors
from effnn.decompose import SDConv2d, SDLinear, convert, project_coefficients_, round_pow2, sd_layers
from effnn.pipeline import train
from tests.conftest import run_cli


def digits_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def fit_steps(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
              after_step=None) -> list[float]:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_digits_tensors(resolution=8, in_chans=1)


@pytest.fixture
def dense_trained(digits) -> nn.Sequential:
    torch.manual_seed(0)
    net = digits_net()
    fit_steps(net, *digits, steps=60, lr=0.05)
    return net


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        acc = float((net(x).argmax(-1) == y).float().mean())
    net.train()
    return acc


def test_ste_fine_tuning_recovers_accuracy_with_the_mask_fixed(dense_trained, digits) -> None:
    x, y = digits
    net = dense_trained
    dense_acc = accuracy(net, x, y)
    convert(net, {"row_sparsity": 0.4, "filter_group": 4}, progress=False)
    layers = sd_layers(net)
    masks = {n: l.row_mask.clone() for n, l in layers.items()}
    losses = fit_steps(net, x, y, steps=60, lr=0.02)
    assert sum(losses[-10:]) < sum(losses[:10])
    assert accuracy(net, x, y) > dense_acc - 0.05  # digits train accuracy is ~0.95 after 60 dense steps
    for name, layer in layers.items():
        assert torch.equal(layer.row_mask, masks[name])  # the mask never moves
        pruned = layer.coeff_mask().squeeze(-1) == 0
        rows = layer.layout.to_blocks(layer.weight.detach()).norm(dim=-1)
        assert torch.all(rows[pruned] == 0)  # pruned rows rebuild to exactly zero weights
        assert layer.ce.requires_grad and layer.ce.grad is not None


def test_project_mode_keeps_ce_on_the_power_of_two_grid(dense_trained, digits) -> None:
    x, y = digits
    net = dense_trained
    convert(net, {"row_sparsity": 0.2, "train_mode": "project"}, progress=False)
    basis_before = {n: l.basis.detach().clone() for n, l in sd_layers(net).items()}
    losses = fit_steps(net, x, y, steps=30, lr=0.02, after_step=lambda: project_coefficients_(net))
    assert losses[-1] == losses[-1]  # finite
    for name, layer in sd_layers(net).items():
        ce = layer.ce.detach()
        torch.testing.assert_close(ce, round_pow2(ce, layer.spec) * layer.coeff_mask(), rtol=0, atol=0)
        assert not torch.equal(layer.basis.detach(), basis_before[name])  # B (fp32) keeps training


def test_from_scratch_sd_model_trains(digits) -> None:
    x, y = digits
    torch.manual_seed(1)
    net = nn.Sequential(SDConv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                        SDLinear(16 * 64, 10, block_rows=64))
    losses = fit_steps(net, x, y, steps=40, lr=0.02)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert accuracy(net, x, y) > 0.6


def test_recipe_trains_dense_converts_fine_tunes_and_logs(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("+recipe=smartdeal", "trainer.max_epochs=3", "callbacks.smartdeal.dense_epochs=2",
                   "data.resolution=16", "callbacks.rich_progress_bar=null",
                   "+trainer.enable_progress_bar=false", "callbacks.smartdeal.bn_recalibration_batches=5")
    metrics = train(cfg)
    for key in ("test/acc_dense", "test/acc_converted", "test/acc", "smartdeal/storage_ratio"):
        assert key in metrics, sorted(metrics)
    assert metrics["test/acc_dense"] > 0.5 and metrics["test/acc"] > 0.5  # chance is 0.1
    report = json.loads((tmp_path / "smartdeal_report.json").read_text())
    assert report["storage_public"]["storage_ratio"] == pytest.approx(metrics["smartdeal/storage_ratio"])
    assert report["storage"]["storage_ratio"] == pytest.approx(metrics["smartdeal/storage_ratio_effnn"])
    assert report["storage_public"]["storage_ratio"] > 4
    for layer in report["layers"]:  # balanced: every filter group of a layer prunes the same number of rows
        assert len(set(layer["pruned_rows_per_group"])) == 1, layer
    assert report["test/acc"] == pytest.approx(metrics["test/acc"])
    assert report["test/acc_dense"] == pytest.approx(metrics["test/acc_dense"])
    assert {layer["name"] for layer in report["layers"]} >= {"fc", "blocks.2.conv2"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"smartdeal/storage_ratio", "test/acc_dense", "test/acc"} <= tags


@pytest.mark.slow
def test_smartdeal_recipe_meets_the_issue_targets(tmp_path: Path) -> None:
    """Done-when of the issue: >= 4x weight-storage reduction, test accuracy within 1 point of dense."""
    res = run_cli(["train.py", "+recipe=smartdeal", f"hydra.run.dir={tmp_path}",
                   "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false"],
                  env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "smartdeal_report.json").read_text())
    assert report["storage_public"]["storage_ratio"] >= 4.0
    assert report["test/acc"] >= report["test/acc_dense"] - 0.01, report
    assert "compression ratio (public formula)" in res.stdout


def test_recipe_from_scratch_converts_before_the_optimizer_exists(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("+recipe=smartdeal", "trainer.max_epochs=1", "callbacks.smartdeal.dense_epochs=0",
                   "callbacks.smartdeal.config.init=scratch", "data.resolution=8",
                   "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false")
    metrics = train(cfg)
    report = json.loads((tmp_path / "smartdeal_report.json").read_text())
    assert report["test/acc_dense"] is None and report["test/acc"] == pytest.approx(metrics["test/acc"])
    assert metrics["test/acc"] > 0.3  # one epoch of SD training from scratch learns (chance is 0.1)
    assert report["storage_public"]["storage_ratio"] > 4


def test_dense_phase_longer_than_the_run_is_a_config_error(make_cfg) -> None:
    from effnn.errors import ConfigError

    cfg = make_cfg("+recipe=smartdeal", "trainer.max_epochs=2", "callbacks.smartdeal.dense_epochs=2",
                   "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false", "logger=none")
    with pytest.raises(ConfigError, match="dense_epochs=2 leaves no fine-tuning epochs"):
        train(cfg)
