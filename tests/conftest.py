"""Shared helpers: random designs that exercise every degenerate corner the estimators have."""
from __future__ import annotations

import numpy as np
import pytest


def make_design(seed: int, N: int = 150, G: int = 18, K: int = 4, *, singletons: int = 3,
                cluster_level: bool = True, offset: float = 0.0, string_labels: bool = False):
    """y, X (intercept first), clusters: unequal cluster sizes, some singleton clusters,
    an optional cluster-level regressor, rows shuffled (not sorted by cluster)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 2 * N // G, size=G - singletons)
    sizes = np.concatenate([sizes, np.ones(singletons, dtype=int)])
    g = np.repeat(np.arange(G), sizes)
    N = g.size
    X = np.column_stack([np.ones(N), rng.normal(size=(N, K - 1)) + offset])
    if cluster_level:
        X[:, K - 1] = rng.normal(size=G)[g] + offset
    y = X @ rng.normal(size=K) + rng.normal(size=G)[g] + rng.normal(size=N) * (1 + np.abs(X[:, 1]))
    perm = rng.permutation(N)
    y, X, g = y[perm], X[perm], g[perm]
    if string_labels:
        g = np.array([f"c{v:03d}" for v in g], dtype=object)
    return y, X, g


@pytest.fixture(params=[0, 1, 2])
def design(request):
    return make_design(request.param, offset=[0.0, 50.0, 0.0][request.param],
                       string_labels=request.param == 2)
