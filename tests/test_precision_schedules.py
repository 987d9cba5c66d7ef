"""CPT schedule and BitOPs accounting against the published savings; FracTrain's turning-point rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from effnn.precision import CyclicPrecision
from effnn.precision.schedules import (
    BitOpsMeter,
    LossPlateau,
    bitops_per_mac,
    cyclic_bits,
    cyclic_period,
    schedule_saving,
)

# CPT paper (Fu et al., ICLR 2021): BitOPs saving of CPT q_min-q_max/g vs static q_max/g over a full
# CIFAR schedule (64,000 iterations, 32 cycles), each as published, with the decimals it was printed to.
PUBLISHED_SAVINGS = [(3, 8, 8, "36.67"), (3, 6, 6, "30.05"), (4, 8, 8, "30.1"), (4, 6, 6, "20.7")]
CIFAR_ITERS, CYCLES = 64_000, 32


def numpy_cpt_bits(total: int, cycles: int, q_min: int, q_max: int) -> np.ndarray:
    """Independent reference: CPT's own expression, 1 + cos(pi*t + pi), with np.rint, vectorized."""
    period = int(total / cycles)
    i = np.arange(total)
    return np.rint(q_min + 0.5 * (q_max - q_min) * (1 + np.cos(np.pi * ((i % period) / period) + np.pi)))


@pytest.mark.parametrize(("q_min", "q_max", "g", "published"), PUBLISHED_SAVINGS)
def test_full_cpt_schedule_reproduces_the_published_saving(q_min: int, q_max: int, g: int, published: str) -> None:
    period = cyclic_period(CIFAR_ITERS, CYCLES)
    bits = [cyclic_bits(i, period, q_min, q_max) for i in range(CIFAR_ITERS)]
    np.testing.assert_array_equal(bits, numpy_cpt_bits(CIFAR_ITERS, CYCLES, q_min, q_max))
    saving = 100 * schedule_saving(bits, g, q_max)
    decimals = len(published.split(".")[1])
    assert round(saving, decimals) == float(published), saving
    assert abs(saving - float(published)) <= 0.5 * 10 ** -decimals


@pytest.mark.parametrize(("q_min", "q_max", "g", "published"), PUBLISHED_SAVINGS)
def test_cyclic_precision_callback_accounts_the_same_saving(q_min: int, q_max: int, g: int,
                                                            published: str) -> None:
    cb = CyclicPrecision(q_min, q_max, num_cycles=CYCLES, grad_bits=g, total_steps=CIFAR_ITERS)
    for step in range(CIFAR_ITERS):
        fwd, grad = cb.bits_for_step(SimpleNamespace(global_step=step))
        cb.meter.update(fwd, grad)
    decimals = len(published.split(".")[1])
    assert round(100 * cb.meter.saving, decimals) == float(published)
    assert cb.eval_bits == q_max


def test_cost_per_mac_and_schedule_shape() -> None:
    assert bitops_per_mac(8, 8) == (64 + 128) / 3
    assert bitops_per_mac(None, None) == 32 * 32  # full precision counts as 32 bits
    period = cyclic_period(100, 4)
    assert period == 25
    cycle = [cyclic_bits(i, period, 3, 8) for i in range(period)]
    assert cycle[0] == 3 and max(cycle) == 8 and cycle == sorted(cycle)  # rising half-cosine within a cycle
    assert cyclic_bits(period, period, 3, 8) == 3  # restarts
    assert schedule_saving([8] * 10, 8, 8) == 0.0


def test_meter_relative_cost_and_resume_state() -> None:
    meter = BitOpsMeter(8, 8)
    meter.update(4, 8)
    meter.update(8, 8)
    assert meter.relative == pytest.approx((bitops_per_mac(4, 8) + bitops_per_mac(8, 8)) / (2 * bitops_per_mac(8, 8)))
    other = BitOpsMeter(8, 8)
    other.load_state_dict(meter.state_dict())
    assert other.relative == meter.relative and other.steps == 2


def test_bad_schedule_arguments_raise() -> None:
    with pytest.raises(ValueError, match="q_min"):
        CyclicPrecision(8, 3)
    with pytest.raises(ValueError, match="num_cycles"):
        CyclicPrecision(3, 8, num_cycles=0)
    with pytest.raises(ValueError, match="total_steps"):
        cyclic_period(0, 32)
    with pytest.raises(ValueError, match="gradient bit-widths"):
        schedule_saving([3, 4], [8], 8)


def test_loss_plateau_switches_when_last_four_normalized_differences_are_small() -> None:
    plateau = LossPlateau(eps=0.05, decay=0.3, history=5, scale_windows=10)
    # falling fast: differences to the newest loss are large relative to the scale
    assert not any(plateau.update(v) for v in [2.0, 1.6, 1.3, 1.1, 1.0])
    # scale = mean of the 10 first losses; a flat stretch of 5 windows within eps * scale switches
    flat = [0.95, 0.94, 0.945, 0.94, 0.942]
    results = [plateau.update(v) for v in flat]
    scale = np.mean([2.0, 1.6, 1.3, 1.1, 1.0] + flat)
    diffs = [abs(v - flat[-1]) / scale for v in flat[:-1]]
    assert max(diffs) <= 0.05 and results == [False, False, False, False, True]
    assert plateau.eps == pytest.approx(0.015) and plateau.losses == []  # eps decays, history restarts
    # the next turning point needs 5 fresh windows, all within the smaller eps
    assert not any(plateau.update(v) for v in [0.9, 0.9, 0.9, 0.9])
    assert plateau.update(0.9)
    assert plateau.eps == pytest.approx(0.0045)


def test_loss_plateau_ignores_non_finite_windows_and_round_trips() -> None:
    plateau = LossPlateau(eps=0.1)
    for v in [1.0, float("nan"), 0.99]:
        plateau.update(v)
    assert plateau.losses == [1.0, 0.99]
    clone = LossPlateau()
    clone.load_state_dict(plateau.state_dict())
    assert clone.state_dict() == plateau.state_dict()
    with pytest.raises(ValueError, match="eps"):
        LossPlateau(eps=0)
