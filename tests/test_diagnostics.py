"""Cluster diagnostics against dense computations from the rows, a peer (statsmodels MixedLM
for the ICC) and simulation (planted ICC, Moulton factor)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import crve
from crve.diagnostics import anova_icc, moulton_factor
from crve.simulate import ClusteredDGP


def _design(seed=0, G=9, intercept=True, offset=0.0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, size=G)
    g = np.repeat(np.arange(G), sizes)
    rng.shuffle(g)  # rows need not be grouped
    N = len(g)
    cols = [rng.normal(size=N) + offset, rng.normal(size=G)[g] + 0.3 * rng.normal(size=N)]
    if intercept:
        cols.insert(0, np.ones(N))
    X = np.column_stack(cols)
    y = X @ np.arange(1, X.shape[1] + 1) + rng.normal(size=G)[g] + rng.normal(size=N)
    return y, X, g


def _dense(y, X, g):
    """Leverage and the CSS weights from a QR of X (accurate even when X'X is ill-conditioned:
    X a_j = Q R^-T e_j), partial leverage from explicit FWL residuals, beta_(g) by refitting."""
    labels = np.unique(g)
    Q, R = np.linalg.qr(X)
    b = np.linalg.lstsq(X, y, rcond=None)[0]
    u = y - X @ b
    K = X.shape[1]
    lev = np.array([np.sum(Q[g == h] ** 2) for h in labels])
    partial = np.empty((len(labels), K))
    for j in range(K):
        others = np.delete(X, j, axis=1)
        xt = X[:, j] - others @ np.linalg.lstsq(others, X[:, j], rcond=None)[0]
        partial[:, j] = [xt[g == h] @ xt[g == h] / (xt @ xt) for h in labels]
    loo = np.array([np.linalg.lstsq(X[g != h], y[g != h], rcond=None)[0] for h in labels])
    Xa = Q @ np.linalg.solve(R.T, np.eye(K))  # column j: X (X'X)^-1 e_j
    gam0 = np.array([np.sum(Xa[g == h] ** 2, axis=0) for h in labels])
    gam1 = np.array([Xa[g == h].sum(axis=0) ** 2 for h in labels])
    return dict(lev=lev, partial=partial, loo=loo, gam0=gam0, gam1=gam1, u=u)


def _gstar_dense(gam0, gam1, rho):
    gam = rho * gam1 + (1 - rho) * gam0
    Gamma = np.mean(((gam - gam.mean(0)) / gam.mean(0)) ** 2, axis=0)
    return len(gam) / (1 + Gamma)


def _icc_rows(v, g):
    """The ANOVA estimator written out on the rows."""
    df = pd.DataFrame({"v": v, "g": g})
    grp = df.groupby("g").v
    n, means = grp.size().to_numpy(float), grp.mean().to_numpy()
    N, G = n.sum(), len(n)
    ssb = np.sum(n * (means - v.mean()) ** 2)
    ssw = np.sum((v - grp.transform("mean").to_numpy()) ** 2)
    msb, msw = ssb / (G - 1), ssw / (N - G)
    n0 = (N - np.sum(n ** 2) / N) / (G - 1)
    return (msb - msw) / (msb + (n0 - 1) * msw)


@pytest.mark.parametrize("intercept,offset", [(True, 0.0), (True, 1e4), (False, 0.0), (False, 50.0)])
def test_diagnostics_equal_dense(intercept, offset):
    y, X, g = _design(intercept=intercept, offset=offset)
    res = crve.cluster_robust(y, X, g)
    d = res.diagnostics()
    ref = _dense(y, X, g)
    np.testing.assert_allclose(d.leverage.to_numpy(), ref["lev"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d.partial_leverage.to_numpy(), ref["partial"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(d.beta_loo.to_numpy(), ref["loo"], rtol=1e-8, atol=1e-10)
    assert d.leverage.sum() == pytest.approx(X.shape[1], rel=1e-12)
    np.testing.assert_allclose(d.partial_leverage.sum().to_numpy(), 1.0, rtol=1e-12)
    for rho in (0.0, 0.5, 1.0, 0.3):
        np.testing.assert_allclose(d.effective_clusters([rho])[rho].to_numpy(),
                                   _gstar_dense(ref["gam0"], ref["gam1"], rho), rtol=1e-8)
    assert d.icc_residual == pytest.approx(_icc_rows(ref["u"], g), rel=1e-9)
    for k in range(X.shape[1]):
        if intercept and k == 0:
            assert np.isnan(d.icc.iloc[0]) and np.isnan(d.moulton.iloc[0])
        else:
            assert d.icc.iloc[k] == pytest.approx(_icc_rows(X[:, k], g), rel=1e-8)
    # CV3 is the jackknife of exactly these leave-one-out estimates.
    delta = d.beta_loo.to_numpy() - res._params
    G = len(np.unique(g))
    np.testing.assert_allclose((G - 1) / G * delta.T @ delta, res.with_variant("CV3")._cov, rtol=1e-9)


def test_cluster_sizes_and_labels():
    y, X, g = _design(G=12)
    labels = np.array([f"s{i:02d}" for i in range(12)])[g]
    d = crve.cluster_robust(y, X, labels).diagnostics()
    n = np.bincount(g)
    assert d.sizes.loc["s03"] == n[3]
    assert d.size_summary == {"min": n.min(), "mean": pytest.approx(n.mean()), "max": n.max(),
                              "cv": pytest.approx(n.std(ddof=1) / n.mean())}
    per = d.clusters(param=1)
    assert list(per.columns) == ["n", "leverage", "partial_leverage", "beta_no_g"]
    assert per.loc["s05", "leverage"] == d.leverage.loc["s05"]


def test_table_matches_stata_summarize_detail():
    y, X, g = _design(G=11, seed=4)
    d = crve.cluster_robust(y, X, g).diagnostics()
    t = d.table(param=2)
    v = np.sort(d.leverage.to_numpy())
    # Stata: P = n p / 100; x_(floor P + 1) if P is not whole, else the mean of x_(P) and x_(P+1).
    P = 11 * 0.25
    assert t.loc["q1", "leverage"] == pytest.approx(v[int(np.floor(P))])
    assert t.loc["median", "leverage"] == pytest.approx(v[5])
    assert t.loc["coefvar", "n"] == pytest.approx(np.bincount(g).std(ddof=1) / np.bincount(g).mean())
    assert t.loc["mean", "partial_leverage"] == pytest.approx(1 / 11)


def test_treated_clusters_and_alarm():
    rng = np.random.default_rng(5)
    G = 40
    g = np.repeat(np.arange(G), 15)
    treat = np.zeros(G)
    treat[[3, 17, 29]] = 1
    X = np.column_stack([np.ones(len(g)), treat[g], rng.normal(size=len(g))])
    y = rng.normal(size=G)[g] + rng.normal(size=len(g))
    res = crve.cluster_robust(y, X, g, names=["const", "treat", "z"])
    d = res.diagnostics()
    assert d.treated.loc["treat", "treated"] == 3 and d.treated.loc["treat", "control"] == 37
    assert "z" not in d.treated.index
    assert any("only 3 of 40 clusters are treated" in a for a in d.alarms)
    assert "only 3 of 40 clusters are treated" in res.summary()
    # G* flags the concentration of the treatment's variance in 3 clusters.
    assert d.effective_clusters()[0.0]["treat"] < 10
    # A balanced treatment raises no treated-cluster alarm.
    treat = (np.arange(G) < 20).astype(float)
    X[:, 1] = treat[g]
    d2 = crve.cluster_robust(y, X, g, names=["const", "treat", "z"]).diagnostics()
    assert (d2.treated.loc["treat", "treated"], d2.treated.loc["treat", "control"]) == (20, 20)
    assert not any("treated" in a for a in d2.alarms)


def test_jackknife_singular_cluster_is_reported():
    rng = np.random.default_rng(6)
    g = np.repeat(np.arange(8), 6)
    only = np.where(g == 2, rng.normal(size=48), 0.0)  # all its variation in cluster 2
    X = np.column_stack([np.ones(48), rng.normal(size=48), only])
    y = rng.normal(size=48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", crve.CrveWarning)
        d = crve.cluster_robust(y, X, g).diagnostics()
    assert d.jackknife_singular == 1
    assert d.partial_leverage.iloc[2, 2] > 0.9  # (the FWL residual leaks a little outside cluster 2)
    assert any("leave-one-out estimates use the pseudo-inverse" in a for a in d.alarms)
    assert np.isfinite(d.beta_loo.to_numpy()).all()


def test_iid_fit_gets_moulton_alarm_and_ratio():
    df = crve.simulate.clustered(G=40, sizes=30, icc=0.2, seed=3)
    res = crve.ols("y ~ x", df, cluster="cluster", vcov="iid")
    d = res.diagnostics()
    assert d.se_ratio_variant == "CV1"
    cv1 = crve.ols("y ~ x", df, cluster="cluster")
    assert d.se_ratio["x"] == pytest.approx(cv1.bse["x"] / res.bse["x"])
    assert d.moulton["x"] > 2
    assert "classical SEs for x are likely too small" in res.summary()


def test_no_clusters_is_refused():
    y, X, _ = _design()
    with pytest.raises(ValueError, match="diagnostics describe clusters"):
        crve.cluster_robust(y, X).diagnostics()


def test_bad_rho_and_param():
    y, X, g = _design()
    d = crve.cluster_robust(y, X, g, names=["c", "a", "b"]).diagnostics(jackknife=False)
    assert d.beta_loo is None and "beta_no_g" not in d.clusters().columns
    with pytest.raises(ValueError, match="rho must lie"):
        d.effective_clusters(1.5)
    with pytest.raises(ValueError, match="not a coefficient"):
        d.clusters("nope")
    assert "Cluster design diagnostics" in str(d.summary())


def test_icc_recovers_planted_value():
    dgp = ClusteredDGP(G=3000, sizes=20, icc=0.1, treatment="continuous", x_icc=0.3)
    y, x, g = dgp.draw(np.random.default_rng(11))
    d = crve.cluster_robust(y, np.column_stack([np.ones(len(y)), x]), g).diagnostics(jackknife=False)
    assert d.icc_residual == pytest.approx(0.1, abs=0.015)
    assert d.icc.iloc[1] == pytest.approx(0.3, abs=0.03)


def test_icc_matches_mixedlm_on_balanced_data():
    """For balanced clusters the ANOVA estimator is the REML estimate (when positive)."""
    sm = pytest.importorskip("statsmodels.formula.api")
    df = crve.simulate.clustered(G=30, sizes=8, icc=0.3, treatment="continuous", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.mixedlm("y ~ 1", df, groups=df["cluster"]).fit(reml=True)
    icc_reml = float(fit.cov_re.iloc[0, 0] / (fit.cov_re.iloc[0, 0] + fit.scale))
    n = np.full(30, 8)
    s = df.groupby("cluster").y.sum().to_numpy()
    ssw = df.groupby("cluster").y.agg(lambda v: ((v - v.mean()) ** 2).sum()).to_numpy()
    assert anova_icc(n, s, ssw) == pytest.approx(icc_reml, rel=1e-4)


@pytest.mark.parametrize("sizes", [20, np.array([5] * 20 + [35] * 20)])
def test_moulton_factor_against_simulation(sizes):
    """sd(beta-hat) / rms(classical SE) over replications is Moulton's factor (equal and unequal sizes)."""
    dgp = ClusteredDGP(G=40, sizes=sizes, icc=0.1, treatment="cluster")
    b, se2 = [], []
    for r in range(1500):
        y, x, g = dgp.draw(np.random.default_rng([7, r]))
        res = crve.cluster_robust(y, np.column_stack([np.ones(len(y)), x]), g, variant="iid")
        b.append(res._params[1])
        se2.append(res._cov[1, 1])
    measured = np.std(b) / np.sqrt(np.mean(se2))
    predicted = float(moulton_factor(1.0, 0.1, np.bincount(g)))
    assert measured == pytest.approx(predicted, rel=0.06)
    if not np.isscalar(sizes):  # the unequal-size term matters: the equal-size formula is off
        assert measured > float(moulton_factor(1.0, 0.1, np.full(40, 20))) * 1.1


def test_anova_icc_degenerate_cases():
    assert np.isnan(anova_icc(np.array([5]), np.array([1.0]), np.array([2.0])))          # one cluster
    assert np.isnan(anova_icc(np.ones(4), np.arange(4.0), np.zeros(4)))                   # singletons
    assert np.isnan(anova_icc(np.full(3, 2), np.full(3, 4.0), np.zeros(3)))               # constant
