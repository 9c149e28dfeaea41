"""Wild (cluster) bootstrap of t and Wald statistics (DESIGN.md section 4).

The core draws the bootstrap on the cluster statistics: O(G K) per draw, no N, weights from a
counter-based generator keyed by (seed, draw), so a seed gives the same draws on any number of
threads. For one restriction every bootstrap t is an explicit function of the hypothesised
value, so the confidence interval inverts the test with the same draws.

Conventions (documented in the README):

* p-values count draws that are *more extreme* than the sample statistic: |t*| > |t| (1 + 1e-10)
  (symmetric), t* > t + 1e-10 |t| (upper), t* < t - 1e-10 |t| (lower), equal-tailed = 2 min
  (upper, lower); p = count / B. The relative 1e-10 keeps rounding ties (the all-ones draw
  reproduces t) out of the count, as boottest's Julia back end does.
* The confidence set is {h0 : p(h0) > 1 - level}, located exactly (to ~1e-12 of the standard
  error) between the draws' crossing points.
* bootstrap_type "ab" (MacKinnon, Nielsen & Webb 2023): a = 1 uses the (restricted) residuals in
  the bootstrap DGP, a = 3 the residuals of the leave-one-bootstrap-cluster-out fits; b = 1
  studentises with CV1, b = 3 with CV3 (= crve's CV3, (G-1)/G sum of squared jackknife
  deviations about the full-sample estimate).
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import _core
from ._inputs import Design, as_design, factorize_clusters
from .results import CrveWarning, check_restriction, covariance_rank

__all__ = ["wild_cluster_bootstrap", "WildBootstrapResult"]

WEIGHTS = ("rademacher", "webb", "mammen", "normal")
PVALUES = ("symmetric", "equal-tailed", "upper", "lower")
TYPES = ("11", "13", "31", "33")
TIE_TOL = 1e-10
_WORK_PER_BATCH = 1e9  # core work units (about flops) per call: well under a second, so Ctrl-C is prompt


@dataclass
class WildBootstrapResult:
    """Outcome of a wild (cluster) bootstrap test.

    ``t_stat`` is the sample t statistic (for a joint test: the Wald statistic Q/q, in
    ``statistic`` too), ``t_star`` the B bootstrap statistics at ``h0``, ``pvalue`` the bootstrap
    p-value and ``conf_int`` the confidence interval from inverting the test (one restriction).
    """

    param: str | None
    h0: Any
    t_stat: float
    pvalue: float
    B: int
    enumerated: bool
    t_star: np.ndarray = field(repr=False)
    conf_int: tuple[float, float] | None
    conf_set: list[tuple[float, float]] | None = field(repr=False)
    level: float
    seed: int
    weights: str
    bootstrap_type: str
    impose_null: bool
    pvalue_type: str
    estimate: Any
    std_error: float | None
    n_clusters: int
    n_boot_clusters: int
    q: int
    notes: list[str] = field(default_factory=list)
    _rows: bool = field(default=False, repr=False)  # heteroskedastic (every row its own cluster)
    _pcurve: Any = field(default=None, repr=False)  # h -> p(h) from the same draws (one restriction)

    def pvalue_at(self, h: Any) -> np.ndarray:
        """Bootstrap p-values of ``param = h`` for each value in `h`, from the same draws (exact:
        t*(h) is affine in h, so no new draws are made). The confidence set is {h : p(h) > 1 - level}.
        """
        if self._pcurve is None:
            raise ValueError("p(h) is available for a single restriction (q = 1) only")
        return self._pcurve(h)

    @property
    def statistic(self) -> float:
        return self.t_stat

    def summary(self) -> Any:
        """A :class:`~crve.report.Report`: print it, or ``.to_markdown()`` / ``.to_latex()``; it states
        the draws, enumeration, weights, tie rule, p-value resolution and the confidence interval."""
        from .report import bootstrap_report

        return bootstrap_report(self)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Histogram of t* with the observed t and the bootstrap critical values
        (:func:`crve.plot.plot_bootstrap`; needs matplotlib)."""
        from .plot import plot_bootstrap

        return plot_bootstrap(self, ax=ax, **kwargs)

    def plot_pvalue_curve(self, ax: Any = None, **kwargs: Any) -> Any:
        """The bootstrap p-value p(h) against h with the confidence interval
        (:func:`crve.plot.plot_pvalue_curve`; needs matplotlib)."""
        from .plot import plot_pvalue_curve

        return plot_pvalue_curve(self, ax=ax, **kwargs)

    def __repr__(self) -> str:
        ci = "" if self.conf_int is None else f", CI [{self.conf_int[0]:.6g}, {self.conf_int[1]:.6g}]"
        return (f"<WildBootstrapResult {'WCR' if self.impose_null else 'WCU'}{self.bootstrap_type} "
                f"{self.weights}: stat = {self.t_stat:.4f}, p = {self.pvalue:.4g}, B = {self.B}{ci}>")


