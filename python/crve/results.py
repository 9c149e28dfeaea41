"""Result objects: coefficients, a covariance, degrees of freedom, tests.

A Result keeps the cluster statistics it came from, so ``with_variant`` needs no pass over the
rows; heteroskedasticity-robust (HC) variants need the rows and are available on results built
from arrays.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import _core, _dist
from .dof import correlation_scale, htz_pieces, parse_dof, satterthwaite

__all__ = ["Result", "WaldTest", "ContrastTest", "CrveWarning", "normalize_variant", "VARIANTS"]

VARIANTS = ("iid", "HC0", "HC1", "HC2", "HC3", "CV0", "CV1", "CV2", "CV3", "CV3J")
_ALIASES = {"CR2": "CV2", "STATA": "CV1", "CR0": "CV0", "CR1S": "CV1", "CLASSICAL": "iid", "IID": "iid",
            "NONROBUST": "iid"}


FEW_CLUSTERS = 30  # below this many clusters the summary notes that CV1 t tests can over-reject
EXACT_FIT = 1e-12  # SSR / TSS below this: an exact fit (R^2 = 1 to rounding)
# A fit from cluster statistics alone (no rows: streamed, Dask, from_sums) forms its residual-based
# quantities (scores X_g'e_g, SSR) by cancellation, about eps TSS / SSR relative error (measured:
# tests/fuzz_targets.py, stream target); below this SSR / TSS (8 digits left or fewer) crve says so.
NEAR_EXACT_STATS = 1e-8
ILL_CONDITIONED = 1e-9  # rcond of the scaled X'X below which crve warns (about 5 digits or fewer left)
# A cluster (row, for HC) whose leverage is this close to one, but not one, makes the CV2/CV3
# (HC2/HC3) adjustment (1 - h)^(-1/2 or -1) amplify rounding: about 100 eps / (1 - h) relative
# accuracy is left (measured against exact rational jackknife variances), which crve says.
NEAR_LEVERAGE_ONE = 1e-6
# With the rows at hand, coefficients and SSR are polished from the rows' own residuals when the
# statistics lose digits to cancellation: a near-exact fit (SSR below this fraction of TSS) or an
# ill-conditioned X'X (rcond below POLISH_RCOND).
POLISH_FIT = 1e-4
POLISH_RCOND = 1e-4


class CrveWarning(UserWarning):
    """A degenerate case that crve handles in a documented way (leverage one, few clusters...)."""


def normalize_variant(variant: str) -> str:
    if not isinstance(variant, str):
        raise ValueError(f"variant must be a string such as 'CV1'; got {variant!r}")
    key = variant.strip().upper()
    key = _ALIASES.get(key, key)
    if key == "CR3":
        raise ValueError("variant 'CR3' is ambiguous: crve's CV3 = (G-1)/G x clubSandwich's CR3; use 'CV3'")
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)} (or 'CR2', 'stata')")
    return key


def _core_variant(variant: str) -> str:
    """The cluster adjustment behind a variant (HC_k is CV_k with singleton clusters)."""
    return {"HC0": "CV0", "HC1": "CV1", "HC2": "CV2", "HC3": "CV3"}.get(variant, variant)


@dataclass
class WaldTest:
    """Joint test of R b = r."""

    statistic: float
    pvalue: float
    df_num: int
    df_denom: float
    test: str
    R: np.ndarray
    r: np.ndarray

    def __repr__(self) -> str:
        den = "inf" if not np.isfinite(self.df_denom) else f"{self.df_denom:.4g}"
        stat = "chi2" if self.test == "chi2" else "F"
        return f"<WaldTest {self.test}: {stat}({self.df_num}, {den}) = {self.statistic:.6g}, p = {self.pvalue:.4g}>"


@dataclass
class ContrastTest:
    """t test of c'b = value."""

    estimate: float
    std_error: float
    statistic: float
    df: float
    pvalue: float
    conf_int: tuple[float, float]


@dataclass
class _Data:
    y: np.ndarray
    X: np.ndarray
    codes: np.ndarray | None = None  # the rows' cluster codes (None: every row its own cluster)


