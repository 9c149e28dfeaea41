"""Simulated clustered data with a planted intraclass correlation (for :func:`crve.certify`,
power checks and teaching).

``y_ig = beta x_ig + a_g + e_ig`` with ``Var(a_g) = icc`` and ``Var(e_ig) = 1 - icc`` (total
variance one, so ``icc = Var(a) / (Var(a) + Var(e))``). The regressor is a treatment assigned
to whole clusters or to individuals, or a continuous variable with its own intraclass
correlation.

>>> from crve.simulate import clustered
>>> df = clustered(G=20, sizes=10, icc=0.1, seed=1)
>>> df.shape, sorted(df.columns)
((200, 3), ['cluster', 'x', 'y'])
>>> int(df.groupby("cluster").x.nunique().max())   # treatment assigned to whole clusters
1
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["clustered", "ClusteredDGP"]

_TREATMENTS = ("cluster", "individual", "continuous")


def _sizes(sizes: Any, G: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster sizes: an int (all equal), a sequence of G ints, a scipy.stats distribution (its
    ``rvs``), or a callable ``f(rng, G)``; drawn sizes below 1 become 1."""
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
        if sizes < 1:
            raise ValueError(f"cluster size must be at least 1; got {sizes}")
        return np.full(G, int(sizes), dtype=np.int64)
    if hasattr(sizes, "rvs"):
        drawn = np.asarray(sizes.rvs(size=G, random_state=rng))
    elif callable(sizes):
        drawn = np.asarray(sizes(rng, G))
    else:
        drawn = np.asarray(sizes)
        if drawn.shape != (G,):
            raise ValueError(f"sizes must be an int, {G} ints, a scipy.stats distribution or a callable(rng, G); "
                             f"got shape {drawn.shape}")
        if not np.all(np.isfinite(drawn)) or np.any(drawn < 1) or np.any(drawn != np.round(drawn)):
            raise ValueError("explicit cluster sizes must be whole numbers of at least 1")
    if drawn.shape != (G,):
        raise ValueError(f"the size distribution returned shape {drawn.shape}, expected ({G},)")
    return np.maximum(np.round(drawn), 1).astype(np.int64)


@dataclass(frozen=True)
class ClusteredDGP:
    """A validated data-generating process; :meth:`draw` returns arrays ``(y, x, codes)``."""

    G: int
    sizes: Any = 30
    icc: float = 0.0
    beta: float = 0.0
    treatment: str = "cluster"
    treated: int | None = None
    share: float = 0.5
    balanced: bool = True
    x_icc: float = 0.5
    het: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.G, (int, np.integer)) or isinstance(self.G, bool) or self.G < 1:
            raise ValueError(f"G (number of clusters) must be a positive int; got {self.G!r}")
        if not 0 <= self.icc < 1:
            raise ValueError(f"icc must lie in [0, 1); got {self.icc}")
        if self.treatment not in _TREATMENTS:
            raise ValueError(f"treatment must be one of {_TREATMENTS}; got {self.treatment!r}")
        if not 0 < self.share < 1:
            raise ValueError(f"share (treated fraction) must lie in (0, 1); got {self.share}")
        if self.treated is not None:
            if self.treatment != "cluster":
                raise ValueError("treated (a number of treated clusters) applies to treatment='cluster'")
            if not 1 <= self.treated <= self.G - 1:
                raise ValueError(f"treated must be between 1 and G - 1 = {self.G - 1}; got {self.treated}")
        if not 0 <= self.x_icc <= 1:
            raise ValueError(f"x_icc must lie in [0, 1]; got {self.x_icc}")
        if self.het < 0 or not np.isfinite(self.het):
            raise ValueError(f"het must be a finite number >= 0; got {self.het}")

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        G = int(self.G)
        n = _sizes(self.sizes, G, rng)
        codes = np.repeat(np.arange(G, dtype=np.int64), n)
        N = len(codes)
        if self.treatment == "cluster":
            k = self.treated if self.treated is not None else int(round(self.share * G))
            k = min(max(k, 1), G - 1) if G > 1 else k
            if self.balanced or self.treated is not None:
                tc = np.zeros(G)
                tc[rng.permutation(G)[:k]] = 1.0
            else:
                tc = (rng.random(G) < self.share).astype(float)
            x = tc[codes]
        elif self.treatment == "individual":
            if self.balanced:
                # Within each cluster round(share * n_g) treated rows, in random positions.
                order = np.lexsort((rng.random(N), codes))
                start = np.concatenate([[0], np.cumsum(n)[:-1]])
                rank = np.empty(N, dtype=np.int64)
                rank[order] = np.arange(N) - np.repeat(start, n)
                x = (rank < np.round(self.share * n)[codes]).astype(float)
            else:
                x = (rng.random(N) < self.share).astype(float)
        else:
            x = np.sqrt(self.x_icc) * rng.standard_normal(G)[codes] + np.sqrt(1 - self.x_icc) * rng.standard_normal(N)
        a = np.sqrt(self.icc) * rng.standard_normal(G)
        e = np.sqrt(1 - self.icc) * rng.standard_normal(N)
        if self.het:
            e *= np.sqrt(1 + self.het * x * x)
        y = self.beta * x + a[codes] + e
        return y, x, codes


def clustered(G: int, sizes: Any = 30, icc: float = 0.0, beta: float = 0.0, *, treatment: str = "cluster",
              treated: int | None = None, share: float = 0.5, balanced: bool = True, x_icc: float = 0.5,
              het: float = 0.0, seed: Any = None) -> Any:
    """One simulated data set as a pandas DataFrame with columns ``y``, ``x``, ``cluster``.

    Parameters
    ----------
    G : int
        Number of clusters.
    sizes : int, sequence, scipy.stats distribution or callable
        Rows per cluster: fixed (an int), given (G ints), or drawn (``scipy.stats.poisson(36)``,
        or ``f(rng, G)``); drawn sizes below 1 become 1.
    icc : float
        Intraclass correlation of the errors, ``Var(a) / (Var(a) + Var(e))`` with total variance 1.
    beta : float
        Effect of ``x`` (0: an A/A test).
    treatment : {"cluster", "individual", "continuous"}
        ``"cluster"``: a 0/1 treatment constant within clusters (``treated`` clusters, default
        ``round(share * G)``; ``balanced=False`` draws each cluster with probability ``share``).
        ``"individual"``: a 0/1 treatment per row, ``round(share * n_g)`` treated rows in every
        cluster (``balanced=False``: independent draws with probability ``share``).
        ``"continuous"``: a standard normal regressor whose intraclass correlation is ``x_icc``.
    het : float
        Heteroskedasticity: the idiosyncratic error's variance is multiplied by ``1 + het x^2``
        (the planted icc then holds where x = 0).
    seed : int, sequence or numpy Generator
        Same seed, same data.

    The data frame's ``attrs`` record the design.
    """
    import pandas as pd

    design = ClusteredDGP(G=G, sizes=sizes, icc=icc, beta=beta, treatment=treatment, treated=treated, share=share,
                    balanced=balanced, x_icc=x_icc, het=het)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    y, x, codes = design.draw(rng)
    df = pd.DataFrame({"y": y, "x": x, "cluster": codes})
    df.attrs.update({"icc": icc, "beta": beta, "treatment": treatment, "G": G})
    return df
