"""Measure, rather than assert, which inference method holds its size on a design.

:func:`certify` simulates A/A experiments (no effect) from :mod:`crve.simulate`, runs every
method on every replication through crve's own code paths (the same functions users call),
and reports the empirical rejection rate with a Monte Carlo confidence interval, the mean
standard error relative to the classical one next to Moulton's prediction, the coverage of the
confidence interval, and a verdict.

>>> import crve
>>> t = crve.certify(design="cluster-randomized", G=[10], icc=0.05, mean_size=20,
...                  methods=["naive", "CV2-satterthwaite"], reps=200, seed=1, progress=False)
>>> t[["G", "method"]].values.tolist()
[[10, 'naive'], [10, 'CV2-satterthwaite']]
>>> bool(t.rejection_rate.iloc[0] > t.rejection_rate.iloc[1])   # the naive test over-flags
True
"""
from __future__ import annotations

import itertools
import os
import re
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import _dist
from .simulate import ClusteredDGP

__all__ = ["certify", "CertifyTable", "DEFAULT_METHODS", "DESIGNS"]

DEFAULT_METHODS = ("naive", "HC1", "CV1", "CV2-satterthwaite", "CV3", "WCR-webb")
DESIGNS = {"cluster-randomized": "cluster", "user-randomized": "individual", "continuous": "continuous"}
_DOFS = {"satterthwaite": "satterthwaite", "g-1": "G-1", "n-k": "N-K", "normal": "normal"}
_WEIGHTS = ("rademacher", "webb", "mammen", "normal")
_CHUNK = 50  # replications per task


@dataclass(frozen=True)
class _Method:
    label: str
    variant: str | None = None   # analytic: variant and dof rule
    dof: str = "auto"
    kind: str | None = None      # bootstrap: "WCR" / "WCU", MNW type, weights
    btype: str = "11"
    weights: str = "webb"


def _parse_method(m: str) -> _Method:
    """'naive' | 'iid' | 'HC0'-'HC3' | 'CV0'-'CV3', 'CV3J' [-dof] | 'WCR'/'WCU' [11|13|31|33] -weights."""
    from .results import VARIANTS, normalize_variant

    if not isinstance(m, str):
        raise ValueError(f"methods are strings such as 'CV1' or 'WCR-webb'; got {m!r}")
    s = m.strip()
    if s.lower() in ("naive", "iid"):
        return _Method(s, "iid", "N-K")
    boot = re.fullmatch(r"(WCR|WCU)(11|13|31|33)?-(\w+)", s, flags=re.IGNORECASE)
    if boot:
        weights = boot.group(3).lower()
        if weights not in _WEIGHTS:
            raise ValueError(f"method {m!r}: unknown weights {boot.group(3)!r}; use one of {', '.join(_WEIGHTS)}")
        return _Method(s, kind=boot.group(1).upper(), btype=boot.group(2) or "11", weights=weights)
    variant, _, dof = s.partition("-")
    try:
        v = normalize_variant(variant)
    except ValueError:
        raise ValueError(f"unknown method {m!r}: use 'naive', a variant ({', '.join(VARIANTS)}) optionally with a "
                         "dof rule ('CV2-satterthwaite', 'CV1-G-1', 'HC1-normal'), or a wild bootstrap "
                         "('WCR-webb', 'WCU-rademacher', 'WCR33-webb')") from None
    if dof and dof.lower() not in _DOFS:
        raise ValueError(f"method {m!r}: unknown dof rule {dof!r}; use one of {', '.join(_DOFS.values())}")
    return _Method(s, v, _DOFS[dof.lower()] if dof else "auto")


