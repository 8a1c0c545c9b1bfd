"""What every emotion-vector analysis shares: the headline-layer rule's wording, unit vectors, one BLAS limiter."""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

# The wording emotions.json has always carried; affectlens.conventions.headline_layer applies the rule.
LAYER_RULE = "round(2/3 * (n_layers - 1)), or the stored layer nearest to it"
# Built once (discovering BLAS libraries costs milliseconds); fits this small run fastest on one thread.
THREADPOOLS = ThreadpoolController()


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
