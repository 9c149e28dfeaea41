"""Streaming Parquet / CSV: the same statistics as the in-memory path, memory bounded by a batch."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

import crve

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402


def _frame(N=200_000, G=500, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, N)  # rows in random order: every cluster spans many batches
    df = pd.DataFrame({"school": np.array([f"s{i:04d}" for i in range(G)], dtype=object)[g],
                       "x1": rng.normal(size=N) + 50.0, "x2": rng.normal(size=G)[g] + rng.normal(size=N),
                       "k": rng.integers(0, 5, N)})
    df["y"] = 1 + 0.5 * df.x1 - df.x2 + 0.1 * df.k + rng.normal(size=G)[g] + rng.normal(size=N)
    return df


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory):
    df = _frame()
    path = tmp_path_factory.mktemp("stream") / "big.parquet"
    df.to_parquet(path, row_group_size=20_000)
    return path, df


def test_parquet_equals_in_memory_and_memory_is_bounded(parquet_file):
    path, df = parquet_file
    batch = 2_000  # the file holds 100 batches
    pool = pa.default_memory_pool()
    tracemalloc.start()
    stats = crve.ClusterStats.from_parquet(path, y="y", x=["x1", "x2", "k"], cluster="school", batch_size=batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ref = crve.ols("y ~ x1 + x2 + k", df, cluster="school")
    assert stats.nobs == len(df) and stats.n_clusters == 500
    for v in ("CV1", "CV2", "CV3"):
        fit = stats.fit(v)
        assert _rel(fit.params, ref.params) < 1e-12
        assert _rel(fit.bse, ref.with_variant(v).bse) < 1e-12
    in_memory = len(df) * 5 * 8  # the used columns as float64: 8 MB
    assert peak < in_memory / 4, f"numpy peak {peak / 1e6:.1f} MB"
    assert pool.max_memory() < 64e6  # arrow's own pool (row groups are decoded whole)


def test_a_large_batch_is_added_in_slices(parquet_file):
    """A batch far larger than the slice (a whole Dask partition, a big CSV block) is added in
    zero-copy slices: the core's scratch copy of the rows stays one slice's size instead of the
    batch's (here 1,200,000 rows x 8 doubles = 77 MB; a slice of 262,144 rows: 17 MB), and the
    statistics are the same."""
    from crve.stream import SLICE_ROWS, _sliced, batch_rows, from_batches

    path, df = parquet_file
    table = pq.read_table(path, columns=["y", "x1", "x2", "k", "school"])
    batch = pa.concat_tables([table] * 6).combine_chunks().to_batches()[0]
    assert batch.num_rows == 6 * len(df) > 8 * SLICE_ROWS
    pieces = list(_sliced([batch]))
    assert [p.num_rows for p in pieces] == [SLICE_ROWS] * 9 + [batch.num_rows - 9 * SLICE_ROWS]
    assert pieces[1].column(0).buffers()[1].address == batch.column(0).buffers()[1].address  # zero-copy
    rows = batch_rows(4 + 2)  # narrow rows (Intercept, x1, x2, k, 1, y): slices twice as long
    assert rows == 2 * SLICE_ROWS and [p.num_rows for p in _sliced([batch], rows)][:4] == [rows] * 4
    tracemalloc.start()
    stats = from_batches([batch], "y", ["x1", "x2", "k"], "school", threads=1, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole, one = batch.num_rows * 8 * 8, rows * 8 * 8  # scratch for the whole batch / one slice
    assert one < peak < one + 8e6, f"numpy peak {peak / 1e6:.1f} MB"  # one slice's (+ codes, labels)
    assert peak < whole / 3
    ref = crve.ols("y ~ x1 + x2 + k", pd.concat([df] * 6), cluster="school")
    assert stats.nobs == 6 * len(df)
    assert _rel(stats.fit("CV2").bse, ref.with_variant("CV2").bse) < 1e-12


@pytest.mark.parametrize("step", [1, 3])
def test_integer_labels_map_through_the_dense_table(monkeypatch, step):
    """Integer labels are their own slots: once every slot up to the largest label is known, a
    batch maps its clusters through a slice of the dense table (no hashing); only a batch with
    a new label goes through the label index. Labels with gaps (step 3) never fill the table and
    take the index every time. Either way: the in-memory answer."""
    from crve.stream import _Accumulator, from_batches

    rng = np.random.default_rng(5)
    N, G = 40_000, 50
    g = step * rng.integers(0, G, N)
    g[-10:] = step * (G + 2)  # a label first seen in the last batch
    df = pd.DataFrame({"g": g, "x": rng.normal(size=N)})
    df["y"] = df.x + rng.normal(size=G + 3)[g // step] + rng.normal(size=N)
    calls = []
    original = _Accumulator._positions
    monkeypatch.setattr(_Accumulator, "_positions", lambda self, labs: calls.append(len(labs)) or original(self, labs))
    batches = pa.Table.from_pandas(df, preserve_index=False).to_batches(max_chunksize=2_000)
    stats = from_batches(batches, "y", ["x"], "g", progress=False)
    assert len(calls) == (2 if step == 1 else len(batches))
    ref = crve.ols("y ~ x", df, cluster="g")
    assert stats.n_clusters == G + 1 == ref.n_clusters
    assert sorted(map(int, stats.labels)) == sorted(map(int, ref._stats.labels))
    for v in ("CV1", "CV2"):
        assert _rel(stats.fit(v).bse, ref.with_variant(v).bse) < 1e-12


@pytest.mark.parametrize("k", [1, 2, 6, 7, 10, 11, 14, 18])
def test_a_streamed_intercept_is_left_out_of_the_staged_copy(k):
    """A streamed batch's intercept is a broadcast 1.0 equal to its shift, so it is zero in every
    shifted row: the core's staged copy (many clusters) leaves it out, in rows of the K + 1 other
    lanes padded to a multiple of 4. The statistics are bit for bit those of a batch whose
    intercept is a real column of ones (all K + 2 lanes staged), for row widths 3 to 20: also
    where leaving the lane out narrows the rows from 8 to 4 doubles (k = 2), whose Gram kernel
    sums every entry over the rows in the same order as the wider one."""
    from crve.stream import from_batches

    rng = np.random.default_rng(k)
    N, G = 60_000, 20_000  # statistics past the chunk tables' 1 MB for every k: staged
    xs = [f"x{j}" for j in range(k)]
    df = pd.DataFrame({"g": rng.integers(0, G, N), **{c: rng.normal(size=N) for c in xs}, "one": 1.0})
    df["y"] = df[xs].sum(axis=1) + rng.normal(size=G)[df.g] + rng.normal(size=N)
    batches = pa.Table.from_pandas(df, preserve_index=False).to_batches(max_chunksize=15_000)
    live = from_batches(batches, "y", xs, "g", progress=False)
    ones = from_batches(batches, "y", ["one"] + xs, "g", intercept=False, progress=False)
    assert list(live._core.shift) == list(ones._core.shift)
    assert np.array_equal(live._core.packed, ones._core.packed)
    ref = crve.ols("y ~ " + " + ".join(xs), df, cluster="g")
    assert _rel(live.fit("CV2").bse, ref.with_variant("CV2").bse) < 1e-12


@pytest.mark.parametrize("k", [1, 2, 5, 6, 9, 13, 21, 29, 30, 31])
def test_the_columnwise_staged_copy_equals_the_rowwise_one(k):
    """With many clusters the core stages each batch's rows in cluster order. Columns read in
    order (or broadcast scalars: record batches) are loaded eight rows at a time and transposed in
    registers; any other layout (here a row-major 2-D array) is copied a row at a time. Both
    give the same statistics bit for bit: row widths 4 to 32 (and 36, where both take the row-wise
    copy), batches whose chunks end 1 to 7 rows past a multiple of eight, a broadcast column that
    stays live (it differs from the shift), and a NaN or inf anywhere refuses the whole batch."""
    from crve import _core

    rng = np.random.default_rng(k)
    npack = (k + 2) * (k + 3) // 2
    G = 2 * (1 << 20) // (8 * npack) + 500  # statistics past the table mode's 1 MB: staged
    batches = [(rng.normal(size=(n, k)), rng.normal(size=n), rng.integers(0, G, n)) for n in (5003, 6, 40003)]
    shift = list(batches[0][0][0]) + [float(batches[0][1][0])]
    rowwise, colwise = (_core.ClusterStats(k, shift, np.zeros((G, npack))) for _ in range(2))
    every = np.arange(G, dtype=np.int64)
    stage = np.empty(_core.ClusterStats.stage_doubles(40003, k))

    def add(X, y, codes, broadcast=None):
        cols = [X[:, c].copy() for c in range(k)]
        if broadcast is not None:
            X = X.copy()
            X[:, broadcast] = 2.5
            cols[broadcast] = np.broadcast_to(2.5, (len(y),))
        wide = np.zeros((len(y), k + 1))  # rows k + 1 apart: never read column-wise, even for k = 1
        wide[:, :k] = X
        a = rowwise.add_rows(y, wide[:, :k], codes, G, every, 2, stage, check_finite=True)
        b = colwise.add_rows(y, cols, codes, G, every, 2, stage, check_finite=True)
        assert a == b
        return a

    for j, batch in enumerate(batches):
        assert add(*batch, broadcast=k // 2 if j == 2 else None)
    assert np.array_equal(rowwise.packed, colwise.packed)
    assert rowwise.packed.any()
    before = colwise.packed.copy()
    X, y, codes = batches[2]
    for row, lane, bad in [(0, 0, np.nan), (40002, k, np.inf), (17, k - 1, -np.inf), (39990, k // 2, np.nan)]:
        Xb, yb = X.copy(), y.copy()
        if lane == k:
            yb[row] = bad
        else:
            Xb[row, lane] = bad
        assert not add(Xb, yb, codes)
    assert np.array_equal(colwise.packed, before) and np.array_equal(rowwise.packed, before)


def test_local_parquet_is_read_through_a_small_buffer(parquet_file, tmp_path):
    """Local Parquet files are read a column chunk at a time through a reused buffer; a Dataset
    the caller built keeps its own scan options, and so does anything not on local disk."""
    import pyarrow.dataset as ds

    from crve.stream import READ_BUFFER, local_scan_options

    path, _ = parquet_file
    opts = local_scan_options(ds.dataset(path))["fragment_scan_options"]
    assert opts.use_buffered_stream and opts.buffer_size == READ_BUFFER and not opts.pre_buffer
    assert local_scan_options(ds.dataset(pa.table({"a": [1.0]}))) == {}  # in memory: no filesystem


def test_default_batches_are_longer_for_narrow_rows(tmp_path):
    """Without batch_size, Parquet is read in batches of 262,144 rows when at most 16 columns are
    read (a batch's statistics are added into the total once per cluster: longer batches cost
    less) and 131,072 rows for wider reads (the copy of each batch stays about 16-32 MB)."""
    from crve.stream import SLICE_ROWS, parquet_source

    n = 2 * SLICE_ROWS + 5
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"c{i}": np.zeros(n, dtype=np.int8) for i in range(17)}), path)
    make, _, rows = parquet_source(str(path), None)
    assert rows == n
    assert [b.num_rows for b in make([f"c{i}" for i in range(16)])] == [2 * SLICE_ROWS, 5]
    assert [b.num_rows for b in make([f"c{i}" for i in range(17)])] == [SLICE_ROWS, SLICE_ROWS, 5]
    make, _, _ = parquet_source(str(path), 1e5)  # a whole float is a row count
    assert [b.num_rows for b in make(["c0"])] == [100_000, 100_000, n - 200_000]
    for bad in [0, -5, 2.5, True, "10", float("nan")]:
        with pytest.raises(ValueError, match="batch_size must be a positive whole number of rows"):
            crve.ClusterStats.from_parquet(path, y="c0", x=["c1"], cluster="c2", batch_size=bad)


def test_parquet_dataset_directory(parquet_file, tmp_path):
    _, df = parquet_file
    for i in range(3):
        df.iloc[i * 10_000:(i + 1) * 10_000].to_parquet(tmp_path / f"part{i}.parquet")
    stats = crve.ClusterStats.from_parquet(tmp_path, y="y", x=["x1"], cluster="school", batch_size=4096)
    ref = crve.ols("y ~ x1", df.iloc[:30_000], cluster="school")
    assert _rel(stats.fit().bse, ref.bse) < 1e-12
    # A filtered Dataset streams only its rows (pyarrow applies the filter batch by batch).
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    subset = ds.dataset(tmp_path).filter(pc.field("x1") > 50.3)
    for kw in ({"y": "y", "x": ["x1"]}, {"formula": "y ~ x1"}):
        stats = crve.ClusterStats.from_parquet(subset, cluster="school", batch_size=4096, **kw)
        ref = crve.ols("y ~ x1", df.iloc[:30_000].query("x1 > 50.3"), cluster="school")
        assert stats.nobs == ref.nobs < 20_000 and _rel(stats.fit().bse, ref.bse) < 1e-12
    # A later file whose column does not cast to the dataset's type (taken from the first file).
    drift = tmp_path / "drift"  # after the reads above: ds.dataset(tmp_path) would include it
    drift.mkdir()
    pq.write_table(pa.Table.from_pandas(df.iloc[:1000], preserve_index=False), drift / "a.parquet")
    pq.write_table(pa.Table.from_pandas(df.iloc[1000:2000].assign(x1="n/a"), preserve_index=False), drift / "b.parquet")
    for kw in ({"y": "y", "x": ["x1"]}, {"formula": "y ~ x1"}):
        with pytest.raises(ValueError, match=r"^drift: reading failed after 1,000 rows: .*'n/a'.*first file\)$"):
            crve.ClusterStats.from_parquet(drift, cluster="school", **kw)


def test_missing_values_are_dropped_and_counted(tmp_path):
    df = _frame(N=5000, G=40)
    df.loc[[1, 2, 3], "x1"] = np.nan
    df.loc[[3, 9], "y"] = np.nan
    df.loc[[11], "school"] = None
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    stats = crve.ClusterStats.from_parquet(path, y="y", x=["x1"], cluster="school", batch_size=700)
    assert stats.n_dropped == 5 and stats.dropped_by == {"y": 2, "x1": 3, "school": 1}
    ref = crve.ols("y ~ x1", df, cluster="school")
    assert ref.n_dropped == 5 and _rel(stats.fit().bse, ref.bse) < 1e-12
    # A fit of the statistics says so too (found by the stream fuzz target: it said 0).
    res = stats.fit("CV2")
    assert res.n_dropped == 5 and res.dropped_by == stats.dropped_by and "5 rows with missing values dropped" in res.summary()


def test_many_clusters_late_missing_values_new_labels_and_inf(tmp_path):
    # 5,000 integer clusters, about one row each per batch: batches are added straight into the
    # running statistics through the staged copy; the last batch brings new labels, a missing
    # value and a missing label (that batch is re-done with the rows dropped, and the label whose
    # only row was dropped is not a cluster).
    rng = np.random.default_rng(3)
    N, G = 60_000, 5_000
    df = pd.DataFrame({"g": rng.integers(0, G, N), **{f"x{k}": rng.normal(size=N) for k in range(4)}})
    df["y"] = df.x0 - df.x1 + rng.normal(size=G)[df.g] + rng.normal(size=N)
    df.loc[df.index[-100:], "g"] = G + 7
    df.loc[N - 50, ["x2", "g"]] = [np.nan, G + 9]  # a label whose only row is dropped
    df["g"] = df.g.astype("Int64")
    df.loc[N - 9_000, "g"] = pd.NA  # in another batch: the missing label alone
    path = tmp_path / "many.parquet"
    df.to_parquet(path)
    x = [f"x{k}" for k in range(4)]
    stats = crve.ClusterStats.from_parquet(path, y="y", x=x, cluster="g", batch_size=6000)
    ref = crve.ols("y ~ x0 + x1 + x2 + x3", df.astype({"g": float}), cluster="g")
    assert stats.n_dropped == ref.n_dropped == 2 and stats.dropped_by == {"x2": 1, "g": 1}
    assert stats.n_clusters == ref.n_clusters == G + 1
    for v in ("CV1", "CV2"):
        assert _rel(stats.fit(v).bse, ref.with_variant(v).bse) < 1e-12
    df.loc[N - 30, "x3"] = np.inf
    df.to_parquet(path)
    with pytest.raises(ValueError, match="column 'x3' has infinite values"):
        crve.ClusterStats.from_parquet(path, y="y", x=x, cluster="g", batch_size=6000)


def test_csv_stream(tmp_path):
    df = _frame(N=20_000, G=60, seed=2)
    df.loc[5, "x2"] = np.nan
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    stats = crve.ClusterStats.from_csv(str(path), y="y", x=["x1", "x2"], cluster="school", block_bytes=64 << 10)
    ref = crve.ols("y ~ x1 + x2", df, cluster="school")
    assert stats.nobs == ref.nobs and stats.n_dropped == 1
    assert _rel(stats.fit("CV2").bse, ref.with_variant("CV2").bse) < 1e-10  # CSV text round-trips to 1e-15


def test_csv_types_that_change_after_the_first_block(tmp_path):
    """CSV types come from the first block. A regressor (or y) of whole numbers there that later
    holds decimals is read as float64 throughout and fits as in memory; a cluster column of
    numbers that later holds a word, or a regressor holding text, is a ValueError naming the
    file, the column (in the file's order, not the read order) and the value."""
    N = 20_000
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"a": 0, "g": rng.integers(0, 50, N), "k": rng.integers(0, 9, N).astype(float)})
    df["y"] = df.k + rng.normal(size=50)[df.g] + rng.normal(size=N)
    df.loc[df.index[-100:], "k"] += 0.5  # whole numbers until the last rows
    path = tmp_path / "late.csv"
    df.to_csv(path, index=False, float_format="%.17g")
    assert path.read_text().splitlines()[1].split(",")[2].isdigit()  # the first block holds integers
    stats = crve.ClusterStats.from_csv(str(path), y="y", x=["k"], cluster="g", block_bytes=1 << 14)
    ref = crve.ols("y ~ k", df, cluster="g")
    assert stats.nobs == N and _rel(stats.fit().bse, ref.bse) < 1e-12
    ref = crve.ols("y ~ k + np.log1p(k) + C(a)", df.assign(a=df.g % 3), cluster="g")  # formula: numeric k
    df.assign(a=df.g % 3).to_csv(path, index=False, float_format="%.17g")
    res = crve.ClusterStats.from_csv(str(path), formula="y ~ k + np.log1p(k) + C(a)", cluster="g",
                                     block_bytes=1 << 14).fit()
    assert res.nobs == N and _rel(res.bse, ref.bse) < 1e-12 and list(res.bse.index) == list(ref.bse.index)
    bad = df.astype({"g": object, "k": object})
    bad.loc[bad.index[-1], "g"] = "late"
    bad.to_csv(tmp_path / "word.csv", index=False)
    with pytest.raises(ValueError, match=r"word.csv: column 'g' changed type: .*'late'.* larger block_bytes"):
        crve.ClusterStats.from_csv(str(tmp_path / "word.csv"), y="y", x=["k"], cluster="g", block_bytes=1 << 14)
    bad = df.astype({"k": object})
    bad.loc[bad.index[-1], "k"] = "n/a?"
    bad.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(ValueError, match=r"text.csv: column 'k' must be numeric: .*'n/a\?'$"):
        crve.ClusterStats.from_csv(str(tmp_path / "text.csv"), y="y", x=["k"], cluster="g", block_bytes=1 << 14)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv: Empty CSV file"):
        crve.ClusterStats.from_csv(str(tmp_path / "empty.csv"), y="y", x=["k"], cluster="g")


