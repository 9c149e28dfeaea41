"""Fuzz targets for the Python input layer and the CLI (issue 7), driven by Hypothesis.

Each target takes generated input and must either succeed with finite numbers or fail with a
clean ValueError / TypeError (the CLI: exit status 1 or 2 with a one-line message); anything else
(another exception type, a crash, NaN in a result) is a finding.

    python tests/fuzz_targets.py --examples 100000         # every target, 1e5 cases each
    python tests/fuzz_targets.py --target cli_args --examples 20000

The test suite runs every target with a few hundred cases (tests/test_fuzz.py).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crve
from crve.cli import main as cli_main

CLEAN = (ValueError, TypeError)
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.sampled_from([0.0, 1.0, -1.0, 1e150, -1e-150, 1e308]))
_labels = st.one_of(st.integers(-3, 5), st.text(max_size=2), st.floats(allow_nan=True, width=32), st.none(),
                    st.booleans())


def _check_result(res) -> None:
    assert np.isfinite(res._params).all(), "non-finite coefficient"
    var = np.diag(np.asarray(res._cov))
    assert not np.isnan(var).any(), "NaN variance"
    if np.isinf(var).any():  # float64 overflow of a true variance above 1.8e308: must be said
        assert any("overflows double precision" in n for n in res.notes), "silent inf variance"
    finite = var[np.isfinite(var)]
    assert (finite >= -1e-12 * (np.abs(finite).max() if finite.size else 0)).all(), "negative variance"


# -- target 1: arrays -----------------------------------------------------------------------
@st.composite
def array_inputs(draw):
    N = draw(st.integers(0, 12))
    K = draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["float", "int", "bool", "object", "float32", "str"]))
    vals = draw(st.lists(_floats, min_size=N * K, max_size=N * K))
    X = np.array(vals, dtype=float).reshape(N, K) if K else np.zeros((N, 0))
    if draw(st.booleans()) and N:
        X = np.column_stack([np.ones(N), X])
    with np.errstate(all="ignore"):  # the generator's own casts (float32 overflow is an input to try)
        if kind == "int":
            X = np.nan_to_num(X, nan=0, posinf=1, neginf=-1).clip(-1e9, 1e9).astype(np.int64)
        elif kind == "bool":
            X = X > 0
        elif kind == "object":
            X = X.astype(object)
        elif kind == "float32":
            X = X.astype(np.float32)
        elif kind == "str" and X.size:
            X = X.astype(str)
    y = np.array(draw(st.lists(_floats, min_size=draw(st.sampled_from([N, N, N, max(N - 1, 0)])),
                               max_size=N + 1)), dtype=float)[:N + draw(st.integers(0, 1))]
    clusters = draw(st.one_of(st.none(), st.lists(_labels, min_size=N, max_size=N),
                              st.lists(st.integers(0, 3), min_size=N, max_size=N)))
    variant = draw(st.sampled_from(["CV1", "CV2", "CV3", "CV3J", "HC1", "HC3", "iid", "CR2", "bogus"]))
    dof = draw(st.sampled_from(["auto", "satterthwaite", "G-1", "N-K", "normal", 3.5, -1, "x"]))
    return y, X, clusters, variant, dof


def target_arrays(inp) -> None:
    y, X, clusters, variant, dof = inp
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = crve.cluster_robust(y, X, clusters, variant=variant, dof=dof)
    except CLEAN:
        return
    _check_result(res)


# -- target 2: formulas and frames ------------------------------------------------------------
_terms = st.sampled_from(["x", "z", "C(s)", "s", "b", "x:z", "x*C(s)", "np.log(z)", "I(x**2)", "0", "1", "- 1",
                          "nosuch", "C(x)", "x +", "(", "y", "k", "C(k)", "I(k > 0)", "np.nan_to_num(k)"])


@st.composite
def formula_inputs(draw):
    N = draw(st.integers(0, 15))
    data = {"y": draw(st.lists(_floats, min_size=N, max_size=N)),
            "x": draw(st.lists(_floats, min_size=N, max_size=N)),
            "z": draw(st.lists(st.floats(0.1, 10), min_size=N, max_size=N)),
            "s": draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=N, max_size=N)),
            "b": draw(st.lists(st.booleans(), min_size=N, max_size=N)),
            # a float column of few values, some missing: a term may hide its NaN (C(k), I(k > 0))
            "k": draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, float("nan")]), min_size=N, max_size=N)),
            "g": draw(st.lists(_labels, min_size=N, max_size=N))}
    formula = draw(st.one_of(st.builds(lambda ts: "y ~ " + " + ".join(ts), st.lists(_terms, min_size=1, max_size=3)),
                             st.text(max_size=12)))
    cluster = draw(st.sampled_from([None, "g", ["g", "s"], "nosuch", 3]))
    kind = draw(st.sampled_from(["pandas", "dict", "polars", "arrow"]))
    return formula, data, cluster, kind, draw(st.sampled_from([None, "CV2", "HC1", "iid"]))


def target_formula(inp) -> None:
    formula, data, cluster, kind, vcov = inp
    import pandas as pd

    frame = pd.DataFrame(data)
    if kind == "dict":
        frame = {k: list(v) for k, v in data.items()}
    elif kind == "polars":
        import polars as pl

        frame = pl.from_pandas(pd.DataFrame(data).astype({"g": str}))
    elif kind == "arrow":
        import pyarrow as pa

        frame = pa.Table.from_pandas(pd.DataFrame(data).astype({"g": str}), preserve_index=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = crve.ols(formula, frame, cluster=cluster, vcov=vcov)
    except CLEAN:
        return
    _check_result(res)
    if kind == "pandas":  # missing="drop" fits the complete cases (the same rows; the clusters may
        # be numbered in another order, so the sums may differ in the last bits)
        from crve.formula import _parse

        names = [c for c in sorted(_parse(formula).required_variables) if c in frame]
        names += [c for c in ([cluster] if isinstance(cluster, str) else cluster or []) if c in frame]
        complete = frame.dropna(subset=list(dict.fromkeys(names))).reset_index(drop=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = crve.ols(formula, complete, cluster=cluster, vcov=vcov)
        assert res.nobs == ref.nobs and res.n_dropped == len(frame) - len(complete), "rows dropped differ"
        assert res.n_clusters == ref.n_clusters and len(res._params) == len(ref._params), "not the complete-case fit"


# -- target 3: CLI arguments ------------------------------------------------------------------
_words = st.sampled_from(["fit", "demo", "certify", "--formula", "-f", "y ~ x", "--cluster", "-c", "g", "--vcov",
                          "CV9", "CV2", "--dof", "-3", "--B", "0", "1", "--json", "--markdown", "--latex", "--G", "1",
                          "--reps", "--clusters", "2", "--size", "--help", "--version", "nosuch.csv", "--alpha",
                          "1.5", "--bootstrap", "x", "--weights", "odd", "--methods", "CV1", "--icc", "1.2"])


def target_cli_args(argv) -> None:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = cli_main(list(argv))
    except SystemExit as exc:  # argparse: usage errors (2) and --help / --version (0)
        assert exc.code in (0, 2), f"exit {exc.code}"
        return
    assert rc in (0, 1, 130), f"rc {rc}"
    if rc == 1:
        assert err.getvalue().startswith("crve: error: ") and err.getvalue().count("\n") == 1, err.getvalue()


_cli_argv = st.lists(_words, max_size=8).filter(
    lambda a: not ({"demo", "certify"} & set(a)) or {"--clusters", "--G", "--reps", "--size"} & set(a) == set())


# -- target 4: CLI files ----------------------------------------------------------------------
_cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(alphabet="ab,\"\n1.e-", max_size=4),
                   st.sampled_from(["", "NA", "nan", "1", "2.5", "x"]))


@st.composite
def csv_files(draw):
    header = draw(st.one_of(st.just(["y", "x", "g"]), st.lists(st.sampled_from(["y", "x", "g", "y", "", "x y"]),
                                                                 min_size=0, max_size=4)))
    rows = draw(st.lists(st.lists(_cells, min_size=len(header), max_size=len(header) + 1), max_size=12))
    text = ",".join(header) + "\n" + "\n".join(",".join(r) for r in rows)
    return text, draw(st.sampled_from([["-c", "g"], [], ["-c", "x"]])), draw(st.sampled_from(["y ~ x", "y ~ C(x)", "x ~ y"]))


def target_cli_files(inp) -> None:
    text, cluster, formula = inp
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.csv")
        with open(path, "w") as fh:
            fh.write(text)
        target_cli_args(["fit", path, "-f", formula, *cluster])


@st.composite
def csv_streams(draw):
    """CSV files whose column types may change after the first block: mostly whole numbers,
    then decimals, words, missing or malformed cells, read in blocks as small as 64 bytes."""
    early = st.one_of(st.integers(-5, 5).map(str), st.just(""))
    number = st.one_of(early, st.floats(-10, 10, allow_nan=False).map(lambda v: f"{v:.3g}"))
    late = st.one_of(number, _cells, st.sampled_from(["inf", "-inf", "1e400", "abc", " ", "TRUE", "0x1"]))
    n_early, n_late = draw(st.integers(0, 40)), draw(st.integers(0, 20))
    plain = draw(st.booleans())  # later y and x cells numbers too, clusters whole numbers: must read
    rows = [draw(st.lists(early, min_size=3, max_size=3)) for _ in range(n_early)]
    rows += [[draw(number if plain else late), draw(number if plain else late), draw(early if plain else late)]
             for _ in range(n_late)]
    text = "y,x,g\n" + "\n".join(",".join(r) for r in rows) + ("\n" if draw(st.booleans()) else "")
    return text, draw(st.sampled_from([64, 256, 4096, 1 << 20])), draw(st.booleans()), plain


def target_csv_stream(inp) -> None:
    """ClusterStats.from_csv (y / x, or a formula) on such files: finite statistics, or a clean
    error (a type change after the first block names its column). Where every later y and x
    cell is a number and every cluster a whole number, the file is read whatever the first
    block showed (an error may only be about the data, not about reading it)."""
    text, block, formula, plain = inp
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.csv")
        with open(path, "w") as fh:
            fh.write(text)
        kw = {"formula": "y ~ x"} if formula else {"y": "y", "x": ["x"]}
        res, err = _outcome(lambda: crve.ClusterStats.from_csv(path, cluster="g", block_bytes=block, **kw).fit())
        if res is not None:
            _check_result(res)
        assert not (plain and err is not None and "CSV" in str(err)), f"numbers not read: {err}"


# -- target 5: streaming and Dask partitions against the in-memory fit --------------------------
_values = st.one_of(st.integers(-3, 3).map(float), st.floats(-100, 100, width=32).map(float),
                    st.sampled_from([float("nan"), float("inf"), 1e6]))


@st.composite
def stream_inputs(draw):
    N = draw(st.integers(0, 40))
    K = draw(st.integers(0, 3))
    data = {"y": draw(st.lists(_values, min_size=N, max_size=N))}
    for k in range(K):
        data[f"x{k}"] = draw(st.lists(_values, min_size=N, max_size=N))
    kind = draw(st.sampled_from(["int", "int", "gaps", "str", "float"]))
    labels = draw(st.lists(st.integers(0, draw(st.integers(0, 12))), min_size=N, max_size=N))
    missing = draw(st.lists(st.booleans(), min_size=N, max_size=N)) if draw(st.booleans()) else [False] * N
    if kind == "gaps":
        labels = [1000 * v - 7 for v in labels]
    g = [None if m else (f"c{v}" if kind == "str" else float(v) if kind == "float" else v)
         for v, m in zip(labels, missing)]
    cuts = sorted(draw(st.lists(st.integers(0, N), max_size=4)))
    return data, g, draw(st.integers(1, 9)), cuts, draw(st.booleans()), draw(st.sampled_from(["CV1", "CV2", "CV3"]))


def _outcome(fn):
    """(result, None) or (None, the clean error); anything else propagates (a finding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(), None
    except CLEAN as exc:
        return None, exc


def target_stream(inp) -> None:
    """The rows streamed in batches of 1-9 (crve.stream.from_batches) and cut into Dask-style
    partitions (crve.dask's own partition function, added by ClusterStats.sum) give the
    in-memory fit: the same rows, drops by column, clusters, coefficients and SEs; or all three
    refuse the data with a clean error."""
    import pandas as pd
    import pyarrow as pa

    from crve.dask import _finish, _partition_stats, _sum
    from crve.stream import from_batches

    data, g, batch_rows, cuts, intercept, variant = inp
    df = pd.DataFrame(data)
    df["g"] = pd.Series(g, dtype="Int64") if all(v is None or isinstance(v, int) for v in g) else pd.Series(g, dtype=object)
    x = [c for c in df.columns if c.startswith("x")]
    formula = "y ~ " + (" + ".join(x) if x else "1") + ("" if intercept else " - 1")
    if not x and not intercept:
        return
    ref, ref_err = _outcome(lambda: crve.ols(formula, df, cluster="g", vcov=variant))
    table = pa.Table.from_pandas(df, preserve_index=False)
    spec = {"formula": None, "y": "y", "x": x, "cluster": "g", "intercept": intercept, "used": ["y", *x, "g"]}
    bounds = [0, *cuts, len(df)]
    streamed = {
        "stream": lambda: from_batches(table.to_batches(max_chunksize=batch_rows), "y", x, "g", intercept=intercept,
                                       threads=2, progress=False),
        "dask": lambda: _finish(_sum(*[_partition_stats(df.iloc[a:b], spec) for a, b in zip(bounds, bounds[1:])])),
    }
    for path, build in streamed.items():
        res, err = _outcome(lambda: build().fit(variant))
        assert (res is None) == (ref is None), f"{path}: {err!r} but in memory {ref_err!r}"
        if res is None:
            continue
        _check_result(res)
        assert res.nobs == ref.nobs and res.n_clusters == ref.n_clusters, f"{path}: other rows or clusters"
        assert res.n_dropped == ref.n_dropped, f"{path}: {res.n_dropped} rows dropped, in memory {ref.n_dropped}"
        # Accuracy: what crve states for the design (about 100 eps / rcond relative to the norm;
        # the in-memory fit polishes from the rows, statistics alone cannot), with 10x slack.
        tol = 1e-7 + 1e3 * np.finfo(float).eps / float(res._model.rcond)
        if any("fitted from cluster statistics alone" in n for n in res.notes):  # a near-exact fit, said
            tol += 10 * np.finfo(float).eps * float(res._model.tss) / res.ssr
        scale = np.abs(ref._params).max() + 1e-300
        assert np.allclose(res._params, ref._params, rtol=tol, atol=tol * scale), f"{path}: other coefficients"
        # Variances, not SEs: both sides' covariances are accurate relative to their norm, and the
        # square root of a variance that is zero up to rounding is that rounding's square root.
        if variant != "CV1" or any("fits the data exactly" in n for n in ref.notes + res.notes):
            continue  # CV2 / CV3 share CV1's statistics and their code with the in-memory fit; an exact fit's SEs are noise
        # A variance that is zero in exact arithmetic comes out as rounding noise of the scores,
        # about (eps |A| |x| (|y| + |x| |b|))^2 (times the small-sample factor): an absolute floor.
        rows = df.dropna(subset=["y", *x]).loc[lambda d: d.g.notna()]
        Xa = np.abs(rows[x].to_numpy(float))
        if intercept:
            Xa = np.column_stack([np.ones(len(rows)), Xa])
        terms = (Xa * (np.abs(rows.y.to_numpy(float)) + Xa @ np.abs(ref._params))[:, None]).sum(axis=0).max()
        bread = np.abs(np.asarray(ref._model.bread())).sum(axis=1).max()
        floor = 10 * len(rows) * (1e3 * np.finfo(float).eps * bread * terms) ** 2
        var, ref_var = np.diag(res._cov), np.diag(ref._cov)
        assert np.allclose(var, ref_var, rtol=tol, atol=tol * ref_var.max() + floor), f"{path}: other variances"


@st.composite
def staged_inputs(draw):
    """Lanes drawn with numpy from a seed (nested Hypothesis lists of 70 x 32 values cost 0.1 s
    a case): small integers, floats, NaN, inf, 1e6, -0, the smallest subnormal, -1e308."""
    N, K, seed = draw(st.integers(1, 70)), draw(st.integers(1, 31)), draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    special = np.array([np.nan, np.inf, -np.inf, 1e6, -0.0, 5e-324, -1e308])
    p_special = draw(st.sampled_from([0.0, 0.01, 0.2]))

    def values(n):
        v = np.where(rng.random(n) < 0.5, rng.integers(-3, 4, n).astype(float), rng.uniform(-100, 100, n))
        pick = rng.random(n) < p_special
        v[pick] = rng.choice(special, int(pick.sum()))
        return v

    lanes = [float(values(1)[0]) if rng.random() < 0.15 else list(values(N)) for _ in range(K + 1)]
    scalars = [v for v in lanes if isinstance(v, float) and np.isfinite(v)]  # a shift is a finite row
    shift = [float(rng.choice(scalars)) if scalars and rng.random() < 0.5 else float(rng.uniform(-10, 10))
             for _ in range(K + 1)]
    codes = list(rng.integers(0, draw(st.integers(1, 10)), N))
    return lanes, shift, codes, draw(st.booleans()), draw(st.integers(1, 3))


def target_staged(inp) -> None:
    """The core's staged copy (many clusters, scratch lent: every streamed batch) takes record
    batch columns and broadcast scalars column-wise, eight rows at a time, and any other layout
    row by row. Both add the same statistics bit for bit, or both refuse a NaN / inf (nothing
    added): any width 1-31 regressors, 1-70 rows, scalars equal to their shift (left out of the
    copy) or not."""
    from crve import _core

    lanes, shift, codes, check, threads = inp
    if not check:  # unchecked rows are finite by contract (a NaN times a left-out zero lane is 0, not NaN)
        lanes = [np.nan_to_num(v, nan=2.0, posinf=3.0, neginf=-3.0) for v in lanes]
        lanes = [float(v) if np.ndim(v) == 0 else list(v) for v in lanes]
    K, N = len(lanes) - 1, len(codes)
    npack = (K + 2) * (K + 3) // 2
    G = (3 << 20) // (8 * npack)  # statistics past the table mode's budget: staged (or grouped)
    spread = np.asarray(codes, dtype=np.int64) * (G // 10)
    every = np.arange(G, dtype=np.int64)
    cols = [np.broadcast_to(v, (N,)) if isinstance(v, float) else np.asarray(v) for v in lanes]
    # The same lanes with every column every other double: read row by row (scalars stay scalars).
    spaced = [c if c.strides == (0,) else np.repeat(c, 2)[::2] for c in cols]
    stage = np.empty(_core.ClusterStats.stage_doubles(N, K))
    out = []
    for X, y in [(cols[:K], cols[K]), (spaced[:K], spaced[K])]:
        stats = _core.ClusterStats(K, shift, np.zeros((G, npack)))
        added = stats.add_rows(y, X, spread, G, every, threads, stage, check_finite=check)
        out.append((added, stats.packed))
    assert out[0][0] == out[1][0], f"column-wise added: {out[0][0]}, row-wise: {out[1][0]}"
    assert np.array_equal(out[0][1], out[1][1], equal_nan=True), "other statistics"
    if check:
        finite = all(np.isfinite(c).all() for c in cols)
        assert out[0][0] == finite and (finite or not out[0][1].any()), "a NaN / inf added, or finite rows refused"


TARGETS = {"arrays": (target_arrays, array_inputs()), "formula": (target_formula, formula_inputs()),
           "cli_args": (target_cli_args, _cli_argv), "cli_files": (target_cli_files, csv_files()),
           "stream": (target_stream, stream_inputs()), "staged": (target_staged, staged_inputs()),
           "csv_stream": (target_csv_stream, csv_streams())}


def run(name: str, examples: int, seed: int | None = None) -> float:
    fn, strategy = TARGETS[name]
    test = settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
                    suppress_health_check=list(HealthCheck))(given(strategy)(fn))
    t0 = time.perf_counter()
    test()
    return time.perf_counter() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=100_000)
    ap.add_argument("--target", choices=list(TARGETS), action="append")
    args = ap.parse_args()
    for name in args.target or list(TARGETS):
        seconds = run(name, args.examples)
        print(f"{name}: {args.examples:,} cases, no finding, {seconds:.0f} s", flush=True)
    sys.exit(0)