def wild_cluster_bootstrap(y: Any, X: Any, clusters: Any = None, *, param: Any = None, h0: float = 0.0,
                           R: Any = None, r: Any = None, weights: str = "rademacher", B: int = 9999,
                           seed: int | None = None, impose_null: bool = True, pvalue: str = "symmetric",
                           bootstrap_type: str = "11", bootcluster: Any = None, conf_int: bool = True,
                           level: float = 0.95, threads: int | None = None, progress: bool | None = None,
                           names: Sequence[str] | None = None) -> WildBootstrapResult:
    """Wild cluster bootstrap test (and confidence interval) for OLS of y on X.

    Parameters
    ----------
    y, X, clusters, names
        As in :func:`crve.cluster_robust`. ``clusters=None``: the heteroskedastic wild bootstrap
        (every row its own cluster; memory O(N K^2)).
    param : int or str, optional
        The coefficient tested (column index or name); default the last column.
    h0 : float
        Hypothesised value of ``param``.
    R, r : array-like, optional
        A joint hypothesis R b = r (q x K, q); the Wald statistic Q/q is bootstrapped. With one
        row it is the t test of that contrast (and gets a confidence interval).
    weights : {"rademacher", "webb", "mammen", "normal"}
    B : int
        Number of draws. With Rademacher weights and 2^G <= B all 2^G sign vectors are
        enumerated instead (``enumerated`` is True, ``B == 2**G``).
    seed : int, optional
        Key of the counter-based generator (0 <= seed < 2^64); drawn at random (and reported in
        the result) when None. The same seed gives the same draws on any number of threads.
    impose_null : bool
        WCR (True, the default) or WCU.
    pvalue : {"symmetric", "equal-tailed", "upper", "lower"}
    bootstrap_type : {"11", "13", "31", "33"}
        MacKinnon, Nielsen & Webb (2023): first digit the DGP residuals (1 ordinary, 3 jackknife),
        second the studentisation (1 CV1, 3 CV3).
    bootcluster : array-like, optional
        Clusters that share a bootstrap weight, when different from the variance clusters.
    conf_int : bool
        Invert the test for a confidence interval (one restriction only).
    level : float
        Confidence level.
    threads : int, optional
        Threads (default all cores); results do not depend on it.
    progress : bool, optional
        Show a tqdm progress bar (default: for long runs on a terminal).

    Returns
    -------
    WildBootstrapResult

    Examples
    --------
    >>> import numpy as np, crve
    >>> rng = np.random.default_rng(7)
    >>> g = np.repeat(np.arange(12), 40)
    >>> X = np.column_stack([np.ones(480), rng.normal(size=480)])
    >>> y = X @ [1.0, 0.1] + rng.normal(size=12)[g] + rng.normal(size=480)
    >>> bt = crve.wild_cluster_bootstrap(y, X, g, param=1, weights="webb", B=999, seed=1)
    >>> bt.B, bt.enumerated, round(bt.pvalue, 3)
    (999, False, 0.052)
    """
    d = as_design(y, X, clusters, names)
    N, K = d.X.shape
    if N <= K:
        raise ValueError(f"need more rows than columns: N = {N}, K = {K}")
    rows = d.codes is None
    var_codes = np.arange(N, dtype=np.int64) if rows else d.codes
    boot_codes = None
    if bootcluster is not None:
        if rows:
            raise ValueError("bootcluster needs clusters (the variance clustering); got clusters=None")
        boot_codes = factorize_clusters(bootcluster, N)[0]
    model, cell_var, cell_boot = _model_on_cells(d, var_codes, d.n_slots or N, boot_codes, threads)
    return _run(model, d.names, cell_var, cell_boot, rows=rows, param=param, h0=h0, R=R, r=r, weights=weights,
                B=B, seed=seed, impose_null=impose_null, pvalue=pvalue, bootstrap_type=bootstrap_type,
                conf_int=conf_int, level=level, threads=threads, progress=progress)


