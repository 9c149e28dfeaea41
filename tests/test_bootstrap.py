"""Wild (cluster) bootstrap: brute-force refits, published boottest / Stata numbers, wildboottest,
Monte Carlo size, reproducibility, confidence-interval inversion, errors."""
from __future__ import annotations

import os
import warnings
from unittest import mock

import numpy as np
import pytest

import crve
from crve import CrveWarning, _core
from bootstrap_reference import dense_wild

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
TYPES = ("11", "13", "31", "33")


def small(seed: int, N: int = 70, G: int = 7):
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(G), rng.integers(0, G, N - G)])
    X = np.column_stack([np.ones(N), rng.normal(size=N), rng.normal(size=G)[g] + 0.5 * rng.normal(size=N)])
    y = X @ [1.0, 0.3, -0.2] + rng.normal(size=G)[g] + rng.normal(size=N) * (1 + np.abs(X[:, 1]))
    return y, X, g


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CrveWarning)
        return fn(*args, **kwargs)


def weights_of(bt, G_boot):
    return _core.draw_weights(bt.weights, bt.seed, bt.enumerated, G_boot, 0, bt.B)


# -- brute force: refit OLS on every y* ------------------------------------------------------


@pytest.mark.parametrize("weights", ["rademacher", "webb", "mammen", "normal"])
@pytest.mark.parametrize("impose_null", [True, False])
@pytest.mark.parametrize("btype", TYPES)
def test_t_star_equals_refitting(btype, impose_null, weights):
    y, X, g = small(1)
    B = 2 ** 7 if weights == "rademacher" else 40
    bt = quiet(crve.wild_cluster_bootstrap, y, X, g, param=1, h0=0.1, B=B, seed=3, weights=weights,
               impose_null=impose_null, bootstrap_type=btype, conf_int=False)
    assert bt.enumerated == (weights == "rademacher")
    t, star = dense_wild(y, X, g, g, [[0, 1, 0]], [0.1], weights_of(bt, 7), impose_null=impose_null,
                         bootstrap_type=btype)
    assert bt.t_stat == pytest.approx(t, rel=1e-10)
    np.testing.assert_allclose(bt.t_star, star, rtol=1e-10, atol=1e-10 * np.abs(star).max())


@pytest.mark.parametrize("btype", TYPES)
@pytest.mark.parametrize("layout", ["crossed", "coarser", "finer"])
def test_bootcluster_equals_refitting(layout, btype):
    y, X, g = small(2, N=90, G=8)
    rng = np.random.default_rng(0)
    boot = {"crossed": rng.integers(0, 5, 90), "coarser": g // 2,
            "finer": g * 2 + (np.arange(90) % 2)}[layout]
    boot = np.unique(boot, return_inverse=True)[1]
    bt = quiet(crve.wild_cluster_bootstrap, y, X, g, param=2, h0=-0.1, B=50, seed=11, weights="webb",
               bootcluster=boot, bootstrap_type=btype, conf_int=False)
    assert bt.n_boot_clusters == boot.max() + 1 and bt.n_clusters == 8
    t, star = dense_wild(y, X, g, boot, [[0, 0, 1]], [-0.1], weights_of(bt, bt.n_boot_clusters),
                         bootstrap_type=btype)
    assert bt.t_stat == pytest.approx(t, rel=1e-10)
    np.testing.assert_allclose(bt.t_star, star, rtol=1e-10, atol=1e-10 * np.abs(star).max())


@pytest.mark.parametrize("btype", ["11", "31", "13"])
def test_heteroskedastic_equals_refitting(btype):
    y, X, _ = small(3, N=25)
    bt = quiet(crve.wild_cluster_bootstrap, y, X, None, param=1, B=30, seed=5, weights="webb",
               bootstrap_type=btype, conf_int=False)
    rows = np.arange(25)
    t, star = dense_wild(y, X, rows, rows, [[0, 1, 0]], [0.0], weights_of(bt, 25), bootstrap_type=btype)
    assert bt.n_clusters == 25
    assert bt.t_stat == pytest.approx(t, rel=1e-10)
    np.testing.assert_allclose(bt.t_star, star, rtol=1e-10, atol=1e-10 * np.abs(star).max())


