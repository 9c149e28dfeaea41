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

import re
import sys
from typing import Any, Iterable, Sequence

import numpy as np

READAHEAD = 2  # record batches decoded ahead of the one being added
READ_BUFFER = 1 << 17  # bytes of a local Parquet column chunk read at a time (16-256 KB alike, 1 MB slower)
SLICE_ROWS = 131_072  # larger batches are added in zero-copy slices of this many rows (see batch_rows)
BATCH_BYTES = 32 << 20  # rows of at most 16 float64 values go in batches twice as long, within this

__all__ = ["from_batches", "from_formula_batches", "parquet_source", "csv_source", "merge_counts"]


def _need_arrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError("streaming files needs pyarrow: pip install pyarrow") from None
    return pyarrow


def batch_rows(width: int) -> int:
    """Rows per batch (or slice) of rows of ``width`` float64 values: 2 * SLICE_ROWS (262,144)
    where that stays within BATCH_BYTES (up to 16 values a row), else SLICE_ROWS. Each batch's
    statistics are added into the running total once per cluster the batch holds, so longer
    batches cost less: bench/bench_stream.py (1e8 rows x 12 columns, 10,000 clusters) took
    0.15-0.2 CPU seconds less (of about 9) with 262,144 rows than with 131,072, pyarrow alone
    reading as fast either way; 393,216 rows were no better. Wide rows keep the shorter batches,
    whose copies already take 16 MB and more."""
    return 2 * SLICE_ROWS if 2 * SLICE_ROWS * 8 * width <= BATCH_BYTES else SLICE_ROWS


def parquet_source(source: Any, batch_size: int | None) -> tuple[Any, Any, int]:
    """(make_batches(columns), schema, row count) of a Parquet file, directory or Dataset; batches
    of ``batch_size`` rows (None: batch_rows of the number of columns read)."""
    import os

    pa = _need_arrow()
    import pyarrow.dataset as ds

    if batch_size is not None:
        whole = isinstance(batch_size, (int, float, np.integer, np.floating)) and not isinstance(batch_size, bool) \
            and float(batch_size).is_integer() and batch_size >= 1
        if not whole:
            raise ValueError(f"batch_size must be a positive whole number of rows; got {batch_size!r}")
        batch_size = int(batch_size)
    if isinstance(source, ds.Dataset):
        dataset, scan = source, {}  # read with the caller's own scan options
    else:  # without pre-buffering, pyarrow holds about one row group per column, not whole files
        fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
        dataset = ds.dataset(source, format=fmt)
        scan = local_scan_options(dataset)
    where = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "the Parquet data"
    unreadable = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)

    def failed(exc: Exception, rows: int) -> ValueError:
        hint = (" (every file of a dataset must hold its columns in the types of the dataset's schema, which "
                "comes from its first file)") if len(getattr(dataset, "files", [])) > 1 else ""
        return ValueError(f"{where}: reading failed after {rows:,} rows: {exc}{hint}")

    def make(cols: list[str]) -> Any:
        # Little readahead: memory stays near one row group per decoding thread.
        return _reraised(lambda: dataset.to_batches(columns=cols, batch_size=batch_size or batch_rows(len(cols)),
                                                    batch_readahead=READAHEAD, fragment_readahead=1, **scan),
                         unreadable, failed)
    try:
        total = dataset.count_rows()
    except unreadable as exc:
        raise failed(exc, 0) from None
    return make, dataset.schema, total


def _reraised(open_batches: Any, errors: tuple, wrap: Any) -> Iterable:
    """The batches of ``open_batches()`` (opened on the first read); one of ``errors`` raised
    while opening or reading is raised again as ``wrap(error, rows read before it)``."""
    batches, rows = None, 0
    while True:
        try:
            batches = iter(open_batches()) if batches is None else batches
            batch = next(batches)
        except StopIteration:
            return
        except errors as exc:
            raise wrap(exc, rows) from None
        rows += batch.num_rows
        yield batch


