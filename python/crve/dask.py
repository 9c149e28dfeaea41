"""Cluster statistics of a Dask DataFrame: built per partition on the workers, added in a tree,
returned as one local :class:`~crve.ClusterStats`; every estimator, bootstrap and diagnostic
then runs locally on the small result.

What travels between processes is only the statistics (O(G K^2) numbers per partition: the
packed per-cluster Gram matrices, their labels and column names), never rows.

>>> import numpy as np, pandas as pd, dask.dataframe as dd, crve, crve.dask
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"g": rng.integers(0, 30, 3000), "x": rng.normal(size=3000)})
>>> df["y"] = 1 + 2 * df.x + rng.normal(size=30)[df.g] + rng.normal(size=3000)
>>> stats = crve.dask.cluster_stats(dd.from_pandas(df, npartitions=4), y="y", x=["x"], cluster="g")
>>> bool(np.allclose(stats.fit().bse, crve.ols("y ~ x", df, cluster="g").bse, rtol=1e-12))
True
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

from .stream import merge_counts

__all__ = ["cluster_stats"]


def _partition_stats(part: Any, spec: dict) -> tuple:
    """(statistics or None, rows dropped, dropped by column) of one pandas partition; the counts
    are kept apart only for partitions where no row survives the missing-value filter."""
    import pyarrow as pa

    from .stream import from_batches, from_formula_batches

    used = spec["used"]
    if len(part) == 0:
        return None, 0, {}
    batch = _to_batch(part[used])
    try:
        if spec["formula"] is None:
            stats = from_batches([batch], spec["y"], spec["x"], spec["cluster"], intercept=spec["intercept"],
                                 threads=1, progress=False)
        else:
            stats = from_formula_batches(lambda cols: [batch.select(cols)], batch.schema, spec["formula"],
                                         spec["cluster"], threads=1, progress=False, levels=spec["levels"])
        return stats, 0, {}
    except ValueError as exc:
        if not str(exc).startswith("no rows left"):
            raise
        na = part[used].isna().sum()
        return None, len(part), {c: int(v) for c, v in na.items() if v}


def _to_batch(frame: Any) -> Any:
    """The partition as an Arrow record batch: numpy-backed numeric columns wrapped without a copy
    (a NaN stays a NaN value, which the statistics drop and count exactly as a null; pyarrow's
    ``from_pandas`` would copy each column to turn NaN into nulls: 35 ms a million rows), other
    columns (strings, categoricals, nullable dtypes) converted by pyarrow."""
    import numpy as np
    import pyarrow as pa

    arrays = []
    for name in frame.columns:
        col = frame[name]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiu":
            arrays.append(pa.array(col.to_numpy(), from_pandas=False))
        else:
            arrays.append(pa.Array.from_pandas(col))
    return pa.RecordBatch.from_arrays(arrays, names=[str(c) for c in frame.columns])


def _sum(*parts: tuple) -> tuple:
    """Sum of partition results (statistics add; counts of all-dropped partitions add)."""
    from .stats import ClusterStats

    present = [p[0] for p in parts if p[0] is not None]
    stats = ClusterStats.sum(present) if present else None
    return stats, sum(p[1] for p in parts), functools.reduce(merge_counts, [p[2] for p in parts], {})


def cluster_stats(ddf: Any, *, formula: str | None = None, y: str | None = None, x: Sequence[str] | None = None,
                  cluster: Any, intercept: bool = True, split_every: int = 8, compute: bool = True) -> Any:
    """Statistics of a ``dask.dataframe.DataFrame``: one task per partition, a tree reduction
    (``split_every`` children per node), then ``compute()`` on the current scheduler (a
    ``dask.distributed`` Client if one is active). Give a ``formula`` (categorical levels are
    fixed first, from the whole frame, so every partition builds the same design) or ``y`` and
    ``x`` column names. Rows with a missing value are dropped and counted (``n_dropped``,
    ``dropped_by``). ``compute=False`` returns the Delayed result.
    """
    try:
        import dask
    except ImportError:
        raise ImportError("crve.dask needs dask: pip install 'dask[distributed]'") from None
    import pyarrow as pa

    from ._frame import column_hint
    from .stream import categorical_columns, sorted_levels

    columns = [str(c) for c in ddf.columns]
    cluster_cols = [cluster] if isinstance(cluster, str) else list(cluster or [])
    if formula is not None:
        from .formula import _parse

        required = sorted(_parse(formula).required_variables)
        for c in required + cluster_cols:
            if c not in columns and c not in ("np", "numpy"):
                raise ValueError(f"column {c!r} is not in the Dask DataFrame{column_hint(c, columns)}")
        used = sorted({c for c in required if c in columns} | set(cluster_cols))
        schema = pa.Schema.from_pandas(ddf._meta[used], preserve_index=False)
        cats = [c for c in categorical_columns(formula, schema, used) if c not in cluster_cols]
        found = dask.compute(*[ddf[c].dropna().unique() for c in cats]) if cats else []
        levels = {c: sorted_levels(list(v)) for c, v in zip(cats, found)}
        spec = {"formula": formula, "cluster": cluster, "used": used, "levels": levels}
    else:
        if y is None or x is None or not isinstance(cluster, str):
            raise ValueError("give formula=... (cluster: column name or names), or y=, x= and cluster= column names")
        x = [x] if isinstance(x, str) else list(x)
        used = [y, *x, cluster]
        for c in used:
            if c not in columns:
                raise ValueError(f"column {c!r} is not in the Dask DataFrame{column_hint(c, columns)}")
        spec = {"formula": None, "y": y, "x": x, "cluster": cluster, "intercept": intercept, "used": used}
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2; got {split_every}")
    level = [dask.delayed(_partition_stats)(p, spec) for p in ddf.to_delayed()]
    while len(level) > 1:
        level = [dask.delayed(_sum)(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    result = dask.delayed(_finish)(level[0])
    return result.compute() if compute else result


def _finish(result: tuple) -> Any:
    stats, n_dropped, dropped_by = result
    if stats is None:
        raise ValueError(f"no rows left to fit: every partition was empty or had missing values only "
                         f"({n_dropped:,} rows dropped)")
    stats.n_dropped += n_dropped
    stats.dropped_by = merge_counts(stats.dropped_by, dropped_by)
    return stats
