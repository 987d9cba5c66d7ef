"""effnn: training extensions for efficient neural networks on Lightning + Hydra.

``import effnn`` stays light (no torch): it registers the structured-config schemas Hydra validates the
shipped configs against (:mod:`effnn.config`) and exposes ``effnn.load_exported``, imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from effnn.config import register_schemas
from effnn.errors import EffnnError

__version__ = "0.1.0"

__all__ = ["EffnnError", "__version__", "load_exported"]

register_schemas()


def __getattr__(name: str) -> Any:
    """``effnn.load_exported``: looked up in :mod:`effnn.export.artifact` on first access (it imports torch)."""
    if name == "load_exported":
        return importlib.import_module("effnn.export.artifact").load_exported
    raise AttributeError(f"module 'effnn' has no attribute {name!r}")
