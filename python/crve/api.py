"""The array-level entry point."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._inputs import Design, as_design
from .results import Result, _Data
from .stats import ClusterStats

__all__ = ["cluster_robust"]


def cluster_robust(y: Any, X: Any, clusters: Any = None, *, variant: str = "CV1", dof: Any = "auto",
                   names: Sequence[str] | None = None, threads: int | None = None) -> Result:
    """OLS of y on X with a cluster-robust (or heteroskedasticity-robust / classical) covariance.

    Parameters
    ----------
    y : array-like, shape (N,)
    X : array-like, shape (N, K)
        The full design, intercept included if wanted. Any float64 layout is read in place (no
        copy); other numeric dtypes are converted once. DataFrame column names become ``names``.
    clusters : array-like, shape (N,), optional
        Cluster labels of any type (ints, floats, strings, pandas categorical). ``None``: every
        row is its own cluster (CV0/CV1/CV2 then equal HC0/HC1/HC2; CV3 = (N-1)/N HC3).
    variant : str
        "iid", "HC0".."HC3", "CV0", "CV1" (alias "stata"), "CV2" (alias "CR2"), "CV3", "CV3J";
        case-insensitive.
    dof : str or float
        "auto" (G-1 for CV0/CV1/CV3/CV3J, "satterthwaite" for CV2, N-K for iid and HC),
        "G-1", "satterthwaite", "N-K", "normal", or a number.
    names : sequence of str, optional
        Coefficient names; results are then pandas Series.
    threads : int, optional
        Threads for the core (default: all cores). Results do not depend on it.

    Returns
    -------
    Result

    Examples
    --------
    >>> import numpy as np, crve
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(20), 25)
    >>> X = np.column_stack([np.ones(500), rng.normal(size=500)])
    >>> y = X @ [1.0, 0.5] + rng.normal(size=20)[g] + rng.normal(size=500)
    >>> res = crve.cluster_robust(y, X, g, variant="CV2")
    >>> res.n_clusters, round(float(res.params[1]), 3)
    (20, 0.363)
    """
    d = as_design(y, X, clusters, names)
    return fit_design(d, variant, dof, threads, named=names is not None or hasattr(X, "columns"))


def fit_design(d: Design, variant: str, dof: Any, threads: int | None, named: bool) -> Result:
    """One pass over the rows of a validated design, then the requested covariance."""
    N, K = d.X.shape
    if N <= K:
        raise ValueError(f"need more rows than columns: N = {N}, K = {K} ({', '.join(d.names)})")
    singletons = d.codes is None
    codes = d.codes
    if singletons:  # one block for X'X; the variance comes from a pass over the rows
        d.codes = np.zeros(N, dtype=np.int64)
        d.labels = np.zeros(1, dtype=np.int64)
        d.n_slots = 1
    stats = ClusterStats._build(d, threads)
    if not singletons and stats.n_clusters < 2:
        raise ValueError(f"need at least 2 clusters for cluster-robust inference; got {stats.n_clusters}")
    return Result._from_stats(stats, variant=variant, dof=dof, data=_Data(d.y, d.X, codes), singletons=singletons,
                              threads=threads, named=named, design=d)