def local_scan_options(dataset: Any) -> dict:
    """Scan options for a Parquet dataset on local disk: each column chunk read READ_BUFFER
    bytes at a time into a reused buffer, not whole into fresh memory (no page faults for every
    chunk, pages decoded from cache: pyarrow alone reads bench/bench_stream.py's 9.3 GB file in
    2.9-3.1 s instead of 4.7-5.7 s). None elsewhere: on object stores every read is a request."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    if not isinstance(getattr(dataset, "filesystem", None), pafs.LocalFileSystem):
        return {}
    return {"fragment_scan_options": ds.ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True,
                                                                   buffer_size=READ_BUFFER)}


def csv_source(path: str, block_bytes: int, delimiter: str = ",", floats: Any = ()) -> tuple[Any, Any, None]:
    """(make_batches(columns), schema, None) of a CSV file. Column types are inferred from the
    first block, except that ``floats`` (y and the regressors; or a function of the inferred
    schema that names them) inferred as integers (or as all missing) are read as float64: a
    column of whole numbers that later holds 2.5 stays readable. A later value that does not
    fit its column's type (a cluster column of numbers, then a word) raises a ValueError naming
    the file, the column and the value."""
    import os

    _need_arrow()
    import pyarrow as pa
    import pyarrow.csv as pcsv

    parse = pcsv.ParseOptions(delimiter=delimiter)
    read = pcsv.ReadOptions(block_size=block_bytes)
    where = os.path.basename(path)

    names: list[str] = []  # the file's columns, in its order (known once the first block is read)
    numeric: list[str] = []  # the columns given in floats

    def fail(exc: Exception, rows: int = 0) -> ValueError:
        """pyarrow's error, with the column it numbers named (and, for a column whose type was
        inferred, where the type came from)."""
        msg = str(exc)
        found = re.match(r"In CSV column #(\d+): (.*)", msg, re.S)
        if found and int(found.group(1)) < len(names):  # numbered in the file's order
            name = names[int(found.group(1))]
            msg = f"column {name!r} {'must be numeric' if name in numeric else 'changed type'}: {found.group(2)}"
            if name not in numeric:
                msg += (f"; CSV column types are inferred from the first block ({block_bytes:,} bytes): give a "
                        "larger block_bytes, or convert the file to Parquet with the column types fixed")
        return ValueError(f"{where}: {msg}")

    try:  # empty fields are missing, as in pandas.read_csv
        schema = pcsv.open_csv(path, read_options=read, parse_options=parse,
                               convert_options=pcsv.ConvertOptions(strings_can_be_null=True)).schema
    except pa.ArrowInvalid as exc:
        raise fail(exc) from None
    names = list(schema.names)
    numeric = list(floats(schema) if callable(floats) else floats)
    types = {c: pa.float64() for c in numeric if c in names and
             (pa.types.is_integer(schema.field(c).type) or pa.types.is_null(schema.field(c).type))}
    for c, t in types.items():
        schema = schema.set(schema.get_field_index(c), pa.field(c, t))

    def make(cols: list[str]) -> Any:
        convert = pcsv.ConvertOptions(include_columns=cols, strings_can_be_null=True,
                                      column_types={c: t for c, t in types.items() if c in cols})
        return _reraised(lambda: pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert),
                         (pa.ArrowInvalid,), fail)
    return make, schema, None


def _sliced(batches: Iterable, rows: int = SLICE_ROWS) -> Iterable:
    """The batches, each larger than ``rows`` cut into zero-copy slices of ``rows``: the core's
    scratch (a copy of one batch's rows in cluster order) then stays cache-sized and is reused,
    instead of growing to the largest batch (a whole Dask partition: 128 MB per million rows,
    page-faulted afresh in every worker task)."""
    for batch in batches:
        if batch.num_rows <= rows:
            yield batch
            continue
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _float_column(arr: Any, name: str) -> np.ndarray:
    """A numeric Arrow column as float64 numpy (zero-copy for float64 without nulls; nulls -> NaN)."""
    import pyarrow as pa

    t = arr.type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)):
        raise ValueError(f"column {name!r} must be numeric; it holds {t}")
    if t != pa.float64():
        arr = arr.cast(pa.float64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


class _Accumulator:
    """Running statistics of the batches seen so far; clusters are keyed by label, so a cluster
    whose rows are spread over many batches is added up exactly. The first row fixes the shift;
    every batch is added straight into the running total (one pass over its rows, no per-batch
    statistics), through a reused scratch buffer that lets the core copy rows in random cluster
    order once, in order."""

    def __init__(self, K: int, threads: int | None):
        self.K, self.threads = K, threads
        self.total = None
        self.labels = None  # pandas Index of the cluster labels, in total's order
        self.dense = None   # integer labels: dense[l] = position of label l (-1: not seen), from labels
        self.stage = np.empty(0)

    def _refresh_dense(self) -> None:
        """Rebuild ``dense`` from ``labels`` (non-negative integer labels in a range not much wider
        than their count; otherwise there is none)."""
        self.dense = None
        labs = self.labels
        if labs is None or len(labs) == 0 or labs.dtype.kind not in "iu":
            return
        vals = labs.to_numpy()
        lo, hi = int(vals.min()), int(vals.max())
        if lo >= 0 and hi < 4 * len(vals) + 1024:
            self.dense = np.full(hi + 1, -1, dtype=np.int64)
            self.dense[vals] = np.arange(len(vals), dtype=np.int64)

    def _slot_map(self, codes: np.ndarray, slot_labels: Any, n_slots: int) -> np.ndarray:
        """Position in ``total`` of every slot that has rows (-1 for the others): new labels are
        appended. Integer labels used as codes (slot l holds label l) whose every slot is known
        already are a slice of ``dense``: no count of the batch's codes, no hashing."""
        d = self.dense
        if (d is not None and n_slots <= len(d) and slot_labels.dtype.kind in "iu"
                and np.array_equal(slot_labels, np.arange(n_slots))):
            known = d[:n_slots]
            if (known >= 0).all():
                return known
        present = np.flatnonzero(np.bincount(codes, minlength=int(n_slots)))
        slot_map = np.full(int(n_slots), -1, dtype=np.int64)
        known_before = 0 if self.labels is None else len(self.labels)
        slot_map[present] = self._positions(slot_labels[present])
        if len(self.labels) != known_before:
            self._refresh_dense()
        return slot_map

    def _positions(self, labs: Any) -> np.ndarray:
        """Rows of ``total`` for these labels (new labels appended), growing ``total`` if needed."""
        import pandas as pd

        from . import _core

        labs = pd.Index(labs, tupleize_cols=False)
        if self.labels is None:
            self.labels = labs
            pos = np.arange(len(labs), dtype=np.int64)
        else:
            pos = self.labels.get_indexer(labs).astype(np.int64)
            new = pos < 0
            if new.any():
                pos[new] = np.arange(len(self.labels), len(self.labels) + int(new.sum()))
                self.labels = self.labels.append(labs[new])
        if self.total is not None and self.total.G < len(self.labels):
            npack = (self.K + 2) * (self.K + 3) // 2
            grown = _core.ClusterStats(self.K, list(self.total.shift), np.zeros((2 * len(self.labels), npack)))
            grown.add(self.total, np.arange(self.total.G, dtype=np.int64))
            self.total = grown
        return pos

    def add(self, y: np.ndarray, X: Any, codes: np.ndarray, slot_labels: Any, n_slots: int,
            check: bool = True) -> bool:
        """Add a batch; with ``check``, False (and nothing added) if y or X holds NaN or inf
        (unchecked, an inf is found by :meth:`finish`)."""
        from . import _core
        from ._inputs import core_matrix
        from .stats import _threads

        codes = np.ascontiguousarray(codes, dtype=np.int64)
        slot_labels = np.asarray(slot_labels)
        threads = _threads(self.threads)
        if self.total is None:  # the first row is the shift of every batch (as in a one-pass build)
            cols = core_matrix(X)
            first = [float(c[0]) for c in cols] if isinstance(cols, list) else [float(v) for v in cols[0]]
            shift = first + [float(y[0])]
            if check and not np.isfinite(shift).all():
                return False
            npack = (self.K + 2) * (self.K + 3) // 2
            self.total = _core.ClusterStats(self.K, shift, np.zeros((16, npack)))
        before = self.labels
        slot_map = self._slot_map(codes, slot_labels, n_slots)
        need = _core.ClusterStats.stage_doubles(len(codes), self.K)
        if self.stage.size < need:
            self.stage = np.empty(need)
        if self.total.add_rows(y, core_matrix(X), codes, int(n_slots), slot_map, threads, self.stage,
                               check_finite=check):
            return True
        self.labels = None if before is None else self.labels[:len(before)]  # nothing added: forget new labels
        self._refresh_dense()
        return False

    def finish(self, names: list[str], n_dropped: int, dropped_by: dict, yname: str) -> Any:
        from .stats import ClusterStats

        if self.total is None:
            raise ValueError(_no_rows(n_dropped))
        self.total.compact(np.arange(len(self.labels), dtype=np.int64))
        self.stage = np.empty(0)
        stats = ClusterStats(self.total, np.asarray(self.labels, dtype=object), names)
        bad = stats._nonfinite_column(self.threads)
        if bad is not None:
            raise ValueError(f"column {yname if bad >= len(names) else names[bad]!r} has infinite values")
        stats.n_dropped = n_dropped
        stats.dropped_by = {c: v for c, v in dropped_by.items() if v}
        return stats


def _no_rows(n_dropped: int) -> str:
    if n_dropped == 0:
        return "no rows left to fit: the data has no rows"
    return f"no rows left to fit ({n_dropped:,} dropped for missing values)"


def merge_counts(a: dict, b: Any) -> dict:
    """Per-column counts of dropped rows, added (``b``: a dict or a pandas Series)."""
    return {c: int(a.get(c, 0)) + int(b.get(c, 0)) for c in dict.fromkeys([*a, *b.keys()])}


def _progress_bar(progress: bool | None, total_rows: int | None) -> Any:
    if progress is None:
        progress = sys.stderr.isatty() and (total_rows or 0) > 5_000_000
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total_rows, unit="row", unit_scale=True, desc="cluster statistics")