# -- the work of one task (runs in a worker process) ------------------------------------------
def _replications(dgp: ClusteredDGP, methods: Sequence[_Method], h0: float, alpha: float, B: int, seed: int,
                  cell: int, start: int, stop: int) -> dict:
    """Replications start..stop-1 of one cell; each draws from its own generator keyed by
    (seed, cell, replication), so results do not depend on how replications are split."""
    from .api import cluster_robust
    from .diagnostics import anova_icc
    from .results import CrveWarning

    n, m = stop - start, len(methods)
    reject = np.zeros((n, m), dtype=bool)
    cover = np.zeros((n, m), dtype=bool)
    se_ratio = np.full((n, m), np.nan)
    icc_x = np.empty(n)
    sizes_mean = np.empty(n)
    sizes_var = np.empty(n)
    beta = dgp.beta
    for i, rep in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, cell, rep])
        y, x, codes = dgp.draw(rng)
        X = np.column_stack([np.ones(len(y)), x])
        counts = np.bincount(codes).astype(float)
        sizes_mean[i], sizes_var[i] = counts.mean(), counts.var()
        xs = np.bincount(codes, x)
        icc_x[i] = anova_icc(counts, xs, np.bincount(codes, x * x) - xs ** 2 / counts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CrveWarning)
            base = cluster_robust(y, X, codes, variant="CV1", threads=1)
            iid = base._with("iid", "N-K")
            for j, meth in enumerate(methods):
                if meth.kind is None:
                    if meth.variant == "CV1" and meth.dof in ("auto", "G-1"):
                        r = base
                    elif meth.variant == "iid" and meth.dof == "N-K":
                        r = iid
                    else:
                        r = base._with(meth.variant, meth.dof)
                    b, se, df = r._params[1], np.sqrt(r._cov[1, 1]), r._df[1]
                    crit = _dist.t_ppf(1 - alpha / 2, df)
                    reject[i, j] = abs(b - h0) > crit * se
                    cover[i, j] = abs(b - beta) <= crit * se
                    se_ratio[i, j] = se
                else:
                    bt = base.wild_bootstrap(1, h0=h0, weights=meth.weights, B=B, impose_null=meth.kind == "WCR",
                                             bootstrap_type=meth.btype, seed=int(rng.integers(2 ** 63)),
                                             conf_int=False, progress=False, threads=1)
                    reject[i, j] = bt.pvalue < alpha
                    cover[i, j] = (bt.pvalue if beta == h0 else bt.pvalue_at(beta)) >= alpha
            se_ratio[i] /= np.sqrt(iid._cov[1, 1])
    return {"cell": cell, "reject": reject.sum(0), "cover": cover.sum(0), "se_ratio": np.nansum(se_ratio, 0),
            "icc_x": np.nansum(icc_x), "n_icc": int(np.isfinite(icc_x).sum()), "sizes_mean": sizes_mean.sum(),
            "sizes_var": sizes_var.sum(), "n": n}


# -- the table ------------------------------------------------------------------------------
class CertifyTable(pd.DataFrame):
    """The result of :func:`certify`: a pandas DataFrame (one row per design cell and method)
    with a :meth:`plot` of rejection rate against G. ``attrs`` hold alpha, reps and seed."""

    @property
    def _constructor(self) -> type:
        return CertifyTable

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:  # noqa: D102 - documented in crve.plot
        from .plot import plot_certify

        return plot_certify(self, ax=ax, **kwargs)


def _verdict(k: int, n: int, alpha: float, size_test: bool, mc_level: float) -> tuple[float, float, str]:
    from scipy import stats as sps  # binomtest only here: scipy.stats is slow to import

    lo, hi = sps.binomtest(k, n).proportion_ci(mc_level, method="exact")
    rate = k / n
    if not size_test:
        return lo, hi, f"power {rate:.2f}"
    if lo <= alpha <= hi:
        return lo, hi, "certified"
    if lo > alpha:
        return lo, hi, f"over-rejects: {rate:.2f} at alpha {alpha:g}"
    return lo, hi, f"under-rejects: {rate:.3f} at alpha {alpha:g} (conservative)"


