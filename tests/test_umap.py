"""The UMAP figure: drawn for enough rows, repeatable, coloured and captioned as a picture, skipped for few rows."""

from __future__ import annotations

import numpy as np
import pytest

from affectlens.reporting.figures.umap import CAPTION, MIN_ROWS, embed, umap_figure


def _blobs(n_per: int = 8, d: int = 24, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 4
    labels = np.repeat(np.arange(3), n_per)
    X = centres[labels] + rng.normal(size=(len(labels), d))
    X[:, 0] *= 1000  # one huge dimension, as a residual stream has: standardising keeps it from deciding
    X[:, 1] = 7.0  # a constant column is dropped, not divided by zero
    return X, [f"c{i}" for i in labels]


def test_embed_is_repeatable_and_skips_few_rows():
    X, _ = _blobs()
    a, b = embed(X, n_epochs=30), embed(X, n_epochs=30)
    assert a.shape == (24, 2) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)  # fixed random_state, one thread
    assert embed(X[: MIN_ROWS - 1], n_epochs=30) is None
    assert embed(np.ones((12, 5)), n_epochs=30) is None  # every column constant: nothing to lay out


def test_umap_figure_colours_by_label_with_a_legend():
    X, labels = _blobs()
    colours = {"c2": "#ff0000", "c0": "#00ff00"}  # c1 missing: grey, listed last
    fig = umap_figure(X, labels, colours, "test", n_epochs=30, legend_title="cell")
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["c2 (8)", "c0 (8)", "c1 (8)"]
    assert legend.get_title().get_text() == "cell" and ax.get_title() == "test"
    faces = [tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in ax.collections]
    assert faces[0] == (1.0, 0.0, 0.0) and faces[2] == pytest.approx((0.569, 0.569, 0.569), abs=1e-3)
    assert umap_figure(X[:5], labels[:5], colours, "few") is None
    with pytest.raises(ValueError, match="labels"):
        umap_figure(X, labels[:-1], colours, "mismatch")
    assert "no number in this report is read from it" in CAPTION
