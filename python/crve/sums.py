"""Bring your own engine: cluster statistics as sums a SQL GROUP BY can compute.

Every estimator in crve needs, per cluster g and with column centres ``c`` (any constants; the
column means keep the sums well conditioned), only

==============  =====================================  ==========
name            sum over the cluster's rows            shape
==============  =====================================  ==========
``n``           1                                      (G,)
``sum_x``       x_k - c_k                              (G, K)
``sum_y``       y - c_y                                (G,)
``xx``          (x_j - c_j)(x_k - c_k), j >= k         (G, K(K+1)/2), packed (0,0), (1,0), (1,1), (2,0), ...
``xy``          (x_k - c_k)(y - c_y)                   (G, K)
``yy``          (y - c_y)^2                            (G,)
==============  =====================================  ==========

:func:`sql_query` writes the GROUP BY for a table (DuckDB, Spark SQL, PostgreSQL, BigQuery:
plain SQL with a CTE and a cross join), :func:`from_sql` reads its result back as a
:class:`~crve.ClusterStats`, and :meth:`crve.ClusterStats.from_sums` takes the arrays directly.
Rows with a NULL in any used column are left out (as ``missing="drop"`` does).

>>> import numpy as np, pandas as pd, crve
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"g": np.repeat(np.arange(10), 20), "x": rng.normal(size=200)})
>>> df["y"] = 1 + 2 * df.x + rng.normal(size=10)[df.g] + rng.normal(size=200)
>>> stats = crve.ClusterStats.from_sums(**crve.sums.of_frame(df, y="y", x=["x"], cluster="g"), names=["x"],
...                                     intercept=True)
>>> res = stats.fit("CV1")
>>> ref = crve.ols("y ~ x", df, cluster="g")
>>> bool(np.allclose(res.params, ref.params) and np.allclose(res.bse, ref.bse))
True
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["sql_query", "from_sql", "of_frame", "pack_index"]


def pack_index(j: int, k: int) -> int:
    """Position of (j, k) in the packed lower triangle (row-major: (0,0), (1,0), (1,1), (2,0), ...)."""
    j, k = max(j, k), min(j, k)
    return j * (j + 1) // 2 + k


def _quote(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def sql_query(table: str, y: str, x: Sequence[str], cluster: str) -> str:
    """The GROUP BY query whose result :func:`from_sql` reads.

    ``table`` is inserted as written (a table name, ``'data.parquet'`` for DuckDB, a subquery in
    parentheses); column names are quoted. Output columns: ``cluster, n, s_0..s_{K-1}, s_y,
    ss_j_k (j >= k), sy_0..sy_{K-1}, syy, c_0..c_{K-1}, c_y`` (the centres used).
    """
    x = list(x)
    if not x:
        raise ValueError("x must name at least one column")
    cols = [y] + x + [cluster]
    notnull = " AND ".join(f"{_quote(c)} IS NOT NULL" for c in cols)
    centres = ", ".join([f"AVG(CAST({_quote(y)} AS DOUBLE)) AS c_y"]
                        + [f"AVG(CAST({_quote(c)} AS DOUBLE)) AS c_{k}" for k, c in enumerate(x)])
    centred = ", ".join([f"t.{_quote(cluster)} AS grp", f"CAST(t.{_quote(y)} AS DOUBLE) - c.c_y AS v_y"]
                        + [f"CAST(t.{_quote(c)} AS DOUBLE) - c.c_{k} AS v_{k}" for k, c in enumerate(x)]
                        + ["c.c_y AS c_y"] + [f"c.c_{k} AS c_{k}" for k in range(len(x))])
    K = len(x)
    sums = ["grp AS cluster", "COUNT(*) AS n"] + [f"SUM(v_{k}) AS s_{k}" for k in range(K)] + ["SUM(v_y) AS s_y"]
    sums += [f"SUM(v_{j} * v_{k}) AS ss_{j}_{k}" for j in range(K) for k in range(j + 1)]
    sums += [f"SUM(v_{k} * v_y) AS sy_{k}" for k in range(K)] + ["SUM(v_y * v_y) AS syy"]
    sums += [f"MIN(c_{k}) AS c_{k}" for k in range(K)] + ["MIN(c_y) AS c_y"]
    return (f"WITH c AS (SELECT {centres} FROM {table} WHERE {notnull}),\n"
            f"d AS (SELECT {centred} FROM {table} AS t CROSS JOIN c WHERE {notnull})\n"
            f"SELECT {', '.join(sums)} FROM d GROUP BY grp")


def _columns(frame: Any) -> dict[str, np.ndarray]:
    """Column name -> numpy array for pandas, polars, pyarrow or a dict."""
    if isinstance(frame, dict):
        return {k: np.asarray(v) for k, v in frame.items()}
    if hasattr(frame, "to_pydict") and hasattr(frame, "column_names"):  # pyarrow Table
        return {c: frame.column(c).to_numpy() for c in frame.column_names}
    return {str(c): np.asarray(frame[c]) for c in frame.columns}


def from_sql(result: Any, names: Sequence[str] | None = None, *, intercept: bool = True) -> Any:
    """A :class:`~crve.ClusterStats` from the result of :func:`sql_query` (pandas, polars,
    Arrow or a dict of columns). ``names`` label the x columns (default x0, x1, ...);
    ``intercept=True`` adds a constant column named "Intercept" first."""
    from .stats import ClusterStats

    cols = _columns(result)
    K = sum(1 for c in cols if c.startswith("s_") and c != "s_y")
    if K == 0 or "n" not in cols:
        raise ValueError("the result lacks the columns of crve.sums.sql_query (n, s_0, ..., syy)")
    try:
        arrays = dict(
            n=cols["n"], sum_x=np.column_stack([cols[f"s_{k}"] for k in range(K)]), sum_y=cols["s_y"],
            xx=np.column_stack([cols[f"ss_{j}_{k}"] for j in range(K) for k in range(j + 1)]),
            xy=np.column_stack([cols[f"sy_{k}"] for k in range(K)]), yy=cols["syy"],
            centre=np.concatenate([[cols[f"c_{k}"][0] for k in range(K)], [cols["c_y"][0]]]).astype(float))
    except KeyError as exc:
        raise ValueError(f"the result lacks column {exc.args[0]!r} of crve.sums.sql_query") from None
    return ClusterStats.from_sums(**arrays, labels=cols.get("cluster"), names=names, intercept=intercept)


def of_frame(df: Any, y: str, x: Sequence[str], cluster: str) -> dict[str, np.ndarray]:
    """The sums of an in-memory pandas DataFrame (rows with missing values dropped), as keyword
    arguments for :meth:`crve.ClusterStats.from_sums`: a reference implementation of the
    format, and what the SQL query computes."""
    import pandas as pd

    x = list(x)
    d = df[[y] + x + [cluster]].dropna()
    centre = np.array([d[c].astype(float).mean() for c in x] + [d[y].astype(float).mean()])
    V = d[x].to_numpy(dtype=float) - centre[:-1]
    v = d[y].to_numpy(dtype=float) - centre[-1]
    K = len(x)
    parts = {"n": np.ones(len(d)), "v_y": v, "yy": v * v}
    for k in range(K):
        parts[f"s_{k}"] = V[:, k]
        parts[f"sy_{k}"] = V[:, k] * v
        for j in range(k, K):
            parts[f"ss_{j}_{k}"] = V[:, j] * V[:, k]
    g = pd.DataFrame(parts).groupby(d[cluster].to_numpy(), sort=False).sum()
    return dict(n=g["n"].to_numpy(), sum_x=g[[f"s_{k}" for k in range(K)]].to_numpy(), sum_y=g["v_y"].to_numpy(),
                xx=g[[f"ss_{j}_{k}" for j in range(K) for k in range(j + 1)]].to_numpy(),
                xy=g[[f"sy_{k}" for k in range(K)]].to_numpy(), yy=g["yy"].to_numpy(), centre=centre,
                labels=g.index.to_numpy())