def from_batches(batches: Iterable, y: str, x: Sequence[str], cluster: str, *, intercept: bool = True,
                 total_rows: int | None = None, threads: int | None = None, progress: bool | None = None) -> Any:
    """A :class:`~crve.ClusterStats` built batch by batch from pyarrow record batches holding
    ``y``, ``x`` and ``cluster``. Rows with a missing value in any of them are dropped and
    counted (``stats.n_dropped``, ``stats.dropped_by``)."""
    import pyarrow as pa

    from ._inputs import Columns, factorize_clusters

    x = list(x)
    used = [y] + x + [cluster]
    names = (["Intercept"] if intercept else []) + x
    acc = _Accumulator(len(names), threads)
    dropped = dict.fromkeys(used, 0)
    n_dropped = 0
    bar = _progress_bar(progress, total_rows)
    try:
        for batch in _sliced(batches, batch_rows(len(names) + 2)):  # rows of [x, 1, y]
            n_rows = batch.num_rows
            if n_rows == 0:
                continue
            values = {c: _float_column(batch.column(batch.schema.get_field_index(c)), c) for c in [y, *x]}
            labels = batch.column(batch.schema.get_field_index(cluster))
            # Integer labels without nulls: the numpy view (no pandas Series), and no code is -1.
            plain = pa.types.is_integer(labels.type) and labels.null_count == 0
            codes, slot_labels, n_slots = factorize_clusters(labels.to_numpy() if plain else labels.to_pandas(),
                                                             len(labels), allow_missing=True)

            def design(vals: dict, n: int) -> Columns:
                cols = [vals[c] for c in x]
                return Columns(([np.broadcast_to(np.float64(1.0), (n,))] if intercept else []) + cols)

            # Fast path: no missing label and (checked in the core while the rows are read) no NaN.
            if (plain or (codes >= 0).all()) and acc.add(values[y], design(values, n_rows), codes, slot_labels, n_slots):
                if bar is not None:
                    bar.update(n_rows)
                continue
            ok = codes >= 0
            dropped[cluster] += n_rows - int(ok.sum())
            for c, v in values.items():
                bad = np.isnan(v)  # Arrow nulls became NaN
                if bad.any():
                    dropped[c] += int(bad.sum())
                    ok &= ~bad
            n_ok = int(ok.sum())
            if n_ok < n_rows:
                n_dropped += n_rows - n_ok
                values = {c: v[ok] for c, v in values.items()}
                codes = codes[ok]
            for c, v in values.items():
                if np.isinf(v).any():
                    raise ValueError(f"column {c!r} has infinite values")
            if n_ok:
                acc.add(values[y], design(values, n_ok), codes, slot_labels, n_slots, check=False)
            if bar is not None:
                bar.update(n_rows)
    finally:
        if bar is not None:
            bar.close()
    return acc.finish(names, n_dropped, dropped, y)


