"""crve.simulate and crve.certify: the data-generating process, method parsing, reproducibility
across workers, the verdict rule and stable verdicts on clear-cut designs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import crve
from crve.certify import _parse_method, _verdict
from crve.simulate import ClusteredDGP, clustered


# -- simulate ---------------------------------------------------------------------------------
def test_clustered_shapes_and_assignment():
    df = clustered(G=12, sizes=7, icc=0.2, seed=1)
    assert df.shape == (84, 3)
    per = df.groupby("cluster").x
    assert per.nunique().max() == 1 and per.first().sum() == 6           # half the clusters treated
    ind = clustered(G=12, sizes=7, treatment="individual", seed=1)
    assert (ind.groupby("cluster").x.sum() == 4).all()                   # round(0.5 * 7) = 4 per cluster
    few = clustered(G=30, sizes=5, treated=3, seed=2)
    assert few.groupby("cluster").x.first().sum() == 3
    pd.testing.assert_frame_equal(clustered(G=5, sizes=3, seed=9), clustered(G=5, sizes=3, seed=9))


def test_clustered_sizes_from_distribution_and_sequence():
    df = clustered(G=200, sizes=sps.poisson(20), seed=3)
    n = df.groupby("cluster").size()
    assert n.min() >= 1 and 18 < n.mean() < 22 and n.std() > 2
    seq = clustered(G=3, sizes=[1, 2, 3], seed=0)
    assert seq.groupby("cluster").size().tolist() == [1, 2, 3]
    f = clustered(G=4, sizes=lambda rng, G: np.full(G, 6), seed=0)
    assert len(f) == 24


def test_planted_icc_and_effect():
    dgp = ClusteredDGP(G=4000, sizes=10, icc=0.25, beta=0.5, treatment="continuous", x_icc=0.0)
    y, x, g = dgp.draw(np.random.default_rng(0))
    res = crve.cluster_robust(y, np.column_stack([np.ones(len(y)), x]), g)
    assert res._params[1] == pytest.approx(0.5, abs=0.02)
    assert np.var(y - 0.5 * x) == pytest.approx(1.0, rel=0.03)           # total error variance one
    assert res.diagnostics(jackknife=False).icc_residual == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("kwargs,match", [
    (dict(G=0), "G .number of clusters"), (dict(G=5, icc=1.0), "icc must lie"),
    (dict(G=5, treatment="pairs"), "treatment must be one of"), (dict(G=5, treated=5), "treated must be between"),
    (dict(G=5, treatment="individual", treated=2), "applies to treatment='cluster'"),
    (dict(G=3, sizes=[1, 2]), "sizes must be"), (dict(G=2, sizes=[1, 0]), "whole numbers"),
    (dict(G=3, sizes=0), "at least 1"), (dict(G=3, het=-1), "het must be"), (dict(G=3, share=1.0), "share")])
def test_clustered_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clustered(**kwargs, seed=0)


# -- certify ----------------------------------------------------------------------------------
def test_parse_methods():
    assert _parse_method("naive").variant == "iid"
    m = _parse_method("CV2-satterthwaite")
    assert (m.variant, m.dof) == ("CV2", "satterthwaite")
    assert _parse_method("CV1-G-1").dof == "G-1"
    assert _parse_method("cr2").variant == "CV2"
    b = _parse_method("WCR33-webb")
    assert (b.kind, b.btype, b.weights) == ("WCR", "33", "webb")
    assert _parse_method("wcu-rademacher").kind == "WCU"
    for bad, match in [("CV9", "unknown method"), ("CV1-sometimes", "unknown dof rule"),
                       ("WCR-gaussianish", "unknown weights"), (3, "methods are strings")]:
        with pytest.raises(ValueError, match=match):
            _parse_method(bad)


def test_certify_argument_errors():
    with pytest.raises(ValueError, match="design must be one of"):
        crve.certify(design="cluster", reps=10)
    with pytest.raises(ValueError, match="every G must be an int >= 2"):
        crve.certify(G=[1, 5], reps=10)
    with pytest.raises(ValueError, match="duplicates"):
        crve.certify(methods=["CV1", "CV1"], reps=10)
    with pytest.raises(ValueError, match="reps must be"):
        crve.certify(reps=0)


def test_verdict_rule():
    assert _verdict(100, 2000, 0.05, True, 0.95)[2] == "certified"
    assert _verdict(420, 2000, 0.05, True, 0.95)[2] == "over-rejects: 0.21 at alpha 0.05"
    assert _verdict(40, 2000, 0.05, True, 0.95)[2].startswith("under-rejects: 0.020")
    lo, hi, v = _verdict(1200, 2000, 0.05, False, 0.95)
    assert v == "power 0.60" and lo < 0.6 < hi
    lo, hi = sps.binomtest(100, 2000).proportion_ci(0.95, method="exact")
    assert _verdict(100, 2000, 0.05, True, 0.95)[:2] == (lo, hi)


def test_certify_same_table_for_any_number_of_workers():
    kw = dict(G=[4, 8], icc=0.05, mean_size=6, methods=["naive", "CV1", "WCR-rademacher"], reps=120, seed=5,
              progress=False)
    one = crve.certify(workers=1, **kw)
    two = crve.certify(workers=2, **kw)
    pd.testing.assert_frame_equal(one, two)
    assert list(one.columns[:5]) == ["design", "G", "icc", "mean_size", "method"]
    assert {"rejection_rate", "mc_ci_low", "mc_ci_high", "se_ratio", "moulton", "coverage", "verdict"} <= set(one.columns)
    assert one.attrs["alpha"] == 0.05 and one.attrs["reps"] == 120


def test_certify_replications_are_crve_results():
    """Replication r of cell c is crve's own fit on default_rng([seed, c, r]) data."""
    t = crve.certify(G=[6], icc=0.1, mean_size=5, methods=["CV1", "CV2-satterthwaite"], reps=40, seed=8,
                     workers=1, progress=False)
    dgp = ClusteredDGP(G=6, sizes=5, icc=0.1, treatment="cluster")
    rej = np.zeros(2)
    for r in range(40):
        y, x, g = dgp.draw(np.random.default_rng([8, 0, r]))
        res = crve.cluster_robust(y, np.column_stack([np.ones(len(y)), x]), g)
        rej[0] += res.pvalues[1] < 0.05
        rej[1] += res.with_variant("CV2", "satterthwaite").pvalues[1] < 0.05
    np.testing.assert_allclose(t.rejection_rate.to_numpy(), rej / 40)


