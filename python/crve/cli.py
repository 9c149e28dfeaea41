"""The ``crve`` command (``python -m crve`` is the same).

``crve demo``  simulates a cluster-randomised experiment and prints naive vs cluster-robust
               inference and the wild cluster bootstrap (the default when no command is given).
``crve fit``   fits a formula to a CSV or Parquet file: ``crve fit data.parquet --formula
               "y ~ x" --cluster g [--vcov CV2] [--bootstrap x --B 9999 --seed 1] [--diagnostics]
               [--json]``.
``crve certify`` measures the size of inference methods on simulated A/A designs:
               ``crve certify --G 5 10 20 --icc 0.02 --mean-size 36 --reps 2000 [--plot size.png]``.

Errors are one line on stderr (no traceback) with exit code 1; usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from . import __version__

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["demo"] + argv  # `python -m crve [--clusters 8]` runs the demo
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        with warnings.catch_warnings():
            from .results import CrveWarning

            warnings.simplefilter("ignore", CrveWarning)  # reported in the output's notes instead
            return args.run(args)
    except BrokenPipeError:  # `crve ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError, ImportError, KeyError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"crve: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("crve: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="crve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"crve {__version__}")
    sub = ap.add_subparsers(title="commands", metavar="{demo,fit,certify}")

    d = sub.add_parser("demo", help="simulate a cluster-randomised experiment; naive vs robust vs bootstrap",
                       description="Simulates G schools with a school-level treatment (true effect 0) and intraclass "
                                   "correlation ICC, then prints the treatment effect's standard error, dof and p-value "
                                   "under iid, HC1, CV1, CV2 (Satterthwaite) and CV3, and the wild cluster bootstrap.")
    d.add_argument("--clusters", type=int, default=20, help="number of schools (default 20)")
    d.add_argument("--size", type=int, default=50_000, help="pupils per school (default 50,000)")
    d.add_argument("--icc", type=float, default=0.1, help="intraclass correlation (default 0.1)")
    d.add_argument("--B", type=int, default=9999, help="bootstrap draws (default 9999)")
    d.add_argument("--seed", type=int, default=1)
    d.set_defaults(run=_demo)

    f = sub.add_parser("fit", help="fit a formula to a CSV or Parquet file",
                       description="OLS of a formula on a CSV / Parquet / Feather file with cluster-robust inference.")
    f.add_argument("data", help="a .csv, .tsv, .parquet or .feather file")
    f.add_argument("--formula", "-f", required=True, help='e.g. "G3 ~ absences + C(sex)"')
    f.add_argument("--cluster", "-c", action="append", default=None,
                   help="cluster column (repeat for clusters defined by a combination of columns)")
    f.add_argument("--vcov", default=None, help="iid, HC0-HC3, CV0, CV1 (default with --cluster), CV2, CV3, CV3J")
    f.add_argument("--dof", default="auto", help="auto, G-1, satterthwaite, N-K, normal, or a number")
    f.add_argument("--missing", default="drop", choices=["drop", "raise"])
    f.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level of the intervals (default 0.05)")
    f.add_argument("--bootstrap", metavar="TERM", help="wild cluster bootstrap test of TERM = --h0")
    f.add_argument("--h0", type=float, default=0.0)
    f.add_argument("--B", type=int, default=9999, help="bootstrap draws (default 9999)")
    f.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: random, reported)")
    f.add_argument("--weights", default="rademacher", help="rademacher (default), webb, mammen, normal")
    f.add_argument("--bootstrap-type", default="11", help="11 (default), 13, 31, 33")
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--diagnostics", action="store_true",
                   help="also report design diagnostics (ICCs, Moulton factors, G*, treated clusters)")
    out = f.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable results on stdout")
    out.add_argument("--markdown", action="store_true", help="Markdown tables")
    out.add_argument("--latex", action="store_true", help="a LaTeX table")
    f.set_defaults(run=_fit)

    from .certify import DEFAULT_METHODS, DESIGNS

    c = sub.add_parser("certify", help="measure the size of inference methods on simulated A/A designs",
                       description="Simulates A/A experiments (no effect) and reports each method's rejection rate "
                                   "with a Monte Carlo interval, SE ratio, Moulton prediction, coverage and verdict.")
    c.add_argument("--design", default="cluster-randomized", choices=list(DESIGNS))
    c.add_argument("--G", type=int, nargs="+", default=[5, 10, 20, 30, 50], help="numbers of clusters")
    c.add_argument("--icc", type=float, nargs="+", default=[0.02], help="error intraclass correlation(s)")
    c.add_argument("--mean-size", type=int, nargs="+", default=[36], help="rows per cluster")
    c.add_argument("--treated", type=int, default=None, help="treated clusters (cluster-randomized)")
    c.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    c.add_argument("--reps", type=int, default=2000)
    c.add_argument("--alpha", type=float, default=0.05)
    c.add_argument("--B", type=int, default=399, help="draws per wild bootstrap (default 399)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    c.add_argument("--plot", metavar="PNG", help="save the rejection-rate plot (needs matplotlib)")
    c.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    c_out = c.add_mutually_exclusive_group()
    c_out.add_argument("--json", action="store_true", help="the table as JSON records")
    c_out.add_argument("--markdown", action="store_true", help="the table as Markdown")
    c.set_defaults(run=_certify)
    return ap


# -- demo -------------------------------------------------------------------------------------
def _demo(a: argparse.Namespace) -> int:
    from . import cluster_robust

    if a.clusters < 4 or a.size < 1 or not 0 <= a.icc < 1 or a.B < 1:
        raise ValueError("need --clusters >= 4, --size >= 1, 0 <= --icc < 1 and --B >= 1")
    rng = np.random.default_rng(a.seed)
    G, n = a.clusters, a.size
    g = np.repeat(np.arange(G), n)
    treated = (rng.permutation(G) < G // 2).astype(float)
    x = rng.normal(size=G * n)
    y = 0.3 * x + np.sqrt(a.icc) * rng.normal(size=G)[g] + np.sqrt(1 - a.icc) * rng.normal(size=G * n)
    X = np.column_stack([np.ones(G * n), treated[g], x])
    import pandas  # noqa: F401  (named results are pandas Series: import before timing)

    print(f"crve {__version__}: {G} schools x {n:,} pupils, school-level treatment (true effect 0), ICC {a.icc}")
    t0 = time.perf_counter()
    base = cluster_robust(y, X, g, variant="CV1", names=["const", "treated", "x"])
    dt = time.perf_counter() - t0
    print(f"one pass over {G * n:,} rows + CV1: {dt * 1e3:.0f} ms\n")
    print(f"{'inference':<24}{'std err':>10}{'df':>10}{'p-value':>10}")
    for variant, dof in [("iid", "N-K"), ("HC1", "N-K"), ("CV1", "G-1"), ("CV2", "satterthwaite"), ("CV3", "G-1")]:
        r = base if variant == "CV1" else base.with_variant(variant, dof=dof)
        print(f"{variant + ', ' + dof:<24}{r.bse['treated']:>10.4f}{r.df['treated']:>10.1f}{r.pvalues['treated']:>10.4f}")
    t0 = time.perf_counter()
    bt = base.wild_bootstrap("treated", B=a.B, weights="webb", seed=a.seed, progress=False)
    dt = time.perf_counter() - t0
    label = f"wild bootstrap, B={bt.B}"
    print(f"{label:<24}{'':>10}{'':>10}{bt.pvalue:>10.4f}")
    lo, hi = bt.conf_int
    print(f"\nestimate {base.params['treated']:.4f}; wild cluster bootstrap (WCR, Webb weights) 95% CI "
          f"[{lo:.4f}, {hi:.4f}] in {dt * 1e3:.0f} ms")
    print("The iid and HC1 standard errors ignore the school effect and are far too small;"
          "\nthe cluster-robust ones (CV1/CV2/CV3) and the bootstrap are not.")
    return 0


# -- fit --------------------------------------------------------------------------------------
def read_table(path: str, columns: list[str] | None = None) -> Any:
    """A CSV / TSV / Parquet / Feather file as a pyarrow Table (or pandas DataFrame without
    pyarrow), reading only `columns` when given and the format allows."""
    if not os.path.exists(path):
        raise OSError(f"no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        import pyarrow  # noqa: F401
        have_arrow = True
    except ImportError:
        have_arrow = False
    if ext in (".parquet", ".pq", ".feather", ".arrow", ".ipc"):
        if not have_arrow:
            raise ImportError(f"reading {ext} files needs pyarrow: pip install pyarrow")
        if ext in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            _check_columns(columns, names, path)
            return pq.read_table(path, columns=columns)
        import pyarrow.feather as feather

        t = feather.read_table(path)
        _check_columns(columns, t.column_names, path)
        return t.select(columns) if columns else t
    if ext in (".csv", ".tsv", ".txt", ".gz"):
        sep = "\t" if ".tsv" in path.lower() else ","
        if have_arrow:
            import pyarrow.csv as pcsv

            header = pcsv.open_csv(path, parse_options=pcsv.ParseOptions(delimiter=sep)).schema.names
            _check_columns(columns, header, path)
            opts = pcsv.ConvertOptions(include_columns=columns) if columns else None
            return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=sep), convert_options=opts)
        import pandas as pd

        header = list(pd.read_csv(path, sep=sep, nrows=0).columns)
        _check_columns(columns, header, path)
        return pd.read_csv(path, sep=sep, usecols=columns)
    raise ValueError(f"cannot tell the format of {path!r} from its extension; use .csv, .tsv, .parquet or .feather")


def _check_columns(columns: list[str] | None, names: list[str], path: str) -> None:
    from ._frame import column_hint

    for c in columns or []:
        if c not in names:
            raise ValueError(f"column {c!r} is not in {os.path.basename(path)}{column_hint(c, list(names))}")


def _fit(a: argparse.Namespace) -> int:
    from .formula import STREAM_FORMATS, _parse, ols

    spec = _parse(a.formula)
    cols = sorted(set(spec.required_variables) | set(a.cluster or []))
    streamable = os.path.isdir(a.data) or os.path.splitext(a.data)[1].lower() in STREAM_FORMATS
    if a.cluster and streamable:
        data = a.data  # streamed batch by batch into cluster statistics (memory bounded)
    else:
        data = read_table(a.data, cols)  # HC variants (no --cluster) need the rows in memory
    dof: Any = a.dof
    try:
        dof = float(dof)
    except ValueError:
        pass
    cluster = a.cluster[0] if a.cluster and len(a.cluster) == 1 else a.cluster
    res = ols(a.formula, data, cluster=cluster, vcov=a.vcov, dof=dof, missing=a.missing, threads=a.threads)
    bt = None
    if a.bootstrap:
        bt = res.wild_bootstrap(a.bootstrap, h0=a.h0, B=a.B, seed=a.seed, weights=a.weights,
                                bootstrap_type=a.bootstrap_type, level=1 - a.alpha, threads=a.threads)
    diag = None
    if a.diagnostics:
        if res._singletons:
            raise ValueError("--diagnostics describes clusters: give --cluster")
        diag = res.diagnostics()
    if a.json:
        print(json.dumps(_as_json(res, bt, a.alpha, diag), indent=2, allow_nan=False))
        return 0
    reports = [res.summary(a.alpha)] + ([bt.summary()] if bt is not None else []) + \
        ([diag.summary()] if diag is not None else [])
    if a.markdown:
        print("\n".join(r.to_markdown() for r in reports))
    elif a.latex:
        print("\n".join(r.to_latex() for r in reports))
    else:
        print("\n\n".join(r.to_text() for r in reports))
    return 0


# -- certify ----------------------------------------------------------------------------------
def _certify(a: argparse.Namespace) -> int:
    from .certify import certify

    table = certify(design=a.design, G=a.G, icc=a.icc, mean_size=a.mean_size, methods=a.methods, reps=a.reps,
                    alpha=a.alpha, seed=a.seed, treated=a.treated, B=a.B, workers=a.workers,
                    progress=None if not (a.json or a.markdown) else False)
    if a.csv:
        table.to_csv(a.csv, index=False)
    if a.plot:
        ax = table.plot()
        ax.figure.savefig(a.plot, dpi=100, bbox_inches="tight")
    cols = ["G", "icc", "mean_size", "method", "rejection_rate", "mc_ci_low", "mc_ci_high", "se_ratio", "moulton",
            "coverage", "verdict"]
    if a.json:
        recs = [{k: (v if isinstance(v, str) else _finite(v)) for k, v in r.items()} for r in table.to_dict("records")]
        print(json.dumps(recs, indent=2, allow_nan=False))
    elif a.markdown:
        print(_markdown(table[cols]))
    else:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
            print(f"{a.design}: {a.reps} replications per cell, alpha {a.alpha:g}, seed {a.seed}")
            print(table[cols].to_string(index=False))
    return 0


def _markdown(df: Any) -> str:
    cell = lambda v: v if isinstance(v, str) else ("" if not math.isfinite(v) else f"{v:.4g}")  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "|".join("---:" if df[c].dtype.kind in "fiu" else ":---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _finite(x: Any) -> Any:
    """JSON has no inf/NaN: non-finite numbers become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _as_json(res: Any, bt: Any, alpha: float, diag: Any = None) -> dict:
    tidy = res.tidy(alpha)
    out = {
        "crve_version": __version__, "formula": res.formula, "dependent_variable": res.depvar,
        "nobs": res.nobs, "n_dropped": res.n_dropped, "dropped_by": res.dropped_by,
        "n_clusters": None if res._singletons else res.n_clusters, "cluster": res.cluster_name,
        "vcov": res.variant, "dof_rule": res.dof_rule if isinstance(res.dof_rule, str) else float(res.dof_rule),
        "r_squared": _finite(res.rsquared), "alpha": alpha,
        "coefficients": [{k: (v if isinstance(v, str) else _finite(v)) for k, v in row.items()}
                         for row in tidy.to_dict(orient="records")],
        "notes": list(res.notes) + (res.diagnostics(jackknife=False).alarms if not res._singletons
                                    and res.n_clusters > 1 else []),
    }
    if diag is not None:
        gstar = diag.effective_clusters()
        out["diagnostics"] = {
            "icc_residual": _finite(diag.icc_residual), "cluster_sizes": diag.size_summary,
            "terms": [{"term": t, "icc": _finite(diag.icc[t]), "moulton": _finite(diag.moulton[t]),
                       "se_ratio": _finite(diag.se_ratio[t]), "gstar": {str(r): _finite(gstar.loc[t, r]) for r in gstar}}
                      for t in diag.names],
            "treated": [{"term": t, "treated": int(r.treated), "control": int(r.control)}
                        for t, r in diag.treated.iterrows()]}
    if bt is not None:
        out["bootstrap"] = {
            "term": bt.param, "h0": bt.h0, "statistic": _finite(bt.t_stat), "pvalue": _finite(bt.pvalue),
            "B": bt.B, "enumerated": bt.enumerated, "seed": bt.seed, "weights": bt.weights,
            "bootstrap_type": bt.bootstrap_type, "impose_null": bt.impose_null, "pvalue_type": bt.pvalue_type,
            "level": bt.level, "conf_int": None if bt.conf_int is None else [_finite(v) for v in bt.conf_int],
            "notes": list(bt.notes)}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
