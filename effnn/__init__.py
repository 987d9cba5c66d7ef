"""effnn: training extensions for efficient neural networks on Lightning + Hydra."""

from effnn.errors import EffnnError
from effnn.export import effnn_getattr as __getattr__  # noqa: F401 -- lazy effnn.load_exported

__version__ = "0.1.0"

__all__ = ["EffnnError", "__version__"]