def _model_on_cells(d: Design, var_codes: np.ndarray, var_slots: int | None, boot_codes: np.ndarray | None,
                    threads: int | None) -> tuple[Any, np.ndarray, np.ndarray]:
    """The core Model fitted on the cells (variance cluster x bootstrap cluster; the variance
    clusters themselves without bootstrap clusters), and each cell's variance cluster and
    bootstrap cluster, both 0-based and dense, in the order of the Model's clusters.
    var_slots: an upper bound of var_codes (None: computed)."""
    from .stats import ClusterStats, model_or_error

    if boot_codes is None:
        cells = var_codes
        n_slots = var_slots if var_slots is not None else int(var_codes.max()) + 1
    else:
        import pandas as pd

        nb = int(boot_codes.max()) + 1
        cells, uniq = pd.factorize(var_codes.astype(np.int64) * nb + boot_codes, sort=True)
        cells = cells.astype(np.int64)
        n_slots = len(uniq)
    stats = ClusterStats._build(Design(d.y, d.X, d.names, cells, np.arange(n_slots), n_slots), threads)
    model = model_or_error(stats, threads, d)
    if boot_codes is None:  # empty integer-label slots were dropped: the identity on the rest
        cell_var = cell_boot = np.arange(stats.n_clusters, dtype=np.int64)
    else:
        cell_var = np.unique(uniq // nb, return_inverse=True)[1].astype(np.int64)
        cell_boot = np.unique(uniq % nb, return_inverse=True)[1].astype(np.int64)
    return model, cell_var, cell_boot


def _hypothesis(names: list[str], param: Any, h0: Any, R: Any, r: Any) -> tuple[np.ndarray, np.ndarray, str | None]:
    K = len(names)
    if R is not None:
        if param is not None:
            raise ValueError("give either param (with h0) or R (with r), not both")
        Rm, rv = check_restriction(R, r, K)
        if np.linalg.matrix_rank(Rm) < Rm.shape[0]:
            raise ValueError(f"the {Rm.shape[0]} restrictions in R are linearly dependent")
        return Rm, rv, None
    if r is not None:
        raise ValueError("r needs R; for one coefficient use param and h0")
    if param is None:
        k = K - 1
    elif isinstance(param, (int, np.integer)) and not isinstance(param, bool):
        k = int(param)
        if not -K <= k < K:
            raise ValueError(f"param {param} is not a column of X (K = {K})")
        k %= K
    elif isinstance(param, str):
        if param not in names:
            raise ValueError(f"param {param!r} is not a column of X; columns are {names}")
        k = names.index(param)
    else:
        raise ValueError(f"param must be a column index or name; got {param!r}")
    try:
        h = float(h0)
    except (TypeError, ValueError):
        raise ValueError(f"h0 must be a number; got {h0!r}") from None
    if not np.isfinite(h):
        raise ValueError(f"h0 must be finite; got {h0!r}")
    Rm = np.zeros((1, K))
    Rm[0, k] = 1.0
    return Rm, np.array([h]), names[k]


def _seed(seed: Any) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy) % (1 << 64)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer in [0, 2^64) or None; got {seed!r}")
    if not 0 <= int(seed) < (1 << 64):
        raise ValueError(f"seed must be in [0, 2^64); got {seed}")
    return int(seed)


