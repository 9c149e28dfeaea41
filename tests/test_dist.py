"""crve._dist (scipy.special) gives scipy.stats' numbers, infinite and fractional df included."""
import numpy as np
import pytest
from scipy import stats

from crve import _dist

DF = [0.5, 1.0, 2.5, 7.0, 30.0, 308.756, 1e6, np.inf]
X = [0.0, 0.3, 1.0, 1.96, 4.5, 40.0]


@pytest.mark.parametrize("df", DF)
def test_t_tails_and_quantiles(df):
    np.testing.assert_allclose(_dist.t_sf(np.array(X), df), stats.t.sf(X, df), rtol=1e-14, atol=0)
    q = np.array([0.5, 0.9, 0.975, 0.995, 1 - 1e-9])
    np.testing.assert_allclose(_dist.t_ppf(q, df), stats.t.ppf(q, df), rtol=1e-13)


@pytest.mark.parametrize("k", [1, 2, 3.5, 10])
def test_chi2_and_f_tails(k):
    np.testing.assert_allclose(_dist.chi2_sf(np.array(X), k), stats.chi2.sf(X, k), rtol=1e-14, atol=0)
    for d2 in [1.5, 9.0, 200.0]:
        np.testing.assert_allclose(_dist.f_sf(np.array(X), k, d2), stats.f.sf(X, k, d2), rtol=1e-13, atol=0)


def test_vectorised_df_and_import_cost():
    df = np.array(DF)
    np.testing.assert_allclose(_dist.t_sf(2.0, df), stats.t.sf(2.0, df), rtol=1e-14)
    import subprocess
    import sys
    # import crve stays light: no scipy at all until a p-value or quantile is asked for (standard
    # errors and the wild bootstrap need none); then scipy.special, never scipy.stats.
    code = ("import sys, numpy as np, crve\n"
            "g = np.arange(40) % 8; X = np.column_stack([np.ones(40), np.arange(40.0) ** 0.5])\n"
            "res = crve.cluster_robust(np.sin(np.arange(40.0)), X, g)\n"
            "res.wild_bootstrap(1, B=99, seed=1, progress=False)\n"
            "before = 'scipy' in sys.modules\n"
            "res.pvalues\n"
            "print(before, 'scipy.special' in sys.modules, 'scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "False"]
