"""Export subnets of a trained supernet (static PyTorch model, torch.export/TorchScript, ONNX) and load them.

The public names are imported on first use, so importing this package stays free of torch until an
export is actually used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_exported": "effnn.export.artifact",
    "read_arch_file": "effnn.export.artifact",
    "ExportError": "effnn.export.exporter",
    "ExportResult": "effnn.export.exporter",
    "export_subnet": "effnn.export.exporter",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

