"""Brute-force wild (cluster) bootstrap for small data: build y* row by row, refit OLS, and
recompute the covariance from the rows (CV1 from the residuals, CV3 from G leave-one-cluster-out
refits). Independent of crve's algebra on cluster statistics; used to check it to 1e-10.
"""
from __future__ import annotations

import numpy as np


def _fit(X: np.ndarray, y: np.ndarray, R: np.ndarray, r: np.ndarray, restricted: bool) -> np.ndarray:
    """OLS of y on X, optionally subject to R b = r (pseudo-inverse: leave-outs may be singular)."""
    A = np.linalg.pinv(X.T @ X)
    b = A @ X.T @ y
    if restricted:
        b = b - A @ R.T @ np.linalg.solve(R @ A @ R.T, R @ b - r)
    return b


def _cov(X: np.ndarray, y: np.ndarray, b: np.ndarray, var: np.ndarray, stud: str) -> np.ndarray:
    N, K = X.shape
    groups = np.unique(var)
    G = len(groups)
    if stud == "1":
        A = np.linalg.inv(X.T @ X)
        u = y - X @ b
        S = np.array([X[var == g].T @ u[var == g] for g in groups])
        return G / (G - 1) * (N - 1) / (N - K) * A @ S.T @ S @ A
    D = np.array([_fit(X[var != g], y[var != g], None, None, False) - b for g in groups])
    return (G - 1) / G * D.T @ D


def dense_wild(y, X, var, boot, R, r, V, *, impose_null=True, bootstrap_type="11"):
    """(sample statistic, bootstrap statistics) with weights V (B x G_boot, column j = boot code j).

    One restriction: t statistics; several: Wald Q/q. Under WCU the bootstrap numerator is centred
    at the DGP's R b."""
    R = np.atleast_2d(np.asarray(R, float))
    r = np.atleast_1d(np.asarray(r, float))
    q = R.shape[0]
    dgp, stud = bootstrap_type
    b_hat = _fit(X, y, R, r, False)
    b_dgp = _fit(X, y, R, r, impose_null)
    if dgp == "1":
        u = y - X @ b_dgp
    else:  # residuals of the leave-one-bootstrap-cluster-out fits
        u = np.empty_like(y)
        for c in np.unique(boot):
            out = boot == c
            u[out] = y[out] - X[out] @ _fit(X[~out], y[~out], R, r, impose_null)

    def stat(yy, b, centre):
        d = R @ b - centre
        Vr = R @ _cov(X, yy, b, var, stud) @ R.T
        return d[0] / np.sqrt(Vr[0, 0]) if q == 1 else float(d @ np.linalg.solve(Vr, d)) / q

    sample = stat(y, b_hat, r)
    centre = r if impose_null else R @ b_dgp
    star = np.array([stat(ys, _fit(X, ys, R, r, False), centre)
                     for ys in (X @ b_dgp + v[boot] * u for v in V)])
    return sample, star
