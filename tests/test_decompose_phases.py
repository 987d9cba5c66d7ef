"""SmartDeal's parts on their own: phase schedule, the `.net` convention, the Hydra-registrable config."""

from __future__ import annotations

import lightning as L
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from torch import nn

from effnn.decompose.callback import trained_network
from effnn.decompose.config import SmartDealConfig
from effnn.decompose.phases import SmartDealPhases
from effnn.errors import ConfigError


def test_phase_schedule() -> None:
    phases = SmartDealPhases(3)
    assert [phases.converts_after(e) for e in range(5)] == [False, False, True, False, False]
    assert [phases.in_dense_phase(e) for e in range(4)] == [True, True, True, False]
    assert phases.fine_tune_epochs(10) == 7 and phases.fine_tune_epochs(None) == -1
    assert SmartDealPhases(0).converts_in_setup and not SmartDealPhases(0).converts_after(0)
    with pytest.raises(ConfigError, match="dense_epochs=3 leaves no fine-tuning epochs"):
        phases.check(3, 1)
    with pytest.raises(ConfigError, match="single process"):
        phases.check(10, 2)
    SmartDealPhases(0).check(10, 2)  # converting in setup works under DDP
    with pytest.raises(ConfigError, match="dense_epochs must be >= 0"):
        SmartDealPhases(-1)


def test_callback_finds_the_network_at_net_and_fails_in_one_line_otherwise() -> None:
    class WithNet(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(2, 2)

    class WithoutNet(L.LightningModule):
        pass

    module = WithNet()
    assert trained_network(module) is module.net
    with pytest.raises(ConfigError, match=r"WithoutNet.net is not an nn.Module"):
        trained_network(WithoutNet())


def test_config_is_a_structured_config_hydra_can_validate() -> None:
    schema = OmegaConf.structured(SmartDealConfig)
    merged = OmegaConf.merge(schema, {"row_sparsity": 0.5, "skip": ["fc"]})
    config = SmartDealConfig(**OmegaConf.to_container(merged))
    assert config.row_sparsity == 0.5 and config.skip == ["fc"] and config.filter_group == 32
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(schema, {"row_sparsty": 0.5})  # misspelt key: Hydra fails at composition
    with pytest.raises(ValidationError):
        OmegaConf.merge(schema, {"filter_group": "many"})
    # values a type cannot express keep their one-line error
    with pytest.raises(ConfigError, match=r"row sparsity for 'row_sparsity' must be in \[0, 1\), got 1.5"):
        SmartDealConfig(row_sparsity=1.5)
    with pytest.raises(ConfigError, match="unknown config keys"):
        SmartDealConfig.from_mapping({"row_sparsty": 0.3})


def test_hydra_config_store_registration() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="effnn_test_smartdeal", name="base", node=SmartDealConfig)
    node = ConfigStore.instance().load("effnn_test_smartdeal/base.yaml").node
    assert node.filter_group == 32 and node.row_sparsity == 0.4 and not node.prune_linear
