"""ClusterStats.from_sums and the SQL route (crve.sums): the same fit as the in-memory path."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import crve
from crve.sums import from_sql, of_frame, sql_query


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(3)
    G, N = 30, 1500
    g = rng.integers(0, G, N)
    df = pd.DataFrame({"school": np.array([f"s{i:02d}" for i in range(G)])[g], "x1": rng.normal(size=N) + 1e3,
                       "x2": rng.normal(size=G)[g] + rng.normal(size=N)})
    df["y"] = 2 + 0.5 * df.x1 - df.x2 + rng.normal(size=G)[g] + rng.normal(size=N)
    df.loc[[3, 50], "x2"] = np.nan
    df.loc[7, "y"] = np.nan
    return df


def _same(a, b, rtol=1e-10):
    np.testing.assert_allclose(np.asarray(a.params), np.asarray(b.params), rtol=rtol)
    np.testing.assert_allclose(np.asarray(a.bse), np.asarray(b.bse), rtol=rtol)


def test_from_sums_equals_in_memory(frame):
    ref = crve.ols("y ~ x1 + x2", frame, cluster="school")
    stats = crve.ClusterStats.from_sums(**of_frame(frame, "y", ["x1", "x2"], "school"), names=["x1", "x2"],
                                        intercept=True)
    assert stats.names == ["Intercept", "x1", "x2"] and stats.nobs == ref.nobs
    for v in ("CV1", "CV2", "CV3"):
        _same(stats.fit(v), ref.with_variant(v))
    bt = stats.fit().wild_bootstrap("x2", B=999, seed=1)
    assert bt.pvalue == ref.wild_bootstrap("x2", B=999, seed=1).pvalue


def test_shard_sums_with_repeated_labels_are_added(frame):
    d = frame.dropna()
    a = of_frame(d.iloc[:700], "y", ["x1", "x2"], "school")
    b = of_frame(d.iloc[700:], "y", ["x1", "x2"], "school")
    # Different centres per shard: re-centre b's sums to a's centre is crve's job, not the user's.
    sa = crve.ClusterStats.from_sums(**a, names=["x1", "x2"], intercept=True)
    sb = crve.ClusterStats.from_sums(**b, names=["x1", "x2"], intercept=True)
    _same((sa + sb).fit(), crve.ols("y ~ x1 + x2", d, cluster="school"))
    # One call with the shards' rows stacked (same centre): equal labels are merged.
    both = {k: np.concatenate([a[k], a[k]]) if k != "centre" else a[k] for k in a}
    twice = crve.ClusterStats.from_sums(**both, names=["x1", "x2"], intercept=True)
    assert twice.n_clusters == sa.n_clusters and twice.nobs == 2 * sa.nobs


def test_full_square_xx_and_errors(frame):
    s = of_frame(frame, "y", ["x1", "x2"], "school")
    G = len(s["n"])
    full = np.zeros((G, 2, 2))
    full[:, 0, 0], full[:, 1, 0], full[:, 1, 1] = s["xx"][:, 0], s["xx"][:, 1], s["xx"][:, 2]
    full[:, 0, 1] = full[:, 1, 0]
    _same(crve.ClusterStats.from_sums(**{**s, "xx": full}, intercept=True).fit(),
          crve.ClusterStats.from_sums(**s, intercept=True).fit())
    with pytest.raises(ValueError, match="xy must have shape"):
        crve.ClusterStats.from_sums(**{**s, "xy": s["xy"][:, :1]})
    with pytest.raises(ValueError, match="n must hold whole row counts"):
        crve.ClusterStats.from_sums(**{**s, "n": s["n"] - 0.5})
    with pytest.raises(ValueError, match="non-finite"):
        crve.ClusterStats.from_sums(**{**s, "yy": np.full(G, np.nan)})
    with pytest.raises(ValueError, match="centre must hold K"):
        crve.ClusterStats.from_sums(**{**s, "centre": [0.0]})
    with pytest.raises(ValueError, match="names has 1 entries for 2"):
        crve.ClusterStats.from_sums(**s, names=["a"])


def test_duckdb_sql_over_parquet(frame, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    path = tmp_path / "students.parquet"
    frame.to_parquet(path)
    q = sql_query(f"'{path}'", y="y", x=["x1", "x2"], cluster="school")
    result = duckdb.sql(q).df()
    stats = from_sql(result, names=["x1", "x2"])
    ref = crve.ols("y ~ x1 + x2", frame, cluster="school")  # NULL rows dropped on both sides
    assert stats.nobs == ref.nobs == len(frame) - 3
    _same(stats.fit(), ref, rtol=1e-9)
    _same(stats.fit("CV2"), ref.with_variant("CV2"), rtol=1e-9)


def test_from_sql_errors():
    with pytest.raises(ValueError, match="lacks the columns"):
        from_sql(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValueError, match="at least one column"):
        sql_query("t", "y", [], "g")
