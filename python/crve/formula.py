"""The formula / DataFrame entry point: ``crve.ols("y ~ x + C(g)", data, cluster="school")``.

Formulas are parsed by formulaic. When every right-hand term is the intercept, a numeric or bool
column, a string / categorical column or ``C(column)`` (the common case, and the one that matters
at scale), crve builds the design itself: numeric columns are the data's own arrays, read in place
by the core, the intercept is a stride-0 column and categoricals become dummies with formulaic's
level order, names and reduced-rank rule. Anything else (interactions, transforms, contrasts) is
materialised by formulaic; both routes give the same columns and names (tested).
"""
from __future__ import annotations

import os
import re
import sys
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._frame import Frame
from ._inputs import Columns, Design, NonFiniteError, factorize_clusters, first_rows
from .api import fit_design
from .results import Result

__all__ = ["ols"]

MISSING = ("drop", "raise")


def ols(formula: str, data: Any, cluster: Any = None, *, vcov: str | None = None, dof: Any = "auto",
        missing: str = "drop", threads: int | None = None) -> Result:
    """OLS from a formula and a data frame, with cluster-robust inference.

    Parameters
    ----------
    formula : str
        A formulaic (Wilkinson) formula such as ``"G3 ~ absences + C(sex)"``: categoricals
        (``C(x)``, string / bool / categorical columns), interactions (``a:b``, ``a*b``),
        transforms (``np.log(x)``, ``I(x**2)``), ``- 1`` or ``+ 0`` to drop the intercept.
        Functions are looked up in the caller's namespace.
    data : pandas or polars DataFrame, pyarrow Table, dict of 1-D arrays, or a file path
        Only the columns the formula and ``cluster`` use are read. A path to a Parquet file or
        directory, or a CSV / TSV file, is streamed batch by batch into cluster statistics
        (:meth:`crve.ClusterStats.from_parquet`): memory stays bounded whatever the file size;
        ``cluster`` is then required.
    cluster : str, list of str, or array-like, optional
        A column name, several column names (clusters are their combinations), or one label per
        row. Labels of any type. ``None``: no clustering (use an ``HC*`` or ``"iid"`` vcov).
    vcov : str, optional
        "iid", "HC0".."HC3", "CV0", "CV1" (alias "stata"), "CV2" (alias "CR2"), "CV3", "CV3J".
        Default "CV1" with clusters, "HC1" without.
    dof : str or float
        As in :func:`crve.cluster_robust`: "auto", "G-1", "satterthwaite", "N-K", "normal", or a number.
    missing : {"drop", "raise"}
        "drop" (default) drops rows with a missing value in any column the model uses, the
        cluster column(s) included, and reports the count (``res.n_dropped``, the summary);
        "raise" raises, naming the column and the first offending rows.
    threads : int, optional
        Threads for the core (default: all cores). Results do not depend on it.

    Returns
    -------
    Result
        With named coefficients (pandas Series), ``summary()``, ``tidy()``, ``compare()``,
        ``wild_bootstrap()``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, crve
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"school": np.repeat([f"s{i}" for i in range(30)], 20),
    ...                    "absences": rng.poisson(4, 600), "sex": rng.choice(["F", "M"], 600)})
    >>> df["G3"] = 12 - 0.1 * df.absences + rng.normal(size=30).repeat(20) + rng.normal(size=600)
    >>> res = crve.ols("G3 ~ absences + C(sex)", df, cluster="school", vcov="CV2")
    >>> list(res.params.index)
    ['Intercept', 'absences', 'C(sex)[T.M]']
    >>> res.n_clusters, res.dof_rule
    (30, 'satterthwaite')
    """
    if missing not in MISSING:
        raise ValueError(f"missing must be 'drop' or 'raise'; got {missing!r}")
    if isinstance(data, (str, os.PathLike)):
        return _ols_file(formula, os.fspath(data), cluster, vcov, dof, missing, threads)
    spec = _parse(formula)
    frame, context = Frame(data), _user_context()
    # Float columns are not scanned for NaN up front (a pass over each, 20 % of a million-row
    # fit): a NaN makes the statistics non-finite, and only then are the rows found and dropped.
    fd = frame_design(spec, frame, cluster, missing, context, scan_floats=False)
    if vcov is None:
        vcov = "CV1" if fd.codes is not None else "HC1"

    def fit(fd: FrameDesign) -> Result:
        return fit_design(Design(fd.y, fd.X, fd.names, fd.codes, fd.labels, fd.n_slots), vcov, dof, threads, named=True)

    try:
        res = fit(fd)
    except NonFiniteError:
        fd = frame_design(spec, frame, cluster, missing, context)
        res = fit(fd)
    res.formula = formula
    res.depvar = str(spec.lhs)
    res.n_dropped = fd.n_dropped
    res.dropped_by = fd.dropped_by
    res.cluster_name = fd.cluster_name
    return res


