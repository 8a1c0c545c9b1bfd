"""A 2-D UMAP layout of activations coloured by label: a picture to look at, never a source of numbers.

UMAP distorts distances and cluster sizes, so no statistic anywhere is read from it; captions must say so.
``umap`` (with numba) is imported only when a figure is drawn: the first fit in a process compiles for
about 15 s on this machine, later ones take well under a second at these sizes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure as MplFigure

MIN_ROWS = 10  # below this a neighbour graph is mostly noise: no figure
PCA_DIMS = 50  # UMAP runs on this many principal components of the standardised rows
OTHER = "#919191"  # a label missing from ``colours``
CAPTION = (
    "UMAP places points so that near neighbours stay near; distances between groups, their sizes and their "
    "spread carry no meaning, so this figure is for looking only: no number in this report is read from it."
)


def embed(
    X: np.ndarray, *, seed: int = 0, n_neighbors: int = 15, n_epochs: int | None = None
) -> np.ndarray | None:
    """[n, 2] UMAP coordinates of the rows of ``X`` ([n, d]), or None with fewer than ``MIN_ROWS`` rows.

    Each column is centred and scaled to unit variance (a residual stream has a few huge dimensions that
    would otherwise decide every neighbour; constant columns are dropped), then reduced to at most
    ``PCA_DIMS`` principal components. The fit is single-threaded with a fixed ``random_state``, so the
    layout repeats exactly.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n < MIN_ROWS:
        return None
    X = X.reshape(n, -1)
    sd = X.std(axis=0)
    Z = (X[:, sd > 0] - X[:, sd > 0].mean(axis=0)) / sd[sd > 0]
    if Z.shape[1] == 0:
        return None
    k = min(PCA_DIMS, n - 1, Z.shape[1])
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    Z = u[:, :k] * s[:k]

    import umap  # lazily: numba and pynndescent take seconds to import

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, n - 1),
        min_dist=0.1,
        n_epochs=n_epochs,
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # Small, well-separated groups leave the graph disconnected; the spectral start then warns, and
        # the layout is still a fine picture.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return np.asarray(reducer.fit_transform(Z), dtype=np.float64)


def umap_figure(
    X: np.ndarray,
    labels: Sequence[str],
    colours: dict[str, str],
    title: str,
    *,
    seed: int = 0,
    n_epochs: int | None = None,
    legend_title: str | None = None,
) -> MplFigure | None:
    """A UMAP scatter of the rows of ``X`` coloured by ``labels``, with a legend in ``colours``' order.

    ``colours``: label -> colour; labels missing from it are grey and listed last. None with fewer than
    ``MIN_ROWS`` rows (nothing drawn). The axes have no ticks: UMAP coordinates have no unit.
    """
    labels = [str(label) for label in labels]
    if len(labels) != len(X):
        raise ValueError(f"{len(labels)} labels for {len(X)} rows")
    xy = embed(X, seed=seed, n_epochs=n_epochs)
    if xy is None:
        return None
    present = set(labels)
    order = [lab for lab in colours if lab in present] + sorted(present - set(colours))
    fig = MplFigure(figsize=(8.5, 6.4), layout="constrained")
    ax = fig.subplots()
    labels_arr = np.asarray(labels)
    for lab in order:
        rows = labels_arr == lab
        ax.scatter(
            xy[rows, 0],
            xy[rows, 1],
            s=28,
            color=colours.get(lab, OTHER),
            edgecolors="black",
            linewidths=0.3,
            label=f"{lab} ({int(rows.sum())})",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title)
    ax.legend(
        title=legend_title,
        fontsize=7,
        title_fontsize=8,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        ncols=2 if len(order) > 14 else 1,
        frameon=False,
    )
    return fig
