"""affectlens: does a language model's kaomoji track its internal state?

The public API is a few names: ``load_model``, ``elicit``, ``likelihood``, ``vectors``, ``analyze``,
``report``. They are imported on first use, so that ``import affectlens.stats`` (or a worker process) does not
pay for torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "affectlens.runtime.loading",
    "elicit": "affectlens.stages.elicit",
    "ElicitConfig": "affectlens.stages.elicit",
    "likelihood": "affectlens.stages.likelihood",
    "LikelihoodConfig": "affectlens.stages.likelihood",
    "vectors": "affectlens.stages.vectors",
    "analyze": "affectlens.analysis.kaomoji",
    "compare": "affectlens.analysis.encoders",
    "report": "affectlens.report.build",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "report":
        return import_module("affectlens.report.build").build_report
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'affectlens' has no attribute {name!r}")