@pytest.mark.parametrize("btype", ["11", "33"])
def test_joint_wald_equals_refitting(btype):
    y, X, g = small(4, N=80, G=9)
    R, r = [[0, 1, 0], [0, 1, 1]], [0.2, 0.0]
    bt = quiet(crve.wild_cluster_bootstrap, y, X, g, R=R, r=r, B=40, seed=2, weights="normal",
               bootstrap_type=btype)
    stat, star = dense_wild(y, X, g, g, R, r, weights_of(bt, 9), bootstrap_type=btype)
    assert bt.q == 2 and bt.conf_int is None
    assert bt.statistic == pytest.approx(stat, rel=1e-10)
    np.testing.assert_allclose(bt.t_star, star, rtol=1e-9)
    assert bt.pvalue == np.mean(star > stat * (1 + 1e-10))


# -- published values (boottest, Roodman et al. 2019; Stata) ---------------------------------


def _stata(name, cols):
    pd = pytest.importorskip("pandas")
    path = os.path.join(SHARED, name)
    if not os.path.exists(path):
        pytest.skip(f"shared/data/{name} not available")
    return pd.read_stata(path, convert_categoricals=False)[cols].dropna()


@pytest.fixture(scope="module")
def collapsed():
    d = _stata("collapsed.dta", ["hasinsurance", "selfemployed", "post", "post_self", "year"])
    return d["hasinsurance"], d[["selfemployed", "post", "post_self"]].assign(_cons=1.0), d["year"]


def test_collapsed_post_self_enumerated(collapsed):
    y, X, year = collapsed
    with pytest.warns(CrveWarning, match="enumerated.*webb"):
        bt = crve.wild_cluster_bootstrap(y, X, year, param="post_self", h0=0.04)
    assert bt.t_stat == pytest.approx(2.0194, abs=5e-5)
    assert bt.enumerated and bt.B == 256
    assert bt.pvalue * 256 == 18  # boottest Mata counts a rounding tie: 19/256 = 0.0742
    lo, hi = bt.conf_int
    assert lo == pytest.approx(0.0382, abs=1e-3) and hi == pytest.approx(0.0715, abs=1e-3)
    assert lo == pytest.approx(0.03815, abs=1e-3) and hi == pytest.approx(0.07148, abs=1e-3)  # boottest Julia


def test_collapsed_post_enumerated(collapsed):
    y, X, year = collapsed
    bt = quiet(crve.wild_cluster_bootstrap, y, X, year, param="post", h0=0)
    assert bt.t_stat == pytest.approx(-5.5821, abs=5e-5)
    assert bt.conf_int[0] == pytest.approx(-0.0298, abs=1e-3)
    assert bt.conf_int[1] == pytest.approx(-0.0131, abs=1e-3)


def test_collapsed_webb_million(collapsed):
    y, X, year = collapsed
    bt = crve.wild_cluster_bootstrap(y, X, year, param="post_self", h0=0.04, weights="webb", B=999_999, seed=1)
    assert bt.pvalue == pytest.approx(0.0756, abs=0.0015)  # Monte Carlo s.e. 0.00026
    assert bt.conf_int[0] == pytest.approx(0.03851, abs=1e-3)
    assert bt.conf_int[1] == pytest.approx(0.07106, abs=1e-3)


def test_collapsed_joint(collapsed):
    y, X, year = collapsed
    R = [[0, 0, 1, 0], [0, 1, 0, 0]]
    bt = crve.wild_cluster_bootstrap(y, X, year, R=R, weights="webb", B=999, seed=1)
    assert bt.statistic == pytest.approx(72.4798, abs=5e-5)
    assert bt.statistic == pytest.approx(crve.cluster_robust(y, X, year).wald_test(R).statistic, rel=1e-12)


def test_nlsw88_enumerated():
    d = _stata("nlsw88.dta", ["wage", "tenure", "ttl_exp", "collgrad", "industry"])
    assert len(d) == 2217
    X = d[["tenure", "ttl_exp", "collgrad"]].astype(float).assign(_cons=1.0)
    bt = crve.wild_cluster_bootstrap(d["wage"], X, d["industry"], param="tenure", B=999_999)
    assert bt.t_stat == pytest.approx(1.0772, abs=5e-5)
    assert bt.enumerated and bt.B == 4096 and bt.n_clusters == 12
    assert bt.pvalue * 4096 == 1190
    assert bt.pvalue == pytest.approx(0.290672, abs=0.0015)  # boottest, 999,999 random draws


# -- wildboottest (PyPI) on enumerated cases ---------------------------------------------------


