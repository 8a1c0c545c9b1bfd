"""affectlens: does a language model's kaomoji track its internal state?

The public API is a few names: ``load_model``, ``elicit``; see the README.
"""

__version__ = "0.1.0"

from affectlens.runtime.loading import load_model  # noqa: E402
from affectlens.stages.elicit import ElicitConfig, elicit  # noqa: E402

__all__ = ["ElicitConfig", "__version__", "elicit", "load_model"]