@pytest.mark.parametrize("seed", [1, 2])
def test_verdicts_stable_across_seeds(seed):
    """Cluster-randomized A/A, ICC 0.02, 36 per cluster, G = 30: the classical test over-flags
    (Moulton factor 1.30 -> size near 0.13); CV3 and the wild bootstrap hold size."""
    t = crve.certify(G=[30], methods=["naive", "CV3", "WCR-webb"], reps=2000, seed=seed, progress=False)
    v = dict(zip(t.method, t.verdict))
    assert v["naive"].startswith("over-rejects: 0.1")
    assert v["CV3"] == "certified" and v["WCR-webb"] == "certified"
    naive = t.set_index("method").loc["naive"]
    assert naive.moulton == pytest.approx(np.sqrt(1 + 0.02 * 35), rel=1e-9)
    assert t.set_index("method").loc["CV3", "se_ratio"] == pytest.approx(naive.moulton, rel=0.05)


def test_user_randomized_naive_and_robust_agree():
    t = crve.certify(design="user-randomized", G=[20], methods=["naive", "CV1"], reps=300, seed=3, progress=False)
    r = t.set_index("method")
    assert r.loc["CV1", "se_ratio"] == pytest.approx(1.0, abs=0.05)
    assert r.loc["naive", "moulton"] == pytest.approx(1.0, abs=0.02)
    assert (t.verdict == "certified").all()


def test_power_and_coverage_when_h0_differs_from_beta():
    t = crve.certify(G=[20], icc=0.05, mean_size=10, beta=0.5, h0=0.0, methods=["CV1", "WCR-webb"], reps=200,
                     seed=4, progress=False, B=199)
    assert t.verdict.str.startswith("power").all()
    assert (t.rejection_rate > 0.5).all()               # a large effect is found
    assert (t.coverage > 0.85).all()                    # while the interval still covers 0.5


def test_certify_plot():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    t = crve.certify(G=[4, 8], mean_size=5, methods=["naive", "CV1"], reps=30, seed=0, progress=False, workers=1)
    ax = t.plot()
    assert len(ax.get_lines()) >= 1 and ax.get_ylabel() == "rejection rate under H0"
    assert {tx.get_text() for tx in ax.get_legend().get_texts()} >= {"naive", "CV1", "nominal 0.05"}
    with pytest.raises(ValueError, match="lacks column"):
        crve.plot.plot_certify(t.drop(columns="mc_ci_low"))