POLISH_BREAD_MAX = 2e7  # N K^2 up to which a polished fit also refines (X'X)^-1 against the rows


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a * b = p + e exactly, elementwise (Dekker's product with Veltkamp splitting)."""
    p = a * b
    A = a * 134217729.0
    ah = A - (A - a)
    al = a - ah
    B = b * 134217729.0
    bh = B - (B - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _refined_bread(X: Any, A: np.ndarray, threads: int) -> np.ndarray | None:
    """(X'X)^-1 refined twice against X'X summed from the rows in double-double (_core.gram_dd):
    A += A (I - G A), each entry of I - G A an exact sum rounded once (math.fsum of exact
    products). The inverse from the statistics is then good to about the last digit wherever the
    scaled X'X keeps rcond above about 1e-8 (NIST Longley: SE digits 12.4 -> 14 and more)."""
    import math

    from . import _core

    Ghi, Glo = (np.asarray(m) for m in _core.gram_dd(X, threads))
    K = A.shape[0]
    for _ in range(2):
        E = np.empty((K, K))
        for j in range(K):
            p, e = _two_prod(Ghi, np.broadcast_to(A[:, j], (K, K)))
            q, f = _two_prod(Glo, np.broadcast_to(A[:, j], (K, K)))
            for i in range(K):
                E[i, j] = math.fsum([float(i == j), *(-p[i]), *(-e[i]), *(-q[i]), *(-f[i])])
        A = A + A @ E
        if not np.isfinite(A).all():
            return None
    return (A + A.T) / 2


def _polish(data: "_Data", beta: np.ndarray, bread: np.ndarray, threads: int) \
        -> tuple[np.ndarray, float | None, np.ndarray | None]:
    """Coefficients refined twice from the rows' residuals (delta = (X'X)^-1 X'u, with u = y - X b
    in double-double, _core.residuals_dd), the SSR of those residuals and, for N K^2 up to
    POLISH_BREAD_MAX, (X'X)^-1 refined against the rows' own X'X. Near-exact fits and ill-conditioned designs
    lose digits when the residuals are expanded from sums of squares; the rows keep them (NIST
    Norris, Pontius, Wampler2, Longley)."""
    from . import _core
    from ._inputs import core_matrix

    X = core_matrix(data.X)
    N, K = len(data.y), len(beta)
    refined = _refined_bread(X, bread, threads) if N * K * K <= POLISH_BREAD_MAX and K <= 64 else None
    if refined is not None:
        bread = refined

    def xtu(u: np.ndarray) -> np.ndarray:  # X'u: one BLAS pass for a 2-D X, column by column otherwise
        if not isinstance(X, list):
            return X.T @ u
        return np.array([float(x[0]) * u.sum() if x.strides[0] == 0 else float(np.dot(x, u)) for x in X])

    for _ in range(2):
        u = _core.residuals_dd(data.y, X, np.ascontiguousarray(beta, dtype=float), threads)
        step = bread @ xtu(u)
        if not np.isfinite(step).all():
            return beta, None, None
        beta = beta + step
    u = _core.residuals_dd(data.y, X, np.ascontiguousarray(beta, dtype=float), threads)
    ssr = float(np.dot(u, u))
    return (beta, ssr, refined) if np.isfinite(ssr) else (beta, None, None)


@dataclass
class Result:
    """Coefficients with a cluster-robust (or HC / classical) covariance.

    Attributes ``params``, ``bse``, ``tvalues``, ``pvalues``, ``df`` (per coefficient) are numpy
    arrays, or pandas Series when the columns have names. ``cov`` is K x K.
    """

    variant: str
    dof_rule: Any
    names: list[str]
    nobs: int
    n_clusters: int
    _params: np.ndarray
    _cov: np.ndarray
    _df: np.ndarray
    _model: Any = field(repr=False)
    _stats: Any = field(repr=False)
    _data: _Data | None = field(repr=False)
    _singletons: bool = field(repr=False)
    _threads: int = field(repr=False, default=0)
    _named: bool = field(repr=False, default=False)
    leverage_one: int = 0
    notes: list[str] = field(default_factory=list)
    _leverage_max: float = field(repr=False, default=0.0)  # largest leverage below one (adjusted variants)
    _negative: list = field(repr=False, default_factory=list)  # variances that rounded below zero (set to 0)
    _ssr: float | None = field(repr=False, default=None)  # SSR from the rows' residuals (polished fits)
    _bread: np.ndarray | None = field(repr=False, default=None)  # (X'X)^-1 refined against the rows (polished)
    # Set by crve.ols: the formula, the outcome's name, rows dropped for missing values (and by
    # column), and the cluster column(s).
    formula: str | None = None
    depvar: str | None = None
    n_dropped: int = 0
    dropped_by: dict = field(default_factory=dict)
    cluster_name: str | None = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def _from_stats(cls, stats: Any, *, variant: str, dof: Any, data: _Data | None, singletons: bool,
                    threads: int | None, named: bool = True, design: Any = None) -> "Result":
        from .stats import model_or_error

        model = model_or_error(stats, threads, design)
        beta = np.asarray(model.beta)
        if not (np.abs(beta) < 1e300).all():  # a column whose squares underflowed looks constant
            bad = [n for n, b in zip(stats.names, beta) if not abs(b) < 1e300]
            raise ValueError(f"the coefficients of {', '.join(map(str, bad))} are not finite: values below about "
                             "1e-150 or above 1e150 in magnitude make their squares under- or overflow double "
                             "precision; rescale those columns")
        G = int(model.N) if singletons else stats.n_clusters
        params, ssr, bread = np.asarray(model.beta), None, None
        if data is not None and (float(model.ssr) <= POLISH_FIT * max(float(model.tss), 0.0)
                                 or float(model.rcond) < POLISH_RCOND):
            params, ssr, bread = _polish(data, params, np.asarray(model.bread()), 0 if threads is None else int(threads))
        res = cls(variant="", dof_rule=None, names=stats.names, nobs=int(round(model.N)), n_clusters=G,
                  _params=params, _cov=np.empty(0), _df=np.empty(0), _model=model,
                  _stats=stats, _data=data, _singletons=singletons, _threads=0 if threads is None else int(threads),
                  _named=named, _ssr=ssr, _bread=bread,
                  # rows a streaming constructor dropped for missing values (ols sets its own)
                  n_dropped=int(getattr(stats, "n_dropped", 0)), dropped_by=dict(getattr(stats, "dropped_by", {})))
        out = res._with(variant, dof)
        rcond = float(model.rcond)
        if rcond < ILL_CONDITIONED:
            warnings.warn(conditioning_text(rcond), CrveWarning, stacklevel=3)
        return out

    def with_variant(self, variant: str, dof: Any = "auto") -> "Result":
        """The same fit with another covariance variant / dof rule (no pass over the rows for CV)."""
        return self._with(variant, dof)

    def _with(self, variant: str, dof: Any) -> "Result":
        v = normalize_variant(variant)
        rule = parse_dof(dof)
        if rule == "auto":
            rule = {"CV0": "G-1", "CV1": "G-1", "CV3": "G-1", "CV3J": "G-1", "CV2": "satterthwaite"}.get(v, "N-K")
        if self.n_clusters < 2 and v.startswith("CV"):
            raise ValueError(f"cluster-robust variance needs at least 2 clusters; got {self.n_clusters}")
        new = Result(variant=v, dof_rule=rule, names=self.names, nobs=self.nobs, n_clusters=self.n_clusters,
                     _params=self._params, _cov=np.empty(0), _df=np.empty(0), _model=self._model,
                     _stats=self._stats, _data=self._data, _singletons=self._singletons, _threads=self._threads,
                     _named=self._named, formula=self.formula, depvar=self.depvar, n_dropped=self.n_dropped,
                     dropped_by=self.dropped_by, cluster_name=self.cluster_name, _ssr=self._ssr,
                     _bread=self._bread)
        eye = np.eye(len(self._params))
        # Satterthwaite dof come from the same traversal as the covariance.
        with np.errstate(over="ignore"):  # a variance beyond float64 becomes inf and is reported by _warn
            new._cov, new.leverage_one, omega, new._leverage_max = new._covariance(
                v, eye if rule == "satterthwaite" else None)
        new._df = satterthwaite(lambda R, full: omega, eye) if omega is not None else new._dof(rule, eye)
        diag = np.diag(new._cov)
        if np.isnan(diag).any():  # finite data: only overflow (inf - inf, inf * 0) makes a NaN variance
            new._cov = new._cov.copy()
            np.fill_diagonal(new._cov, np.where(np.isnan(diag), np.inf, diag))
        new._negative = [n for n, v in zip(new.names, np.diag(new._cov)) if v < 0]
        if new._negative:  # only rounding makes a variance negative: its value is zero to rounding
            np.fill_diagonal(new._cov, np.maximum(np.diag(new._cov), 0.0))
        new._warn()
        return new

    # -- covariance ---------------------------------------------------------------------
    def _row_pass(self, variant: str, R: np.ndarray | None = None, full: bool = False) -> dict:
        if self._data is None:
            raise ValueError(f"variant {variant} needs the rows (every row its own cluster); this result was "
                             "built from cluster statistics only. Use crve.cluster_robust(y, X, ...) instead")
        from ._inputs import core_matrix

        return self._model.row_pass(self._data.y, core_matrix(self._data.X), _core_variant(variant), R, full, self._threads)

    def _covariance(self, v: str, R: np.ndarray | None = None) -> tuple[np.ndarray, int, dict | None, float]:
        """(covariance, leverage-one count, Omega sums of the rows of R or None, the largest
        leverage below one)."""
        m = self._model
        N, K = m.N, m.K
        if v == "iid":
            if R is not None:
                raise ValueError("Satterthwaite dof apply to the robust variants (HC*, CV*), not to 'iid'")
            bread = np.asarray(m.bread()) if self._bread is None else self._bread
            return self.ssr / (N - K) * bread, 0, None, 0.0
        if not (v.startswith("HC") or self._singletons):
            if R is None:
                cov, lev, lev_max = m.cluster_cov(v, self._threads)
                return np.asarray(cov), int(lev), None, float(lev_max)
            cov, lev, omega, lev_max = m.cluster_cov_dof(v, R, self._threads)
            return np.asarray(cov), int(lev), omega, float(lev_max)
        rp = self._row_pass(v, R)
        cov = np.asarray(rp["bread_meat_bread"])
        if v in ("HC1", "CV1"):
            cov = cov * N / (N - K)  # CV1 with G = N has factor N/(N-1)(N-1)/(N-K) = N/(N-K)
        elif v == "CV3":
            cov = cov * (N - 1) / N
        elif v == "CV3J":
            j = np.asarray(rp["jk_mean_times_n"])
            cov = (N - 1) / N * (cov - np.outer(j, j) / N)
        return cov, int(rp["leverage_one"]), rp.get("omega"), float(rp["leverage_max"])

    def _omega(self, R: np.ndarray, full: bool) -> dict:
        v = self.variant
        if v == "iid":
            raise ValueError("Satterthwaite dof apply to the robust variants (HC*, CV*), not to 'iid'")
        if v.startswith("HC") or self._singletons:
            return self._row_pass(v, np.asarray(R, dtype=float), full)["omega"]
        return self._model.omega_sums(_core_variant(v), np.asarray(R, dtype=float), full, self._threads)

    def _dof(self, rule: Any, R: np.ndarray) -> np.ndarray:
        q = R.shape[0]
        if isinstance(rule, float):
            return np.full(q, rule)
        if rule == "G-1":
            return np.full(q, float(self.n_clusters - 1))
        if rule == "N-K":
            return np.full(q, float(self.nobs - len(self._params)))
        if rule == "normal":
            return np.full(q, np.inf)
        return satterthwaite(self._omega, R)

    def _exact_fit(self) -> bool:
        """R^2 = 1 to rounding: the sum of squared residuals is below 1e-12 of the total."""
        m = self._model
        return self.ssr <= EXACT_FIT * max(float(m.tss), 0.0)

    def _warn(self) -> None:
        if self._exact_fit():
            msg = ("the model fits the data exactly (residual sum of squares below 1e-12 of the total): the "
                   "residuals are rounding noise, so standard errors are zero up to rounding and tests are not "
                   "meaningful")
            self.notes.append(msg)
            warnings.warn(msg, CrveWarning, stacklevel=4)
        tss = max(float(self._model.tss), 0.0)
        if self._ssr is None and not self._exact_fit() and self.ssr < NEAR_EXACT_STATS * tss:
            digits = -np.log10(np.finfo(float).eps * tss / self.ssr)
            msg = (f"the model fits almost exactly (residual sum of squares {self.ssr / tss:.1e} of the total) and "
                   "was fitted from cluster statistics alone, with no rows to refine the residuals from: standard "
                   f"errors and tests keep about {digits:.0f} significant digits")
            self.notes.append(msg)
            warnings.warn(msg, CrveWarning, stacklevel=4)
        if float(self._model.rcond) < ILL_CONDITIONED:
            self.notes.append(conditioning_text(float(self._model.rcond)))
        if self._negative and not self._exact_fit():
            msg = (f"the variance of {', '.join(self._negative)} rounded below zero and is reported as 0: it is "
                   "zero to rounding at the data's scale (large offsets relative to the spread, as with an "
                   "uncentred regressor and a tiny intercept standard error, cause this; centre the columns for "
                   "more digits)")
            self.notes.append(msg)
            warnings.warn(msg, CrveWarning, stacklevel=4)
        var = np.diag(self._cov)
        if not np.isfinite(var).all():
            bad = [n for n, v in zip(self.names, var) if not np.isfinite(v)]
            msg = (f"the variance of {', '.join(bad)} overflows double precision (reported as inf): the "
                   "column's units are extreme (rescale it) or the data barely identify it")
            self.notes.append(msg)
            warnings.warn(msg, CrveWarning, stacklevel=4)
        if self.leverage_one and self.variant in ("CV2", "CV3", "CV3J", "HC2", "HC3"):
            what = "rows" if (self.variant.startswith("HC") or self._singletons) else "clusters"
            msg = (f"{self.leverage_one} {what} have leverage one (I - H_gg singular): "
                   f"{self.variant} uses the pseudo-inverse there"
                   + ("; the jackknife leaves those regressors unidentified" if "3" in self.variant else ""))
            self.notes.append(msg)
            warnings.warn(msg, CrveWarning, stacklevel=4)
        gap = 1.0 - self._leverage_max
        if self.variant in ("CV2", "CV3", "CV3J", "HC2", "HC3") and gap < NEAR_LEVERAGE_ONE:
            what = "a row" if (self.variant.startswith("HC") or self._singletons) else "a cluster"
            digits = -np.log10(100 * np.finfo(float).eps / gap)
            msg = (f"{what} has leverage 1 - {gap:.1e} (I - H_gg nearly singular; the regressors are almost "
                   f"identified by it alone): {self.variant}'s adjustment amplifies rounding, so about "
                   f"{max(digits, 0):.0f} significant digits are left (100 eps / (1 - leverage), relative to the "
                   "largest variance)")
            self.notes.append(msg)
            warnings.warn(msg, CrveWarning, stacklevel=4)
        G = self.n_clusters
        if self.variant.startswith("CV") and not self._singletons and G < FEW_CLUSTERS:
            self.notes.append(f"few clusters (G = {G}): t tests with CV1 and T(G-1) can over-reject; prefer CV2 with "
                              "Satterthwaite dof or the wild cluster bootstrap (res.wild_bootstrap)")
        if self.dof_rule == "satterthwaite" and np.isfinite(self._df).all() and self._df.min() < 4:
            low = [n for n, d in zip(self.names, self._df) if d < 4]
            self.notes.append(f"Satterthwaite dof below 4 for {', '.join(low)}: those p-values rest on very few "
                              "effective clusters")

    # -- public accessors ---------------------------------------------------------------
    def _out(self, a: np.ndarray) -> Any:
        if self._named:
            import pandas as pd

            return pd.Series(a, index=self.names)
        return a

    @property
    def params(self) -> Any:
        return self._out(self._params)

    @property
    def cov(self) -> Any:
        if self._named:
            import pandas as pd

            return pd.DataFrame(self._cov, index=self.names, columns=self.names)
        return self._cov

    @property
    def bse(self) -> Any:
        return self._out(np.sqrt(np.diag(self._cov)))

    def _t(self) -> np.ndarray:
        """t statistics; 0/0 (an exact fit: estimate and standard error both zero) is NaN, which the
        result's notes explain."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._params / np.sqrt(np.diag(self._cov))

    @property
    def tvalues(self) -> Any:
        return self._out(self._t())

    @property
    def df(self) -> Any:
        return self._out(self._df)

    @property
    def pvalues(self) -> Any:
        return self._out(2 * _dist.t_sf(np.abs(self._t()), self._df))

    @property
    def ssr(self) -> float:
        """Sum of squared residuals (from the rows' residuals when the fit was polished)."""
        return float(self._model.ssr) if self._ssr is None else self._ssr

    @property
    def rsquared(self) -> float:
        """1 - SSR/TSS (TSS about the mean with an intercept); NaN when the outcome is constant."""
        tss = float(self._model.tss)
        return float(1 - self.ssr / tss) if tss > 0 else float("nan")

    def conf_int(self, alpha: float = 0.05) -> Any:
        """Two-sided 1 - alpha intervals from T(df) per coefficient (K x 2)."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {alpha}")
        se = np.sqrt(np.diag(self._cov))
        crit = _dist.t_ppf(1 - alpha / 2, self._df)
        ci = np.column_stack([self._params - crit * se, self._params + crit * se])
        if self._named:
            import pandas as pd

            return pd.DataFrame(ci, index=self.names, columns=["lower", "upper"])
        return ci

    # -- reporting ----------------------------------------------------------------------
    def tidy(self, alpha: float = 0.05) -> Any:
        """One row per coefficient: term, estimate, std_error, statistic, df, p_value, conf_low,
        conf_high (a pandas DataFrame, as broom's ``tidy`` in R)."""
        import pandas as pd

        ci = np.asarray(self.conf_int(alpha))
        se = np.sqrt(np.diag(self._cov))
        t = self._t()
        return pd.DataFrame({"term": self.names, "estimate": self._params, "std_error": se, "statistic": t,
                             "df": self._df, "p_value": 2 * _dist.t_sf(np.abs(t), self._df),
                             "conf_low": ci[:, 0], "conf_high": ci[:, 1]})

    def summary(self, alpha: float = 0.05) -> Any:
        """A :class:`~crve.report.Report` (print it; ``.to_markdown()``, ``.to_latex()``; HTML in
        notebooks): N, clusters and their sizes, the variant and its small-sample factor, the
        dof rule and reference distribution, dropped rows, the coefficient table and warnings."""
        from .report import result_report

        return result_report(self, alpha)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def compare(self, variants: Sequence[Any] = ("iid", "CV1", "CV2", "CV3")) -> Any:
        """Side-by-side standard errors, dof and p-values under several variants (a pandas
        DataFrame with a column level per variant). Entries are variant names (with their default
        dof rule) or ``(variant, dof)`` pairs. CV variants reuse the cluster statistics; HC
        variants make one pass over the rows.

        >>> import numpy as np, crve
        >>> rng = np.random.default_rng(2)
        >>> g = np.repeat(np.arange(12), 30)
        >>> X = np.column_stack([np.ones(360), rng.normal(size=12)[g]])
        >>> res = crve.cluster_robust(X @ [1, 0] + rng.normal(size=12)[g] + rng.normal(size=360), X, g, names=["c", "x"])
        >>> res.compare(["iid", "CV1"]).columns.get_level_values(0).unique().tolist()
        ['estimate', 'iid', 'CV1 (G-1)']
        """
        import pandas as pd

        frames = {"estimate": pd.DataFrame({"": self._params}, index=self.names)}
        for label, r in self._variants(variants):
            t = r.tidy()
            frames[label] = pd.DataFrame({"std_error": t.std_error.to_numpy(), "df": t.df.to_numpy(),
                                          "p_value": t.p_value.to_numpy()}, index=self.names)
        return pd.concat(frames, axis=1)

    def plot(self, variants: Sequence[Any] = ("iid", "CV1", "CV2", "CV3"), ax: Any = None, **kwargs: Any) -> Any:
        """Coefficient plot: estimates with confidence intervals under each variant
        (:func:`crve.plot.plot_coefficients`; needs matplotlib)."""
        from .plot import plot_coefficients

        return plot_coefficients(self, variants=variants, ax=ax, **kwargs)

    def _variants(self, variants: Sequence[Any]) -> list[tuple[str, "Result"]]:
        """(label, result) for each entry of ``compare`` / ``plot``: a variant name (default dof)
        or a ``(variant, dof)`` pair; crve's warnings are silenced (the summary carries them)."""
        out = []
        for item in variants:
            v, dof = item if isinstance(item, (tuple, list)) else (item, "auto")
            if normalize_variant(v) == self.variant and dof in ("auto", self.dof_rule):
                r = self
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CrveWarning)
                    r = self._with(v, dof)
            out.append((r.variant if r.variant == "iid" or r.dof_rule == "N-K" else f"{r.variant} ({r.dof_rule})", r))
        return out

    def diagnostics(self, *, jackknife: bool = True) -> Any:
        """Design diagnostics from the cluster statistics (:class:`crve.diagnostics.Diagnostics`):
        ICCs, Moulton factors, cluster sizes, treated clusters, leverage, partial leverage,
        leave-one-cluster-out estimates (``jackknife=False`` skips them) and G*(rho)."""
        from .diagnostics import Diagnostics

        return Diagnostics(self, jackknife=jackknife)

    # -- tests --------------------------------------------------------------------------
    def _restriction(self, R: Any, r: Any) -> tuple[np.ndarray, np.ndarray]:
        return check_restriction(R, r, len(self._params))

    def t_test(self, c: Any, value: float = 0.0, alpha: float = 0.05) -> ContrastTest:
        """t test of c'b = value with this result's variant and dof rule (Satterthwaite per contrast)."""
        R, r = self._restriction(c, [value])
        if R.shape[0] != 1:
            raise ValueError("t_test takes one contrast; use wald_test for joint hypotheses")
        est = float(R[0] @ self._params)
        se = float(np.sqrt(R[0] @ self._cov @ R[0]))
        df = float(self._dof(self.dof_rule, R)[0])
        t = (est - r[0]) / se
        crit = _dist.t_ppf(1 - alpha / 2, df)
        return ContrastTest(est, se, t, df, float(2 * _dist.t_sf(abs(t), df)), (est - crit * se, est + crit * se))

    def wald_test(self, R: Any, r: Any = None, test: str = "F") -> WaldTest:
        """Wald test of R b = r: ``test="F"`` (Q/q against F(q, G-1) for cluster variants, F(q, N-K)
        otherwise), ``"chi2"`` (Q against chi2(q)) or ``"HTZ"`` (Pustejovsky–Tipton, CV2 only).
        """
        R, r = self._restriction(R, r)
        q = R.shape[0]
        kind = test.strip().upper() if isinstance(test, str) else test
        if kind not in ("F", "CHI2", "HTZ"):
            raise ValueError(f"unknown test {test!r}; use 'F', 'chi2' or 'HTZ'")
        if np.linalg.matrix_rank(R) < q:
            raise ValueError(f"the {q} restrictions in R are linearly dependent")
        clustered = self.variant.startswith("CV") and not self._singletons
        if clustered and q > self.n_clusters - 1:
            raise ValueError(f"cannot test {q} restrictions with {self.n_clusters} clusters: the cluster-robust "
                             f"covariance has rank at most G - 1 = {self.n_clusters - 1}")
        V = R @ self._cov @ R.T
        rank = covariance_rank(V)
        if rank < q:
            raise ValueError(f"R V R' has rank {rank} < {q} restrictions under {self.variant}: the hypothesis "
                             "is not testable with this covariance")
        diff = R @ self._params - r
        Q = float(diff @ np.linalg.solve(V, diff))
        if kind == "CHI2":
            return WaldTest(Q, float(_dist.chi2_sf(Q, q)), q, np.inf, "chi2", R, r)
        if kind == "HTZ":
            if self.variant != "CV2":
                raise ValueError(f"the HTZ test uses CV2 (CR2); this result is {self.variant}: "
                                 "call res.with_variant('CV2').wald_test(..., test='HTZ')")
            nu, _ = htz_pieces(self._omega, R)
            df_denom = nu - q + 1
            F = max(df_denom / nu, 0.0) * Q / q
            p = float(_dist.f_sf(F, q, df_denom)) if df_denom > 0 else np.nan
            return WaldTest(F, p, q, df_denom, "HTZ", R, r)
        rule = self.dof_rule
        if isinstance(rule, float):
            den = rule
        elif rule == "normal":
            den = np.inf
        elif clustered:
            den = float(self.n_clusters - 1)
        else:
            den = float(self.nobs - len(self._params))
        F = Q / q
        p = float(_dist.chi2_sf(Q, q)) if not np.isfinite(den) else float(_dist.f_sf(F, q, den))
        return WaldTest(F, p, q, den, "F", R, r)

    # -- wild bootstrap -----------------------------------------------------------------
    def wild_bootstrap(self, param: Any = None, *, bootcluster: Any = None, **options: Any) -> Any:
        """Wild (cluster) bootstrap test of ``param = h0`` (or ``R b = r``) on this fit's data and
        clusters; options as in :func:`crve.wild_cluster_bootstrap`. The bootstrap studentises
        with CV1 or CV3 as ``bootstrap_type`` says, whatever this result's variant.
        Without ``bootcluster`` it runs on the cluster statistics already built (no pass over
        the rows).
        """
        from ._inputs import Design, factorize_clusters
        from .bootstrap import _model_on_cells, _run

        if not self._singletons and bootcluster is None:
            G = self._stats.n_clusters
            dense = np.arange(G, dtype=np.int64)
            return _run(self._model, self.names, dense, dense, rows=False, param=param, **_bootstrap_options(options))
        if self._data is None:
            raise ValueError("this result was built from cluster statistics only: a bootstrap with bootcluster "
                             "(or without clusters) needs the rows; use crve.wild_cluster_bootstrap(y, X, ...)")
        N = len(self._data.y)
        rows = self._singletons
        if rows and bootcluster is not None:
            raise ValueError("bootcluster needs clusters (the variance clustering); this fit has none")
        var_codes = np.arange(N, dtype=np.int64) if rows else self._data.codes
        boot_codes = None if bootcluster is None else factorize_clusters(bootcluster, N)[0]
        d = Design(self._data.y, self._data.X, self.names, None, None, 0)
        model, cell_var, cell_boot = _model_on_cells(d, var_codes, N if rows else None, boot_codes,
                                                     options.get("threads"))
        return _run(model, self.names, cell_var, cell_boot, rows=rows, param=param, **_bootstrap_options(options))

    def __repr__(self) -> str:
        return (f"<crve.Result {self.variant} (dof {self.dof_rule}): nobs={self.nobs}, "
                f"n_clusters={self.n_clusters}, K={len(self._params)}>")


def conditioning_text(rcond: float) -> str:
    """The normal equations lose digits as X'X loses rank: the coefficients' accuracy relative to
    their norm is about 100 eps / rcond (rcond of the equilibrated X'X; below 1e-12 the design is
    refused). The factor 100 is measured: forming X'X and mapping back to the caller's basis add
    to the solver's eps / rcond (tests/test_adversarial.py, fuzz findings in RELIABILITY.md)."""
    digits = -np.log10(100 * np.finfo(float).eps / rcond)  # 100: forming X'X and mapping back add to eps / rcond
    acc = f"about {digits:.0f} significant digits" if digits >= 1 else "less than one significant digit"
    return (f"X'X is ill-conditioned (reciprocal condition number {rcond:.1e} after scaling): coefficients and "
            f"standard errors are accurate to {acc}; nearly collinear columns are the usual cause")


def covariance_rank(V: np.ndarray, tol: float | None = 1e-12) -> Any:
    """Rank of the covariance V of R b (q x q, or a stack of them), judged on its correlation
    form D^-1/2 V D^-1/2 so that restrictions on coefficients of very different scales (income
    in cents next to a dummy) are not mistaken for dependent ones. A restriction with zero
    variance adds nothing to the rank.

    >>> int(covariance_rank(np.diag([1e-20, 1.0])))
    2
    """
    d = correlation_scale(V)
    return np.linalg.matrix_rank(V / (d[..., :, None] * d[..., None, :]), tol=tol, hermitian=True)


def check_restriction(R: Any, r: Any, K: int) -> tuple[np.ndarray, np.ndarray]:
    """R (q x K) and r (q, zeros when None) as float arrays, with errors naming what is wrong."""
    Rm = np.atleast_2d(np.asarray(R, dtype=float))
    if Rm.ndim != 2 or Rm.shape[1] != K:
        raise ValueError(f"R must have {K} columns (one per coefficient); got shape {np.shape(R)}")
    rv = np.zeros(Rm.shape[0]) if r is None else np.atleast_1d(np.asarray(r, dtype=float))
    if rv.shape != (Rm.shape[0],):
        raise ValueError(f"r must have {Rm.shape[0]} entries; got shape {rv.shape}")
    if not (np.isfinite(Rm).all() and np.isfinite(rv).all()):
        raise ValueError("R and r must be finite")
    return Rm, rv


def _bootstrap_options(options: dict) -> dict:
    allowed = {"h0": 0.0, "R": None, "r": None, "weights": "rademacher", "B": 9999, "seed": None,
               "impose_null": True, "pvalue": "symmetric", "bootstrap_type": "11", "conf_int": True,
               "level": 0.95, "threads": None, "progress": None}
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)} and bootcluster")
    return {**allowed, **options}
