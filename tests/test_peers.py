"""Live agreement with the established Python packages on the same data (1e-10 relative)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import crve
from conftest import make_design

TOL = 1e-10


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.abs(b))


@pytest.fixture(params=[0, 1, 2])
def data(request):
    return make_design(10 + request.param, N=400, G=30, K=5, offset=[0.0, 20.0, 0.0][request.param])


@pytest.mark.parametrize("variant", ["iid", "HC0", "HC1", "HC2", "HC3", "CV1"])
def test_statsmodels(data, variant):
    sm = pytest.importorskip("statsmodels.api")
    y, X, g = data
    if variant == "CV1":
        ref = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g}, use_t=True)
        res = crve.cluster_robust(y, X, g, variant="CV1")
        # with use_t, statsmodels refers cluster t statistics to T(G-1), as crve does
        assert rel(res.pvalues, ref.pvalues) < 1e-8
    else:
        ref = sm.OLS(y, X).fit(cov_type="nonrobust" if variant == "iid" else variant)
        res = crve.cluster_robust(y, X, None, variant=variant)
    assert rel(res.params, ref.params) < TOL
    assert rel(res.bse, ref.bse) < TOL


def _pyfixest_frame(y, X, g):
    df = pd.DataFrame(X[:, 1:], columns=[f"x{k}" for k in range(1, X.shape[1])])
    df["y"] = y
    df["g"] = g
    fml = "y ~ " + " + ".join(f"x{k}" for k in range(1, X.shape[1]))
    return df, fml


def test_pyfixest_crv1(data):
    pf = pytest.importorskip("pyfixest")
    y, X, g = data
    df, fml = _pyfixest_frame(y, X, g)
    ref = pf.feols(fml, data=df, vcov={"CRV1": "g"})
    res = crve.cluster_robust(y, X, g, variant="CV1")
    assert rel(res.params, ref.coef().to_numpy()) < TOL
    assert rel(res.bse, ref.se().to_numpy()) < TOL


def test_pyfixest_crv3(data):
    """pyfixest's CRV3 is the uncentred jackknife sum times its small-sample factor
    G/(G-1) * (N-1)/(N-K) (its default ssc); ours is (G-1)/G times the same sum."""
    pf = pytest.importorskip("pyfixest")
    y, X, g = data
    df, fml = _pyfixest_frame(y, X, g)
    ref = pf.feols(fml, data=df, vcov={"CRV3": "g"})
    res = crve.cluster_robust(y, X, g, variant="CV3")
    N, K = X.shape
    G = len(np.unique(g))
    factor = (G / (G - 1)) * (N - 1) / (N - K) / ((G - 1) / G)
    assert rel(res.bse * np.sqrt(factor), ref.se().to_numpy()) < TOL


def test_linearmodels_clustered(data):
    lm = pytest.importorskip("linearmodels.iv")
    y, X, g = data
    ref = lm.IV2SLS(y, X, None, None).fit(cov_type="clustered", clusters=pd.Series(g), debiased=True)
    res = crve.cluster_robust(y, X, g, variant="CV1")
    assert rel(res.params, ref.params) < TOL
    assert rel(res.bse, ref.std_errors) < TOL


def test_linearmodels_robust(data):
    lm = pytest.importorskip("linearmodels.iv")
    y, X, _ = data
    ref = lm.IV2SLS(y, X, None, None).fit(cov_type="robust", debiased=True)
    res = crve.cluster_robust(y, X, None, variant="HC1")
    assert rel(res.bse, ref.std_errors) < TOL