def test_stream_errors(parquet_file, tmp_path):
    path, _ = parquet_file
    with pytest.raises(ValueError, match="column 'x9' is not in the Parquet data"):
        crve.ClusterStats.from_parquet(path, y="y", x=["x9"], cluster="school")
    with pytest.raises(ValueError, match="column 'school' must be numeric"):
        crve.ClusterStats.from_parquet(path, y="y", x=["school"], cluster="k")
    empty = tmp_path / "e.parquet"
    pd.DataFrame({"y": [np.nan], "x": [1.0], "g": [1]}).to_parquet(empty)
    with pytest.raises(ValueError, match=r"no rows left to fit \(1 dropped for missing values\)"):
        crve.ClusterStats.from_parquet(empty, y="y", x=["x"], cluster="g")
    none = tmp_path / "n.parquet"
    pd.DataFrame({"y": [], "x": [], "g": []}).astype({"g": "int64"}).to_parquet(none)
    for kw in ({"y": "y", "x": ["x"]}, {"formula": "y ~ x"}):
        with pytest.raises(ValueError, match="no rows left to fit: the data has no rows"):
            crve.ClusterStats.from_parquet(none, cluster="g", **kw)


def _with_late_level(N=30_000, G=80, seed=5):
    df = _frame(N=N, G=G, seed=seed)
    rng = np.random.default_rng(seed)
    df["region"] = rng.choice(["north", "south", "west"], size=N)
    df.loc[df.index[-300:], "region"] = "zeta"  # a level that first appears in the last batch
    df["y"] += (df.region == "zeta") * 2.0 + 0.3 * (df.region == "south")
    df.loc[[10, 20], "region"] = None
    return df


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_formula_stream_with_late_level(tmp_path, fmt):
    df = _with_late_level()
    formula = "y ~ x1 + x2 + C(region) + C(k)"
    if fmt == "parquet":
        path = tmp_path / "d.parquet"
        df.to_parquet(path, row_group_size=4096)
        stats = crve.ClusterStats.from_parquet(path, formula=formula, cluster="school", batch_size=3000)
    else:
        path = tmp_path / "d.csv"
        df.to_csv(path, index=False)
        stats = crve.ClusterStats.from_csv(path, formula=formula, cluster="school", block_bytes=128 << 10)
    ref = crve.ols(formula, df, cluster="school")
    assert stats.names == list(ref.params.index)
    assert "C(region)[T.zeta]" in stats.names and "C(k)[T.4]" in stats.names
    assert stats.n_dropped == ref.n_dropped == 2 and stats.dropped_by == {"region": 2}
    tol = 1e-12 if fmt == "parquet" else 1e-9
    assert _rel(stats.fit().params, ref.params) < tol
    assert _rel(stats.fit("CV2").bse, ref.with_variant("CV2").bse) < tol


