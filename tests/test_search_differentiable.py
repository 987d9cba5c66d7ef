"""Differentiable joint search (effnn.search.differentiable): the relaxed cost against brute-force enumeration,
its gradient against the closed form, cost pressure, exact re-evaluation of the results, resume, bad input."""

from __future__ import annotations

import functools
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli
from search_support import digits, micro_space, trained_supernet, write_checkpoint

from effnn.errors import ConfigError
from effnn.hw import SystolicArray
from effnn.nas.precision import BitsSpace, BitsWorkload, StagePrecision
from effnn.search.costs import SubnetCosts, design_bits
from effnn.search.diff_cost import arch_from_choice, bits_from_choice
from effnn.search.differentiable import DifferentiableSearch, DifferentiableSettings
from effnn.search.differentiable_app import (
    JointEvaluator,
    build_expected_cost,
    candidates_of,
    evaluate_all,
    settings_from_config,
)
from effnn.search.evaluator import SubnetAccuracy, fixed_batches
from effnn.search.hardware import HardwareSpace

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache  # the tables take seconds; tests share them (nothing here is mutated)
def setup(bits: BitsSpace | None, pe_type: tuple[str, ...] = ("int_mac",)):
    space = micro_space()
    costs = SubnetCosts(space, 10, 3, SystolicArray(16, 16, "os"))
    hw = HardwareSpace(costs.array, [8, 16], [8, 16], ["os", "ws"], [16], [16, 64], [16], max_pes=256,
                       pe_type=pe_type)
    return space, costs, hw, build_expected_cost(space, costs, bits, hw)


def enumerate_costs(space, costs, hw, bits, probs):
    """E[latency | a] and E[energy | a] by enumerating every (arch, bits) and pricing it exactly (the search's
    cost function: whole workload, PEs as wide as the candidate's widest bits)."""
    decisions = list(space.choices().items())
    bit_names = ([f"bits.weight[{s}]" for s in range(space.num_stages)] +
                 [f"bits.act[{s}]" for s in range(space.num_stages)])
    bit_opts = [bits.weight_choices] * space.num_stages + [bits.act_choices] * space.num_stages
    accs = list(hw.feasible())
    lat = torch.zeros(len(accs), dtype=torch.float64)
    energy = torch.zeros(len(accs), dtype=torch.float64)
    by_resolution = {r: torch.zeros(len(accs), dtype=torch.float64) for r in space.resolutions}
    for values in itertools.product(*(opts for _, opts in decisions)):
        choice = {n: v for (n, _), v in zip(decisions, values)}
        p_arch = math.prod(float(probs[n][opts.index(v)]) for (n, opts), v in zip(decisions, values))
        arch = arch_from_choice(space, choice)
        for bvalues in itertools.product(*bit_opts):
            p = p_arch * math.prod(float(probs[n][o.index(v)]) for n, o, v in zip(bit_names, bit_opts, bvalues))
            stage_bits = bits_from_choice(space.num_stages, dict(zip(bit_names, bvalues)))
            for a, acc in enumerate(accs):
                m = costs(arch, acc, stage_bits)
                lat[a] += p * m["latency_ms"]
                energy[a] += p * m["energy"]
                by_resolution[arch.resolution][a] += p * m["latency_ms"]
    return lat, energy, by_resolution


def random_probs(cost, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.softmax(torch.randn(d.size, generator=g, dtype=torch.float64), 0)
            for n, d in cost.decisions.items()}


def test_expected_cost_equals_enumeration_and_its_gradient_the_closed_form() -> None:
    bits = BitsSpace(3, (4, 8), (8,))  # 2^3 weight-bit choices: the PE width (the widest) couples the stages
    space, costs, hw, cost = setup(bits, ("int_mac", "bit_serial"))
    probs = random_probs(cost)
    lat, energy, by_res = enumerate_costs(space, costs, hw, bits, probs)
    got_lat, got_energy = cost.per_accelerator(probs)
    torch.testing.assert_close(got_lat, lat, rtol=1e-11, atol=0)
    torch.testing.assert_close(got_energy, energy, rtol=1e-11, atol=0)
    # d log E[L] / d logit_i = p_i (E[L | res_i] - E[L]) / E[L] for softmax logits, on a fixed accelerator
    logits = torch.log(probs["resolution"]).clone().requires_grad_(True)
    weights = torch.zeros(len(cost.accelerators), dtype=torch.float64)
    weights[1] = 1.0
    torch.log(cost.expected({**probs, "resolution": torch.softmax(logits, 0)}, weights, "latency_ms")).backward()
    p = probs["resolution"]
    conditional = torch.stack([by_res[r][1] / p[i] for i, r in enumerate(space.resolutions)])
    expected_grad = p * (conditional - lat[1]) / lat[1]
    torch.testing.assert_close(logits.grad, expected_grad, rtol=1e-9, atol=1e-15)
    assert expected_grad[space.resolutions.index(max(space.resolutions))] > 0  # the larger input costs more


