"""effnn: training extensions for efficient neural networks on Lightning + Hydra."""

from effnn.errors import EffnnError

__version__ = "0.1.0"

__all__ = ["EffnnError", "__version__"]
