"""Invariants of the estimators: G = N gives HC, row order and cluster labels do not matter,
shard statistics add up to the whole, results do not depend on the thread count or layout."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import crve
from conftest import make_design

ALL = ["CV0", "CV1", "CV2", "CV3", "CV3J"]


def close(a, b, tol=1e-11):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.max(np.abs(a - b)) <= tol * np.max(np.abs(b)), np.max(np.abs(a - b) / np.max(np.abs(b)))


@pytest.mark.parametrize("cv,hc,factor", [("CV0", "HC0", 1.0), ("CV1", "HC1", 1.0), ("CV2", "HC2", 1.0),
                                          ("CV3", "HC3", None)])
def test_no_clusters_equals_singletons_and_hc(cv, hc, factor):
    y, X, _ = make_design(3, N=120)
    N = len(y)
    none = crve.cluster_robust(y, X, None, variant=cv)
    single = crve.cluster_robust(y, X, np.arange(N), variant=cv)
    het = crve.cluster_robust(y, X, None, variant=hc)
    factor = (N - 1) / N if factor is None else factor
    close(none.cov, single.cov)
    close(none.cov, factor * het.cov)
    assert none.n_clusters == single.n_clusters == N
    if cv == "CV2":  # Satterthwaite via the row pass equals the cluster path with G = N
        close(none.df, single.df, 1e-9)


def test_cv3j_no_clusters_equals_singletons():
    y, X, _ = make_design(4, N=100)
    close(crve.cluster_robust(y, X, None, variant="CV3J").cov,
          crve.cluster_robust(y, X, np.arange(len(y)), variant="CV3J").cov)


@pytest.mark.parametrize("variant", ALL)
def test_row_permutation_and_relabelling(design, variant):
    y, X, g = design
    base = crve.cluster_robust(y, X, g, variant=variant)
    rng = np.random.default_rng(0)
    p = rng.permutation(len(y))
    relabel = {lab: f"new-{i}" for i, lab in enumerate(rng.permutation(np.unique(g.astype(str))))}
    g2 = np.array([relabel[str(v)] for v in g[p]], dtype=object)
    other = crve.cluster_robust(y[p], X[p], g2, variant=variant)
    close(other.params, base.params)
    close(other.cov, base.cov, 1e-10)
    close(other.df, base.df, 1e-9)


@pytest.mark.parametrize("variant", ["CV1", "CV2", "CV3"])
def test_shard_sums_equal_the_whole(variant):
    y, X, g = make_design(8, N=300, G=25)
    whole = crve.ClusterStats.from_arrays(y, X, g).fit(variant)
    cuts = [0, 70, 71, 180, len(y)]  # clusters span shards; one shard has one row
    parts = [crve.ClusterStats.from_arrays(y[a:b], X[a:b], g[a:b]) for a, b in zip(cuts, cuts[1:])]
    summed = sum(parts).fit(variant)
    close(summed.params, whole.params)
    close(summed.cov, whole.cov, 1e-10)
    close(summed.df, whole.df, 1e-9)
    assert summed.n_clusters == whole.n_clusters


def test_stats_fit_equals_array_call():
    y, X, g = make_design(9)
    a = crve.cluster_robust(y, X, g, variant="CV2")
    b = crve.ClusterStats.from_arrays(y, X, g).fit("CV2")
    close(a.cov, b.cov, 1e-13)
    close(a.df, b.df, 1e-12)


def test_stats_pickle_roundtrip():
    y, X, g = make_design(10)
    st = crve.ClusterStats.from_arrays(y, X, g)
    st2 = pickle.loads(pickle.dumps(st))
    # st keeps the total its build summed; st2 sums its blocks afresh: the same bits
    for v in ("CV1", "CV2"):
        np.testing.assert_array_equal(st2.fit(v).cov, st.fit(v).cov)
    assert list(st2.labels) == list(st.labels)
    view = st._core.packed  # read-only: the kept total cannot go stale behind the statistics
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1.0


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_thread_count_independent(threads):
    # enough rows and clusters that every mode of the statistics pass splits its work
    rng = np.random.default_rng(1)
    N = 300_000
    for G in (40, 5000):
        g = rng.integers(0, G, N)
        X = np.column_stack([np.ones(N), rng.normal(size=(N, 3))])
        y = X @ [1, 2, 3, 4] + rng.normal(size=N)
        one = crve.cluster_robust(y, X, g, variant="CV2", threads=1)
        many = crve.cluster_robust(y, X, g, variant="CV2", threads=threads)
        np.testing.assert_array_equal(one.cov, many.cov)
        np.testing.assert_array_equal(one.df, many.df)


def test_memory_layouts_agree():
    """C order, Fortran order and strided views give identical results (no copies needed)."""
    y, X, g = make_design(11)
    base = crve.cluster_robust(y, X, g)
    close(crve.cluster_robust(y, np.asfortranarray(X), g).cov, base.cov, 1e-13)
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    close(crve.cluster_robust(y, wide[:, ::2], g).cov, base.cov, 1e-13)
    yy = np.zeros(2 * len(y))
    yy[::2] = y
    close(crve.cluster_robust(yy[::2], X, g).cov, base.cov, 1e-13)
    ro = X.copy()
    ro.flags.writeable = False
    close(crve.cluster_robust(y, ro, g).cov, base.cov, 1e-13)


def test_sorted_and_unsorted_rows_agree():
    """The statistics pass has three traversal modes (grouped rows, few clusters, many clusters)."""
    rng = np.random.default_rng(2)
    N = 200_000
    for G in (30, 20_000):
        g = rng.integers(0, G, N)
        X = np.column_stack([np.ones(N), rng.normal(size=(N, 4))])
        y = X @ np.arange(5.0) + rng.normal(size=G)[g] + rng.normal(size=N)
        o = np.argsort(g, kind="stable")
        a = crve.cluster_robust(y, X, g, variant="CV2")
        b = crve.cluster_robust(y[o], X[o], g[o], variant="CV2")
        close(a.cov, b.cov, 1e-10)


def test_label_types():
    y, X, g = make_design(12)
    base = crve.cluster_robust(y, X, g)
    for labels in (g.astype(float) + 0.5, np.array([f"s{v}" for v in g]), pd.Categorical(g),
                   pd.Series(g).astype("category"), g.astype(np.int32), g * 10**9):
        close(crve.cluster_robust(y, X, labels).cov, base.cov, 1e-12)


def test_scaling_a_column():
    y, X, g = make_design(13)
    base = crve.cluster_robust(y, X, g, variant="CV2")
    X2 = X.copy()
    X2[:, 2] *= -1e3
    sc = crve.cluster_robust(y, X2, g, variant="CV2")
    close(sc.params[2], base.params[2] / -1e3)
    close(sc.bse[2], base.bse[2] / 1e3)
    close(sc.df, base.df, 1e-9)


def test_named_results_are_series():
    y, X, g = make_design(14)
    df = pd.DataFrame(X, columns=["const", "a", "b", "c"])
    res = crve.cluster_robust(y, df, g)
    assert list(res.params.index) == ["const", "a", "b", "c"]
    assert list(res.conf_int().columns) == ["lower", "upper"]
    plain = crve.cluster_robust(y, X, g)
    assert isinstance(plain.params, np.ndarray)


@pytest.mark.parametrize("limits,G,K", [
    (dict(), 700, 3),                                  # few clusters: chunk tables (row scatter, K small)
    (dict(), 5000, 3),                                 # cache-resident rows, tables > row order: counting sort
    (dict(table_bytes=1e12), 100, 9),                  # square chunk tables, staged sub-chunks of 8192 rows
    (dict(table_bytes=1e12), 700, 9),                  # packed chunk tables (square ones would need fewer chunks)
    (dict(table_bytes=1e12), 1100, 6),                 # ... sub-chunks of 8 G = 8800 rows
    (dict(table_bytes=0), 700, 3),                     # many clusters: counting sort, one range
    (dict(table_bytes=0, order_bytes=4096), 700, 3),   # counting sort built in many cluster ranges
])
@pytest.mark.parametrize("grouped", [False, True])
def test_every_traversal_mode_gives_the_same_statistics(limits, G, K, grouped):
    from crve import _core

    rng = np.random.default_rng(5)
    N = 70_000
    g = rng.integers(0, G, N)
    g[:40_000] = 3  # one cluster larger than a segment: split and re-added
    if grouped:
        g = np.sort(g)
    X = np.column_stack([np.ones(N), rng.normal(size=(N, K)) + 10])
    y = X @ np.arange(1, K + 2) + rng.normal(size=N)
    P = K + 3
    ref = np.zeros((G, P * (P + 1) // 2))
    z = np.column_stack([X - X[0], np.ones(N), y - y[0]])
    tri = np.tril_indices(P)
    for h in range(G):
        zz = z[g == h]
        ref[h] = (zz.T @ zz)[tri]
    one = _core.build_stats(y, X, g, G, 1, **limits)
    two = _core.build_stats(y, X, g, G, 2, **limits)
    np.testing.assert_array_equal(one.packed, two.packed)  # thread-count independent, bit for bit
    np.testing.assert_allclose(one.packed, ref, rtol=1e-12, atol=1e-9 * np.abs(ref).max())