def search(net, cost, settings, bits, hw, **kw) -> DifferentiableSearch:
    precision = kw.pop("precision", None) or (StagePrecision(net) if bits is not None else None)
    return DifferentiableSearch(net, digits().train_set, settings, cost, precision=precision, bits_space=bits,
                                hardware=hw, **kw)


def test_large_lambda_moves_every_choice_toward_cheaper_options() -> None:
    bits = BitsSpace(3, (4, 8), (4, 8))
    space, costs, hw, cost = setup(bits)
    net = trained_supernet()
    settings = DifferentiableSettings(steps=25, lr=0.1, lambdas=(20.0,), batch_size=32, metric="edp")
    s = search(net, cost, settings, bits, hw)
    (record,) = s.run()
    assert record.history[-1]["cost"] < 0.5 * record.history[0]["cost"]
    # the smallest arch option gained probability everywhere. (Bits are not asserted: under SCALE-Sim's exact
    # memory model a narrower operand is not always cheaper -- a 4-bit filter fills an SRAM of twice as many
    # elements in the first prefetch, docs/hardware.md "Operand widths" -- so the cheapest width depends on
    # the accelerator; the expected-cost test above checks the cost and its gradient exactly.)
    for name, probs in record.probabilities.items():
        options = cost.decisions[name].options if name in cost.decisions else hw.genes[name[3:]]
        if name.startswith(("width", "resolution", "depth")) and len(options) > 1:
            assert probs[options.index(min(options))] > 1.0 / len(options), (name, probs)
    arch, stage_bits = record.argmax.arch, record.argmax.bits
    assert arch.resolution == min(space.resolutions)
    assert all(w == min(opts) for w, opts in zip(arch.width, (space.stem_widths, *(st.widths for st in space.stages),
                                                             space.head_widths)))
    assert bits.contains(stage_bits)
    # no pressure: the same run without the cost keeps larger options
    free = search(trained_supernet(), cost, DifferentiableSettings(steps=25, lr=0.1, lambdas=(0.0,), batch_size=32),
                  bits, hw).run()[0]
    assert free.final_cost > 3 * record.final_cost


def test_results_lie_in_the_space_and_their_metrics_equal_an_exact_reevaluation() -> None:
    bits = BitsSpace(3, (4, 8), (4, 8))
    space, costs, hw, cost = setup(bits)
    net = trained_supernet()
    precision = StagePrecision(net)
    dm = digits()
    calib = fixed_batches(dm.train_set, 2, 64, 0)
    settings = DifferentiableSettings(steps=8, lambdas=(0.0, 5.0), batch_size=32, top_k=2, tail_fraction=0.5)
    records = search(net, cost, settings, bits, hw, precision=precision).run()
    choices = candidates_of(records)
    assert 2 <= len(choices) <= 6
    accuracy = SubnetAccuracy(net, calib, dm.val_dataloader(), reuse_mb=0, precision=precision)
    archive, evaluations = evaluate_all(choices, JointEvaluator(accuracy, costs, hw), ("acc", "edp"), {}, hw)
    assert len(archive) >= 1 and set(evaluations) <= set(choices)
    for c in choices:
        space.validate(c.arch)
        assert bits.contains(c.bits) and hw.contains(c.hardware)
    # independently: a fresh supernet and evaluator, and the PPA model on the flat layer list (not sections)
    fresh_net = trained_supernet()
    fresh_costs = SubnetCosts(space, 10, 3, costs.array)
    fresh = JointEvaluator(SubnetAccuracy(fresh_net, calib, dm.val_dataloader(), reuse_mb=0,
                                          precision=StagePrecision(fresh_net)), fresh_costs, hw)
    for c in reversed(list(evaluations)):
        again = fresh(c)
        assert again == evaluations[c]
        layers = BitsWorkload(space).layers(c.arch, c.bits, 10, 3)
        flat = fresh_costs.cost_model(c.hardware, design_bits(c.bits)).score(layers)
        assert math.isclose(flat["latency_ms"], again["latency_ms"], rel_tol=1e-12)
        assert math.isclose(flat["energy"], again["energy"], rel_tol=1e-12)


