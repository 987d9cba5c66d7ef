"""Split candidate evaluation over torch.distributed ranks and gather the results on every rank.

Every rank runs the same search with the same seed, so every rank proposes the same candidates; only
the (expensive) accuracy evaluation is divided: rank r takes candidates r, r+W, r+2W, ... and the
results are exchanged with ``all_gather_object`` (pickled Python floats, never evaluated strings).
Afterwards every rank holds identical results and therefore takes identical search decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Ranks:
    """This process's rank and the world size (1 when torch.distributed is not initialized)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> list[int]:
        """Indices of ``n`` items this rank evaluates (round-robin, so slow and fast archs mix)."""
        return list(range(self.rank, n, self.world_size))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def map_over_ranks(fn: Callable[[T], R], items: Sequence[T], ranks: Ranks,
                   on_done: Callable[[int], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` with the work split over ranks; every rank returns the full list.

    ``on_done(k)`` is called after each local evaluation with the number done so far (progress bars).
    """
    mine = ranks.share(len(items))
    local: list[tuple[int, R]] = []
    for i in mine:
        local.append((i, fn(items[i])))
        if on_done is not None:
            on_done(len(local))
    if ranks.world_size == 1:
        gathered = [local]
    else:
        gathered = [None] * ranks.world_size
        dist.all_gather_object(gathered, local)
    results: list[R | None] = [None] * len(items)
    for part in gathered:
        for i, value in part:
            results[i] = value
    missing = [i for i, v in enumerate(results) if v is None]
    if missing:
        raise RuntimeError(f"distributed evaluation lost results for items {missing[:5]}")
    return results  # type: ignore[return-value]
