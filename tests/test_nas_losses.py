"""KD losses against independent references: autograd of the textbook divergence, AlphaNet's formula,
torch.distributions' KL, and the closed form of label smoothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from effnn.nas.losses import AlphaDivergence, LabelSmoothingCrossEntropy, SoftTargetKL, build_kd_loss


def textbook_alpha_divergence(student: torch.Tensor, teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    """D_alpha(p||q) = 1/(a(a-1)) sum q[(p/q)^a - 1] straight from probabilities; alpha=1 is KL(p||q)."""
    q, p = student.softmax(1), teacher.softmax(1)
    if alpha == 1.0:
        return (p * (p.log() - q.log())).sum(1)
    return (q * ((p / q) ** alpha - 1)).sum(1) / (alpha * (alpha - 1))


def alphanet_public_surrogate(student: torch.Tensor, teacher: torch.Tensor, alpha: float,
                              iw_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """AlphaNet's f_divergence, transcribed from the paper's formulas in probability space:
    value sum q (f - f_base) and the surrogate -sum q rho_f log q with clipped importance weights."""
    q_prob, p_prob = student.softmax(1).detach(), teacher.softmax(1).detach()
    q_log = student.log_softmax(1)
    ratio = p_prob / q_prob
    if alpha == 1.0:
        f, f_base, rho = ratio * ratio.log(), 0.0, ratio
    else:
        iw = (ratio ** alpha).clamp(0, iw_clip)
        f, f_base = iw / alpha / (alpha - 1), 1 / alpha / (alpha - 1)
        rho = iw / alpha + f_base
    return (q_prob * (f - f_base)).sum(1), -(q_prob * rho * q_log).sum(1)


def test_gradient_equals_autograd_of_max_divergence_when_nothing_is_clipped() -> None:
    torch.manual_seed(0)
    student = torch.randn(16, 10, dtype=torch.float64) * 0.5
    teacher = torch.randn(16, 10, dtype=torch.float64) * 0.5
    # importance weights q/p stay far below the clip of 5 at this logit scale
    assert (student.softmax(1) / teacher.softmax(1)).max() < 5
    ref_in = student.clone().requires_grad_()
    ref = torch.maximum(textbook_alpha_divergence(ref_in, teacher, -1.0),
                        textbook_alpha_divergence(ref_in, teacher, 1.0)).mean()
    ref.backward()
    ours_in = student.float().requires_grad_()
    ours = AlphaDivergence(-1.0, 1.0, iw_clip=5.0)(ours_in, teacher.float())
    ours.backward()
    torch.testing.assert_close(ours.double(), ref.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours_in.grad.double(), ref_in.grad, atol=1e-6, rtol=1e-5)
    # both branches get picked somewhere in this batch, so both gradients were checked
    left = textbook_alpha_divergence(student, teacher, -1.0)
    right = textbook_alpha_divergence(student, teacher, 1.0)
    assert (left > right).any() and (left < right).any()


def test_gradient_with_clipping_follows_alphanet_surrogate() -> None:
    torch.manual_seed(1)
    student = torch.randn(32, 10, dtype=torch.float64) * 3
    teacher = torch.randn(32, 10, dtype=torch.float64) * 3
    assert (student.softmax(1) / teacher.softmax(1)).max() > 5  # clipping is active
    ref_in = student.clone().requires_grad_()
    lv, lg = alphanet_public_surrogate(ref_in, teacher, -1.0, 5.0)
    rv, rg = alphanet_public_surrogate(ref_in, teacher, 1.0, 5.0)
    pick = (lv > rv).double()
    (pick * lg + (1 - pick) * rg).mean().backward()
    ours_in = student.clone().requires_grad_()
    value = AlphaDivergence(iw_clip=5.0)(ours_in, teacher)  # computes in fp32
    value.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(value.double(), torch.maximum(lv, rv).mean().detach(), atol=1e-6, rtol=1e-5)


def test_saturated_logits_stay_finite_and_non_negative() -> None:
    torch.manual_seed(2)
    loss = AlphaDivergence()
    for scale in (1.0, 30.0, 1e4):
        student = (torch.randn(8, 100) * scale).requires_grad_()
        teacher = torch.randn(8, 100) * 1e4  # saturated: p is exactly 0 for all but one class in fp32
        value = loss(student, teacher)
        value.backward()
        assert torch.isfinite(value) and value.item() >= 0
        assert torch.isfinite(student.grad).all()


def test_value_is_zero_with_zero_gradient_when_student_matches_teacher() -> None:
    logits = torch.randn(4, 7)
    student = logits.clone().requires_grad_()
    value = AlphaDivergence()(student, logits)
    value.backward()
    assert abs(value.item()) < 1e-6 and student.grad.abs().max() < 1e-6


def test_random_values_are_non_negative_for_other_alpha_ranges() -> None:
    torch.manual_seed(3)
    for lo, hi in [(-1.0, 1.0), (0.0, 1.0), (-2.0, 2.0), (0.5, 0.5)]:
        loss = AlphaDivergence(lo, hi, iw_clip=5.0)
        for _ in range(20):
            s, t = torch.randn(16, 10) * 4, torch.randn(16, 10) * 4
            assert loss(s, t).item() >= -1e-6


def test_soft_target_kl_matches_torch_distributions() -> None:
    torch.manual_seed(4)
    s, t = torch.randn(6, 9), torch.randn(6, 9)
    ref = kl_divergence(Categorical(logits=t), Categorical(logits=s)).mean()
    torch.testing.assert_close(SoftTargetKL()(s, t), ref)
    ref_t = kl_divergence(Categorical(logits=t / 4), Categorical(logits=s / 4)).mean() * 16
    torch.testing.assert_close(SoftTargetKL(temperature=4.0)(s, t), ref_t)


def test_label_smoothing_matches_closed_form() -> None:
    torch.manual_seed(5)
    logits, y = torch.randn(5, 10), torch.randint(0, 10, (5,))
    log_q = logits.log_softmax(1)
    ref = (0.9 * F.nll_loss(log_q, y) + 0.1 * (-log_q.mean(1)).mean())
    torch.testing.assert_close(LabelSmoothingCrossEntropy(0.1)(logits, y), ref)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same"):
        AlphaDivergence()(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="alpha_min"):
        AlphaDivergence(alpha_min=1.0, alpha_max=-1.0)
    with pytest.raises(ValueError, match="unknown KD loss 'mse'"):
        build_kd_loss("mse")
