"""Losses of supernet training: label-smoothed CE for the largest subnet, soft-target KD for the others.

All KD losses take ``(student_logits, teacher_logits)``, treat the teacher as a constant, work in fp32
log space, and return the true (non-negative) divergence as their value.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against labels smoothed by ``smoothing`` (AlphaNet/AttentiveNAS use 0.1)."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.smoothing)


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(f"KD losses take student and teacher logits of the same (batch, classes) shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")


class SoftTargetKL(nn.Module):
    """KL(teacher || student) of temperature-softened distributions, batch mean, times T^2.

    AttentiveNAS's soft-target cross-entropy has the same gradient; this one also has the right value
    (zero when the student matches the teacher).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        _check_pair(student_logits, teacher_logits)
        t = self.temperature
        log_q = F.log_softmax(student_logits.float() / t, dim=1)
        log_p = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (t * t)


def alpha_divergence(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float,
                     iw_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample D_alpha(p || q) = 1/(a(a-1)) sum q [(p/q)^a - 1] with (p/q)^a clipped at ``iw_clip``,
    and the per-sample surrogate whose gradient (w.r.t. ``log_q``'s logits) is AlphaNet's.

    ``log_p`` is constant; every ratio is formed as exp of a difference of log-probabilities, so saturated
    logits (p or q underflowing to 0) give finite values. alpha=1 is KL(p||q), alpha=0 is KL(q||p); as in
    AlphaNet, those two are clipped only where AlphaNet clips them (alpha=0: the ratio; alpha=1: never).
    """
    q = log_q.detach().exp()
    log_ratio = log_p - log_q.detach()  # log(p/q)
    log_clip = torch.log(torch.tensor(iw_clip, dtype=log_q.dtype, device=log_q.device))
    # coef = q * rho_f, formed without ever multiplying 0 by an unbounded ratio
    if abs(alpha) < 1e-3:
        log_w = log_ratio.clamp(max=log_clip)
        value = -(q * log_w).sum(1)
        coef = q * (log_w - 1.0)
    elif abs(alpha - 1.0) < 1e-3:
        p = log_p.exp()
        value = (p * log_ratio).sum(1)
        coef = p  # q * (p/q)
    else:
        w_alpha = (alpha * log_ratio).clamp(max=log_clip).exp()
        value = (q * (w_alpha - 1.0)).sum(1) / (alpha * (alpha - 1.0))
        coef = q * (w_alpha / alpha + 1.0 / (alpha * (alpha - 1.0)))
    # d/dz D = -sum_i q_i rho_i d(log q_i)/dz, with q and rho held constant
    surrogate = -(coef * log_q).sum(1)
    return value, surrogate


class AlphaDivergence(nn.Module):
    """AlphaNet's adaptive KD loss: per sample, descend the larger of D_{alpha_min} and D_{alpha_max}.

    ``loss(student_logits, teacher_logits)`` has the gradient of AlphaNet's ``AdaptiveLossSoft`` (importance
    weights clipped at ``iw_clip``) but its value is the chosen divergence itself, batch mean, so it is
    non-negative and can be logged; the public surrogate can go negative or NaN.
    """

    def __init__(self, alpha_min: float = -1.0, alpha_max: float = 1.0, iw_clip: float = 5.0) -> None:
        super().__init__()
        if alpha_min > alpha_max:
            raise ValueError(f"alpha_min={alpha_min} must be <= alpha_max={alpha_max}")
        if iw_clip < 1.0:
            raise ValueError(f"iw_clip must be >= 1 (it clips importance weights p/q), got {iw_clip}")
        self.alpha_min = float(alpha_min)
        self.alpha_max = float(alpha_max)
        self.iw_clip = float(iw_clip)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        _check_pair(student_logits, teacher_logits)
        log_q = F.log_softmax(student_logits.float(), dim=1)
        log_p = F.log_softmax(teacher_logits.detach().float(), dim=1)
        value_lo, grad_lo = alpha_divergence(log_p, log_q, self.alpha_min, self.iw_clip)
        value_hi, grad_hi = alpha_divergence(log_p, log_q, self.alpha_max, self.iw_clip)
        pick_lo = value_lo > value_hi
        value = torch.where(pick_lo, value_lo, value_hi)
        surrogate = torch.where(pick_lo, grad_lo, grad_hi)
        # value of the divergence, gradient of AlphaNet's surrogate
        return (value + (surrogate - surrogate.detach())).mean()

    def extra_repr(self) -> str:
        return f"alpha_min={self.alpha_min}, alpha_max={self.alpha_max}, iw_clip={self.iw_clip}"


def build_kd_loss(name: str, **kwargs) -> nn.Module:
    """KD loss by config name: ``alpha`` (AlphaNet), ``kl`` (AttentiveNAS/BigNAS soft targets)."""
    losses = {"alpha": AlphaDivergence, "alpha_divergence": AlphaDivergence, "kl": SoftTargetKL}
    if name not in losses:
        raise ValueError(f"unknown KD loss {name!r}; choose one of {', '.join(sorted(losses))}")
    return losses[name](**kwargs)