STREAM_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".txt": "csv"}


def _ols_file(formula: str, path: str, cluster: Any, vcov: str | None, dof: Any, missing: str,
              threads: int | None) -> Result:
    """ols on a file: streamed batch by batch into cluster statistics (never loaded whole)."""
    from .stats import ClusterStats

    if not os.path.exists(path):
        raise OSError(f"no such file or directory: {path}")
    kind = "parquet" if os.path.isdir(path) else STREAM_FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"cannot stream {path!r}: use a .parquet file or directory, or a .csv / .tsv file "
                         "(or pass a data frame)")
    if cluster is None or not (isinstance(cluster, str) or all(isinstance(c, str) for c in cluster)):
        raise ValueError("a file is streamed into cluster statistics: give cluster= column name(s). HC variants "
                         "need the rows in memory: read the file into a data frame first")
    common = dict(formula=formula, cluster=cluster, threads=threads, context=_user_context(), missing=missing)
    if kind == "parquet":
        stats = ClusterStats._from_parquet_formula(path, **common)
    else:
        stats = ClusterStats._from_csv_formula(path, delimiter="\t" if kind == "tsv" else ",", **common)
    res = stats.fit(vcov or "CV1", dof, threads=threads)
    res.formula = formula
    res.depvar = str(_parse(formula).lhs)
    res.cluster_name = cluster if isinstance(cluster, str) else ", ".join(cluster)
    return res


@dataclass
class FrameDesign:
    """The design of a formula on a frame, after missing rows are dropped."""

    y: np.ndarray
    X: Any
    names: list[str]
    codes: np.ndarray | None   # cluster codes of the kept rows (None: no clusters)
    labels: Any
    n_slots: int
    n_dropped: int
    dropped_by: dict
    cluster_name: str | None


def frame_design(spec: Any, frame: Frame, cluster: Any, missing: str, context: Any,
                 scan_floats: bool = True) -> FrameDesign:
    """y, X and cluster codes of a parsed formula on a frame (shared by :func:`ols` and the
    streaming constructors, which call it once per batch). ``scan_floats=False`` leaves NaN in
    numpy float columns for the statistics pass to find (the caller then calls again with it)."""
    # Names in the formula are columns of data, else (functions) names where ols was called.
    used = sorted(v for v in spec.required_variables if v in frame)
    frame.check(sorted(v for v in spec.required_variables if v not in frame and v not in context), "the formula")
    cluster_names, cluster_values = _cluster_spec(cluster, frame)

    # Clusters: codes for all rows, -1 where a label is missing.
    codes = labels = None
    n_slots = 0
    if cluster_names:
        codes, labels, n_slots = _cluster_codes([frame.series(c) for c in cluster_names], frame.nrows)
    elif cluster_values is not None:
        codes, labels, n_slots = factorize_clusters(cluster_values, frame.nrows, allow_missing=True)

    # Missing values: any used column, and the cluster.
    drop = None
    counts: dict[str, int] = {}
    # Unscanned float columns are left to the statistics pass only when nothing else is missing,
    # so that which rows drop, the counts and the first error are always those of a full scan.
    lazy = set() if scan_floats else _nan_reaches_design(spec, frame)
    masks = [(name, None if name in lazy else frame.missing(name)) for name in used]
    if codes is not None:
        masks.append((", ".join(cluster_names) if cluster_names else "cluster", codes < 0))
    if lazy and any(m is not None and m.any() for _, m in masks):
        masks = [(name, frame.missing(name) if name in lazy else m) for name, m in masks]
    for name, m in masks:
        if m is None or not m.any():
            continue
        if missing == "raise":
            raise ValueError(f"column {name!r} has missing values in {first_rows(m)}; drop or impute them, "
                             "or pass missing='drop'")
        counts[name] = int(m.sum())
        drop = m if drop is None else drop | m
    keep = None if drop is None else ~drop
    n_dropped = 0 if drop is None else int(drop.sum())
    N = frame.nrows - n_dropped
    if N == 0:
        raise ValueError(f"no rows left: all {frame.nrows} rows have a missing value ({_counts_text(counts)})")
    if keep is not None and codes is not None:
        codes = codes[keep]
    y, X, names = _design(spec, frame, keep, N, used, context)
    cname = ", ".join(cluster_names) if cluster_names else (None if cluster_values is None else "cluster")
    return FrameDesign(y, X, names, codes, labels, n_slots, n_dropped, counts, cname)


