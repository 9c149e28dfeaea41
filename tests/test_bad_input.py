"""Bad input gets a clear error naming the problem; degenerate designs are reported."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import crve
from conftest import make_design


@pytest.fixture
def ok():
    return make_design(20, N=100, G=10)


@pytest.mark.parametrize("where", ["y", "X", "clusters"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite(ok, where, bad):
    y, X, g = ok
    y, X, g = y.copy(), X.copy(), g.astype(float)
    if where == "y":
        y[7] = bad
        pattern = r"y contains NaN or inf in 1 row \(first: 7\)"
    elif where == "X":
        X[7, 2] = bad
        pattern = r"X column 'x2' contains NaN or inf in 1 row \(first: 7\)"
    else:
        g[7] = bad
        pattern = r"clusters contains NaN or inf in 1 row \(first: 7\)"
    with pytest.raises(ValueError, match=pattern):
        crve.cluster_robust(y, X, g)


def test_overflow_is_named(ok):
    y, X, g = ok
    X = X.copy()
    X[:, 1] *= 1e200
    with pytest.raises(ValueError, match="'x1' overflows"):
        crve.cluster_robust(y, X, g)


def test_length_mismatch(ok):
    y, X, g = ok
    n = len(y)
    with pytest.raises(ValueError, match=f"y has {n - 1} rows but X has {n}"):
        crve.cluster_robust(y[:-1], X, g)
    with pytest.raises(ValueError, match=f"clusters has {n - 1} entries but X has {n} rows"):
        crve.cluster_robust(y, X, g[:-1])


def test_fewer_than_two_clusters(ok):
    y, X, _ = ok
    with pytest.raises(ValueError, match="at least 2 clusters for cluster-robust inference; got 1"):
        crve.cluster_robust(y, X, np.zeros(len(y), dtype=int))


def test_n_not_above_k():
    X = np.column_stack([np.ones(3), np.arange(3.0), np.arange(3.0) ** 2])
    with pytest.raises(ValueError, match="more rows than columns: N = 3, K = 3"):
        crve.cluster_robust(np.arange(3.0), X)


def test_collinear_columns_named(ok):
    y, X, g = ok
    X = np.column_stack([X, X[:, 1] - 2 * X[:, 2]])
    with pytest.raises(ValueError, match=r"columns \['x1', 'x2', 'x4'\] are \(nearly\) linearly dependent"):
        crve.cluster_robust(y, X, g)


def test_two_intercepts(ok):
    y, X, g = ok
    with pytest.raises(ValueError, match="linearly dependent"):
        crve.cluster_robust(y, np.column_stack([X, 2 * np.ones(len(y))]), g)


def test_all_zero_column(ok):
    y, X, g = ok
    X = X.copy()
    X[:, 3] = 0.0
    with pytest.raises(ValueError, match="'x3' is all zero"):
        crve.cluster_robust(y, X, g)


def test_non_numeric_X(ok):
    y, X, g = ok
    with pytest.raises(ValueError, match="X must be numeric"):
        crve.cluster_robust(y, X.astype(str), g)
    df = pd.DataFrame({"a": X[:, 1], "b": ["u"] * len(y)})
    with pytest.raises(ValueError, match="X column 'b' is not numeric"):
        crve.cluster_robust(y, df, g)


def test_empty_and_2d_y(ok):
    y, X, g = ok
    with pytest.raises(ValueError, match="empty input"):
        crve.cluster_robust(np.zeros(0), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="y must be 1-D"):
        crve.cluster_robust(y[:, None], X, g)


def test_unknown_variant_and_dof(ok):
    y, X, g = ok
    with pytest.raises(ValueError, match="unknown variant 'CV9'"):
        crve.cluster_robust(y, X, g, variant="CV9")
    with pytest.raises(ValueError, match="ambiguous"):
        crve.cluster_robust(y, X, g, variant="CR3")
    with pytest.raises(ValueError, match="unknown dof 'kenward'"):
        crve.cluster_robust(y, X, g, dof="kenward")
    with pytest.raises(ValueError, match="dof must be positive"):
        crve.cluster_robust(y, X, g, dof=-3)


def test_variant_aliases(ok):
    y, X, g = ok
    a = crve.cluster_robust(y, X, g, variant="cr2")
    assert a.variant == "CV2" and a.dof_rule == "satterthwaite"
    assert crve.cluster_robust(y, X, g, variant="Stata").variant == "CV1"


def test_dof_rules(ok):
    y, X, g = ok
    res = crve.cluster_robust(y, X, g, variant="CV1")
    assert np.all(res.df == 9)
    assert np.all(res.with_variant("CV1", dof="N-K").df == len(y) - 4)
    assert np.all(np.isinf(res.with_variant("CV1", dof="normal").df))
    assert np.all(res.with_variant("CV1", dof=12.5).df == 12.5)
    assert np.all(res.with_variant("HC1").df == len(y) - 4)


def test_too_many_restrictions(ok):
    y, X, g = ok
    g = np.where(g < 3, g, 0)  # 3 clusters: covariance rank <= 2
    res = crve.cluster_robust(y, X, g)
    with pytest.raises(ValueError, match="cannot test 3 restrictions with 3 clusters"):
        res.wald_test(np.eye(4)[1:])
    with pytest.raises(ValueError, match="linearly dependent"):
        res.wald_test([[0, 1, 0, 0], [0, 2, 0, 0]])
    with pytest.raises(ValueError, match="HTZ test uses CV2"):
        res.wald_test(np.eye(4)[1:2], test="HTZ")
    with pytest.raises(ValueError, match="R must have 4 columns"):
        res.wald_test(np.eye(3))


def test_hc_needs_rows():
    y, X, g = make_design(21)
    res = crve.ClusterStats.from_arrays(y, X, g).fit()
    with pytest.raises(ValueError, match="needs the rows"):
        res.with_variant("HC1")


def test_jackknife_leverage_one_warns():
    # A regressor that varies in one cluster only: that cluster has leverage one, and
    # X'X - C_g is singular when it is left out.
    y, X, g = make_design(22, N=120, G=12, cluster_level=False)
    X = np.column_stack([X, np.where(g == 4, np.arange(len(g)) % 5 + 1.0, 0.0)])
    with pytest.warns(crve.CrveWarning, match="leverage one.*unidentified"):
        res = crve.cluster_robust(y, X, g, variant="CV3")
    assert res.leverage_one == 1
    assert np.isfinite(res.cov).all()


def test_pandas_nullable_missing_values_are_named(ok):
    y, X, g = ok
    ys = pd.Series(y).astype("Float64")
    ys.iloc[[3, 9]] = pd.NA
    with pytest.raises(ValueError, match=r"y contains NaN or inf in 2 rows \(first: 3, 9\)"):
        crve.cluster_robust(ys, X, g)
    df = pd.DataFrame(X[:, 1:], columns=["a", "b", "c"]).astype("Float64")
    df.iloc[5, 1] = pd.NA
    with pytest.raises(ValueError, match=r"X column 'b' contains NaN or inf in 1 row \(first: 5\)"):
        crve.cluster_robust(y, df, g)
    ints = pd.Series(np.arange(len(y)) % 7).astype("Int64")
    assert crve.cluster_robust(y, np.column_stack([np.ones(len(y)), ints.to_numpy(float)]), g).nobs == len(y)
