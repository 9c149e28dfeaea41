"""Dense reference implementation of the estimators offered by ``crve``.

Everything here is deliberately naive: every N_g x N_g block (and often the full
N x N residual-maker ``I - H``) is formed explicitly, and the jackknife (CV3,
CV3J) literally refits OLS without each cluster.  It is meant for N up to a few
hundred and exists only so that the test suite can check the fast C++
implementation against something that is obviously correct.

Notation (used in every docstring)
----------------------------------
* ``y``: (N,) response, ``X``: (N, K) design of full column rank.
* ``A = (X'X)^{-1}``; ``beta = A X'y``; ``u = y - X beta`` (OLS residuals).
* ``H = X A X'`` (hat matrix), ``h_ii`` its diagonal, ``I - H`` the residual maker.
* Clusters ``g = 1..G`` (labels may be any hashable values, rows need not be
  sorted); ``X_g``, ``u_g`` are the rows of cluster ``g``; ``N_g`` its size.
* ``H_gg = X_g A X_g'`` (the diagonal block of ``H``), ``M_gg = I - H_gg``.
* ``(I - H)_{gk} = delta_{gk} I - X_g A X_k'`` (off-diagonal blocks of I - H).

Sources
-------
* HC0-HC3: White (1980); MacKinnon & White (1985); as implemented by R's
  ``sandwich::vcovHC`` and statsmodels ``OLS.fit(cov_type="HCx")``.
* CV0/CV1: Liang & Zeger (1986); CV1 factor as in Stata / statsmodels
  ``cov_type="cluster"`` (``G/(G-1) * (N-1)/(N-K)``) and clubSandwich "CR1S".
* CV2: Bell & McCaffrey (2002), "CR2"; Pustejovsky & Tipton (2018, JBES).
  Matches clubSandwich 0.5.8 ``vcovCR(lm, type="CR2")`` (working model I).
* CV3/CV3J: jackknife, MacKinnon, Nielsen & Webb (2023, J. Econometrics,
  "Cluster-robust inference: a guide to empirical practice");
  clubSandwich's "CR3" equals ``G/(G-1) * CV3`` (uncentered, no (G-1)/G).
* Satterthwaite dof and HTZ test: Bell & McCaffrey (2002); Pustejovsky &
  Tipton (2018); formulas transcribed from clubSandwich 0.5.8 (``get_GH``,
  ``get_P_array``, ``Satterthwaite``, ``Wald_testing``,
  ``total_variance_mat``, ``Hotelling_Tsq``) for an unweighted ``lm``, for
  which clubSandwich uses ``inverse_var = TRUE`` and working model Phi = I.

Pseudo-inverse convention
-------------------------
Symmetric matrix powers use the eigen-decomposition and map eigenvalues
``<= PINV_TOL`` (absolute, 1e-12) to 0 -- exactly clubSandwich's
``matrix_power(x, p, tol = -12)``.  This is how clusters with leverage one
(``M_gg`` singular, e.g. a singleton cluster with its own dummy) are handled in
CV2, and, for consistency (so that CV2 with singleton clusters equals HC2),
how ``1/sqrt(1 - h_ii)`` and ``1/(1 - h_ii)`` are treated in HC2/HC3 when
``1 - h_ii <= 1e-12`` (R's sandwich and statsmodels give NaN/Inf there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "ols",
    "hat_matrix",
    "cluster_indices",
    "sym_power",
    "vcov",
    "cluster_adjustments",
    "satterthwaite_matrix",
    "satterthwaite_dof",
    "satterthwaite_t_test",
    "htz_test",
    "naive_f_test",
    "chi2_test",
    "WaldResult",
    "TResult",
    "VARIANTS",
]

PINV_TOL = 1e-12

VARIANTS = ("iid", "HC0", "HC1", "HC2", "HC3", "CV0", "CV1", "CV2", "CV3", "CV3J")


# --------------------------------------------------------------------------
# basic building blocks
# --------------------------------------------------------------------------
def _as_arrays(y, X):
    y = np.asarray(y, dtype=float).reshape(-1)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.shape[0] != y.shape[0]:
        raise ValueError("X and y have different numbers of rows")
    return y, X


def ols(y, X):
    """Ordinary least squares.

    beta = (X'X)^{-1} X'y,  u = y - X beta,  A = (X'X)^{-1}.

    ``A`` is the explicit inverse of ``X'X`` (``np.linalg.inv``); ``X`` must
    have full column rank (a ValueError is raised otherwise).

    Returns
    -------
    beta : (K,) ndarray
    residuals : (N,) ndarray
    A : (K, K) ndarray, (X'X)^{-1}
    """
    y, X = _as_arrays(y, X)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("X does not have full column rank")
    A = np.linalg.inv(X.T @ X)
    A = 0.5 * (A + A.T)
    beta = A @ (X.T @ y)
    resid = y - X @ beta
    return beta, resid, A


def hat_matrix(X):
    """H = X (X'X)^{-1} X' (dense N x N)."""
    X = np.asarray(X, dtype=float)
    A = np.linalg.inv(X.T @ X)
    return X @ A @ X.T


def cluster_indices(clusters):
    """List of integer index arrays, one per distinct cluster label.

    Clusters are ordered by ``np.unique`` of the labels (irrelevant for every
    statistic here: all of them are sums or traces over clusters).
    """
    clusters = np.asarray(clusters)
    if clusters.ndim != 1:
        raise ValueError("clusters must be one-dimensional")
    _, inv = np.unique(clusters, return_inverse=True)
    inv = inv.reshape(-1)
    return [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]


def sym_power(S, p, tol=PINV_TOL):
    """Symmetric matrix power S^p = V diag(lambda^p) V' via ``eigh``.

    Eigenvalues ``lambda <= tol`` (absolute) are mapped to 0, so for p < 0
    this is the Moore-Penrose pseudo-inverse power.  Identical to
    clubSandwich's ``matrix_power(x, p, tol = -12)``.
    """
    S = np.asarray(S, dtype=float)
    S = 0.5 * (S + S.T)
    lam, V = np.linalg.eigh(S)
    lam_p = np.zeros_like(lam)
    keep = lam > tol
    lam_p[keep] = lam[keep] ** p
    return (V * lam_p) @ V.T


def _jackknife_betas(y, X, idx):
    """beta_(g): OLS refitted without the rows of cluster g, for every g.

    Literal refit with ``np.linalg.lstsq``.  Raises ValueError if dropping a
    cluster leaves a rank-deficient design (the jackknife is then not
    identified; clubSandwich's CR3 also fails there: ``solve`` of a singular
    I - H_gg).
    """
    N, K = X.shape
    out = np.empty((len(idx), K))
    for g, rows in enumerate(idx):
        keep = np.ones(N, dtype=bool)
        keep[rows] = False
        Xg, yg = X[keep], y[keep]
        if np.linalg.matrix_rank(Xg) < K:
            raise ValueError(
                f"dropping cluster {g} leaves a rank-deficient design; "
                "CV3/CV3J not defined"
            )
        out[g] = np.linalg.lstsq(Xg, yg, rcond=None)[0]
    return out


# --------------------------------------------------------------------------
# variance estimators
# --------------------------------------------------------------------------
def vcov(y, X, clusters=None, variant="CV1"):
    """Variance-covariance matrix of the OLS coefficients (dense reference).

    With A = (X'X)^{-1}, u the OLS residuals, h_ii = [X A X']_ii:

    * ``"iid"``:  s^2 A,  s^2 = u'u / (N - K).
    * ``"HC0"``:  A (sum_i x_i x_i' u_i^2) A.                  [White 1980]
    * ``"HC1"``:  N/(N-K) * HC0.                              [MacKinnon-White 1985]
    * ``"HC2"``:  HC0 with u_i -> u_i / sqrt(1 - h_ii).
    * ``"HC3"``:  HC0 with u_i -> u_i / (1 - h_ii).
    * ``"CV0"``:  A (sum_g X_g' u_g u_g' X_g) A.              [Liang-Zeger 1986]
    * ``"CV1"``:  G/(G-1) * (N-1)/(N-K) * CV0.   (= statsmodels "cluster",
      Stata, clubSandwich "CR1S")
    * ``"CV2"``:  A (sum_g X_g' M_gg^{-1/2} u_g u_g' M_gg^{-1/2} X_g) A,
      M_gg = I - X_g A X_g', M_gg^{-1/2} the symmetric (pseudo-)inverse square
      root (eigenvalues <= 1e-12 -> 0).  [Bell-McCaffrey 2002; = clubSandwich
      "CR2" for an unweighted lm]
    * ``"CV3"``:  (G-1)/G * sum_g (beta_(g) - beta)(beta_(g) - beta)',
      beta_(g) = OLS without cluster g (literal refit).  [MacKinnon, Nielsen &
      Webb 2023]  clubSandwich "CR3" = G/(G-1) * CV3.
    * ``"CV3J"``: (G-1)/G * sum_g (beta_(g) - bbar)(beta_(g) - bbar)',
      bbar = (1/G) sum_g beta_(g).

    For HC2/HC3, ``1/sqrt(1-h_ii)`` and ``1/(1-h_ii)`` are set to 0 when
    ``1 - h_ii <= 1e-12`` (leverage one; u_i = 0 there anyway).

    ``clusters`` is ignored for iid/HC*.
    """
    y, X = _as_arrays(y, X)
    N, K = X.shape
    beta, u, A = ols(y, X)

    if variant == "iid":
        s2 = (u @ u) / (N - K)
        return s2 * A

    if variant in ("HC0", "HC1", "HC2", "HC3"):
        h = np.diag(hat_matrix(X))
        one_minus_h = 1.0 - h
        ok = one_minus_h > PINV_TOL
        if variant in ("HC0", "HC1"):
            w = np.ones(N)
        elif variant == "HC2":
            w = np.where(ok, 1.0 / np.sqrt(np.where(ok, one_minus_h, 1.0)), 0.0)
        else:
            w = np.where(ok, 1.0 / np.where(ok, one_minus_h, 1.0), 0.0)
        ut = w * u
        meat = np.zeros((K, K))
        for i in range(N):
            meat += np.outer(X[i], X[i]) * ut[i] ** 2
        V = A @ meat @ A
        if variant == "HC1":
            V *= N / (N - K)
        return 0.5 * (V + V.T)

    if clusters is None:
        raise ValueError(f"variant {variant!r} needs clusters")
    idx = cluster_indices(clusters)
    G = len(idx)
    if len(np.asarray(clusters)) != N:
        raise ValueError("clusters has the wrong length")

    if variant in ("CV3", "CV3J"):
        if G < 2:
            raise ValueError("need at least two clusters")
        betas = _jackknife_betas(y, X, idx)
        center = beta if variant == "CV3" else betas.mean(axis=0)
        V = np.zeros((K, K))
        for g in range(G):
            d = betas[g] - center
            V += np.outer(d, d)
        return (G - 1) / G * V

    if variant in ("CV0", "CV1", "CV2"):
        meat = np.zeros((K, K))
        for rows in idx:
            Xg, ug = X[rows], u[rows]
            if variant == "CV2":
                Mgg = np.eye(len(rows)) - Xg @ A @ Xg.T
                ug = sym_power(Mgg, -0.5) @ ug
            s = Xg.T @ ug
            meat += np.outer(s, s)
        V = A @ meat @ A
        if variant == "CV1":
            V *= G / (G - 1) * (N - 1) / (N - K)
        return 0.5 * (V + V.T)

    raise ValueError(f"unknown variant {variant!r}")


# --------------------------------------------------------------------------
# Satterthwaite / HTZ machinery (clubSandwich, working model Phi = I)
# --------------------------------------------------------------------------
def cluster_adjustments(X, clusters, variant="CV2"):
    """Per-cluster adjustment matrices Adj_g (N_g x N_g) with

        V_variant = A (sum_g X_g' Adj_g u_g u_g' Adj_g X_g) A

    (all Adj_g are symmetric here).  Conventions (crve names):

    * CV0: Adj_g = I
    * CV1: Adj_g = sqrt(G/(G-1) * (N-1)/(N-K)) I        (clubSandwich CR1S)
    * CV2: Adj_g = M_gg^{-1/2} (pseudo-inverse sqrt)      (clubSandwich CR2)
    * CV3: Adj_g = sqrt((G-1)/G) M_gg^{-1}                (clubSandwich CR3 has
      no sqrt((G-1)/G); M_gg^{-1} via np.linalg.inv, an error where singular,
      as in clubSandwich which calls ``solve``)

    Uses the identity beta_(g) - beta = -A X_g' M_gg^{-1} u_g, so CV3 here
    equals the refit definition in :func:`vcov` (tested in the test suite).

    Returns a list of (rows, Adj_g) pairs in :func:`cluster_indices` order.
    """
    X = np.asarray(X, dtype=float)
    N, K = X.shape
    A = np.linalg.inv(X.T @ X)
    idx = cluster_indices(clusters)
    G = len(idx)
    out = []
    for rows in idx:
        Xg = X[rows]
        ng = len(rows)
        if variant == "CV0":
            adj = np.eye(ng)
        elif variant == "CV1":
            adj = np.sqrt(G / (G - 1) * (N - 1) / (N - K)) * np.eye(ng)
        elif variant == "CV2":
            adj = sym_power(np.eye(ng) - Xg @ A @ Xg.T, -0.5)
        elif variant == "CV3":
            adj = np.sqrt((G - 1) / G) * np.linalg.inv(np.eye(ng) - Xg @ A @ Xg.T)
        else:
            raise ValueError(f"no adjustment matrices for variant {variant!r}")
        out.append((rows, adj))
    return out


def _g_matrix(X, adjs, c):
    """N x G matrix Gm whose column g is zero outside cluster g and equals

        g_g = Adj_g X_g A c      on the rows of cluster g.

    Then c' V c = || Gm' u ||^2 (the variance estimate of c'beta).
    """
    X = np.asarray(X, dtype=float)
    A = np.linalg.inv(X.T @ X)
    c = np.asarray(c, dtype=float).reshape(-1)
    Gm = np.zeros((X.shape[0], len(adjs)))
    for g, (rows, adj) in enumerate(adjs):
        Gm[rows, g] = adj @ (X[rows] @ (A @ c))
    return Gm


def satterthwaite_matrix(X, clusters, c, variant="CV2"):
    """The G x G matrix P (clubSandwich's ``P_array[, , coef]``) for contrast c:

        P_{gk} = g_g' (I - H)_{gk} g_k ,   g_g = Adj_g X_g A c,
        (I - H)_{gk} = delta_{gk} I - X_g A X_k',

    i.e. P = Gm' (I - H) Gm with Gm from :func:`_g_matrix`.  Under the working
    model u ~ (0, sigma^2 (I - H)) (errors iid), c'Vc = u' Gm Gm' u has
    E = sigma^2 tr(P) and Var = 2 sigma^4 tr(P^2).  Since I - H is idempotent,
    P = F'F with F = (I - H) Gm (column g = (I-H)[:, rows_g] g_g).
    """
    X = np.asarray(X, dtype=float)
    adjs = cluster_adjustments(X, clusters, variant)
    Gm = _g_matrix(X, adjs, c)
    IH = np.eye(X.shape[0]) - hat_matrix(X)
    P = Gm.T @ IH @ Gm
    return 0.5 * (P + P.T)


def satterthwaite_dof(X, clusters, c, variant="CV2"):
    """Bell-McCaffrey / Satterthwaite degrees of freedom for c'beta.

        dof = 2 E^2 / V,   E = tr(P),  V = 2 sum_{g,k} P_{gk}^2
            = (tr P)^2 / tr(P^2)

    with P from :func:`satterthwaite_matrix` (clubSandwich 0.5.8
    ``Satterthwaite()`` applied to ``get_P_array(get_GH(...))``; working model
    Phi = I, as for an unweighted lm).  Adjustment matrices per variant:
    CV0 -> I, CV1 -> scalar * I (the scalar cancels: dof(CV1) = dof(CV0) =
    clubSandwich CR0 = CR1 = CR1S), CV2 -> M_gg^{-1/2} (CR2), CV3 -> M_gg^{-1}
    up to a scalar (CR3).  Equivalently dof = (tr Omega)^2 / tr(Omega^2) with
    Omega = F'F, F = N x G, column g = (I - H)[:, rows_g] Adj_g X_g A c.
    """
    P = satterthwaite_matrix(X, clusters, c, variant)
    return np.trace(P) ** 2 / np.sum(P * P)


class TResult(NamedTuple):
    estimate: float
    se: float
    t: float
    dof: float
    p_value: float


def satterthwaite_t_test(y, X, clusters, c, variant="CV2", r=0.0):
    """t test of c'beta = r with Satterthwaite dof (clubSandwich ``coef_test``
    with ``test = "Satterthwaite"`` when c is a unit vector and r = 0):

        t = (c'beta - r) / sqrt(c'Vc),  p = 2 P(T_dof > |t|),
        dof = :func:`satterthwaite_dof`.
    """
    y, X = _as_arrays(y, X)
    c = np.asarray(c, dtype=float).reshape(-1)
    beta, _, _ = ols(y, X)
    V = vcov(y, X, clusters, variant)
    est = float(c @ beta)
    se = float(np.sqrt(c @ V @ c))
    t = (est - r) / se
    dof = float(satterthwaite_dof(X, clusters, c, variant))
    p = float(2 * stats.t.sf(abs(t), dof))
    return TResult(est, se, t, dof, p)


class WaldResult(NamedTuple):
    F: float  # test statistic actually referred to F(df_num, df_denom)
    Q: float  # Wald quadratic form (Rb - r)'(R V R')^{-1}(Rb - r)
    delta: float  # F = delta * Q / q
    df_num: float
    df_denom: float
    p_value: float


def _wald_Q(y, X, clusters, R, r, variant):
    y, X = _as_arrays(y, X)
    R = np.atleast_2d(np.asarray(R, dtype=float))
    q = R.shape[0]
    r = np.zeros(q) if r is None else np.asarray(r, dtype=float).reshape(-1)
    beta, _, _ = ols(y, X)
    V = vcov(y, X, clusters, variant)
    d = R @ beta - r
    Q = float(d @ np.linalg.solve(R @ V @ R.T, d))
    return Q, q, len(cluster_indices(clusters))


def chi2_test(y, X, clusters, R, r=None, variant="CV2"):
    """Wald chi-square test of R beta = r (clubSandwich ``test = "chi-sq"``):

        Q = (R b - r)' (R V R')^{-1} (R b - r),  p = P(chi2_q > Q),
        reported F = Q/q, df_denom = inf.
    """
    Q, q, _ = _wald_Q(y, X, clusters, R, r, variant)
    return WaldResult(Q / q, Q, 1.0, q, np.inf, float(stats.chi2.sf(Q, q)))


def naive_f_test(y, X, clusters, R, r=None, variant="CV2"):
    """Naive F test (clubSandwich ``test = "Naive-F"``):

        F = Q/q ~ F(q, G - 1),   Q as in :func:`chi2_test`.
    """
    Q, q, G = _wald_Q(y, X, clusters, R, r, variant)
    return WaldResult(Q / q, Q, 1.0, q, G - 1, float(stats.f.sf(Q / q, q, G - 1)))


def htz_test(y, X, clusters, R, r=None, variant="CV2", omega_relative_tol=False):
    """Hotelling-T^2 "HTZ" test of R beta = r (Pustejovsky & Tipton 2018),
    transcribed from clubSandwich 0.5.8 ``Wald_testing(test = "HTZ")`` for an
    unweighted lm (working model Phi = I; clubSandwich's default is CR2).

    Let R have rows c_1..c_q and, per cluster g and restriction s,

        g_{s,g} = Adj_g X_g A c_s                    (N_g-vector)
        P^{(s,t)}_{gk} = g_{s,g}' (I - H)_{gk} g_{t,k}     (G x G, s,t = 1..q)

    (``get_P_array(all_terms = TRUE)``; note P^{(t,s)} = P^{(s,t)}').

    Normalisation -- by the *expected* variance under the working model, NOT
    by the estimated R V R':

        Omega_{st} = tr P^{(s,t)} = sum_g g_{s,g}' M_gg g_{t,g}
        (for CV2 without leverage-one clusters Omega = R A R' exactly)
        W = Omega^{-1/2} (symmetric; eigenvalues <= 1e-12 -> 0)
        B^{(s,t)} = sum_{s',t'} W_{s s'} P^{(s',t')} W_{t' t}
                  (= P computed with the rotated contrasts W R)

    Then (``total_variance_mat``)

        Var_{st} = sum_{g,k} B^{(s,t)}_{gk} B^{(t,s)}_{gk}
                 + sum_{g,k} B^{(s,s)}_{gk} B^{(t,t)}_{gk}
                 = tr(B^{(s,t)} B^{(s,t)}) + tr(B^{(s,s)} B^{(t,t)})
        nu    = q (q + 1) / sum_{s,t} Var_{st}

    and (``Hotelling_Tsq``)

        Q        = (R b - r)' (R V R')^{-1} (R b - r),  V = vcov(variant)
        delta    = max((nu - q + 1) / nu, 0)
        F        = delta * Q / q
        df_num   = q,  df_denom = nu - q + 1
        p        = P(F_{q, df_denom} > F)   (NaN if df_denom <= 0)

    For q = 1 this reduces to the Satterthwaite t test (F = t^2,
    df_denom = satterthwaite_dof).  clubSandwich only tests R beta = 0; r is
    handled by replacing R b with R b - r in Q (the dof do not depend on y).

    Scale caveat: clubSandwich's ``matrix_power(Omega, -1/2)`` drops
    eigenvalues <= 1e-12 in *absolute* terms, so when R A R' is tiny (e.g.
    regressors of scale 1e7) it returns F = NaN, df_denom = Inf (checked in R).
    This function reproduces that by default; with ``omega_relative_tol=True``
    the cut-off is 1e-12 * (largest eigenvalue of Omega) instead, which makes
    the test invariant to rescaling the regressors.
    """
    y, X = _as_arrays(y, X)
    R = np.atleast_2d(np.asarray(R, dtype=float))
    q = R.shape[0]
    Q, _, _ = _wald_Q(y, X, clusters, R, r, variant)

    adjs = cluster_adjustments(X, clusters, variant)
    IH = np.eye(X.shape[0]) - hat_matrix(X)
    Gms = [_g_matrix(X, adjs, R[s]) for s in range(q)]
    P = np.empty((q, q, len(adjs), len(adjs)))
    for s in range(q):
        for t in range(q):
            P[s, t] = Gms[s].T @ IH @ Gms[t]
    Omega = np.array([[np.trace(P[s, t]) for t in range(q)] for s in range(q)])
    if omega_relative_tol:
        W = sym_power(Omega, -0.5, tol=PINV_TOL * np.max(np.linalg.eigvalsh(Omega)))
    else:
        W = sym_power(Omega, -0.5)
    B = np.einsum("ab,bcjk,cd->adjk", W, P, W)
    Var = np.empty((q, q))
    for s in range(q):
        for t in range(q):
            Var[s, t] = np.sum(B[s, t] * B[t, s]) + np.sum(B[s, s] * B[t, t])
    nu = q * (q + 1) / Var.sum()
    delta = max((nu - q + 1) / nu, 0.0)
    df = nu - q + 1
    F = delta * Q / q
    p = float(stats.f.sf(F, q, df)) if df > 0 else float("nan")
    return WaldResult(float(F), Q, float(delta), q, float(df), p)
