"""One hardware definition: presets once (package data on Hydra's search path), one default, and train.py,
tools/search.py, tools/export.py and tools/hwcost.py all price subnets on the ``hardware`` group."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from omegaconf.errors import ValidationError

from effnn.config import DEFAULT_HARDWARE, SearchConfig, validated
from effnn.errors import ConfigError
from effnn.hw import build_cost_model, hardware_preset_names
from tests.conftest import CONF_DIR, ROOT, compose_config, run_cli


def compose_tool(config: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config, overrides=["ckpt=x.ckpt", "out=o", *overrides])


def test_presets_live_once_as_package_data() -> None:
    files = {p.name[:-5] for p in resources.files("effnn.conf").joinpath("hardware").iterdir()
             if p.name.endswith(".yaml")}
    assert files == set(hardware_preset_names()) >= {"systolic_16x16_os", "systolic_32x32_ws", "analytic"}
    assert not (ROOT / "conf" / "hardware").exists() and not (ROOT / "effnn" / "hw" / "hardware_presets.yaml").exists()
    for name in files:  # what Hydra composes is what the library builds from the name
        composed = build_cost_model(compose_config([f"hardware={name}"]).hardware)
        direct = build_cost_model(name)
        assert type(composed) is type(direct) and composed.name == direct.name == name
        assert getattr(composed, "array", None) == getattr(direct, "array", None)


def test_one_default_everywhere() -> None:
    from effnn.hw.app import load_array, parse_args

    assert compose_config().hardware.name == DEFAULT_HARDWARE
    assert compose_config(["+recipe=alphanet"]).model.hardware.name == DEFAULT_HARDWARE
    assert compose_tool("search").hardware.name == DEFAULT_HARDWARE
    assert compose_tool("export", "arch=min").hardware.name == DEFAULT_HARDWARE
    assert load_array(parse_args(["--space", "tiny32", "--arch", "a.yaml"])) == build_cost_model(DEFAULT_HARDWARE).array


@pytest.mark.parametrize("choice", [[], ["hardware=systolic_32x32_ws"]])
def test_train_and_search_price_the_same_accelerator(choice: list[str]) -> None:
    """Supernet training (hw/* metrics) and the search price the same accelerator, by default and after
    ``hardware=systolic_32x32_ws`` on both: the search's PPA model (effnn.hw.mapping, SCALE-Sim mode, the
    preset's PE type at its default bits) runs on the very array training logs on."""
    from effnn.hw import mapping
    from effnn.search.app import build_costs, settings_from_config

    module = hydra.utils.instantiate(compose_config(["+recipe=alphanet", *choice]).model)
    search_cfg = compose_tool("search", *choice)
    costs, co_search = build_costs(search_cfg, settings_from_config(search_cfg.search), module.space,
                                   module.num_classes, module.in_chans)
    reported = costs(module.space.max_arch())
    assert co_search is None
    array = module.cost_model.array
    assert costs.array == array
    ppa = mapping.MappedCostModel(mapping.Accelerator.from_array(array, pe_type="int_mac"), mode="scalesim",
                                  array=array)
    expected = ppa.score(module.space.workload(module.space.max_arch(), module.num_classes, module.in_chans))
    for name in ("latency_ms", "energy", "edp", "area_mm2", "power_mw"):
        assert reported[name] == pytest.approx(expected[name], rel=1e-12), name
    assert (array == build_cost_model(DEFAULT_HARDWARE).array) == (not choice)


def test_wrong_types_fail_while_composing() -> None:
    with pytest.raises(Exception) as err:
        compose_tool("search", "search.population=many")
    assert isinstance(err.value.__cause__ or err.value, ValidationError) or "population" in str(err.value)
    with pytest.raises(Exception, match="rows"):
        compose_config(["hardware.array.rows=wide"])
    with pytest.raises(ConfigError, match="unknown search option 'populaton'; known options: objectives"):
        validated(SearchConfig, {"populaton": 3}, "search")


def test_quantization_config_is_a_structured_config() -> None:
    from effnn.precision import QuantizationConfig

    assert QuantizationConfig.coerce({"keep_full_precision": ["fc"]}).keep_full_precision == ("fc",)
    with pytest.raises(ConfigError, match="unknown quantization option 'keep_frist'; known options: .*keep_first"):
        QuantizationConfig.coerce({"keep_frist": True})
    with pytest.raises(ConfigError, match="bad value for quantization.act_momentum: Value 'high'"):
        QuantizationConfig.coerce({"act_momentum": "high"})


def test_search_cli_wrong_type_and_unknown_hardware_are_one_line(tmp_path: Path) -> None:
    for arg, expected in (("search.population=many", "bad value for search.population"),
                          ("hardware=systolic_64x64", "unknown hardware 'systolic_64x64'; available: analytic")):
        res = run_cli(["tools/search.py", f"ckpt={tmp_path / 'x.ckpt'}", f"out={tmp_path / 'o'}", arg])
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and expected in lines[0], res.stderr[-2000:]