def _nan_reaches_design(spec: Any, frame: Frame) -> set[str]:
    """Float columns whose NaN reach the design unchanged (so the statistics pass finds them):
    the outcome and plain numeric terms, when crve builds every term itself. A transform can hide
    a NaN (I(x > 0), np.nan_to_num(x)) and so can a categorical term (C(x)): those columns are
    always scanned, and their rows dropped before the design is built."""
    yname = _plain_column(spec.lhs[0])
    terms = [_fast_term(t, frame) for t in spec.rhs]
    if yname is None or yname not in frame or any(t is None for t in terms):
        return set()
    numeric = {col for kind, col, _ in terms if kind == "numeric"} | {yname}
    numeric -= {col for kind, col, _ in terms if kind == "categorical"}
    return {c for c in numeric if frame.plain_float(c)}


# -- formula ----------------------------------------------------------------------------------
def _parse(formula: str) -> Any:
    import formulaic

    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string such as 'y ~ x1 + x2'; got {type(formula).__name__}")
    if "~" not in formula:
        raise ValueError(f"formula {formula!r} has no outcome: write it as 'y ~ x1 + x2'")
    try:
        spec = formulaic.Formula(formula)
    except Exception as exc:  # formulaic raises its own syntax errors with a multi-line pointer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot parse formula {formula!r}: {first}") from None
    if not hasattr(spec, "lhs") or len(spec.lhs) == 0:
        raise ValueError(f"formula {formula!r} has no outcome: write it as 'y ~ x1 + x2'")
    if len(spec.lhs) != 1:
        raise ValueError(f"formula {formula!r} has {len(spec.lhs)} outcomes; crve fits one outcome at a time")
    return spec


def _plain_column(term: Any) -> str | None:
    """The column name if the term is a plain column lookup, else None."""
    from formulaic.parser.types import Factor

    if len(term.factors) != 1:
        return None
    f = term.factors[0]
    return f.expr if f.eval_method == Factor.EvalMethod.LOOKUP else None


def _design(spec: Any, frame: Frame, keep: np.ndarray | None, N: int, used: list[str],
            context: Any) -> tuple[np.ndarray, Any, list[str]]:
    """(y, X, names): crve's own design when every term passes :func:`_fast_term`, else formulaic's."""
    lhs = spec.lhs[0]
    yname = _plain_column(lhs)
    if yname is not None and yname in frame and not (frame.is_numeric(yname) or frame.is_bool(yname)):
        raise ValueError(f"the outcome {yname!r} must be numeric; the column has dtype {frame.dtype(yname)}")
    terms = [_fast_term(t, frame) for t in spec.rhs]
    if yname is None or yname not in frame or any(t is None for t in terms):
        return _formulaic_design(spec, frame, keep, used, context)
    y = _rows(frame.float64(yname), keep)
    cols, names = [], []
    full_rank = not any(kind == "intercept" for kind, _, _ in terms)  # first categorical spans the intercept
    for kind, col, label in terms:
        if kind == "intercept":
            cols.append(np.broadcast_to(np.float64(1.0), (N,)))
            names.append("Intercept")
        elif kind == "numeric":
            cols.append(_rows(frame.float64(col), keep))
            names.append(label)
        else:
            codes, levels = _levels(frame.series(col), keep)
            if codes is None:
                return _formulaic_design(spec, frame, keep, used, context)
            for j, level in enumerate(levels):
                if j == 0 and not full_rank:
                    continue
                cols.append((codes == j).astype(np.float64))
                names.append(f"{label}[{level}]" if full_rank else f"{label}[T.{level}]")
            full_rank = False
    if not cols:
        raise ValueError("the formula has no regressors (nothing right of '~', and no intercept)")
    return y, Columns(cols), names


_C_TERM = re.compile(r"^C\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")


def _fast_term(term: Any, frame: Frame) -> tuple[str, str | None, str] | None:
    """("intercept" | "numeric" | "categorical", column, label) for terms crve builds itself:
    the intercept, a numeric or bool column, a string / categorical column or ``C(column)``.
    None sends the formula to formulaic (interactions, transforms, contrasts, ...)."""
    if str(term) == "1":
        return "intercept", None, "Intercept"
    if len(term.factors) != 1:
        return None
    expr = term.factors[0].expr
    col = _plain_column(term)
    if col is not None:
        if col not in frame:
            return None
        if frame.is_numeric(col) or frame.is_bool(col):
            return "numeric", col, col
        return "categorical", col, col
    m = _C_TERM.match(expr)
    if m and m.group(1) in frame:
        return "categorical", m.group(1), expr
    return None


