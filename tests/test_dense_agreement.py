"""crve's O(G K^3) cluster-statistics algebra against the dense textbook formulas
(tests/dense_reference.py forms every N_g x N_g block and refits for the jackknife)."""
from __future__ import annotations

import numpy as np
import pytest

import crve
import dense_reference as dense
from conftest import make_design

VARIANTS = ["iid", "HC0", "HC1", "HC2", "HC3", "CV0", "CV1", "CV2", "CV3", "CV3J"]


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("variant", VARIANTS)
def test_covariance_matches_dense(design, variant):
    y, X, g = design
    res = crve.cluster_robust(y, X, g, variant=variant)
    ref = dense.vcov(y, X, None if variant.startswith("HC") or variant == "iid" else g, variant)
    assert rel(res.cov, ref) < 1e-10
    assert rel(res.params, dense.ols(y, X)[0]) < 1e-10


@pytest.mark.parametrize("variant", ["CV0", "CV1", "CV2", "CV3"])
def test_satterthwaite_per_coefficient(design, variant):
    y, X, g = design
    res = crve.cluster_robust(y, X, g, variant=variant, dof="satterthwaite")
    for k in range(X.shape[1]):
        c = np.eye(X.shape[1])[k]
        assert res.df[k] == pytest.approx(dense.satterthwaite_dof(X, g, c, variant), rel=1e-10)


def test_satterthwaite_any_contrast(design):
    y, X, g = design
    res = crve.cluster_robust(y, X, g, variant="CV2")
    c = np.array([0.0, 1.0, -2.0, 0.5])
    t = res.t_test(c, value=0.3)
    ref = dense.satterthwaite_t_test(y, X, g, c, "CV2", r=0.3)
    assert t.df == pytest.approx(ref.dof, rel=1e-10)
    assert t.statistic == pytest.approx(ref.t, rel=1e-10)
    assert t.pvalue == pytest.approx(ref.p_value, rel=1e-9)


@pytest.mark.parametrize("q", [1, 2, 3])
def test_htz_matches_dense(design, q):
    y, X, g = design
    rng = np.random.default_rng(q)
    R = np.eye(X.shape[1])[1:1 + q] + (q == 3) * rng.normal(size=(q, X.shape[1])) * 0.3
    r = rng.normal(size=q) * 0.1
    res = crve.cluster_robust(y, X, g, variant="CV2")
    w = res.wald_test(R, r, test="HTZ")
    ref = dense.htz_test(y, X, g, R, r, "CV2", omega_relative_tol=True)
    assert w.statistic == pytest.approx(ref.F, rel=1e-9)
    assert w.df_denom == pytest.approx(ref.df_denom, rel=1e-9)
    assert w.pvalue == pytest.approx(ref.p_value, rel=1e-8)
    assert w.df_num == q


@pytest.mark.parametrize("variant", ["CV1", "CV2", "CV3"])
def test_f_and_chi2_match_dense(design, variant):
    y, X, g = design
    R = np.eye(X.shape[1])[1:3]
    res = crve.cluster_robust(y, X, g, variant=variant)
    f = res.wald_test(R, test="F")
    ref = dense.naive_f_test(y, X, g, R, variant=variant)
    assert f.statistic == pytest.approx(ref.F, rel=1e-10)
    assert f.df_denom == ref.df_denom
    assert f.pvalue == pytest.approx(ref.p_value, rel=1e-9)
    c = res.wald_test(R, test="chi2")
    ref = dense.chi2_test(y, X, g, R, variant=variant)
    assert c.pvalue == pytest.approx(ref.p_value, rel=1e-9)


@pytest.mark.parametrize("variant", ["HC0", "HC1", "HC2", "HC3"])
def test_hc_satterthwaite_equals_singleton_clusters(variant):
    y, X, _ = make_design(5, N=80, G=10)
    res = crve.cluster_robust(y, X, None, variant=variant, dof="satterthwaite")
    cv = {"HC0": "CV0", "HC1": "CV1", "HC2": "CV2", "HC3": "CV3"}[variant]
    ones = np.arange(len(y))
    for k in range(X.shape[1]):
        assert res.df[k] == pytest.approx(dense.satterthwaite_dof(X, ones, np.eye(X.shape[1])[k], cv), rel=1e-9)


def test_leverage_one_cluster_uses_pseudo_inverse():
    # A dummy for one cluster gives that cluster leverage one.
    y, X, g = make_design(7, N=90, G=12, cluster_level=False)
    X = np.column_stack([X, (g == 3).astype(float)])
    with pytest.warns(crve.CrveWarning, match="leverage one"):
        res = crve.cluster_robust(y, X, g, variant="CV2")
    assert res.leverage_one == 1
    assert rel(res.cov, dense.vcov(y, X, g, "CV2")) < 1e-9
    for k in range(X.shape[1]):
        assert res.df[k] == pytest.approx(dense.satterthwaite_dof(X, g, np.eye(X.shape[1])[k], "CV2"), rel=1e-8)


@pytest.mark.parametrize("variant", ["CV2", "CV3", "CV3J"])
def test_many_small_clusters_series_path(variant):
    """Small clusters have small leverage (tr H_gg < 5e-2, the core's kSeriesTrace), where the
    core evaluates (I - W)^{-1/2} by its Taylor series instead of an eigen decomposition."""
    rng = np.random.default_rng(3)
    G = 60
    sizes = np.maximum(1, (np.exp(rng.normal(size=G)) * 25).astype(int))  # 1 to ~300 rows
    g = np.repeat(np.arange(G), sizes)
    N = g.size
    X = np.column_stack([np.ones(N), rng.normal(size=N), rng.normal(size=G)[g]])
    y = X @ [1.0, 0.5, -0.2] + rng.normal(size=G)[g] + rng.normal(size=N)
    A = np.linalg.inv(X.T @ X)
    h = np.einsum("ij,jk,ik->i", X, A, X)
    tr = np.bincount(g, weights=h)  # tr H_gg per cluster
    assert 0.3 < (tr < 5e-2).mean() < 0.9  # both the series and the eigen path are exercised
    assert ((tr > 0.02) & (tr < 5e-2)).sum() > 10  # the series used up to its threshold
    res = crve.cluster_robust(y, X, g, variant=variant, dof="satterthwaite")
    assert rel(res.cov, dense.vcov(y, X, g, variant)) < 1e-10
    dv = "CV3" if variant == "CV3J" else variant
    for k in (1, 2):
        assert res.df[k] == pytest.approx(dense.satterthwaite_dof(X, g, np.eye(3)[k], dv), rel=1e-9)
    if variant == "CV2":  # the full Omega pieces (HTZ) on the series path
        R, r = np.eye(3)[1:], np.array([0.4, -0.1])
        w = res.wald_test(R, r, test="HTZ")
        ref = dense.htz_test(y, X, g, R, r, "CV2", omega_relative_tol=True)
        assert w.statistic == pytest.approx(ref.F, rel=1e-9)
        assert w.df_denom == pytest.approx(ref.df_denom, rel=1e-9)
    if variant == "CV3":  # the jackknife's leave-one-cluster-out estimates: refits without cluster g
        loo = res.diagnostics().beta_loo.to_numpy()
        for c in list(np.flatnonzero(tr < 5e-2)[:10]) + list(np.flatnonzero(tr >= 5e-2)[:3]):
            keep = g != c
            np.testing.assert_allclose(loo[c], np.linalg.lstsq(X[keep], y[keep], rcond=None)[0], rtol=1e-9)
