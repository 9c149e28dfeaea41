"""Adversarial inputs (issue 7): each gives a correct answer, a clear error or documented
handling; never a crash, a hang, a silent NaN or a wrong number."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import crve


def _data(N=600, G=30, K=2, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, N)
    X = np.column_stack([np.ones(N)] + [rng.normal(size=N) for _ in range(K)])
    y = X @ np.arange(1.0, K + 2) + rng.normal(size=G)[g] + rng.normal(size=N)
    return y, X, g


def _finite(res):
    assert np.isfinite(res._params).all() and np.isfinite(res._cov).all() and np.isfinite(res._df).all()


@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e100, 1e-100])
def test_huge_and_tiny_magnitudes(scale):
    y, X, g = _data()
    ref = crve.cluster_robust(y, X, g, variant="CV2")
    Xs = X.copy()
    Xs[:, 1:] *= scale
    res = crve.cluster_robust(y * scale, Xs, g, variant="CV2")
    _finite(res)
    np.testing.assert_allclose(res._params[1:], ref._params[1:], rtol=1e-9)       # slopes unchanged
    np.testing.assert_allclose(res._params[0] / scale, ref._params[0], rtol=1e-9)  # intercept scales with y
    np.testing.assert_allclose(np.sqrt(np.diag(res._cov))[1:], ref.bse[1:], rtol=1e-8)


def test_values_whose_squares_overflow_are_refused_by_name():
    y, X, g = _data()
    X = X.copy()
    X[:, 2] *= 1e200
    with pytest.raises(ValueError, match="x2|column 2|overflow|non-finite|infinite"):
        crve.cluster_robust(y, X, g)


@pytest.mark.parametrize("eps", [1e-3, 1e-4, 1e-5])
def test_nearly_collinear_columns_are_accurate_to_the_stated_digits(eps):
    """cond(X'X) up to ~1e11: a fit, with a warning that states the digits left when the
    normal equations lose more than about 7 (and those digits hold, against an SVD fit)."""
    y, X, g = _data(N=2000, K=2)
    rng = np.random.default_rng(1)
    Xc = np.column_stack([X, X[:, 1] + eps * rng.normal(size=len(y))])
    ref = np.linalg.lstsq(Xc, y, rcond=None)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = crve.cluster_robust(y, Xc, g)
    bound = max(1e-10, 100 * np.finfo(float).eps / float(res._model.rcond))  # relative to the norm
    assert np.abs(res._params - ref).max() <= bound * np.linalg.norm(ref)
    warned = [w for w in caught if "ill-conditioned" in str(w.message)]
    assert bool(warned) == (res._model.rcond < 1e-9)
    if warned:
        assert "significant digits" in str(warned[0].message) and any("ill-conditioned" in n for n in res.notes)


def test_condition_1e16_is_refused_with_the_columns_named():
    y, X, g = _data(N=2000, K=2)
    rng = np.random.default_rng(1)
    X16 = np.column_stack([X, X[:, 1] + 1e-9 * rng.normal(size=len(y))])
    with pytest.raises(ValueError, match=r"columns \['a', 'a_copy'\] are \(nearly\) linearly dependent"):
        crve.cluster_robust(y, X16, g, names=["const", "a", "b", "a_copy"])


def test_regressor_constant_within_every_cluster():
    y, X, g = _data()
    rng = np.random.default_rng(3)
    X = np.column_stack([X, rng.normal(size=g.max() + 1)[g]])
    for v in ("CV1", "CV2", "CV3"):
        _finite(crve.cluster_robust(y, X, g, variant=v))


def test_one_cluster_holds_all_variation_of_a_regressor():
    y, X, g = _data()
    X = np.column_stack([X, np.where(g == 4, np.random.default_rng(4).normal(size=len(g)), 0.0)])
    with pytest.warns(crve.CrveWarning, match="leverage one"):
        res = crve.cluster_robust(y, X, g, variant="CV2")
    assert res.leverage_one >= 1
    assert np.isfinite(res._cov).all()


def test_two_clusters():
    y, X, g = _data(G=2)
    res = crve.cluster_robust(y, X, g)
    _finite(res)
    assert res.df[1] == 1 and "few clusters" in " ".join(res.notes)
    with pytest.warns(crve.CrveWarning):
        bt = crve.wild_cluster_bootstrap(y, X, g, param=1, B=999, progress=False)
    assert bt.enumerated and bt.B == 4
    with pytest.raises(ValueError, match="restrictions"):
        res.wald_test(np.eye(3)[1:])


def test_one_row_per_cluster_everywhere():
    y, X, _ = _data(N=300)
    res = crve.cluster_robust(y, X, np.arange(300), variant="CV2")
    hc = crve.cluster_robust(y, X, None, variant="HC2")
    np.testing.assert_allclose(res._cov, hc._cov, rtol=1e-10)


def test_a_million_clusters():
    rng = np.random.default_rng(5)
    N = 2_000_000
    g = rng.integers(0, 1_000_000, N)
    X = np.column_stack([np.ones(N), rng.normal(size=N)])
    y = X @ [1.0, 0.5] + rng.normal(size=N)
    res = crve.cluster_robust(y, X, g, variant="CV1")
    _finite(res)
    assert res.n_clusters == len(np.unique(g))


def test_two_hundred_regressors():
    rng = np.random.default_rng(6)
    N, K, G = 4000, 200, 60
    g = rng.integers(0, G, N)
    X = np.column_stack([np.ones(N), rng.normal(size=(N, K - 1))])
    y = X @ rng.normal(size=K) + rng.normal(size=N)
    res = crve.cluster_robust(y, X, g, variant="CV2")
    np.testing.assert_allclose(res._params, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-9, atol=1e-12)
    _finite(res)
    with pytest.raises(ValueError, match="at most G - 1"):
        res.wald_test(np.eye(K)[1:])  # 199 restrictions with 60 clusters


@pytest.mark.parametrize("kind", ["float32", "int", "bool", "object", "nullable", "readonly", "fortran",
                                  "strided_rows", "strided_cols"])
def test_dtypes_and_layouts(kind):
    y, X, g = _data()
    ref = crve.cluster_robust(y, X, g)
    if kind == "float32":
        Xk, yk = X.astype(np.float32), y.astype(np.float32)
        res = crve.cluster_robust(yk, Xk, g)
        np.testing.assert_allclose(res._params, crve.cluster_robust(yk.astype(float), Xk.astype(float), g)._params)
        return
    if kind in ("int", "bool"):
        Xi = np.column_stack([np.ones(len(y), dtype=int), (X[:, 1] > 0).astype(kind), np.round(X[:, 2] * 3).astype(int)])
        res = crve.cluster_robust(y, Xi, g)
        np.testing.assert_allclose(res._params, crve.cluster_robust(y, Xi.astype(float), g)._params)
        return
    if kind == "object":
        res = crve.cluster_robust(y.astype(object), X.astype(object), g.astype(object))
    elif kind == "nullable":
        df = pd.DataFrame(X, columns=["c", "a", "b"]).astype("Float64")
        res = crve.cluster_robust(pd.Series(y, dtype="Float64"), df, pd.Series(g, dtype="Int64"))
    elif kind == "readonly":
        Xr, yr, gr = X.copy(), y.copy(), g.copy()
        for a in (Xr, yr, gr):
            a.setflags(write=False)
        res = crve.cluster_robust(yr, Xr, gr)
    elif kind == "fortran":
        res = crve.cluster_robust(y, np.asfortranarray(X), g)
    elif kind == "strided_rows":
        big = np.repeat(X, 2, axis=0)
        res = crve.cluster_robust(np.repeat(y, 2)[::2], big[::2], np.repeat(g, 2)[::2])
    else:
        wide = np.column_stack([X[:, 0], X[:, 0] * 0, X[:, 1], X[:, 0] * 0, X[:, 2]])
        res = crve.cluster_robust(y, wide[:, ::2], g)
    np.testing.assert_allclose(np.asarray(res._params), ref._params, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res._cov), ref._cov, rtol=1e-10)


def test_labels_mixing_types():
    y, X, g = _data(G=6)
    mixed = np.array([1, "1", 2.5, "b", None, (1, 2)], dtype=object)[g]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            res = crve.cluster_robust(y, X, mixed)
        except ValueError as exc:  # None is a missing label: named
            assert "missing" in str(exc)
            mixed = np.array([1, "1", 2.5, "b", "x", (1, 2)], dtype=object)[g]
            res = crve.cluster_robust(y, X, mixed)
    assert res.n_clusters == 6  # 1 and "1" are different clusters
    np.testing.assert_allclose(res._cov, crve.cluster_robust(y, X, g)._cov, rtol=1e-12)


def test_bootstrap_with_one_draw_and_ten_million_draws():
    y, X, g = _data(G=12)
    one = crve.wild_cluster_bootstrap(y, X, g, param=1, B=1, weights="webb", seed=1, progress=False)
    assert one.B == 1 and one.pvalue in (0.0, 1.0)
    big = crve.wild_cluster_bootstrap(y, X, g, param=1, B=10_000_000, weights="webb", seed=1, conf_int=False,
                                      progress=False)
    assert big.B == 10_000_000 and 0 <= big.pvalue <= 1 and big.t_star.shape == (10_000_000,)
    small = crve.wild_cluster_bootstrap(y, X, g, param=1, B=9999, weights="webb", seed=1, conf_int=False,
                                        progress=False)
    assert abs(big.pvalue - small.pvalue) < 0.02


def _exact_jackknife(y, X, g):
    """CV3 = (G-1)/G sum_g (beta_(g) - beta)(beta_(g) - beta)' in exact rational arithmetic: every
    leave-one-cluster-out fit by nist_exact.exact_ols on the binary values of the data."""
    from fractions import Fraction

    from nist_exact import exact_ols

    Xf = [[Fraction(float(v)) for v in row] for row in X]
    yf = [Fraction(float(v)) for v in y]
    beta = exact_ols(Xf, yf)[0]
    labels = sorted(set(g.tolist()))
    K = X.shape[1]
    S = [[Fraction(0)] * K for _ in range(K)]
    for h in labels:
        rows = [i for i in range(len(yf)) if g[i] != h]
        d = [a - b for a, b in zip(exact_ols([Xf[i] for i in rows], [yf[i] for i in rows])[0], beta)]
        for a in range(K):
            for b in range(K):
                S[a][b] += d[a] * d[b]
    G = len(labels)
    return np.array([[float(Fraction(G - 1, G) * S[a][b]) for b in range(K)] for a in range(K)])


def test_property_finding_near_leverage_one_is_said():
    """Found by tests/test_properties.py (shard sums): a one-row cluster whose regressor is almost
    identified by it alone (the other clusters' values differ by 9e-5) has leverage 1 - 6.6e-9.
    I - H_gg is then nearly singular and the CV3 / CV2 adjustment amplifies rounding: CV3 was
    1e-7 off the exact jackknife, silently. crve now says how many digits are left (100 eps /
    (1 - leverage)), and that statement holds against exact rational arithmetic."""
    y = np.array([0.54166392, 1.47543299, 1.31785237, 4.01666643, 1.23334266, 2.84612641, 1.0460223,
                  -1.24965123, 2.85143581, 0.67691221, 1.23043983])
    x1 = np.array([-0.85244505, -0.85244505, 0.61031202, -0.85253635, -0.85244505, -0.85253635, -0.85244505,
                   -0.85244505, -0.85253635, -0.85244505, -0.85244505])
    x2 = np.array([-0.01241791, -0.04396709, -0.02295902, -0.03569524, 0.02648137, 0.01020183, 0.06071754,
                   0.06656835, -0.00504601, 0.02163641, 0.05778095])
    X = np.column_stack([np.ones(11), x1, x2])
    g = np.array([0, 0, 1, 2, 0, 2, 0, 0, 2, 0, 0])
    with pytest.warns(crve.CrveWarning, match=r"leverage 1 - 6\.\de-09.*about 5 significant digits"):
        res = crve.cluster_robust(y, X, g, variant="CV3")
    gap = 1 - res._leverage_max
    assert 6e-9 < gap < 7e-9
    exact = _exact_jackknife(y, X, g)
    err = np.abs(res._cov - exact).max() / np.abs(exact).max()
    assert err < 100 * np.finfo(float).eps / gap  # the stated accuracy
    with pytest.warns(crve.CrveWarning, match="leverage 1 - "):
        cv2 = res.with_variant("CV2")
    assert any("CV2's adjustment amplifies rounding" in n for n in cv2.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", crve.CrveWarning)  # CV1 has no adjustment: nothing to say
        crve.cluster_robust(y, X, g, variant="CV1")


def test_fuzz_finding_variance_overflow_is_said():
    """Found by tests/fuzz_targets.py (arrays): a column in units of 1e-150 identified by one row
    has a variance above the float64 range; the inf is reported with a note, never silently."""
    y = np.array([18962.0, 0.0, 0.0, 0.0])
    X = np.array([[1, 0, 0], [1, 1, 0], [1, 0, -1e-150], [1, 0, 0]], dtype=float)
    with pytest.warns(crve.CrveWarning, match="overflows double precision"):
        res = crve.cluster_robust(y, X, None, variant="HC1", names=["c", "a", "tiny"])
    assert res._params[2] == pytest.approx(9481.0 / 1e-150)  # the exact OLS solution (lstsq's SVD cut drops it)
    assert np.isinf(res._cov[2, 2]) and np.isfinite(res._cov[:2, :2]).all()
    assert any("tiny" in n for n in res.notes)


@pytest.mark.parametrize("variant", ["CV1", "HC0", "HC2", "HC3", "CV2", "CV3"])
def test_fuzz_finding_overflowing_variance_is_inf_not_nan(variant):
    """Found by tests/fuzz_targets.py (arrays target, 1e5 run): an exact fit whose slope is
    1e150 / 1.2e-63 = 8e212; the variance of that slope overflowed inside the sandwich (inf * 0)
    and came out NaN while the note said "reported as inf". A NaN variance from finite data can
    only be overflow, so it is now inf, as the note says."""
    y = np.array([0.0, 0.0, 1e150])
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.19572736e-63]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", crve.CrveWarning)
        res = crve.cluster_robust(y, X, None, variant=variant)
    var = np.diag(res._cov)
    assert not np.isnan(var).any() and np.isinf(var[1])
    assert any("overflows double precision" in n and "x1" in n for n in res.notes)


def test_fuzz_finding_perfect_fit_has_no_negative_variance():
    """Found by tests/fuzz_targets.py (arrays target): y = x exactly, so the residuals are zero;
    the sum of squared residuals, expanded from the statistics, rounded to -1e-17 and gave a
    negative classical variance. Sums of squares are now clamped at zero."""
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    X = np.column_stack([np.ones(5), y])
    with pytest.warns(crve.CrveWarning, match="fits the data exactly"):
        res = crve.cluster_robust(y, X, None, variant="iid")
    assert (np.diag(res._cov) >= 0).all() and res.ssr >= 0
    np.testing.assert_allclose(res._params, [0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("variant", ["iid", "HC0", "HC1", "CV1", "CV2"])
def test_fuzz_finding_exact_fit_at_large_magnitude(variant):
    """Found by tests/fuzz_targets.py (arrays target): y = 0.43 x exactly with |x| ~ 1e15. The
    residuals are rounding noise, HC variances rounded to -1e-19 (NaN standard errors). An
    exact fit is now said (warning and note) and variances are clamped at zero."""
    y = np.array([7.64922893e14, 0.0, 0.0, 7.64922893e14 / 2])
    X = np.column_stack([np.ones(4), y / 0.43166739])
    g = None if variant in ("iid", "HC0", "HC1") else np.array([0, 1, 2, 2])
    with pytest.warns(crve.CrveWarning, match="fits the data exactly"):
        res = crve.cluster_robust(y, X, g, variant=variant)
    assert (np.diag(res._cov) >= 0).all() and not np.isnan(np.asarray(res.bse)).any()
    assert any("fits the data exactly" in n for n in res.notes)


def test_fuzz_finding_edge_of_rank_is_refused():
    """Found by tests/fuzz_targets.py (arrays target): two columns of size 1e9 nearly collinear,
    N - K = 1, reciprocal condition 3.6e-13. The normal equations left no correct digit in the
    intercept (11% of the coefficients' norm off an SVD fit) and an HC variance rounded below
    zero. Designs with rcond below 1e-12 are now refused, naming the columns."""
    y = np.array([0.0, 1, 0, 0, 0])
    X = np.array([[1, 9.99991005e8, 9.99996094e8, 0], [1, -9.99984165e8, -9.99997109e8, 0], [1, 1, 0, 0],
                  [1, 0, 0, 0], [1, 0, 0, 1.0]])
    with pytest.raises(ValueError, match=r"columns \['a', 'b'\] are \(nearly\) linearly dependent"):
        crve.cluster_robust(y, X, None, variant="HC1", names=["c", "a", "b", "d"])


@pytest.mark.parametrize("variant,test", [("CV1", "F"), ("CV1", "chi2"), ("CV2", "HTZ"), ("HC1", "F")])
def test_joint_test_does_not_depend_on_the_units_of_a_regressor(variant, test):
    """Found while checking CV2: a joint test of coefficients on very different scales (one
    regressor in units 1e7 times smaller, so its variance 1e-14 of the others') was refused as
    'R V R' has rank 2 < 3', because the rank cut-off was relative to the largest variance. The
    rank is now judged on the correlation form: the statistic must not depend on the units."""
    rng = np.random.default_rng(1)
    N, G = 2000, 200
    X = np.column_stack([np.ones(N), rng.standard_normal((N, 3))])
    g = None if variant.startswith("HC") else rng.integers(0, G, N)
    y = X @ [1.0, 0.05, 0.05, 0.0] + rng.standard_normal(N)
    R = np.eye(4)[1:]
    base = crve.cluster_robust(y, X, g, variant=variant).wald_test(R, test=test)
    Xs = X.copy()
    Xs[:, 1] *= 1e7
    scaled = crve.cluster_robust(y, Xs, g, variant=variant).wald_test(R, test=test)
    assert scaled.statistic == pytest.approx(base.statistic, rel=1e-8)
    assert scaled.df_denom == pytest.approx(base.df_denom, rel=1e-8)


def test_joint_bootstrap_does_not_depend_on_the_units_of_a_regressor():
    rng = np.random.default_rng(2)
    N, G = 600, 30
    X = np.column_stack([np.ones(N), rng.standard_normal((N, 2))])
    g = rng.integers(0, G, N)
    y = X @ [1.0, 0.1, 0.1] + rng.standard_normal(N)
    R = np.eye(3)[1:]
    Xs = X.copy()
    Xs[:, 1] *= 1e8
    a = crve.wild_cluster_bootstrap(y, X, g, R=R, B=199, seed=3)
    b = crve.wild_cluster_bootstrap(y, Xs, g, R=R, B=199, seed=3)
    assert b.statistic == pytest.approx(a.statistic, rel=1e-7)
    assert b.pvalue == a.pvalue


def test_fuzz_finding_rounded_negative_variance_is_zero_and_said():
    """Found by tests/fuzz_targets.py (arrays target): x near 1e9 and one row at x = 0; the
    intercept's HC variance (about 3e-18) came out as -4e-17 after mapping back from the shifted
    basis, a NaN standard error. A negative variance is now reported as 0 with a note."""
    y = np.array([0.0, 0.0, 1.0])
    X = np.array([[1, 9.99999997e8], [1, 0], [1, 1e9]])
    with pytest.warns(crve.CrveWarning, match="rounded below zero"):
        res = crve.cluster_robust(y, X, None, variant="HC1", names=["Intercept", "x"])
    assert (np.diag(res._cov) >= 0).all() and not np.isnan(np.asarray(res.bse)).any()
    assert any("Intercept" in n and "rounded below zero" in n for n in res.notes)
    np.testing.assert_allclose(res._params, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-6)


def test_fuzz_finding_constant_outcome_summary(tmp_path, capsys):
    """Found by tests/fuzz_targets.py (cli_files target): a constant outcome made R-squared
    divide by zero in the summary (a crash of crve fit). R-squared is now NaN, shown as
    undefined."""
    from crve.cli import main

    path = tmp_path / "d.csv"
    path.write_text("y,x,g\n0.0,0.0,0.0\n0.0,0.0,0.0\n")
    rc = main(["fit", str(path), "-f", "y ~ C(x)"])
    out, err = capsys.readouterr()
    assert rc in (0, 1) and "Traceback" not in err
    y = np.zeros(6)
    X = np.column_stack([np.ones(6), np.arange(6.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", crve.CrveWarning)
        res = crve.cluster_robust(y, X, None, variant="HC1")
    assert np.isnan(res.rsquared) and "undefined (the outcome is constant)" in str(res.summary())


def test_fuzz_finding_underflowing_column_is_refused_by_name():
    """Found by tests/fuzz_targets.py (arrays target, 1e5 run): a column of size 1e-298 has
    squares that underflow to zero, so it looked constant and its coefficient overflowed to inf.
    Non-finite coefficients are now refused, naming the column."""
    y = np.array([0.0, 0.0, 5.08735865e11])
    X = np.array([[9.43312396e-298], [0.0], [0.0]])
    with pytest.raises(ValueError, match="coefficients of tiny are not finite.*rescale"):
        crve.cluster_robust(y, X, None, names=["tiny"])