_C_CALL = re.compile(r"\bC\(\s*([A-Za-z_][A-Za-z0-9_]*)")


def integer_regressors(formula: str, schema: Any, cluster: Any) -> list[str]:
    """Integer columns of ``schema`` that ``formula`` uses as numbers (not a cluster, not in
    ``C(...)``): CSV reads them as float64, as pandas.read_csv does a column of whole numbers
    that holds a decimal further down."""
    import pyarrow as pa

    from .formula import _parse

    clusters = [cluster] if isinstance(cluster, str) else list(cluster or [])
    used = [v for v in sorted(_parse(formula).required_variables) if v in schema.names and v not in clusters]
    cats = set(categorical_columns(formula, schema, used))
    return [c for c in used if c not in cats and pa.types.is_integer(schema.field(c).type)]


def categorical_columns(formula: str, schema: Any, used: list[str]) -> list[str]:
    """Columns whose levels must be fixed before the first batch: string, dictionary and other
    non-numeric columns, and numeric columns wrapped in ``C(...)``."""
    import pyarrow as pa

    out = []
    for c in used:
        t = schema.field(c).type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
        if not numeric:
            out.append(c)
    out += [c for c in _C_CALL.findall(formula) if c in used and c not in out]
    return out


def sorted_levels(values: Iterable) -> list:
    """Levels in formulaic's order for a non-categorical column: sorted."""
    vals = [v for v in values if v is not None and v == v]
    try:
        return sorted(vals)
    except TypeError:
        raise ValueError(f"cannot order the levels {vals[:5]} (mixed types)") from None