def test_formula_stream_interactions_and_cluster_pairs(tmp_path):
    df = _with_late_level(N=12_000, G=30, seed=6)
    df["cohort"] = np.where(df.k > 2, "old", "new")
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    formula = "y ~ x2 * C(region) + I(x2**2) + x1"
    stats = crve.ClusterStats.from_parquet(path, formula=formula, cluster=["school", "cohort"], batch_size=2500)
    ref = crve.ols(formula, df, cluster=["school", "cohort"])
    assert stats.names == list(ref.params.index) and stats.n_clusters == ref.n_clusters
    assert _rel(stats.fit().bse, ref.bse) < 1e-12


def test_formula_stream_errors(tmp_path):
    df = _frame(N=2000, G=10)
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    with pytest.raises(ValueError, match="column .x3. is not in d.parquet"):
        crve.ClusterStats.from_parquet(path, formula="y ~ x3", cluster="school")
    with pytest.raises(ValueError, match="streaming needs cluster"):
        crve.ClusterStats.from_parquet(path, formula="y ~ x1", cluster=None)
    with pytest.raises(ValueError, match="give formula"):
        crve.ClusterStats.from_parquet(path, cluster="school")


def test_ols_on_a_file_streams(tmp_path):
    df = _with_late_level(N=8000, G=25, seed=7)
    pq_path, csv_path = tmp_path / "d.parquet", tmp_path / "d.csv"
    df.to_parquet(pq_path)
    df.to_csv(csv_path, index=False)
    ref = crve.ols("y ~ x1 + C(region)", df, cluster="school", vcov="CV2")
    for path in (pq_path, str(csv_path)):
        res = crve.ols("y ~ x1 + C(region)", path, cluster="school", vcov="CV2")
        assert res.formula == "y ~ x1 + C(region)" and res.depvar == "y" and res.cluster_name == "school"
        assert res.n_dropped == 2 and res.dropped_by == {"region": 2}
        assert _rel(res.bse, ref.bse) < 1e-9 and list(res.df.index) == list(ref.df.index)
        assert "2 rows with missing values dropped: region 2" in res.summary()
    with pytest.raises(ValueError, match="give cluster= column name"):
        crve.ols("y ~ x1", pq_path)
    with pytest.raises(ValueError, match="cannot stream"):
        crve.ols("y ~ x1", _touch(tmp_path / "d.json"), cluster="school")
    with pytest.raises(ValueError, match="column 'region' has missing values"):
        crve.ols("y ~ x1 + C(region)", pq_path, cluster="school", missing="raise")


