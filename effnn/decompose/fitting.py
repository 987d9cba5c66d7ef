"""SED fitting: turn trained dense weights into (row mask, power-of-two Ce, fp32 B).

Two steps, both on the block view ``(out, num_blocks, block_rows, b)`` of a weight (see ``SDLayout``):

1. Balanced structured row pruning: a row of Ce is removed jointly for a group of filters, ranked by the L1
   norm of the dense weight rows it would reconstruct; every group of a layer prunes the same number of
   rows (public SmartDeal code: ``ceil(rows * prune_threshold)`` per group of 32 filters).
2. Alternating least squares between the basis and the quantized coefficients, per block:
   ``Ce = W B^+`` (then Q and the mask), ``B = (mask * Q(Ce))^+ W``. The best pair seen is returned, so the
   result is never worse than plain rounding with B = I, and it is exact when W already is masked
   powers of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from effnn.decompose.quantize_pow2 import Pow2Spec, round_pow2
from effnn.errors import ConfigError


def row_scores(blocks: torch.Tensor, filter_group: int) -> torch.Tensor:
    """Importance of each Ce row for each group of filters: the L1 norm of the dense weight rows it
    reconstructs, summed over the group's filters (public SmartDeal: ``sum(|W|, axis=-1)`` summed over
    the group). Returns ``(groups, num_blocks, block_rows)``; the last group may hold fewer filters."""
    l1 = blocks.detach().double().abs().sum(dim=-1)  # (out, nb, R)
    out = l1.shape[0]
    groups = -(-out // filter_group)
    padded = torch.cat([l1, l1.new_zeros(groups * filter_group - out, *l1.shape[1:])])
    return padded.view(groups, filter_group, *l1.shape[1:]).sum(dim=1)


def _check_sparsity(sparsity: float, where: str) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"SmartDeal: row sparsity for {where} must be in [0, 1), got {sparsity}")


def rows_pruned_per_group(valid_rows: int, sparsity: float) -> int:
    """How many rows every filter group prunes: ``ceil(rows * ratio)`` as the public code does."""
    return math.ceil(valid_rows * sparsity)


def layer_row_mask(scores: torch.Tensor, valid: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Balanced structured pruning: every filter group prunes the same number of its lowest-scoring rows.

    ``scores`` is ``(groups, nb, R)``, ``valid`` the ``(nb, R)`` rows that are not padding. Each group
    keeps its own choice of rows, but the count is equal, so hardware that processes a group of filters
    together skips the same number of rows in every group.
    """
    _check_sparsity(sparsity, "a layer")
    groups = scores.shape[0]
    flat_valid = valid.flatten()
    num_pruned = rows_pruned_per_group(int(flat_valid.sum()), sparsity)
    ranked = torch.where(flat_valid, scores.reshape(groups, -1), torch.full_like(scores.reshape(groups, -1),
                                                                                  float("inf")))
    order = torch.argsort(ranked, dim=1, stable=True)[:, :num_pruned]
    mask = flat_valid.double().expand(groups, -1).clone()
    mask.scatter_(1, order, 0.0)
    return mask.view(scores.shape)


def global_layer_sparsity(scores: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], sparsity: float
                          ) -> dict[str, float]:
    """Per-layer row sparsity from one ranking of all (group, row) pairs of all layers.

    Scores are divided by their layer's mean valid score first: layers followed by BatchNorm are scale
    invariant, so raw magnitudes would say more about a layer's fan-in than about a row's importance.
    Each layer's share of the lowest ``sparsity`` fraction becomes its ratio; ``layer_row_mask`` then
    prunes that ratio balanced over the layer's groups.
    """
    _check_sparsity(sparsity, "the global scope")
    flat_scores, owners = [], []
    for index, name in enumerate(scores):
        v = valid[name].expand_as(scores[name])
        mean = scores[name][v].mean().clamp_min(torch.finfo(torch.float64).tiny)
        flat_scores.append(scores[name][v] / mean)
        owners.append(torch.full((int(v.sum()),), index))
    all_scores, all_owners = torch.cat(flat_scores), torch.cat(owners)
    lowest = all_owners[torch.argsort(all_scores, stable=True)[:round(sparsity * all_scores.numel())]]
    counts = torch.bincount(lowest, minlength=len(scores))
    return {name: min(float(counts[i]) / len(flat_scores[i]), 0.99) for i, name in enumerate(scores)}


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