def from_formula_batches(make_batches: Any, schema: Any, formula: str, cluster: Any, *, total_rows: int | None = None,
                         threads: int | None = None, progress: bool | None = None, context: Any = None,
                         missing: str = "drop", where: str = "the data", levels: dict | None = None) -> Any:
    """Statistics of a formula over record batches. ``make_batches(columns)`` returns a fresh
    iterator of batches (called twice: a first pass reads only the categorical columns to fix
    their levels, so a level first seen in the last batch gets its column in every batch;
    ``levels`` given by the caller skips that pass)."""
    import pandas as pd
    import pyarrow.compute as pc

    from ._frame import Frame, column_hint
    from .formula import _parse, frame_design

    spec = _parse(formula)
    context = context if context is not None else {"np": np, "numpy": np}
    cluster_cols = [cluster] if isinstance(cluster, str) else list(cluster or [])
    if not cluster_cols or not all(isinstance(c, str) for c in cluster_cols):
        raise ValueError("streaming needs cluster= one or more column names (HC variants need the rows in memory)")
    names_in = set(schema.names)
    for c in sorted(spec.required_variables) + cluster_cols:
        if c not in names_in and c not in context:
            raise ValueError(f"column {c!r} is not in {where}{column_hint(c, list(schema.names))}")
    used = sorted({v for v in spec.required_variables if v in names_in} | set(cluster_cols))
    cats = [c for c in categorical_columns(formula, schema, used) if c not in cluster_cols]
    if levels is not None:  # fixed by the caller (Dask: once over the whole frame)
        cats = [c for c in cats if c in levels]
    else:
        levels = {}
    if cats and not levels:
        seen: dict[str, set] = {c: set() for c in cats}
        for batch in make_batches(cats):
            for c in cats:
                seen[c].update(pc.unique(batch.column(batch.schema.get_field_index(c))).to_pylist())
        levels = {c: sorted_levels(v) for c, v in seen.items()}

    acc = names = None
    n_dropped, dropped = 0, {}
    bar = _progress_bar(progress, total_rows)
    try:
        for batch in _sliced(make_batches(used)):
            if bar is not None:
                bar.update(batch.num_rows)
            if batch.num_rows == 0:
                continue
            df = batch.to_pandas()
            for c in cats:
                df[c] = pd.Categorical(df[c], categories=levels[c])
            try:
                fd = frame_design(spec, Frame(df), cluster, missing, context)
            except ValueError as exc:
                if missing != "drop" or not str(exc).startswith("no rows left"):
                    raise
                n_dropped += batch.num_rows
                na = df.isna().sum()
                dropped = merge_counts(dropped, na)
                continue
            if names is None:
                names = fd.names
                acc = _Accumulator(len(names), threads)
            elif fd.names != names:
                raise ValueError(f"the design differs between batches ({names} vs {fd.names}); make the columns "
                                 "behind categorical terms strings or wrap them in C(...)")
            acc.add(fd.y, fd.X, fd.codes, fd.labels, fd.n_slots, check=False)
            n_dropped += fd.n_dropped
            dropped = merge_counts(dropped, fd.dropped_by)
    finally:
        if bar is not None:
            bar.close()
    if acc is None:
        raise ValueError(_no_rows(n_dropped))
    return acc.finish(names, n_dropped, dropped, str(spec.lhs))
