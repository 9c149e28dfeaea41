"""Tail probabilities and quantiles of the t, F and chi-squared distributions.

These are the scipy.special functions that scipy.stats itself evaluates (the same numbers, edge
cases included: an infinite df gives the normal limit), without importing scipy.stats, which
costs about half a second at ``import crve``. scipy.special itself is imported on the first call
(0.2-0.3 s: its array-API layer imports numpy.f2py and numpy.testing), so standard errors,
statistics and the bootstrap never wait for it.

>>> round(float(t_sf(1.96, float("inf"))), 6), round(float(t_ppf(0.975, 10)), 6)
(0.024998, 2.228139)
"""
from __future__ import annotations

from typing import Any


def _special() -> Any:
    from scipy import special

    return special


def t_sf(x, df):
    """P(T > x) for Student's t with ``df`` degrees of freedom (scipy.stats.t.sf)."""
    return _special().stdtr(df, -x)


def t_ppf(q, df):
    """The q quantile of Student's t (scipy.stats.t.ppf)."""
    return _special().stdtrit(df, q)


def chi2_sf(x, k):
    """P(X > x) for chi-squared with k degrees of freedom (scipy.stats.chi2.sf)."""
    return _special().chdtrc(k, x)


def f_sf(x, d1, d2):
    """P(F > x) for F(d1, d2) (scipy.stats.f.sf)."""
    return _special().fdtrc(d1, d2, x)
