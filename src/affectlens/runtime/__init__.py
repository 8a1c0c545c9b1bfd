"""Model runtime: loading (hub, folder, GGUF, bundled aliases, weight cache), architectures, capture."""

from affectlens.runtime.arch import resolve
from affectlens.runtime.capture import Capture, LastToken, TokenMean, capture
from affectlens.runtime.loading import BUNDLED, ModelHandle, load_model

__all__ = [
    "BUNDLED",
    "Capture",
    "LastToken",
    "ModelHandle",
    "TokenMean",
    "capture",
    "load_model",
    "resolve",
]
