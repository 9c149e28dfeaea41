"""Published values: NIST StRD Longley, Petersen (2009) via R sandwich, Grunfeld and boottest's
collapsed.dta (Stata output)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import crve
from _r_reference import read_csv_exact

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def lre(est, cert):
    """Log relative error (NIST's measure of correct significant digits; an exact match counts
    as 15.9, the most a double can hold)."""
    est, cert = np.asarray(est, float), np.asarray(cert, float)
    rel = np.maximum(np.abs(est - cert) / np.abs(cert), 1e-16)
    return -np.log10(rel)


# NIST StRD, Longley (1967): certified coefficients and standard deviations.
LONGLEY_B = [-3482258.63459582, 15.0618722713733, -0.358191792925910e-01, -2.02022980381683,
             -1.03322686717359, -0.511041056535807e-01, 1829.15146461355]
LONGLEY_SE = [890420.383607373, 84.9149257747669, 0.334910077722432e-01, 0.488399681651699,
              0.214274163161675, 0.226073200069370, 455.478499142212]
LONGLEY_RSD = 304.854073561965


def test_longley_certified_values():
    sm_data = pytest.importorskip("statsmodels.datasets.longley")
    d = sm_data.load_pandas()
    X = np.column_stack([np.ones(16), d.exog.to_numpy(float)])
    y = d.endog.to_numpy(float)
    res = crve.cluster_robust(y, X, variant="iid")
    assert lre(res.params, LONGLEY_B).min() >= 9
    assert lre(res.bse, LONGLEY_SE).min() >= 9
    assert lre(np.sqrt(res.ssr / (16 - 7)), LONGLEY_RSD) >= 9


def test_longley_without_intercept_column_order():
    """The intercept need not be the first column: put it last."""
    sm_data = pytest.importorskip("statsmodels.datasets.longley")
    d = sm_data.load_pandas()
    X = np.column_stack([d.exog.to_numpy(float), np.ones(16)])
    res = crve.cluster_robust(d.endog.to_numpy(float), X, variant="iid")
    assert lre(res.params, LONGLEY_B[1:] + LONGLEY_B[:1]).min() >= 9


@pytest.fixture(scope="module")
def petersen():
    d = read_csv_exact("petersen.csv")
    X = np.column_stack([np.ones(len(d["y"])), d["x"]])
    return d["y"], X, d["firm"], d["year"]


def test_petersen_by_firm(petersen):
    y, X, firm, _ = petersen
    cv1 = crve.cluster_robust(y, X, firm, variant="CV1")
    assert cv1.bse[1] == pytest.approx(0.0505957, abs=5e-8)
    cr2 = cv1.with_variant("CR2")
    assert cr2.bse[1] == pytest.approx(0.0506778, abs=5e-8)
    assert cr2.df[1] == pytest.approx(308.756, abs=5e-4)


def test_petersen_by_year(petersen):
    y, X, _, year = petersen
    assert crve.cluster_robust(y, X, year).bse[1] == pytest.approx(0.0333889, abs=5e-8)


def test_grunfeld_stata():
    d = read_csv_exact("grunfeld.csv")
    assert len(d["invest"]) == 200
    X = np.column_stack([d["value"], d["capital"], np.ones(200)])
    res = crve.cluster_robust(d["invest"], X, d["firm"], names=["mvalue", "kstock", "_cons"])
    np.testing.assert_allclose(res.bse.to_numpy(), [.01589434, .08496711, 20.425203], rtol=5e-7)
    np.testing.assert_allclose(res.params.to_numpy(), [.1155622, .2306785, -42.71437], rtol=5e-7)
    assert res.n_clusters == 10


def test_collapsed_stata_t():
    pd = pytest.importorskip("pandas")
    path = os.path.join(SHARED, "collapsed.dta")
    if not os.path.exists(path):
        pytest.skip("shared/data/collapsed.dta not available")
    d = pd.read_stata(path).dropna()
    X = np.column_stack([d[["selfemployed", "post", "post_self"]].to_numpy(float), np.ones(len(d))])
    res = crve.cluster_robust(d["hasinsurance"], X, d["year"], names=["selfemployed", "post", "post_self", "_cons"])
    t = res.t_test([0, 0, 1, 0], value=0.04)
    assert t.statistic == pytest.approx(2.0194, abs=5e-5)
    assert res.n_clusters == 8 and res.nobs == 16
    assert t.df == 7
