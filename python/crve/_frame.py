"""Column access to tabular data without converting the whole table.

pandas and polars DataFrames, pyarrow Tables / RecordBatches and dicts of arrays are read one
column at a time, and only the columns a model uses. Numeric columns come out as float64 numpy
arrays, zero-copy where the source allows; other columns (labels, categoricals, strings) come
out as pandas Series for factorising and for formulaic.

Missing means: NaN in a float column, None / NaN in an object column, pandas NA / NaT, Arrow and
polars nulls, and a categorical's missing code.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

__all__ = ["Frame", "column_hint"]


def column_hint(name: str, columns: list[str]) -> str:
    """'; did you mean 'x'? (columns: ...)' for a column name not among `columns`."""
    import difflib

    close = difflib.get_close_matches(name, columns, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(map(repr, columns[:20])) + (", ..." if len(columns) > 20 else "")
    return f"{hint} (columns: {shown})"


class Frame:
    """A read-only view of `data` by column name."""

    def __init__(self, data: Any):
        mod = type(data).__module__.split(".")[0]
        if isinstance(data, pd.DataFrame):
            self.kind = "pandas"
            cols = list(data.columns)
            if len(set(map(str, cols))) != len(cols):
                raise ValueError("data has duplicate column names; rename them before fitting")
            self._src = {str(c): data[c] for c in cols}
            self.nrows = len(data)
        elif mod == "polars" and hasattr(data, "get_column"):
            if type(data).__name__ == "LazyFrame":
                raise ValueError("data is a polars LazyFrame; call .collect() first")
            self.kind = "polars"
            self._src = {c: data.get_column(c) for c in data.columns}
            self.nrows = data.height
        elif mod == "pyarrow" and hasattr(data, "column_names"):
            self.kind = "arrow"
            self._src = {c: data.column(i) for i, c in enumerate(data.column_names)}
            self.nrows = data.num_rows
        elif isinstance(data, dict):
            self.kind = "dict"
            self._src = {}
            for k, v in data.items():
                if isinstance(v, (list, tuple)):  # pandas infers mixed lists (None, NaN, str) correctly
                    v = pd.Series(v)
                arr = v if isinstance(v, (pd.Series, pd.Categorical)) else np.asarray(v)
                if getattr(arr, "ndim", 1) != 1:
                    raise ValueError(f"data[{k!r}] must be 1-D; got shape {np.shape(arr)}")
                self._src[str(k)] = arr
            lengths = {k: len(v) for k, v in self._src.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"the arrays in data have different lengths: {lengths}")
            self.nrows = next(iter(lengths.values()), 0)
        else:
            raise TypeError("data must be a pandas or polars DataFrame, a pyarrow Table, or a dict of "
                            f"1-D arrays; got {type(data).__module__}.{type(data).__name__}")
        self.columns = list(self._src)

    def __contains__(self, name: str) -> bool:
        return name in self._src

    def check(self, names: Any, what: str) -> None:
        """Raise naming the first column of `names` not in the data (with close matches)."""
        for n in names:
            if n not in self._src:
                raise ValueError(f"{what} uses column {n!r}, which is not in data{column_hint(n, self.columns)}")

    def dtype(self, name: str) -> str:
        s = self._src[name]
        return str(s.type if self.kind == "arrow" else s.dtype)

    def is_numeric(self, name: str) -> bool:
        """Integer or float (not bool, not categorical): a plain numeric regressor."""
        s = self._src[name]
        if self.kind == "polars":
            return s.dtype.is_numeric()
        if self.kind == "arrow":
            import pyarrow.types as pat

            return pat.is_integer(s.type) or pat.is_floating(s.type)
        return is_numeric_dtype(s.dtype) and not is_bool_dtype(s.dtype)

    def is_bool(self, name: str) -> bool:
        s = self._src[name]
        if self.kind == "polars":
            return str(s.dtype) == "Boolean"
        if self.kind == "arrow":
            import pyarrow.types as pat

            return pat.is_boolean(s.type)
        return is_bool_dtype(s.dtype)

    def float64(self, name: str) -> np.ndarray:
        """A numeric or bool column as float64 (missing -> NaN); zero-copy for float64 without nulls."""
        s = self._src[name]
        if self.kind == "pandas":
            if s.dtype == np.float64:
                return s.to_numpy()
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        if self.kind == "polars":
            out = s.cast(self._pl().Float64).to_numpy() if s.dtype != self._pl().Float64 else s.to_numpy()
            return np.asarray(out, dtype=np.float64)
        if self.kind == "arrow":
            import pyarrow as pa

            if s.null_count == 0 and s.type == pa.float64():
                return s.to_numpy()
            return np.asarray(s.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        arr = s.to_numpy() if isinstance(s, pd.Series) else np.asarray(s)
        if arr.dtype == np.float64:
            return arr
        return pd.Series(arr).to_numpy(dtype=np.float64, na_value=np.nan) if arr.dtype.kind == "O" else arr.astype(np.float64)

    def series(self, name: str) -> pd.Series:
        """The column as a pandas Series (for labels and formulaic)."""
        s = self._src[name]
        if self.kind == "pandas":
            return s
        if self.kind in ("polars", "arrow"):
            return s.to_pandas()
        if isinstance(s, pd.Series):
            return s
        return pd.Series(s, copy=False)

    def plain_float(self, name: str) -> bool:
        """A numpy-backed float column: its only missing values are NaN, which the statistics
        pass finds by itself (a NaN makes a sum of squares NaN)."""
        if self.kind not in ("pandas", "dict"):
            return False
        dtype = getattr(self._src[name], "dtype", None)
        return isinstance(dtype, np.dtype) and dtype.kind == "f"

    def missing(self, name: str) -> np.ndarray | None:
        """Boolean mask of missing rows, or None when the column cannot hold missing values."""
        s = self._src[name]
        if self.kind == "polars":
            m = s.is_null()
            if s.dtype.is_float():
                m = m | s.is_nan()
            return m.to_numpy() if m.any() else None
        if self.kind == "arrow":
            import pyarrow.compute as pc

            m = pc.is_null(s, nan_is_null=True)
            return np.asarray(m) if pc.any(m).as_py() else None
        dtype = s.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iub":
            return None
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            arr = s.to_numpy() if isinstance(s, pd.Series) else s
            m = np.isnan(arr)
        else:
            m = np.asarray(pd.isna(s))
        return m if m.any() else None

    @staticmethod
    def _pl() -> Any:
        import polars

        return polars

    def subset(self, names: list[str], keep: np.ndarray | None) -> pd.DataFrame:
        """The named columns as a pandas DataFrame, rows `keep` (a boolean mask) only."""
        out = {n: self.series(n) for n in names}
        df = pd.DataFrame({n: s.to_numpy() if isinstance(s.dtype, np.dtype) else s.array for n, s in out.items()})
        return df if keep is None else df.loc[keep].reset_index(drop=True)