def _run(model: Any, names: list[str], cell_var: np.ndarray, cell_boot: np.ndarray, *, rows: bool, param: Any,
         h0: Any, R: Any, r: Any, weights: str, B: int, seed: Any, impose_null: bool, pvalue: str,
         bootstrap_type: str, conf_int: bool, level: float, threads: int | None,
         progress: bool | None) -> WildBootstrapResult:
    wkind = weights.strip().lower() if isinstance(weights, str) else weights
    if wkind == "norm":
        wkind = "normal"
    if wkind not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; use one of {WEIGHTS}")
    ptype = pvalue.strip().lower().replace("_", "-") if isinstance(pvalue, str) else pvalue
    ptype = {"two-tailed": "symmetric", "equal": "equal-tailed"}.get(ptype, ptype)
    if ptype not in PVALUES:
        raise ValueError(f"unknown pvalue {pvalue!r}; use one of {PVALUES}")
    btype = str(bootstrap_type)
    if btype not in TYPES:
        raise ValueError(f"unknown bootstrap_type {bootstrap_type!r}; use one of {TYPES}")
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B must be a positive integer; got {B!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    Rm, rv, pname = _hypothesis(names, param, h0, R, r)
    q = Rm.shape[0]
    G_var, G_boot = int(cell_var.max()) + 1, int(cell_boot.max()) + 1
    what = "rows" if rows else "clusters"
    if G_var < 2 or G_boot < 2:
        raise ValueError(f"the wild bootstrap needs at least 2 {what}; got {min(G_var, G_boot)}")
    if q > G_var - 1:
        raise ValueError(f"cannot test {q} restrictions with {G_var} clusters: the cluster-robust variance has "
                         f"rank at most G - 1 = {G_var - 1}")
    seed_v = _seed(seed)
    th = 0 if threads is None else int(threads)
    notes: list[str] = []

    prob = _core.wild_setup(model, Rm, rv, cell_var, G_var, cell_boot, G_boot, bool(impose_null),
                            btype[0] == "3", btype[1] == "3", th)
    if prob.dgp_singular:
        notes.append(f"{prob.dgp_singular} bootstrap clusters cannot be left out of the "
                     f"{'restricted ' if impose_null else ''}fit (X'X without them is singular): their "
                     "jackknife residuals use the pseudo-inverse")
    if prob.stud_singular:
        notes.append(f"{prob.stud_singular} clusters cannot be left out (X'X - X_g'X_g singular): CV3 uses the "
                     "pseudo-inverse there")

    enumerated = wkind == "rademacher" and G_boot < 63 and 2 ** G_boot <= B
    info: list[str] = []  # notes that need no warning
    if enumerated:
        B = 2 ** G_boot
        msg = (f"all 2^{G_boot} = {B} Rademacher sign vectors enumerated: the p-value cannot be finer than "
               f"1/2^{G_boot - 1} = {1 / 2 ** (G_boot - 1):.3g}")
        if G_boot < 10:
            notes.append(msg + "; consider weights='webb' with fewer than 10 clusters")
        else:
            info.append(msg)
    elif wkind == "rademacher" and G_boot < 10:
        notes.append(f"only {G_boot} bootstrap clusters: Rademacher weights give at most 2^{G_boot - 1} distinct "
                     "|t*|; consider weights='webb'")
    draws = _draw(prob, wkind, seed_v, enumerated, int(B), th, progress)

    theta = np.asarray(Rm @ np.asarray(model.beta))
    V = np.atleast_2d(np.asarray(prob.V))
    ssc = float(prob.ssc)
    if q == 1:
        se = float(np.sqrt(V[0, 0]))
        if not se > 0:
            raise ValueError("the sample's cluster-robust variance of the tested contrast is zero: the hypothesis "
                             "is not testable with these clusters")
        t = float((theta[0] - rv[0]) / se)
        ncomp = int(prob.ncomp)
        num = draws[:, 0]
        den = ssc * draws[:, 2 if ncomp == 2 else 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_star = num / np.sqrt(den)
        counts = _core.wild_count(draws, ncomp, ssc, np.zeros(1), np.array([t]), TIE_TOL, ptype != "symmetric", th)[0]
        p = _pvalue(counts, ptype, B)
        ci = cset = None
        pcurve = functools.partial(_p_at, draws, ncomp, ssc, float(theta[0]), se, float(rv[0]), ptype, B, th)
        if conf_int:
            cset = _invert(draws, ncomp, ssc, float(theta[0]), se, float(rv[0]), ptype, 1 - level, B, th, notes)
            if cset:
                ci = (cset[0][0], cset[-1][1])
        stat, est = t, float(theta[0])
    else:
        se = None
        diff = theta - rv
        rank = covariance_rank(V)
        if rank < q:
            raise ValueError(f"the sample's variance of R b has rank {rank} < {q} restrictions: the hypothesis is "
                             "not testable with these clusters")
        stat = float(diff @ np.linalg.solve(V, diff)) / q
        n = draws[:, :q]
        Q = ssc * draws[:, q:].reshape(-1, q, q)
        t_star = np.full(B, np.nan)
        ok = covariance_rank(Q, tol=None) == q if B else np.zeros(0, bool)
        t_star[ok] = np.einsum("bi,bi->b", n[ok], np.linalg.solve(Q[ok], n[ok][..., None])[..., 0]) / q
        if (~ok).any():
            notes.append(f"{int((~ok).sum())} draws have a singular bootstrap variance and are not counted as "
                         "more extreme")
        p = float(np.count_nonzero(t_star > stat * (1 + TIE_TOL)) / B)
        if ptype != "symmetric":
            notes.append("a joint (Wald) test is one-sided in Q; pvalue type ignored")
        ci = cset = pcurve = None
        est = theta
    if q == 1 and np.isnan(t_star).any():
        notes.append(f"{int(np.isnan(t_star).sum())} draws have zero bootstrap variance and numerator (t* undefined, "
                     "not counted as more extreme)")
    for n_ in notes:
        warnings.warn(n_, CrveWarning, stacklevel=3)
    notes = info + notes
    return WildBootstrapResult(param=pname, h0=float(rv[0]) if q == 1 else rv, t_stat=float(stat), pvalue=p, B=int(B),
                               enumerated=enumerated, t_star=t_star, conf_int=ci, conf_set=cset, level=level,
                               seed=seed_v, weights=wkind, bootstrap_type=btype, impose_null=bool(impose_null),
                               pvalue_type=ptype, estimate=est, std_error=se, n_clusters=G_var,
                               n_boot_clusters=G_boot, q=q, notes=notes, _rows=rows, _pcurve=pcurve)


def _draw(prob: Any, weights: str, seed: int, enumerated: bool, B: int, threads: int, progress: bool | None) -> np.ndarray:
    """All B draws, in batches of whole chunks so Ctrl-C (and the progress bar) respond quickly."""
    chunk = int(prob.chunk)
    per_draw = float(prob.K + prob.q) * prob.ncomp * 2 * (prob.G_var + prob.G_boot) + 64 * prob.G_boot
    n_threads = threads or _cpu_count()
    batch = max(4 * n_threads * chunk, int(_WORK_PER_BATCH / per_draw) // chunk * chunk)
    from ._memory import check_fits

    check_fits(2.0 * B * 8 * int(prob.width), f"the wild bootstrap with B = {B:,} draws",
               "lower B (the p-value's resolution is 1/B)")
    out = np.empty((B, int(prob.width)))
    n_batches = -(-B // batch)
    if progress is None:
        progress = n_batches > 8 and sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=B, unit="draw", desc="wild bootstrap")
    try:
        for b0 in range(0, B, batch):
            nb = min(batch, B - b0)
            out[b0:b0 + nb] = _core.wild_draws(prob, weights, seed, enumerated, b0, nb, threads)
            if bar is not None:
                bar.update(nb)
    finally:
        if bar is not None:
            bar.close()
    return out


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pvalue(counts: np.ndarray, ptype: str, B: int) -> float:
    n_abs, n_up, n_down = (int(c) for c in counts)
    if ptype == "symmetric":
        return n_abs / B
    if ptype == "upper":
        return n_up / B
    if ptype == "lower":
        return n_down / B
    return min(1.0, 2 * min(n_up, n_down) / B)


# Grid of t = (estimate - h) / se on which the confidence set is first located: fine where the
# bounds usually are, then geometric far out to detect unbounded sets.
_TGRID = np.concatenate([np.arange(0, 8.0001, 0.5), 8 * 2.0 ** np.arange(1, 18)])
_TGRID = np.concatenate([-_TGRID[:0:-1], _TGRID])


def _p_at(draws: np.ndarray, ncomp: int, ssc: float, est: float, se: float, h0: float, ptype: str, B: int,
          threads: int, h: np.ndarray) -> np.ndarray:
    """Bootstrap p-values of param = h for each h, from the draws at h0 (t*(h) is affine in h)."""
    h = np.atleast_1d(np.asarray(h, dtype=float))
    counts = _core.wild_count(draws, ncomp, ssc, np.ascontiguousarray(h - h0), np.ascontiguousarray((est - h) / se),
                              TIE_TOL, ptype != "symmetric", threads)
    return np.array([_pvalue(c, ptype, B) for c in counts])


def _invert(draws: np.ndarray, ncomp: int, ssc: float, est: float, se: float, h0: float, ptype: str, alpha: float,
            B: int, threads: int, notes: list[str]) -> list[tuple[float, float]] | None:
    """The confidence set {h : p(h) > alpha} as a list of intervals (None if empty)."""

    def accepted(h: np.ndarray) -> np.ndarray:
        return _p_at(draws, ncomp, ssc, est, se, h0, ptype, B, threads, h) > alpha

    grid = est - _TGRID[::-1] * se  # increasing in h
    acc = accepted(grid)
    if not acc.any():
        notes.append("the bootstrap rejects every value on the search grid: the confidence set is empty (or "
                     "narrower than the grid)")
        return None
    # Refine each change between neighbours: 8 points per pass (to ~1e-11 se), all at once.
    edges = np.flatnonzero(acc[1:] != acc[:-1])
    lo, hi = grid[edges].copy(), grid[edges + 1].copy()
    lo_acc = acc[edges].copy()
    for _ in range(11):
        pts = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 10)[None, 1:-1]
        a = accepted(pts.ravel()).reshape(pts.shape)
        for i in range(len(lo)):
            flip = np.flatnonzero(a[i] != lo_acc[i])
            j = flip[0] if flip.size else pts.shape[1]
            new_lo = pts[i, j - 1] if j > 0 else lo[i]
            new_hi = pts[i, j] if j < pts.shape[1] else hi[i]
            lo[i], hi[i] = new_lo, new_hi
    bounds = (lo + hi) / 2
    # Assemble the intervals from the sign pattern.
    pieces: list[tuple[float, float]] = []
    start = -np.inf if acc[0] else None
    for i, e in enumerate(edges):
        if lo_acc[i]:  # accepted -> rejected: an upper end
            pieces.append((start, float(bounds[i])))
            start = None
        else:
            start = float(bounds[i])
    if start is not None:
        pieces.append((start, np.inf))
    if (acc[0] or acc[-1]) and ptype in ("symmetric", "equal-tailed"):
        notes.append("the confidence set is unbounded: the bootstrap does not reject arbitrarily large "
                     + ("and small " if acc[0] and acc[-1] else "small " if acc[0] else "")
                     + "values")
    if len(pieces) > 1:
        shown = ", ".join(f"[{a:.6g}, {b:.6g}]" for a, b in pieces)
        notes.append(f"the confidence set is not an interval: {shown}; conf_int reports its hull")
    return pieces
