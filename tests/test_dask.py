"""crve.dask: statistics per partition on a LocalCluster of 2 worker processes, added in a tree,
equal to the in-memory fit."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import crve

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")
import crve.dask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        with distributed.Client(lc) as c:
            yield c


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(4)
    N, G = 60_000, 300
    g = rng.integers(0, G, N)  # random order: clusters span partitions
    df = pd.DataFrame({"firm": np.array([f"f{i:03d}" for i in range(G)], dtype=object)[g],
                       "x1": rng.normal(size=N) + 10, "x2": rng.normal(size=G)[g] + rng.normal(size=N)})
    df["y"] = 1 + 0.5 * df.x1 - df.x2 + rng.normal(size=G)[g] + rng.normal(size=N)
    df.loc[[5, 17], "x2"] = np.nan
    df.loc[[17, 40], "y"] = np.nan
    return df


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def test_distributed_equals_in_memory(client, frame):
    ddf = dd.from_pandas(frame, npartitions=7)
    stats = crve.ClusterStats.from_dask(ddf, y="y", x=["x1", "x2"], cluster="firm", split_every=2)
    ref = crve.ols("y ~ x1 + x2", frame, cluster="firm")
    assert stats.nobs == ref.nobs and stats.n_clusters == 300
    assert stats.n_dropped == 3 and stats.dropped_by == {"y": 2, "x2": 2}
    for v in ("CV1", "CV2", "CV3"):
        fit = stats.fit(v)
        assert _rel(fit.params, ref.params) < 1e-12 and _rel(fit.bse, ref.with_variant(v).bse) < 1e-12
    # Everything else runs locally on the small result.
    bt = stats.fit().wild_bootstrap("x2", B=999, seed=3)
    assert bt.pvalue == ref.wild_bootstrap("x2", B=999, seed=3).pvalue
    assert stats.fit().diagnostics().leverage.sum() == pytest.approx(3)


def test_statistics_pickle_compactly(frame):
    stats = crve.dask.cluster_stats(dd.from_pandas(frame, npartitions=3), y="y", x=["x1", "x2"], cluster="firm")
    K, G = 3, 300
    packed_bytes = G * (K + 2) * (K + 3) // 2 * 8
    assert len(pickle.dumps(stats)) < 2 * packed_bytes + 20 * G  # the Gram blocks and labels, no rows
    assert len(pickle.dumps(stats)) < frame.memory_usage(deep=True).sum() / 50


def test_partitioning_does_not_matter(frame):
    fits = [crve.dask.cluster_stats(dd.from_pandas(frame, npartitions=p), y="y", x=["x1"], cluster="firm").fit()
            for p in (1, 4, 13)]
    for f in fits[1:]:
        assert _rel(f.bse, fits[0].bse) < 1e-12


def test_empty_partitions_and_errors(frame):
    part = frame.iloc[:2000].copy()
    part.loc[part.index[:1000], "y"] = np.nan  # the first partition loses every row
    stats = crve.dask.cluster_stats(dd.from_pandas(part, npartitions=2, sort=False), y="y", x=["x1"], cluster="firm")
    assert stats.nobs == 1000 and stats.n_dropped == 1000
    with pytest.raises(ValueError, match="column 'x9' is not in the Dask DataFrame"):
        crve.dask.cluster_stats(dd.from_pandas(frame, npartitions=2), y="y", x=["x9"], cluster="firm")
    allnan = frame.iloc[:100].assign(y=np.nan)
    with pytest.raises(ValueError, match="no rows left to fit"):
        crve.dask.cluster_stats(dd.from_pandas(allnan, npartitions=2), y="y", x=["x1"], cluster="firm")


def test_formula_on_dask_with_late_level(client, frame):
    df = frame.copy()
    rng = np.random.default_rng(9)
    df["region"] = rng.choice(["north", "south"], size=len(df))
    df.loc[df.index[-200:], "region"] = "zeta"  # only in the last partition
    df["y"] += 0.5 * (df.region == "zeta")
    ddf = dd.from_pandas(df, npartitions=6, sort=False)
    formula = "y ~ x1 + x2 + C(region) + I(x2**2)"
    stats = crve.ClusterStats.from_dask(ddf, formula=formula, cluster="firm")
    ref = crve.ols(formula, df, cluster="firm")
    assert stats.names == list(ref.params.index) and "C(region)[T.zeta]" in stats.names
    assert stats.n_dropped == ref.n_dropped == 3
    assert _rel(stats.fit("CV2").bse, ref.with_variant("CV2").bse) < 1e-12


def test_partitions_are_wrapped_without_a_copy(frame):
    """A pandas partition's numpy columns become Arrow arrays over the same memory (a NaN stays a
    value, dropped and counted like a null); strings go through pyarrow."""
    import pyarrow as pa

    from crve.dask import _to_batch

    part = frame[["y", "x1", "x2", "firm"]]
    batch = _to_batch(part)
    for i, c in enumerate(["y", "x1", "x2"]):
        assert batch.column(i).buffers()[1].address == part[c].to_numpy().ctypes.data
    assert batch.column(0).null_count == 0 and int(np.isnan(batch.column(0).to_numpy()).sum()) == 2
    t = batch.column(3).type
    assert (pa.types.is_string(t) or pa.types.is_large_string(t)) and batch.schema.names == ["y", "x1", "x2", "firm"]


def test_stats_sum_is_adding_in_order(frame):
    """ClusterStats.sum (the tree reduction's node) merges the labels once and adds every part
    into one result: bit for bit the chained a + b + c, over shards with different shifts and
    clusters."""
    parts = [crve.ClusterStats.from_arrays(df.y, np.column_stack([np.ones(len(df)), df.x1]), df.firm)
             for df in (frame.dropna().iloc[i::3].iloc[: 5000 + 3000 * i] for i in range(3))]
    assert len({tuple(p._core.shift) for p in parts}) == 3
    total, chained = crve.ClusterStats.sum(parts), parts[0] + parts[1] + parts[2]
    assert list(total.labels) == list(chained.labels) and np.array_equal(total._core.packed, chained._core.packed)
    assert total.nobs == sum(p.nobs for p in parts)
    with pytest.raises(TypeError, match="non-empty sequence"):
        crve.ClusterStats.sum([])
    other = crve.ClusterStats.from_arrays(frame.dropna().y, frame.dropna()[["x1", "x2"]].to_numpy(), frame.dropna().firm,
                                          names=["x1", "x2"])
    with pytest.raises(ValueError, match="different columns"):
        crve.ClusterStats.sum([parts[0], other])


def test_arrow_backed_partitions(client, frame):
    """Partitions whose columns are Arrow-backed (dd.read_parquet(..., dtype_backend="pyarrow"))
    are read in place, nulls included, for y / x and for formulas with categoricals."""
    df = frame.copy()
    df["region"] = np.where(np.arange(len(df)) % 3 == 0, "north", "south")
    arrow = df.convert_dtypes(dtype_backend="pyarrow")
    assert isinstance(arrow["x2"].dtype, pd.ArrowDtype) and arrow["x2"].isna().sum() == 2
    ddf = dd.from_pandas(arrow, npartitions=5, sort=False)
    stats = crve.dask.cluster_stats(ddf, y="y", x=["x1", "x2"], cluster="firm")
    ref = crve.ols("y ~ x1 + x2", df, cluster="firm")
    assert stats.n_dropped == ref.n_dropped == 3 and stats.dropped_by == {"y": 2, "x2": 2}
    assert _rel(stats.fit("CV2").bse, ref.with_variant("CV2").bse) < 1e-12
    fstats = crve.dask.cluster_stats(ddf, formula="y ~ x1 + C(region)", cluster="firm")
    fref = crve.ols("y ~ x1 + C(region)", df, cluster="firm")
    assert fstats.names == list(fref.params.index)
    assert _rel(fstats.fit().bse, fref.bse) < 1e-12
