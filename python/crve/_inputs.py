"""Turning user arrays into what the core reads: float64 views, int64 cluster codes, names.

Everything here is O(N) vectorised numpy/pandas; no Python loop touches rows. Errors name the
column, the row count and the first offending rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Columns", "Design", "as_design", "column_of", "core_matrix", "factorize_clusters", "first_rows"]


def first_rows(mask: np.ndarray, n: int = 5) -> str:
    """'3 rows (first: 0, 7, 9)' for a boolean mask."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:n])
    more = ", ..." if idx.size > n else ""
    return f"{idx.size} row{'s' if idx.size != 1 else ''} (first: {shown}{more})"


def _as_float_vector(y: Any) -> np.ndarray:
    if hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        dtype = getattr(y, "dtype", None)
        if dtype is not None and (is_numeric_dtype(dtype) or is_bool_dtype(dtype)):
            y = y.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable dtypes: NA -> NaN, reported below
        else:
            y = y.to_numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and 1 in arr.shape and arr.size > 0:
        raise ValueError(f"y must be 1-D; got shape {arr.shape} (use y.ravel() for a single column)")
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D; got an array of shape {arr.shape}")
    return _to_float64(arr, "y")


def _to_float64(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.float64:
        if arr.strides and any(s % 8 for s in arr.strides):
            return np.ascontiguousarray(arr)
        return arr
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64)
    if arr.dtype.kind == "O":
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{what} must be numeric; got dtype {arr.dtype}")


def _as_float_matrix(X: Any, names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    columns = None
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # pandas-like DataFrame
        columns = [str(c) for c in X.columns]
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        for c, dt in zip(X.columns, X.dtypes):
            if not (is_numeric_dtype(dt) or is_bool_dtype(dt)):
                raise ValueError(f"X column {c!r} is not numeric (dtype {dt})")
        X = X.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(X)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x columns); got shape {arr.shape}")
    arr = _to_float64(arr, "X")
    K = arr.shape[1]
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != K:
            raise ValueError(f"names has {len(names)} entries but X has {K} columns")
    else:
        names = columns if columns is not None else [f"x{k}" for k in range(K)]
    return arr, list(names)


def factorize_clusters(clusters: Any, n: int, allow_missing: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes in [0, n_slots), the label of each slot, and n_slots.

    Non-negative integer labels below 2 n are used as codes directly (no hashing); empty slots
    are dropped later. Everything else goes through pandas.factorize (strings, floats, mixed,
    categoricals), which is given pandas Series as they are (Arrow-backed strings factorise
    without conversion). Missing labels raise, or with ``allow_missing`` get code -1.
    """
    import pandas as pd

    def checked(codes: np.ndarray) -> np.ndarray:
        if not allow_missing and (codes < 0).any():
            raise ValueError(f"clusters contains missing labels in {first_rows(codes < 0)}")
        return codes

    if isinstance(clusters, (pd.Series, pd.Index)) and isinstance(clusters.dtype, pd.CategoricalDtype):
        codes = np.asarray(clusters.cat.codes if isinstance(clusters, pd.Series) else clusters.codes, dtype=np.int64)
        cats = np.asarray(clusters.dtype.categories)
        return checked(codes), cats, len(cats)
    if isinstance(clusters, pd.Series) and not isinstance(clusters.dtype, np.dtype):
        if len(clusters) != n:
            raise ValueError(f"clusters has {len(clusters)} entries but X has {n} rows")
        if not pd.api.types.is_numeric_dtype(clusters.dtype):  # extension strings etc.
            codes, uniques = pd.factorize(clusters, sort=False, use_na_sentinel=True)
            return checked(codes.astype(np.int64, copy=False)), np.asarray(uniques, dtype=object), len(uniques)
    if hasattr(clusters, "to_numpy") and not isinstance(clusters, np.ndarray):
        clusters = clusters.to_numpy()
    arr = np.asarray(clusters)
    if arr.ndim != 1:
        raise ValueError(f"clusters must be 1-D; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"clusters has {arr.shape[0]} entries but X has {n} rows")
    if arr.dtype.kind in "iub" and n > 0:
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi < 2 * n + 1024:
            return arr.astype(np.int64, copy=False), np.arange(hi + 1), hi + 1
    if arr.dtype.kind == "f":
        bad = np.isinf(arr) if allow_missing else ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"clusters contains {'inf' if allow_missing else 'NaN or inf'} in {first_rows(bad)}")
    try:
        codes, uniques = pd.factorize(arr, sort=False, use_na_sentinel=True)  # missing (None, NaN) -> -1
    except TypeError as exc:  # unhashable labels
        raise ValueError(f"clusters labels must be hashable: {exc}") from None
    return checked(codes.astype(np.int64, copy=False)), np.asarray(uniques, dtype=object if arr.dtype.kind == "O" else None), len(uniques)


class Columns:
    """An N x K design held as K separate 1-D float64 arrays (DataFrame columns), which the core
    reads in place: no N x K copy is made. A constant column can be a stride-0 view
    (``np.broadcast_to(1.0, N)``), so an intercept costs no memory.
    """

    __slots__ = ("arrays", "shape")

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = [np.asarray(a) for a in arrays]
        if not self.arrays:
            raise ValueError("the design has no columns")
        n = self.arrays[0].shape[0]
        for a in self.arrays:
            if a.dtype != np.float64 or a.ndim != 1 or a.shape[0] != n:
                raise ValueError("design columns must be 1-D float64 arrays of equal length")
        self.shape = (n, len(self.arrays))

    def column(self, k: int) -> np.ndarray:
        return self.arrays[k]


def column_of(X: Any, k: int) -> np.ndarray:
    """Column k of a 2-D array or of :class:`Columns`."""
    return X.column(k) if isinstance(X, Columns) else X[:, k]


def core_matrix(X: Any) -> Any:
    """What the core reads: the 2-D array itself, or the list of columns."""
    return list(X.arrays) if isinstance(X, Columns) else X


@dataclass
class Design:
    """Validated inputs: float64 y (N) and X (N x K 2-D view or :class:`Columns`), optional cluster codes."""

    y: np.ndarray
    X: Any
    names: list[str]
    codes: np.ndarray | None
    labels: np.ndarray | None
    n_slots: int


def as_design(y: Any, X: Any, clusters: Any = None, names: Sequence[str] | None = None) -> Design:
    yv = _as_float_vector(y)
    Xv, names = _as_float_matrix(X, names)
    N, K = Xv.shape
    if N == 0 or K == 0:
        raise ValueError(f"empty input: X has shape {Xv.shape}")
    if yv.shape[0] != N:
        raise ValueError(f"y has {yv.shape[0]} rows but X has {N}")
    if clusters is None:
        return Design(yv, Xv, names, None, None, 0)
    codes, labels, n_slots = factorize_clusters(clusters, N)
    return Design(yv, Xv, names, codes, labels, n_slots)


class NonFiniteError(ValueError):
    """NaN or inf in y or X, found by the statistics pass (a ValueError like every input error)."""


def nonfinite_message(d: Design, column: int) -> str:
    """Message for a non-finite statistic in `column` (K means y): NaN/inf in data, or overflow."""
    K = d.X.shape[1]
    name, col = ("y", d.y) if column >= K else (f"X column {d.names[column]!r}", column_of(d.X, column))
    bad = ~np.isfinite(col)
    if bad.any():
        return f"{name} contains NaN or inf in {first_rows(bad)}; drop or impute those rows"
    return (f"{name} overflows double precision when squared and summed (max |value| = "
            f"{np.abs(col).max():.3g}); rescale it")
