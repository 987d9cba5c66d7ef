"""What the search evolves: a subnet arch, optionally with per-stage bit-widths and an accelerator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effnn.nas.precision import StageBits
from effnn.nas.space import Arch
from effnn.search.hardware import Accelerator


@dataclass(frozen=True)
class Candidate:
    """An (arch, accelerator, bits) triple; ``hardware`` is None when the accelerator is fixed, ``bits`` None
    when precision is not searched (the supernet runs as loaded, the hardware at its default bits)."""

    arch: Arch
    hardware: Accelerator | None = None
    bits: StageBits | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "hardware": None if self.hardware is None else self.hardware.to_dict(),
                "bits": None if self.bits is None else self.bits.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        hw, bits = data.get("hardware"), data.get("bits")
        return cls(Arch.from_dict(data["arch"]), None if hw is None else Accelerator.from_dict(hw),
                   None if bits is None else StageBits.from_dict(bits))

    @property
    def key(self) -> tuple[Arch, StageBits | None]:
        """What accuracy depends on: the arch and its bits (not the accelerator)."""
        return self.arch, self.bits

    def arch_json(self) -> str:
        """The arch as one line of JSON (the ``arch`` column of ``pareto.csv``)."""
        return json.dumps(self.arch.to_dict(), separators=(",", ":"))

    def bits_json(self) -> str:
        """The bits as one line of JSON (the ``bits`` column of ``pareto.csv``; empty when not searched)."""
        return "" if self.bits is None else json.dumps(self.bits.to_dict(), separators=(",", ":"))
