"""What the search evolves: a subnet arch, paired with an accelerator configuration in a co-search."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effnn.nas.space import Arch
from effnn.search.hardware import Accelerator


@dataclass(frozen=True)
class Candidate:
    """An (arch, accelerator) pair; ``hardware`` is None when only the network is searched."""

    arch: Arch
    hardware: Accelerator | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "hardware": None if self.hardware is None else self.hardware.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        hw = data.get("hardware")
        return cls(Arch.from_dict(data["arch"]), None if hw is None else Accelerator.from_dict(hw))

    def arch_json(self) -> str:
        """The arch as one line of JSON (the ``arch`` column of ``pareto.csv``)."""
        return json.dumps(self.arch.to_dict(), separators=(",", ":"))
