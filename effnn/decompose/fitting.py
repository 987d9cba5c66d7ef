"""SED fitting: turn trained dense weights into (row mask, power-of-two Ce, fp32 B).

Two steps, both on the block view ``(out, num_blocks, block_rows, b)`` of a weight (see ``SDLayout``):

1. Structured row pruning: a row of Ce is removed jointly for a group of filters, ranked by the energy of
   the dense weight rows it would reconstruct (per layer, or globally with per-layer normalised scores).
2. Alternating least squares between the basis and the quantized coefficients, per block:
   ``Ce = W B^+`` (then Q and the mask), ``B = (mask * Q(Ce))^+ W``. The best pair seen is returned, so the
   result is never worse than plain rounding with B = I, and it is exact when W already is masked
   powers of two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effnn.decompose.quantize_pow2 import Pow2Spec, round_pow2
from effnn.errors import ConfigError


def row_scores(blocks: torch.Tensor, filter_group: int) -> torch.Tensor:
    """Mean squared weight of each row over a group of filters: ``(groups, num_blocks, block_rows)``."""
    energy = blocks.detach().double().pow(2).mean(dim=-1)  # (out, nb, R)
    out = energy.shape[0]
    groups = -(-out // filter_group)
    padded = torch.cat([energy, energy.new_zeros(groups * filter_group - out, *energy.shape[1:])])
    sizes = torch.full((groups,), filter_group, dtype=energy.dtype, device=energy.device)
    sizes[-1] = out - (groups - 1) * filter_group
    return padded.view(groups, filter_group, *energy.shape[1:]).sum(dim=1) / sizes.view(-1, 1, 1)


def _check_sparsity(sparsity: float, where: str) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"SmartDeal: row sparsity for {where} must be in [0, 1), got {sparsity}")


def _prune_lowest(scores: torch.Tensor, valid: torch.Tensor, num_pruned: int) -> torch.Tensor:
    """1.0 everywhere except the ``num_pruned`` lowest-scoring valid entries and the invalid ones."""
    ranked = torch.where(valid, scores, torch.full_like(scores, float("inf"))).flatten()
    mask = valid.flatten().double()
    mask[torch.argsort(ranked, stable=True)[:num_pruned]] = 0.0
    return mask.view(scores.shape)


def layer_row_mask(scores: torch.Tensor, valid: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``sparsity`` fraction of (filter group, row) pairs with the lowest score in one layer.

    ``scores`` is ``(groups, nb, R)``, ``valid`` the ``(nb, R)`` rows that are not padding.
    """
    _check_sparsity(sparsity, "a layer")
    valid = valid.expand_as(scores)
    return _prune_lowest(scores, valid, round(sparsity * int(valid.sum())))


def global_row_masks(scores: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], sparsity: float
                     ) -> dict[str, torch.Tensor]:
    """Prune ``sparsity`` of all (group, row) pairs of all layers together.

    Scores are divided by their layer's mean valid score first: layers followed by BatchNorm are scale
    invariant, so raw magnitudes would say more about a layer's fan-in than about a row's importance.
    """
    _check_sparsity(sparsity, "the global scope")
    names = list(scores)
    flat_scores, flat_valid = [], []
    for name in names:
        v = valid[name].expand_as(scores[name])
        mean = scores[name][v].mean().clamp_min(torch.finfo(torch.float64).tiny)
        flat_scores.append((scores[name] / mean).flatten())
        flat_valid.append(v.flatten())
    all_valid = torch.cat(flat_valid)
    mask = _prune_lowest(torch.cat(flat_scores), all_valid, round(sparsity * int(all_valid.sum())))
    out, start = {}, 0
    for name, s in zip(names, flat_scores):
        out[name] = mask[start:start + s.numel()].view(scores[name].shape)
        start += s.numel()
    return out


@dataclass
class SEDResult:
    """A fitted decomposition of one layer's block view, and how well it reconstructs the weight."""

    ce: torch.Tensor  # (out, nb, R, b), already mask * Q(Ce)
    basis: torch.Tensor  # (out, nb, b, b)
    relative_error: float  # ||W_hat - W||_F / ||W||_F
    iterations: int


def fit_sed(target: torch.Tensor, coeff_mask: torch.Tensor, spec: Pow2Spec, iterations: int = 30,
            tol: float = 1e-4) -> SEDResult:
    """Alternating least squares for ``target ~= (coeff_mask * Q(Ce)) @ B`` on every block at once.

    ``target`` is ``(..., R, b)``, ``coeff_mask`` broadcasts to it (``(..., R, 1)``). Solved in float64 with
    pseudo-inverses, which handle the rank-deficient blocks that pruning and zeroing produce. Stops after
    ``iterations`` rounds or when the error improves by less than ``tol`` (relative).
    """
    if iterations < 1:
        raise ConfigError(f"SmartDeal: als_iters must be >= 1, got {iterations}")
    w = target.detach().double()
    mask = coeff_mask.double().expand_as(w)
    norm = w.norm().clamp_min(torch.finfo(torch.float64).tiny)
    basis = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device).expand(*w.shape[:-2], -1, -1)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    prev_err, rounds = float("inf"), 0
    while rounds < iterations:
        rounds += 1
        q = mask * round_pow2(w @ torch.linalg.pinv(basis), spec)
        basis = torch.linalg.pinv(q) @ w
        err = float((q @ basis - w).norm() / norm)
        if best is None or err < best[0]:
            best = (err, q, basis)
        if rounds > 1 and prev_err - err <= tol * prev_err:
            break
        prev_err = err
    err, q, basis = best
    return SEDResult(q.to(target.dtype), basis.to(target.dtype), err, rounds)