class _ScalarSetArray(np.ndarray):
    """wildboottest 0.3's CV3 path assigns a length-1 array to a scalar slot, which numpy 2 refuses."""

    def __setitem__(self, key, value):
        if isinstance(key, (int, np.integer)) and np.ndim(value) > 0 and np.size(value) == 1:
            value = np.asarray(value).reshape(-1)[0]
        super().__setitem__(key, value)


class _NumpyShim:
    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def zeros(*args, **kwargs):
        return np.zeros(*args, **kwargs).view(_ScalarSetArray)


@pytest.mark.parametrize("impose_null", [True, False])
@pytest.mark.parametrize("btype", TYPES)
def test_wildboottest_sorted_t_star(btype, impose_null):
    wbmod = pytest.importorskip("wildboottest.wildboottest")
    rng = np.random.default_rng(5)
    N, G = 120, 9
    g = np.concatenate([np.arange(G), rng.integers(0, G, N - G)])
    X = np.column_stack([np.ones(N), rng.normal(size=(N, 2))])
    y = X @ [1, 0.2, -0.1] + rng.normal(size=G)[g] + rng.normal(size=N)
    wb = wbmod.WildboottestCL(X=X, Y=y, cluster=g, R=np.array([0, 1.0, 0]), B=2 ** G + 1, seed=1, parallel=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wb.get_scores(bootstrap_type=btype, impose_null=impose_null)
        wb.get_weights(weights_type="rademacher")
        wb.get_numer()
        if btype[1] == "3":
            with mock.patch.object(wbmod, "np", _NumpyShim()):
                wb.get_denom()
        else:
            wb.get_denom()
        wb.get_tboot()
        wb.get_vcov()
        wb.get_tstat()
        wb.get_pvalue()
    assert wb.B == 2 ** G
    bt = quiet(crve.wild_cluster_bootstrap, y, X, g, param=1, B=2 ** G, bootstrap_type=btype,
               impose_null=impose_null, conf_int=False)
    theirs = np.sort(np.ravel(wb.t_boot))
    np.testing.assert_allclose(np.sort(bt.t_star), theirs, rtol=0, atol=1e-10 * np.abs(theirs).max())
    t = float(np.ravel(wb.t_stat)[0])
    assert bt.t_stat == pytest.approx(t, rel=1e-10)
    # wildboottest counts |t*| > |t| strictly, so a draw that reproduces t up to rounding (under
    # WCR11/13 the all-ones draw and its mirror) counts or not by the last bit of its arithmetic (it
    # changed with the numpy / BLAS build: 370/512 here, 368/512 before); crve counts
    # only draws beyond |t| (1 + 1e-10) (README). Same draws, crve's rule: equal; and the two
    # p-values differ by no more than those ties.
    ties = np.abs(np.abs(theirs) - abs(t)) <= 1e-10 * abs(t)
    assert bt.pvalue == np.mean(np.abs(theirs) > abs(t) * (1 + 1e-10))
    assert abs(bt.pvalue - wb.pvalue) <= ties.mean() + 1e-15
    # WCR with ordinary DGP residuals: the all-ones draw is the sample itself
    assert ties.sum() == (2 if impose_null and btype[0] == "1" else 0)


# -- size under H0 -------------------------------------------------------------------------------


@pytest.mark.parametrize("G", [5, 8, 12, 20, 30])
def test_monte_carlo_size(G):
    """Unequal clusters, a cluster-level regressor: CV1 with T(G-1) over-rejects, WCR (Webb) holds 5%."""
    rng = np.random.default_rng(G)
    g = np.repeat(np.arange(G), np.maximum(2, (np.exp(0.5 * rng.normal(size=G)) * 10).astype(int)))
    N, reps = len(g), 1000
    rej_boot = rej_cv1 = 0
    for rep in range(reps):
        X = np.column_stack([np.ones(N), rng.normal(size=G)[g] + 0.3 * rng.normal(size=N)])
        y = 1 + rng.normal(size=G)[g] + rng.normal(size=N)
        bt = quiet(crve.wild_cluster_bootstrap, y, X, g, weights="webb", B=199, seed=rep, conf_int=False)
        rej_boot += bt.pvalue <= 0.05
        rej_cv1 += crve.cluster_robust(y, X, g).pvalues[1] <= 0.05
    sd = np.sqrt(0.05 * 0.95 / reps)
    assert abs(rej_boot / reps - 0.05) < 3 * sd
    assert rej_cv1 / reps > 0.05 + 3 * sd


# -- reproducibility ---------------------------------------------------------------------------


def test_threads_and_seed():
    rng = np.random.default_rng(9)
    N, G = 5000, 60
    g = rng.integers(0, G, N)
    X = np.column_stack([np.ones(N), rng.normal(size=(N, 3))])
    y = X @ [1, 0, 1, 2] + rng.normal(size=G)[g] + rng.normal(size=N)
    run = lambda **kw: crve.wild_cluster_bootstrap(y, X, g, param=1, B=3001, weights="webb", **kw)
    a, b = run(seed=42, threads=1), run(seed=42, threads=2)
    assert np.array_equal(a.t_star, b.t_star) and a.conf_int == b.conf_int and a.pvalue == b.pvalue
    c = run(seed=43)
    assert not np.array_equal(a.t_star, c.t_star)
    d = run(seed=None)
    assert 0 <= d.seed < 2 ** 64
    assert np.array_equal(run(seed=d.seed).t_star, d.t_star)
    assert np.array_equal(run(seed=42, bootstrap_type="33", threads=1).t_star,
                          run(seed=42, bootstrap_type="33", threads=2).t_star)


def test_weights_moments():
    for kind, third in [("rademacher", 0.0), ("webb", 0.0), ("mammen", 1.0), ("normal", 0.0)]:
        v = _core.draw_weights(kind, 7, False, 1000, 0, 400).ravel()
        se = np.sqrt(np.var(v ** 2) / v.size)
        assert abs(v.mean()) < 4 / np.sqrt(v.size), kind
        assert abs((v ** 2).mean() - 1) <= 4 * se, kind
        assert abs((v ** 3).mean() - third) <= 4 * np.sqrt(np.var(v ** 3) / v.size) + 1e-12, kind
    webb = np.unique(_core.draw_weights("webb", 1, False, 50, 0, 20))
    np.testing.assert_allclose(webb, np.r_[-np.sqrt([1.5, 1, 0.5]), np.sqrt([0.5, 1, 1.5])], rtol=1e-15)
    enum = _core.draw_weights("rademacher", 0, True, 4, 0, 16)
    assert len({tuple(r) for r in enum}) == 16 and (enum[0] == 1).all()


def test_result_method_matches_function():
    y, X, g = small(6, N=200, G=14)
    res = crve.cluster_robust(y, X, g, variant="CV2")
    a = res.wild_bootstrap(1, h0=0.2, B=999, seed=5, weights="webb")
    b = crve.wild_cluster_bootstrap(y, X, g, param=1, h0=0.2, B=999, seed=5, weights="webb")
    assert np.array_equal(a.t_star, b.t_star) and a.conf_int == b.conf_int
    boot = g // 2
    c = res.wild_bootstrap(1, bootcluster=boot, B=99, seed=1, weights="webb", conf_int=False)
    d = crve.wild_cluster_bootstrap(y, X, g, param=1, bootcluster=boot, B=99, seed=1, weights="webb", conf_int=False)
    assert np.array_equal(c.t_star, d.t_star)
    hc = crve.cluster_robust(y, X, variant="HC1").wild_bootstrap(2, B=99, seed=1, weights="webb", conf_int=False)
    assert np.array_equal(hc.t_star, crve.wild_cluster_bootstrap(y, X, None, param=2, B=99, seed=1, weights="webb",
                                                                  conf_int=False).t_star)
    with pytest.raises(TypeError, match="unknown option"):
        res.wild_bootstrap(1, Bee=9)


# -- p-values and the confidence interval ---------------------------------------------------


def test_pvalue_types():
    y, X, g = small(7, N=300, G=20)
    base = dict(param=1, h0=0.1, B=1999, seed=3, weights="webb", conf_int=False)
    sym = crve.wild_cluster_bootstrap(y, X, g, **base)
    t, ts = sym.t_stat, sym.t_star
    assert sym.pvalue == np.mean(np.abs(ts) > abs(t) * (1 + 1e-10))
    up = crve.wild_cluster_bootstrap(y, X, g, pvalue="upper", **base).pvalue
    lo = crve.wild_cluster_bootstrap(y, X, g, pvalue="lower", **base).pvalue
    assert up == np.mean(ts > t + 1e-10 * abs(t)) and lo == np.mean(ts < t - 1e-10 * abs(t))
    et = crve.wild_cluster_bootstrap(y, X, g, pvalue="equal-tailed", **base).pvalue
    assert et == min(1.0, 2 * min(up, lo))


@pytest.mark.parametrize("pvalue", ["symmetric", "equal-tailed"])
@pytest.mark.parametrize("btype,impose_null", [("11", True), ("33", True), ("11", False)])
def test_conf_int_inverts_the_test(btype, impose_null, pvalue):
    """Just inside each bound the test accepts (p > alpha), just outside it rejects."""
    y, X, g = small(8, N=300, G=15)
    opts = dict(param=1, B=999, seed=4, weights="webb", bootstrap_type=btype, impose_null=impose_null, pvalue=pvalue)
    bt = crve.wild_cluster_bootstrap(y, X, g, **opts)
    lo, hi = bt.conf_int
    assert lo < bt.estimate < hi
    eps = 1e-7 * bt.std_error
    p = lambda h: crve.wild_cluster_bootstrap(y, X, g, h0=h, conf_int=False, **{**opts}).pvalue
    assert p(lo + eps) > 0.05 >= p(lo - eps)
    assert p(hi - eps) > 0.05 >= p(hi + eps)


def test_wcu_interval_is_percentile_t():
    y, X, g = small(9, N=300, G=25)
    bt = crve.wild_cluster_bootstrap(y, X, g, param=1, B=999, seed=1, weights="webb", impose_null=False)
    # Under WCU t* does not depend on h0: the set is estimate -+ se times the level's order statistic.
    c = np.sort(np.abs(bt.t_star))
    k = int(np.floor(0.05 * bt.B))  # p(h) > .05 <=> fewer than... strictly more than k draws above |t(h)|
    half = c[bt.B - k - 1]
    assert bt.conf_int[0] == pytest.approx(bt.estimate - half * bt.std_error, rel=1e-8, abs=1e-9)
    assert bt.conf_int[1] == pytest.approx(bt.estimate + half * bt.std_error, rel=1e-8, abs=1e-9)


def test_one_sided_interval_is_half_line():
    y, X, g = small(10, N=300, G=25)
    bt = crve.wild_cluster_bootstrap(y, X, g, param=1, B=999, seed=1, weights="webb", pvalue="upper")
    assert np.isfinite(bt.conf_int[0]) and bt.conf_int[1] == np.inf


def test_summary_and_repr():
    y, X, g = small(11, N=200, G=12)
    bt = crve.wild_cluster_bootstrap(y, X, g, param=1, B=99, seed=1, weights="webb")
    s = bt.summary()
    assert "WCR11" in s and "webb" in s and "95% confidence interval" in s and "seed 1" in s
    assert "WildBootstrapResult" in repr(bt)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(param="nope"), "not a column"),
    (dict(param=5), "not a column"),
    (dict(param=1.5), "column index or name"),
    (dict(B=0), "positive integer"),
    (dict(weights="gamma"), "unknown weights"),
    (dict(pvalue="two"), "unknown pvalue"),
    (dict(bootstrap_type="22"), "unknown bootstrap_type"),
    (dict(level=1.5), "level"),
    (dict(seed=-1), "seed"),
    (dict(seed="x"), "seed"),
    (dict(h0=np.nan), "finite"),
    (dict(R=[[0, 1, 0]] * 2), "linearly dependent"),
    (dict(R=[[0, 1]]), "3 columns"),
    (dict(R=[[0, 1, 0]], param=1), "either param"),
    (dict(r=[1.0]), "r needs R"),
])
def test_errors(kwargs, match):
    y, X, g = small(12)
    with pytest.raises(ValueError, match=match):
        crve.wild_cluster_bootstrap(y, X, g, **{"B": 99, **kwargs})


def test_errors_clusters():
    y, X, g = small(13, N=60, G=3)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        crve.wild_cluster_bootstrap(y, X, np.zeros(60, int))
    with pytest.raises(ValueError, match="cannot test 3 restrictions with 3 clusters"):
        crve.wild_cluster_bootstrap(y, X, g, R=np.eye(3))
    with pytest.raises(ValueError, match="bootcluster needs clusters"):
        crve.wild_cluster_bootstrap(y, X, None, bootcluster=g)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        crve.wild_cluster_bootstrap(y, X, g, bootcluster=np.zeros(60, int))
