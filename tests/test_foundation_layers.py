"""The house rules: how callbacks find the network and the loss, and which package imports which."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from effnn.errors import ConfigError
from effnn.lit import ClassifierModule, SupernetModule, network_of, training_loss
from effnn.precision import StaticPrecision
from tests.conftest import ROOT


def test_network_is_dot_net_and_anything_else_is_one_line() -> None:
    holder = nn.Module()
    holder.net = nn.Linear(2, 2)
    assert network_of(holder) is holder.net
    holder_model = nn.Module()
    holder_model.model = nn.Linear(2, 2)  # the old name lookup accepted .model; the contract is .net
    with pytest.raises(ConfigError, match=r"Module has no `\.net` network; .*store the model as self\.net"):
        network_of(holder_model)
    with pytest.raises(ConfigError):
        StaticPrecision(fwd_bits=8, grad_bits=8).setup(None, holder_model, "fit")  # type: ignore[arg-type]


def test_training_loss_comes_from_what_training_step_returned() -> None:
    loss = torch.tensor(1.5, requires_grad=True)
    assert training_loss(loss).item() == 1.5 and not training_loss(loss).requires_grad
    assert training_loss({"loss": loss, "logits": torch.zeros(2)}).item() == 1.5
    assert training_loss(None) is None and training_loss({"acc": 0.3}) is None


def test_lit_exports_its_modules() -> None:
    assert ClassifierModule.__module__ == "effnn.lit.classifier"
    assert SupernetModule.__module__ == "effnn.lit.supernet"


@pytest.mark.parametrize(("module", "forbidden"), [
    ("effnn", ("torch", "effnn.export", "effnn.search")),     # the package root imports no floor above it
    ("effnn.export.app", ("effnn.search.app",)),               # export shares helpers via effnn.runtime
    ("effnn.cli", ("torch",)),                                 # config errors are reported before torch loads
])
def test_import_layering(module: str, forbidden: tuple[str, ...]) -> None:
    code = (f"import sys, {module}; bad = [m for m in {forbidden!r} if m in sys.modules]; "
            f"print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