def _touch(path):
    path.write_text("{}")
    return str(path)


def test_cli_fit_streams_parquet(tmp_path, capsys):
    from crve.cli import main

    df = _with_late_level(N=6000, G=20, seed=8)
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    assert main(["fit", str(path), "-f", "y ~ x1 + C(region)", "-c", "school", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    ref = crve.ols("y ~ x1 + C(region)", df, cluster="school")
    assert out["nobs"] == ref.nobs and out["n_dropped"] == 2
    assert out["coefficients"][1]["std_error"] == pytest.approx(ref.bse["x1"], rel=1e-12)


def test_a_near_exact_fit_from_statistics_alone_says_its_digits():
    """With the rows at hand a near-exact fit is polished from its own residuals; statistics alone
    (streamed, Dask, from_sums) form the scores X_g'e_g by cancellation, about eps TSS / SSR
    relative error. crve says how many digits are left (found by the stream fuzz target: the
    streamed SE below agreed with the in-memory one to 3e-5, silently)."""
    from crve.stream import from_batches

    df = pd.DataFrame({"y": [1.0, 0, 0, 0, 0, 0, 0], "x": [1e6, 0, 0, 0, 0, 0, 1.86328125], "g": [0, 0, 0, 0, 1, 0, 1]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = crve.ols("y ~ x - 1", df, cluster="g")
        stats = from_batches(pa.Table.from_pandas(df).to_batches(max_chunksize=2), "y", ["x"], "g", intercept=False,
                             progress=False)
        res = stats.fit("CV1")
    said = [str(w.message) for w in caught if "cluster statistics alone" in str(w.message)]
    assert len(said) == 1 and not any("statistics alone" in n for n in ref.notes)
    digits = float(said[0].split("keep about ")[1].split()[0])
    assert 3 <= digits <= 5  # eps TSS / SSR = 6e-5
    err = abs(res.bse.iloc[0] / ref.bse.iloc[0] - 1)
    assert 10.0 ** -(digits + 2) < err < 10.0 ** -(digits - 1)  # the stated digits are the digits left