def _levels(s: Any, keep: np.ndarray | None) -> tuple[np.ndarray | None, list]:
    """Codes and levels in formulaic's order (a categorical's own order, else sorted), of the
    rows kept. (None, []) when the levels cannot be ordered or are not plain strings / numbers."""
    import pandas as pd

    if keep is not None:
        s = s[keep]
    if isinstance(s.dtype, pd.CategoricalDtype):
        return np.asarray(s.cat.codes), [str(c) for c in s.cat.categories]
    try:
        codes, uniques = pd.factorize(s, sort=True)
    except TypeError:  # mixed types cannot be sorted
        return None, []
    kinds = {type(u) for u in uniques}
    if not kinds <= {str, int, float, np.int64, np.float64, np.str_}:
        return None, []
    return np.asarray(codes), [str(u) for u in uniques]


def _formulaic_design(spec: Any, frame: Frame, keep: np.ndarray | None, used: list[str],
                      context: Any) -> tuple[np.ndarray, Any, list[str]]:
    import formulaic

    df = frame.subset(used, keep)
    try:
        mm = formulaic.model_matrix(spec, df, na_action="ignore", context=context)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot build the design from formula: {msg}") from None
    lhs, rhs = mm.lhs, mm.rhs
    if lhs.shape[1] != 1:
        raise ValueError(f"the outcome {str(spec.lhs)!r} must be one numeric column; it expands to "
                         f"{lhs.shape[1]} columns {list(lhs.columns)} (is it categorical?)")
    if rhs.shape[1] == 0:
        raise ValueError("the formula has no regressors (nothing right of '~', and no intercept)")
    y = np.asarray(lhs.iloc[:, 0].to_numpy(dtype=np.float64))
    cols = [np.ascontiguousarray(rhs.iloc[:, k].to_numpy(dtype=np.float64)) for k in range(rhs.shape[1])]
    return y, Columns(cols), [str(c) for c in rhs.columns]


def _user_context() -> dict:
    """Names visible where crve.ols was called (for functions used in formulas)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("crve"):
        frame = frame.f_back
    if frame is None:
        return {"np": np, "numpy": np}
    return ChainMap(frame.f_locals, frame.f_globals, {"np": np, "numpy": np})


def _rows(a: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    return a if keep is None else a[keep]


# -- clusters ---------------------------------------------------------------------------------
def _cluster_spec(cluster: Any, frame: Frame) -> tuple[list[str], Any]:
    """(column names, None) or ([], one label per row) or ([], None)."""
    if cluster is None:
        return [], None
    if isinstance(cluster, str):
        frame.check([cluster], "cluster")
        return [cluster], None
    if isinstance(cluster, (list, tuple)) and cluster and all(isinstance(c, str) for c in cluster):
        if len(cluster) != frame.nrows or any(c in frame for c in cluster):
            frame.check(list(cluster), "cluster")
            return list(cluster), None
    values = cluster
    if type(values).__module__.split(".")[0] in ("polars", "pyarrow"):
        values = values.to_pandas()
    n = len(values)
    if n != frame.nrows:
        raise ValueError(f"cluster has {n} labels but data has {frame.nrows} rows")
    return [], values


def _cluster_codes(series: list, N: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes of one cluster column, or of the combinations of several (-1 where any is missing)."""
    import pandas as pd

    if len(series) == 1:
        return factorize_clusters(series[0], N, allow_missing=True)
    parts = [factorize_clusters(s, N, allow_missing=True) for s in series]
    bad = np.zeros(N, dtype=bool)
    for c, _, _ in parts:
        bad |= c < 0
    good = np.flatnonzero(~bad)
    codes = np.full(N, -1, dtype=np.int64)
    if np.prod([float(n) for _, _, n in parts]) < 2.0**62:  # mixed-radix code of the combination
        combined = np.zeros(len(good), dtype=np.int64)
        for c, _, n in parts:
            combined = combined * n + c[good]
        codes[good] = pd.factorize(combined, sort=False)[0]
    else:
        codes[good] = pd.MultiIndex.from_arrays([c[good] for c, _, _ in parts]).factorize()[0]
    n = int(codes.max()) + 1 if good.size else 0
    first = np.zeros(n, dtype=np.int64)
    ok = np.flatnonzero(codes >= 0)
    first[codes[ok][::-1]] = ok[::-1]  # first row of each combination
    labels = np.empty(n, dtype=object)
    labels[:] = list(zip(*[np.asarray(lab, dtype=object)[c[first]] for c, lab, _ in parts]))
    return codes, labels, n


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())
