"""The forward/backward half of a sandwich-rule step, free of Lightning so benchmarks time the real code."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from effnn.nas.space import Arch
from effnn.nas.supernet import Supernet, resize_to

SyncBlocker = Callable[[], contextlib.AbstractContextManager]


def sandwich_backward(net: Supernet, archs: Sequence[Arch], x: torch.Tensor, y: torch.Tensor, ce: nn.Module,
                      kd: nn.Module, *, prepare: Callable[[torch.Tensor, int], torch.Tensor] = resize_to,
                      backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                      skip_grad_sync: SyncBlocker = contextlib.nullcontext,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate gradients of every arch: the first (the largest) on ``ce(logits, y)``, the rest on
    ``kd(logits, teacher)`` where teacher = the first arch's detached logits.

    ``prepare(x, resolution)`` makes an arch's input; ``backward`` runs a backward pass (Lightning's
    ``manual_backward``); every backward but the last runs inside ``skip_grad_sync()`` (DDP ``no_sync``).
    Returns the detached CE of the first arch and the mean KD loss of the others. Leaves the last arch active.
    """
    if not archs:
        raise ValueError("a sandwich step needs at least one arch (the largest comes first)")
    teacher = None
    max_loss = kd_total = torch.zeros((), device=x.device)
    for i, arch in enumerate(archs):
        last = i == len(archs) - 1
        with contextlib.nullcontext() if last else skip_grad_sync():
            net.set_arch(arch)
            logits = net(prepare(x, arch.resolution))
            if teacher is None:
                loss = ce(logits, y)
                teacher, max_loss = logits.detach(), loss.detach()
            else:
                loss = kd(logits, teacher)
                kd_total = kd_total + loss.detach()
            backward(loss)
    return max_loss, kd_total / max(1, len(archs) - 1)
