"""Cluster statistics from files larger than memory: Parquet and CSV read batch by batch.

Each record batch (pyarrow) becomes float64 columns and cluster codes; its statistics are built
in one pass and added into a running total whose clusters are the labels seen so far (clusters
may span batches). Memory is one batch plus O(G K^2), whatever the file size.

>>> import numpy as np, pandas as pd, crve, tempfile, os
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"g": rng.integers(0, 20, 5000), "x": rng.normal(size=5000)})
>>> df["y"] = 1 + 2 * df.x + rng.normal(size=20)[df.g] + rng.normal(size=5000)
>>> path = os.path.join(tempfile.mkdtemp(), "d.parquet"); df.to_parquet(path)
>>> stats = crve.ClusterStats.from_parquet(path, y="y", x=["x"], cluster="g", batch_size=1000)
>>> bool(np.allclose(stats.fit().bse, crve.ols("y ~ x", df, cluster="g").bse))
True
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["from_batches", "parquet_batches", "csv_batches"]


def _need_arrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError("streaming files needs pyarrow: pip install pyarrow") from None
    return pyarrow


def parquet_batches(source: Any, columns: list[str], batch_size: int) -> tuple[Iterable, int | None]:
    """Record batches of ``columns`` from a Parquet file, directory or pyarrow Dataset, and the
    row count (from the metadata)."""
    _need_arrow()
    import pyarrow.dataset as ds

    dataset = source if isinstance(source, ds.Dataset) else ds.dataset(source, format="parquet")
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        from ._frame import column_hint

        raise ValueError(f"column {missing[0]!r} is not in the Parquet data{column_hint(missing[0], dataset.schema.names)}")
    return dataset.to_batches(columns=columns, batch_size=batch_size), dataset.count_rows()


def csv_batches(path: str, columns: list[str], block_bytes: int, delimiter: str = ",") -> tuple[Iterable, None]:
    """Record batches of ``columns`` from a CSV file, read ``block_bytes`` at a time."""
    _need_arrow()
    import pyarrow.csv as pcsv

    parse = pcsv.ParseOptions(delimiter=delimiter)
    header = pcsv.open_csv(path, parse_options=parse).schema.names
    missing = [c for c in columns if c not in header]
    if missing:
        from ._frame import column_hint

        raise ValueError(f"column {missing[0]!r} is not in {path}{column_hint(missing[0], header)}")
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=block_bytes), parse_options=parse,
                           convert_options=pcsv.ConvertOptions(include_columns=columns))
    return reader, None


def _float_column(arr: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    t = arr.type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)):
        raise ValueError(f"column {name!r} must be numeric; it holds {t}")
    return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def from_batches(batches: Iterable, y: str, x: Sequence[str], cluster: str, *, intercept: bool = True,
                 total_rows: int | None = None, threads: int | None = None, progress: bool | None = None) -> Any:
    """A :class:`~crve.ClusterStats` built batch by batch from pyarrow record batches holding
    ``y``, ``x`` and ``cluster``. Rows with a missing value in any of them are dropped and
    counted (``stats.n_dropped``, ``stats.dropped_by``)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from . import _core
    from ._inputs import Columns, core_matrix
    from .stats import ClusterStats, _threads

    x = list(x)
    used = [y] + x + [cluster]
    names = (["Intercept"] if intercept else []) + x
    K = len(names)
    npack = (K + 2) * (K + 3) // 2
    total = None          # running core statistics (capacity >= len(labels))
    labels = pd.Index([])
    dropped = dict.fromkeys(used, 0)
    n_dropped = 0
    bar = None
    if progress is None:
        progress = sys.stderr.isatty() and (total_rows or 0) > 5_000_000
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_rows, unit="row", unit_scale=True, desc="cluster statistics")
    try:
        for batch in batches:
            n_rows = batch.num_rows
            if n_rows == 0:
                continue
            cols = {c: batch.column(batch.schema.get_field_index(c)) for c in used}
            ok = None
            for c in used:
                valid = pc.is_valid(cols[c])
                if c != cluster and (pa.types.is_floating(cols[c].type)):
                    valid = pc.and_(valid, pc.invert(pc.is_nan(cols[c])))
                bad = n_rows - (pc.sum(pc.cast(valid, pa.int64())).as_py() or 0)
                if bad:
                    dropped[c] += bad
                ok = valid if ok is None else pc.and_(ok, valid)
            n_ok = pc.sum(pc.cast(ok, pa.int64())).as_py() or 0
            if n_ok < n_rows:
                n_dropped += n_rows - n_ok
                cols = {c: pc.filter(a, ok) for c, a in cols.items()}
            if n_ok:
                yv = _float_column(cols[y], y)
                X = [_float_column(cols[c], c) for c in x]
                if intercept:
                    X = [np.broadcast_to(np.float64(1.0), (n_ok,))] + X
                local_codes, uniques = pd.factorize(cols[cluster].to_pandas(), sort=False)
                new = uniques[~uniques.isin(labels)] if len(labels) else uniques
                if len(new):
                    labels = labels.append(pd.Index(new))
                pos = labels.get_indexer(uniques).astype(np.int64)
                part = _core.build_stats(yv, core_matrix(Columns(X)), local_codes.astype(np.int64), len(uniques),
                                         _threads(threads))
                if total is None or total.G < len(labels):
                    grown = _core.ClusterStats(K, list(part.shift), np.zeros((max(2 * len(labels), 16), npack)))
                    if total is not None:
                        grown.add(total, np.arange(total.G, dtype=np.int64))
                    total = grown
                total.add(part, pos)
            if bar is not None:
                bar.update(n_rows)
    finally:
        if bar is not None:
            bar.close()
    if total is None:
        raise ValueError(f"no rows left to fit ({n_dropped:,} dropped for missing values)")
    total.compact(np.arange(len(labels), dtype=np.int64))
    stats = ClusterStats(total, np.asarray(labels), names)
    bad = stats._nonfinite_column()
    if bad is not None:
        raise ValueError(f"column {y if bad >= K else names[bad]!r} has infinite values")
    stats.n_dropped = n_dropped
    stats.dropped_by = {c: v for c, v in dropped.items() if v}
    return stats
