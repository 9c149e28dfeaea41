"""ClusterStats: the per-cluster sufficient statistics every estimator runs on (DESIGN.md 1).

Statistics of row shards add, clusters that span shards included::

    >>> import numpy as np, crve
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([np.ones(100), rng.normal(size=100)])
    >>> y = X @ [1.0, 2.0] + rng.normal(size=100)
    >>> g = np.repeat(np.arange(10), 10)
    >>> whole = crve.ClusterStats.from_arrays(y, X, g)
    >>> parts = crve.ClusterStats.from_arrays(y[:55], X[:55], g[:55]) + crve.ClusterStats.from_arrays(y[55:], X[55:], g[55:])
    >>> bool(np.allclose(whole.fit().params, parts.fit().params))
    True
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np

from . import _core
from ._inputs import Design, NonFiniteError, as_design, core_matrix, nonfinite_message

__all__ = ["ClusterStats"]


def _threads(threads: int | None) -> int:
    return 0 if threads is None else int(threads)


class ClusterStats:
    """Per-cluster Gram matrices of ``[x - x_0, 1, y - y_0]`` (x_0, y_0: the first row).

    Build with :meth:`from_arrays`; add two with ``+``; fit any variant with :meth:`fit`.
    Memory is O(G K^2) whatever the number of rows.
    """

    n_dropped = 0      # rows dropped for missing values (streaming constructors)
    dropped_by: dict = {}

    def __init__(self, core: Any, labels: np.ndarray, names: Sequence[str]):
        self._core = core
        self.labels = np.asarray(labels)
        self.names = list(names)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, y: Any, X: Any, clusters: Any = None, *, names: Sequence[str] | None = None,
                    threads: int | None = None) -> "ClusterStats":
        """One pass over the rows. ``clusters=None`` makes every row its own cluster."""
        d = as_design(y, X, clusters, names)
        if d.codes is None:
            d.codes = np.arange(d.X.shape[0], dtype=np.int64)
            d.labels = np.arange(d.X.shape[0])
            d.n_slots = d.X.shape[0]
        return cls._build(d, threads)

    @classmethod
    def from_parquet(cls, source: Any, *, formula: str | None = None, y: str | None = None,
                     x: Sequence[str] | None = None, cluster: Any, intercept: bool = True, batch_size: int | None = None,
                     threads: int | None = None, progress: bool | None = None) -> "ClusterStats":
        """Stream a Parquet file, directory or ``pyarrow.dataset.Dataset`` in record batches of
        ``batch_size`` rows, reading only the used columns; memory is one batch plus O(G K^2).
        The default batch is 262,144 rows when at most 16 columns are read, else 131,072.

        Give a ``formula`` (as in :func:`crve.ols`; ``cluster`` one or more column names) or
        ``y`` and ``x`` column names (``intercept=True`` adds a constant "Intercept" first). With a
        formula, a first pass over the categorical columns fixes their levels, so every batch
        builds the same design and a level first seen late still gets its column. Rows with a
        missing value are dropped and counted (``n_dropped``, ``dropped_by``)."""
        from .stream import from_batches, parquet_source

        if formula is not None:
            return cls._from_parquet_formula(source, formula=formula, cluster=cluster, batch_size=batch_size,
                                             threads=threads, progress=progress, context=_caller_context())
        make, schema, rows = parquet_source(source, batch_size)
        y, x = _y_x(y, x)
        _check_schema([y, *x, cluster], schema, "the Parquet data")
        return from_batches(make([y, *x, cluster]), y, x, cluster, intercept=intercept, total_rows=rows,
                            threads=threads, progress=progress)

    @classmethod
    def from_csv(cls, path: str, *, formula: str | None = None, y: str | None = None, x: Sequence[str] | None = None,
                 cluster: Any, intercept: bool = True, block_bytes: int = 16 << 20, delimiter: str = ",",
                 threads: int | None = None, progress: bool | None = None) -> "ClusterStats":
        """Stream a CSV file ``block_bytes`` at a time (pyarrow's CSV reader; column types are
        inferred from the first block, except that ``y``, ``x`` and a formula's numeric columns
        are read as float64, so whole numbers there followed by decimals later are fine; a
        cluster or categorical column that changes type after the first block is an error naming
        it); otherwise as :meth:`from_parquet`."""
        from .stream import csv_source, from_batches

        if formula is not None:
            return cls._from_csv_formula(path, formula=formula, cluster=cluster, block_bytes=block_bytes,
                                         delimiter=delimiter, threads=threads, progress=progress,
                                         context=_caller_context())
        y, x = _y_x(y, x)
        make, schema, _ = csv_source(str(path), int(block_bytes), delimiter, floats=[y, *x])
        _check_schema([y, *x, cluster], schema, str(path))
        return from_batches(make([y, *x, cluster]), y, x, cluster, intercept=intercept, threads=threads,
                            progress=progress)

    @classmethod
    def _from_parquet_formula(cls, source: Any, *, formula: str, cluster: Any, batch_size: int | None = None,
                              threads: int | None = None, progress: bool | None = None, context: Any = None,
                              missing: str = "drop") -> "ClusterStats":
        from .stream import from_formula_batches, parquet_source

        make, schema, rows = parquet_source(source, batch_size)
        where = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "the data"
        return from_formula_batches(make, schema, formula, cluster, total_rows=rows, threads=threads,
                                    progress=progress, context=context, missing=missing, where=where)

    @classmethod
    def _from_csv_formula(cls, path: Any, *, formula: str, cluster: Any, block_bytes: int = 16 << 20,
                          delimiter: str = ",", threads: int | None = None, progress: bool | None = None,
                          context: Any = None, missing: str = "drop") -> "ClusterStats":
        from .stream import csv_source, from_formula_batches, integer_regressors

        make, schema, _ = csv_source(str(path), int(block_bytes), delimiter,
                                     floats=lambda schema: integer_regressors(formula, schema, cluster))
        return from_formula_batches(make, schema, formula, cluster, threads=threads, progress=progress,
                                    context=context, missing=missing, where=os.path.basename(str(path)))

    @classmethod
    def from_dask(cls, ddf: Any, *, formula: str | None = None, y: str | None = None, x: Sequence[str] | None = None,
                  cluster: Any, intercept: bool = True, split_every: int = 8) -> "ClusterStats":
        """Statistics of a Dask DataFrame, built on the workers and added in a tree
        (:func:`crve.dask.cluster_stats`)."""
        from .dask import cluster_stats

        return cluster_stats(ddf, formula=formula, y=y, x=x, cluster=cluster, intercept=intercept,
                             split_every=split_every)

    @classmethod
    def from_sums(cls, n: Any, sum_x: Any, sum_y: Any, xx: Any, xy: Any, yy: Any, *, centre: Any = None,
                  labels: Any = None, names: Sequence[str] | None = None, intercept: bool = False) -> "ClusterStats":
        """Statistics from per-cluster sums computed elsewhere (SQL, Spark, DuckDB; the format
        is documented in :mod:`crve.sums`).

        ``n`` (G), ``sum_x`` (G x K), ``sum_y`` (G), ``xx`` (G x K(K+1)/2 packed, or G x K x K),
        ``xy`` (G x K), ``yy`` (G): sums over each cluster's rows of the centred columns
        ``x - centre[:K]`` and ``y - centre[K]`` (``centre=None``: no centring). ``labels``
        name the clusters (default 0..G-1; rows with equal labels are added, so per-shard sums
        may be passed as they are). ``intercept=True`` adds a constant column "Intercept" first.
        """
        import pandas as pd

        def arr(a: Any, what: str, ndim: int) -> np.ndarray:
            out = np.asarray(a, dtype=float)
            if out.ndim != ndim:
                raise ValueError(f"{what} must be {ndim}-D; got shape {out.shape}")
            if not np.isfinite(out).all():
                raise ValueError(f"{what} has non-finite values in {int((~np.isfinite(out)).sum())} entries")
            return out

        n_, sx, sy, sxy, syy = arr(n, "n", 1), arr(sum_x, "sum_x", 2), arr(sum_y, "sum_y", 1), arr(xy, "xy", 2), \
            arr(yy, "yy", 1)
        G, K = sx.shape
        xx_ = np.asarray(xx, dtype=float)
        if xx_.ndim == 3:
            if xx_.shape != (G, K, K):
                raise ValueError(f"xx must be G x K x K = {G} x {K} x {K}; got {xx_.shape}")
            rows, cols = np.tril_indices(K)
            xx_ = xx_[:, rows, cols]
        xx_ = arr(xx_, "xx", 2)
        for what, a, shape in [("n", n_, (G,)), ("sum_y", sy, (G,)), ("xx", xx_, (G, K * (K + 1) // 2)),
                               ("xy", sxy, (G, K)), ("yy", syy, (G,))]:
            if a.shape != shape:
                raise ValueError(f"{what} must have shape {shape} (G = {G} clusters, K = {K} columns); got {a.shape}")
        if np.any(n_ < 1) or np.any(n_ != np.round(n_)):
            raise ValueError("n must hold whole row counts of at least 1 per cluster")
        c = np.zeros(K + 1) if centre is None else np.asarray(centre, dtype=float)
        if c.shape != (K + 1,) or not np.isfinite(c).all():
            raise ValueError(f"centre must hold K + 1 = {K + 1} finite values (x columns, then y); got {np.shape(centre)}")
        if names is None:
            names = [f"x{k}" for k in range(K)]
        names = list(names)
        if len(names) != K:
            raise ValueError(f"names has {len(names)} entries for {K} x columns")
        if intercept:  # a constant column: zero centred sums, centre 1
            zeros = np.zeros((G, 1))
            sx = np.hstack([zeros, sx])
            sxy = np.hstack([zeros, sxy])
            full = np.zeros((G, K + 1, K + 1))
            r, q = np.tril_indices(K)
            full[:, r + 1, q + 1] = xx_
            rows, cols = np.tril_indices(K + 1)
            xx_ = full[:, rows, cols]
            c = np.concatenate([[1.0], c])
            names = ["Intercept"] + names
            K += 1
        P = K + 2
        packed = np.zeros((G, P * (P + 1) // 2))
        rows, cols = np.tril_indices(K)
        packed[:, rows * (rows + 1) // 2 + cols] = xx_
        packed[:, K * (K + 1) // 2 + np.arange(K)] = sx
        packed[:, K * (K + 1) // 2 + K] = n_
        base = (K + 1) * (K + 2) // 2
        packed[:, base + np.arange(K)] = sxy
        packed[:, base + K] = sy
        packed[:, base + K + 1] = syy
        lab = np.arange(G) if labels is None else np.asarray(labels)
        if lab.shape != (G,):
            raise ValueError(f"labels must have {G} entries; got shape {lab.shape}")
        index = pd.Index(lab)
        if not index.is_unique:  # per-shard sums of the same cluster: add them
            codes, uniq = pd.factorize(index)
            merged = np.zeros((len(uniq), packed.shape[1]))
            np.add.at(merged, codes, packed)
            packed, lab = merged, np.asarray(uniq)
        return cls(_core.ClusterStats(K, list(c), packed), lab, names)

    @classmethod
    def _build(cls, d: Design, threads: int | None) -> "ClusterStats":
        from ._memory import check_fits

        K = d.X.shape[1]
        check_fits(float(d.n_slots) * (K + 2) * (K + 3) / 2 * 8, f"cluster statistics for {d.n_slots:,} clusters "
                   f"and {K} columns", "fewer columns or coarser clusters (memory is O(G K^2))")
        # Slots with no rows (integer labels are used as codes directly) are left out.
        core, kept = _core.build_stats(d.y, core_matrix(d.X), np.ascontiguousarray(d.codes), d.n_slots,
                                       _threads(threads), drop_empty=True)
        labels = d.labels if len(kept) == d.n_slots else np.asarray(d.labels)[kept]
        stats = cls(core, labels, d.names)
        bad = stats._nonfinite_column(threads)
        if bad is not None:
            raise NonFiniteError(nonfinite_message(d, bad))
        return stats

    def _nonfinite_column(self, threads: int | None = None) -> int | None:
        """First column (K for y) with NaN/inf in its sum of squares, or None."""
        col = self._core.nonfinite_column(_threads(threads))
        return None if col < 0 else int(col)

    # -- properties ---------------------------------------------------------------------
    @property
    def K(self) -> int:
        """Number of regressors."""
        return int(self._core.K)

    @property
    def n_clusters(self) -> int:
        return int(self._core.G)

    @property
    def counts(self) -> np.ndarray:
        """Rows per cluster."""
        return self._core.counts.astype(np.int64)

    @property
    def nobs(self) -> int:
        return int(self.counts.sum())

    def __repr__(self) -> str:
        return f"ClusterStats(nobs={self.nobs}, n_clusters={self.n_clusters}, K={self.K})"

    # -- algebra ------------------------------------------------------------------------
    def __add__(self, other: "ClusterStats") -> "ClusterStats":
        """Statistics of the union of two row sets; clusters with equal labels are merged."""
        if not isinstance(other, ClusterStats):
            return NotImplemented
        return ClusterStats.sum([self, other])

    @staticmethod
    def sum(parts: Sequence["ClusterStats"]) -> "ClusterStats":
        """Statistics of the union of the parts' row sets (clusters with equal labels merged), in
        one step: the labels are merged once and every part is added into one new result, so a
        tree reduction of many shards does not build the intermediate sums of ``a + b + c ...``.
        Equal to adding them in order.

        >>> import numpy as np, crve
        >>> rng = np.random.default_rng(0)
        >>> X = np.column_stack([np.ones(90), rng.normal(size=90)]); y = rng.normal(size=90)
        >>> g = np.arange(90) % 9
        >>> parts = [crve.ClusterStats.from_arrays(y[s], X[s], g[s]) for s in np.array_split(np.arange(90), 3)]
        >>> total = crve.ClusterStats.sum(parts)
        >>> bool(np.allclose(total.fit().bse, crve.cluster_robust(y, X, g).bse, rtol=1e-12))
        True
        """
        parts = list(parts)
        if not parts or not all(isinstance(p, ClusterStats) for p in parts):
            raise TypeError("ClusterStats.sum needs a non-empty sequence of ClusterStats")
        first = parts[0]
        for other in parts[1:]:
            if other.K != first.K:
                raise ValueError(f"cannot add statistics with {first.K} and {other.K} columns")
            if other.names != first.names:
                raise ValueError(f"cannot add statistics with different columns: {first.names} vs {other.names}")
        import pandas as pd

        from .stream import merge_counts

        union = pd.Index(first.labels).append([pd.Index(p.labels) for p in parts[1:]]).unique()
        empty = np.zeros((len(union), (first.K + 2) * (first.K + 3) // 2))
        core = _core.ClusterStats(first.K, list(first._core.shift), empty)
        for p in parts:
            core.add(p._core, union.get_indexer(p.labels).astype(np.int64))
        out = ClusterStats(core, np.asarray(union), first.names)
        out.n_dropped = sum(p.n_dropped for p in parts)
        out.dropped_by = functools.reduce(merge_counts, [p.dropped_by for p in parts], {})
        return out

    def __radd__(self, other: Any) -> "ClusterStats":
        if isinstance(other, int) and other == 0:  # sum([...])
            return self
        return NotImplemented

    # -- pickling (Dask, multiprocessing): K, shift, packed lower triangles, labels ---------
    def __getstate__(self) -> dict:
        return {"K": self.K, "shift": list(self._core.shift), "packed": np.array(self._core.packed),
                "labels": self.labels, "names": self.names, "n_dropped": self.n_dropped, "dropped_by": self.dropped_by}

    def __setstate__(self, state: dict) -> None:
        self._core = _core.ClusterStats(state["K"], state["shift"], state["packed"])
        self.labels = state["labels"]
        self.names = state["names"]
        self.n_dropped = state.get("n_dropped", 0)
        self.dropped_by = state.get("dropped_by", {})

    # -- inference ----------------------------------------------------------------------
    def fit(self, variant: str = "CV1", dof: Any = "auto", *, threads: int | None = None) -> "Result":
        """Coefficients and the requested covariance; see :func:`crve.cluster_robust`."""
        from .results import Result

        return Result._from_stats(self, variant=variant, dof=dof, data=None, singletons=False, threads=threads)


def _y_x(y: Any, x: Any) -> tuple[str, list[str]]:
    if y is None or x is None:
        raise ValueError("give formula=..., or y= and x= column names")
    if isinstance(x, str):
        x = [x]
    return y, list(x)


def _check_schema(columns: list[str], schema: Any, where: str) -> None:
    from ._frame import column_hint

    for c in columns:
        if c not in schema.names:
            raise ValueError(f"column {c!r} is not in {where}{column_hint(c, list(schema.names))}")


def _caller_context() -> Any:
    from .formula import _user_context

    return _user_context()


def model_or_error(stats: ClusterStats, threads: int | None, design: Design | None = None) -> Any:
    """The core Model, with core input errors translated to messages in the user's vocabulary."""
    try:
        return _core.Model(stats._core, _threads(threads))
    except _core.CoreInputError as exc:
        code, index, msg = exc.args
        names = stats.names
        if code == "nonfinite":
            if design is not None:
                raise NonFiniteError(nonfinite_message(design, index)) from None
            raise ValueError(f"non-finite statistics in {'y' if index >= stats.K else names[index]!r}") from None
        if code == "all_zero_column":
            raise ValueError(f"X column {names[index]!r} is all zero") from None
        if code == "too_few_rows":
            raise ValueError(f"need more rows than columns: N = {stats.nobs}, K = {stats.K}") from None
        if code == "collinear":
            raise ValueError(_collinear_message(stats, index, msg)) from None
        raise ValueError(msg) from None


def _collinear_message(stats: ClusterStats, index: int, msg: str) -> str:
    """Name the columns in the near-null space of the (scaled) X'X."""
    names = stats.names
    K = stats.K
    core = stats._core
    Z = sum(core.block(g) for g in range(core.G)) if core.G < 20000 else None
    if Z is None:
        return f"X is rank deficient ({msg}); column {names[index]!r} is involved"
    # Raw X'X from the shifted Gram: x = (x - m) + m * 1.
    m = np.asarray(core.shift[:K])
    T = np.zeros((K + 2, K))
    T[:K, :K] = np.eye(K)
    T[K, :] = m
    C = T.T @ Z @ T
    d = np.sqrt(np.diag(C))
    d[d == 0] = 1.0
    w, V = np.linalg.eigh(C / np.outer(d, d))
    v = np.abs(V[:, 0])
    involved = [names[k] for k in np.flatnonzero(v > 0.05 * v.max())]
    return (f"X is rank deficient or nearly so: columns {involved} are (nearly) linearly dependent "
            f"({msg}); drop one of them")