def test_resume_reproduces_the_uninterrupted_search(tmp_path: Path) -> None:
    bits = BitsSpace(3, (4, 8), (8,))
    space, costs, hw, cost = setup(bits)
    settings = DifferentiableSettings(steps=7, lambdas=(0.5, 2.0), batch_size=16, save_every=3, top_k=2)
    full = search(trained_supernet(), cost, settings, bits, hw, state_path=tmp_path / "full.json").run()

    class Killed(Exception):
        pass

    def kill(run: int, step: int, record: dict) -> None:
        if run == 1 and step == 5:  # after the save at step 3 of the second run
            raise Killed

    state = tmp_path / "killed.json"
    with pytest.raises(Killed):
        search(trained_supernet(), cost, settings, bits, hw, state_path=state, on_step=kill).run()
    saved = json.loads(state.read_text())
    assert (saved["run"], saved["step"], len(saved["records"])) == (1, 3, 1)
    resumed = search(trained_supernet(), cost, settings, bits, hw, state_path=state).run(resume=True)
    assert [(r.lam, r.argmax, r.frequent, r.final_cost, r.history) for r in resumed] == \
           [(r.lam, r.argmax, r.frequent, r.final_cost, r.history) for r in full]
    other = DifferentiableSettings(steps=7, lambdas=(0.5, 2.0), batch_size=16, save_every=3, top_k=2, lr=0.2)
    with pytest.raises(ConfigError, match="cannot resume .*lr: saved 0.05, now 0.2"):
        search(trained_supernet(), cost, other, bits, hw, state_path=state).run(resume=True)


@pytest.mark.parametrize("bad, match", [
    ({"steps": 0}, "search.differentiable.steps must be >= 1"),
    ({"lambdas": []}, "lambdas=[] must be a non-empty list"),
    ({"metric": "macs"}, "metric='macs'; choose one of latency_ms, energy, edp"),
    ({"bn_mode": "eval"}, "bn_mode='eval'; choose one of train, recalibrate"),
    ({"tau_end": 0}, "tau_end must be > 0"),
    ({"stepz": 3}, "unknown search.differentiable option 'stepz'"),
    ({"steps": "many"}, "bad value for search.differentiable.steps"),
])
def test_bad_settings_are_one_line_config_errors(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_config(bad)
    assert match in str(err.value) and "\n" not in str(err.value)


def test_temperature_anneals_from_start_to_end() -> None:
    s = DifferentiableSettings(steps=11, tau_start=4.0, tau_end=0.25)
    assert s.tau(0) == 4.0 and math.isclose(s.tau(10), 0.25) and math.isclose(s.tau(5), 1.0)


def test_cli_differentiable_search_writes_the_outputs(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "out"
    args = ["tools/search.py", f"ckpt={ckpt}", f"out={out}", "data.resolution=16", "search.method=differentiable",
            "search.calibration.batches=2", "search.objectives=[acc,edp]", "search.hardware.co_search=true",
            "search.hardware.space.rows=[8,16]", "search.hardware.space.cols=[8,16]",
            "search.hardware.space.dataflow=[os,ws]", "search.hardware.space.ifmap_sram_kb=[16]",
            "search.hardware.space.filter_sram_kb=[16]", "search.hardware.space.ofmap_sram_kb=[16]",
            "search.hardware.space.pe_type=[int_mac,bit_serial]", "search.hardware.space.mapping=[scalesim]",
            "search.differentiable.steps=6", "search.differentiable.lambdas=[0,3]",
            "search.differentiable.batch_size=32", "search.differentiable.save_every=2", "progress=false"]
    proc = run_cli(args, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = (out / "pareto.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["name", "acc"] and "edp" in header and "hardware" in header
    archs = sorted((out / "archs").glob("pareto_*.yaml"))
    assert archs
    data = yaml.safe_load(archs[0].read_text())
    micro_space().validate(arch_from_choice(micro_space(), {
        "resolution": data["resolution"], **{f"width[{i}]": w for i, w in enumerate(data["width"])},
        **{f"{k}[{i}]": v for k in ("depth", "kernel_size", "expand_ratio") for i, v in enumerate(data[k])}}))
    assert set(data["hardware"]) >= {"rows", "cols", "dataflow", "pe_type"} and data["metrics"]["edp"] > 0
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(json.loads((out / "search_state.json").read_text())["records"]) == 2


def test_unknown_method_is_one_line() -> None:
    from omegaconf import OmegaConf

    from effnn.search.app import run_search

    with pytest.raises(ConfigError, match="search.method='gradient'; choose evolution or differentiable"):
        run_search(OmegaConf.create({"search": {"method": "gradient"}}))