def _as_list(v: Any, name: str) -> list:
    out = list(v) if isinstance(v, (list, tuple, np.ndarray, range)) else [v]
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def certify(design: str = "cluster-randomized", G: Any = (5, 10, 20, 30, 50), icc: Any = 0.02, mean_size: Any = 36,
            methods: Sequence[str] = DEFAULT_METHODS, reps: int = 2000, alpha: float = 0.05, seed: int = 0, *,
            beta: float = 0.0, h0: float | None = None, sizes: Any = None, treated: int | None = None,
            x_icc: float = 0.5, het: float = 0.0, B: int = 399, mc_level: float = 0.95, workers: int | None = None,
            progress: bool | None = None) -> CertifyTable:
    """Empirical size (and coverage) of inference methods on simulated clustered designs.

    Parameters
    ----------
    design : {"cluster-randomized", "user-randomized", "continuous"}
        A/A test with a 0/1 treatment assigned to whole clusters (half of them, or ``treated``),
        to individuals (half of each cluster: the shared shock cancels across arms), or a
        continuous regressor with intraclass correlation ``x_icc``.
    G, icc, mean_size : scalar or list
        Clusters, error intraclass correlation and rows per cluster; every combination is a cell.
    methods : list of str
        ``"naive"`` (classical SEs, T(N-K)), ``"HC0"``-``"HC3"``, ``"CV0"``-``"CV3"``/``"CV3J"``
        with an optional dof rule (``"CV2-satterthwaite"``, ``"CV1-normal"``; default: the
        variant's own), and wild bootstraps ``"WCR-webb"``, ``"WCU-rademacher"``,
        ``"WCR33-webb"`` (B draws each).
    reps : int
        Replications per cell. The Monte Carlo interval's half-width is about
        ``2 sqrt(alpha (1 - alpha) / reps)`` (0.0096 at 2000 reps and alpha 0.05).
    beta, h0 :
        True effect (default 0, an A/A test) and the tested value (default: beta, so the
        rejection rate is the size; with h0 != beta it is the power).
    sizes : optional
        Cluster-size distribution overriding ``mean_size`` (see :func:`crve.simulate.clustered`).
    seed : int
        Replication r of cell c draws from ``numpy.random.default_rng([seed, c, r])``: the table
        is the same for any number of workers.
    workers : int, optional
        Processes (default: all cores; 1 runs in this process).

    Returns
    -------
    CertifyTable
        Columns ``design, G, icc, mean_size, method, reps, rejection_rate, mc_ci_low, mc_ci_high,
        se_ratio`` (mean SE / classical SE; NaN for bootstraps), ``moulton`` (Moulton's predicted
        ratio from the planted icc and the treatment's intraclass correlation), ``coverage`` (of
        the 1 - alpha interval; for bootstraps, p(beta) >= alpha from the same draws) and
        ``verdict``: "certified" when the Monte Carlo interval contains alpha, else
        "over-rejects: 0.21 at alpha 0.05" or "under-rejects ... (conservative)".
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {list(DESIGNS)}; got {design!r}")
    parsed = [_parse_method(m) for m in _as_list(methods, "methods")]
    if len({p.label for p in parsed}) != len(parsed):
        raise ValueError(f"methods has duplicates: {list(methods)}")
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive int; got {reps!r}")
    if not 0 < alpha < 1 or not 0 < mc_level < 1:
        raise ValueError("alpha and mc_level must lie in (0, 1)")
    if not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B must be a positive int; got {B!r}")
    h0 = beta if h0 is None else float(h0)
    Gs, iccs, msizes = _as_list(G, "G"), _as_list(icc, "icc"), _as_list(mean_size, "mean_size")
    for g in Gs:
        if not isinstance(g, (int, np.integer)) or g < 2:
            raise ValueError(f"every G must be an int >= 2 (cluster-robust inference needs two clusters); got {g!r}")
    cells = []
    for g, rho, ms in itertools.product(Gs, iccs, msizes):
        dgp = ClusteredDGP(G=int(g), sizes=int(ms) if sizes is None else sizes, icc=float(rho), beta=float(beta),
                           treatment=DESIGNS[design], treated=treated, x_icc=x_icc, het=het)
        cells.append(dgp)
    tasks = [(dgp, parsed, h0, alpha, int(B), int(seed), c, s, min(s + _CHUNK, reps))
             for c, dgp in enumerate(cells) for s in range(0, reps, _CHUNK)]

    results = _run_tasks(tasks, workers, progress, reps * len(cells))
    rows = []
    for c, dgp in enumerate(cells):
        parts = [r for r in results if r["cell"] == c]
        reject = sum(p["reject"] for p in parts)
        cover = sum(p["cover"] for p in parts)
        se_sum = sum(p["se_ratio"] for p in parts)
        n_icc = sum(p["n_icc"] for p in parts)
        rho_x = sum(p["icc_x"] for p in parts) / n_icc if n_icc else np.nan
        nbar = sum(p["sizes_mean"] for p in parts) / reps
        nvar = sum(p["sizes_var"] for p in parts) / reps
        inside = 1 + (nvar / nbar + nbar - 1) * rho_x * dgp.icc
        moulton = float(np.sqrt(inside)) if inside > 0 else np.nan
        for j, meth in enumerate(parsed):
            lo, hi, verdict = _verdict(int(reject[j]), reps, alpha, h0 == beta, mc_level)
            rows.append({"design": design, "G": dgp.G, "icc": dgp.icc, "mean_size": nbar, "method": meth.label,
                         "reps": reps, "rejection_rate": reject[j] / reps, "mc_ci_low": lo, "mc_ci_high": hi,
                         "se_ratio": se_sum[j] / reps if meth.kind is None else np.nan, "moulton": moulton,
                         "coverage": cover[j] / reps, "verdict": verdict})
    table = CertifyTable(rows)
    table.attrs.update({"alpha": alpha, "reps": reps, "seed": seed, "design": design, "B": B, "h0": h0, "beta": beta})
    return table


def _run_tasks(tasks: list, workers: int | None, progress: bool | None, total: int) -> list[dict]:
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(tasks)))
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="rep", desc="certify")
    out = []
    try:
        if workers == 1:
            for t in tasks:
                out.append(_replications(*t))
                if bar is not None:
                    bar.update(out[-1]["n"])
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_replications, *t) for t in tasks]
                try:
                    for f in as_completed(futures):
                        out.append(f.result())
                        if bar is not None:
                            bar.update(out[-1]["n"])
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    return out
