"""How much trouble is a clustered design in? Diagnostics from the cluster statistics alone.

``res.diagnostics()`` returns a :class:`Diagnostics` with

- the intraclass correlation (ICC) of the residuals and of every regressor (one-way ANOVA
  estimator for unequal cluster sizes), the Moulton factor each pair predicts for the ratio of
  cluster-robust to classical standard errors, and the ratio actually observed;
- cluster sizes (min, mean, max, coefficient of variation) and, for every two-valued regressor
  constant within clusters (a cluster-level treatment), the number of treated and control
  clusters;
- the cluster leverage ``L_g = tr(C_g (X'X)^-1)``, the partial leverage of every coefficient,
  the leave-one-cluster-out coefficients ``beta_(g)`` and the effective number of clusters
  ``G*(rho)`` of Carter, Schnepel and Steigerwald (2017), with the formulas of ``summclust``
  (MacKinnon, Nielsen and Webb 2023).

Everything is computed from the G small blocks of the fit (no second pass over the rows): the
per-cluster Gram matrices give the regressors' cluster sums, and the core returns the residual
sums, leverages and jackknife in one multithreaded traversal.

>>> import crve
>>> from crve.datasets import student_performance
>>> res = crve.ols("G3 ~ absences + studytime", student_performance(seed=1), cluster="school")
>>> d = res.diagnostics()
>>> round(float(d.leverage.sum()), 10)      # cluster leverages sum to K
3.0
>>> bool(d.icc_residual > 0.1)              # pupils in a school share a shock
True
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .sums import pack_index

__all__ = ["Diagnostics", "anova_icc", "moulton_factor", "FEW_TREATED", "LARGE_MOULTON"]

FEW_TREATED = 10     # fewer treated (or control) clusters than this: CV1 t tests over-reject (MacKinnon-Webb 2017)
LARGE_MOULTON = 1.2  # classical SEs flagged when the Moulton factor predicts they are this much too small


def anova_icc(n: np.ndarray, sums: np.ndarray, ss_within: np.ndarray) -> float:
    """One-way ANOVA estimator of the intraclass correlation with unequal cluster sizes.

    ``n``: rows per cluster; ``sums``: the variable's sum per cluster (any common shift); ``ss_within``:
    its within-cluster sum of squares about the cluster mean. With ``MSB = SSB/(G-1)``,
    ``MSW = SSW/(N-G)`` and ``n0 = (N - sum n_g^2 / N)/(G-1)``::

        icc = (MSB - MSW) / (MSB + (n0 - 1) MSW)

    It can be negative (less alike within clusters than between). NaN when undefined: fewer
    than two clusters, every cluster a single row, or a variable constant over the sample.

    >>> import numpy as np
    >>> round(anova_icc(np.array([2, 2]), np.array([2.0, 6.0]), np.array([0.0, 0.0])), 6)  # clusters (1,1), (3,3)
    1.0
    """
    n = np.asarray(n, dtype=float)
    sums = np.asarray(sums, dtype=float)
    N, G = n.sum(), len(n)
    if G < 2 or N <= G:
        return float("nan")
    means = sums / n
    grand = sums.sum() / N
    msb = float(np.sum(n * (means - grand) ** 2)) / (G - 1)
    msw = float(np.clip(ss_within, 0, None).sum()) / (N - G)
    n0 = (N - float(np.sum(n * n)) / N) / (G - 1)
    den = msb + (n0 - 1) * msw
    return float((msb - msw) / den) if den > 0 else float("nan")


def moulton_factor(icc_x: Any, icc_u: float, sizes: np.ndarray) -> Any:
    """Moulton's (1986) predicted ratio of cluster-robust to classical standard errors,
    ``sqrt(1 + (var(n_g)/n_bar + n_bar - 1) rho_x rho_u)`` (population variance of the cluster
    sizes; with equal sizes ``sqrt(1 + rho_x rho_u (n_bar - 1))``). NaN where the bracket is not
    positive.

    >>> round(float(moulton_factor(1.0, 0.02, np.full(50, 36))), 4)
    1.3038
    """
    sizes = np.asarray(sizes, dtype=float)
    nbar = sizes.mean()
    inside = 1.0 + (sizes.var() / nbar + nbar - 1.0) * np.asarray(icc_x, dtype=float) * icc_u
    return np.sqrt(np.where(inside > 0, inside, np.nan))


class Diagnostics:
    """Design diagnostics of a clustered fit; build with :meth:`crve.Result.diagnostics`.

    Attributes (pandas objects indexed by coefficient name or cluster label):

    - ``icc_residual`` (float) and ``icc`` (Series; NaN for the intercept)
    - ``moulton`` (Series): predicted robust/classical SE ratio of each slope (NaN for the
      intercept, which Moulton's formula does not cover); ``se_ratio`` (Series): the observed ratio, robust variant
      ``se_ratio_variant`` (this fit's, or CV1 for a classical fit)
    - ``sizes`` (Series, rows per cluster) and ``size_summary`` (dict: min, mean, max, cv)
    - ``treated`` (DataFrame: treated / control clusters of each cluster-level two-valued regressor)
    - ``leverage`` (Series), ``partial_leverage`` and ``beta_loo`` (DataFrames, cluster x coefficient),
      ``jackknife_singular`` (clusters whose ``X'X - C_g`` is singular: beta_(g) not identified)
    - ``effective_clusters(rho)`` (DataFrame of G*(rho)); ``alarms`` (list of plain-language warnings)
    """

    def __init__(self, res: Any, *, jackknife: bool = True):
        import pandas as pd

        if res._singletons:
            raise ValueError("diagnostics describe clusters; this fit has none (every row its own cluster). "
                             "Fit with clusters=... (or cluster=... in crve.ols)")
        stats, model = res._stats, res._model
        self.names = list(res.names)
        self.variant = res.variant
        K, G = len(self.names), stats.n_clusters
        self.n_clusters, self.nobs = G, res.nobs
        labels = pd.Index(stats.labels, name=res.cluster_name or "cluster")
        d = model.diagnostics(jackknife, res._threads)
        n = stats.counts.astype(float)
        self.sizes = pd.Series(stats.counts, index=labels, name="n")
        self.size_summary = {"min": int(n.min()), "mean": float(n.mean()), "max": int(n.max()),
                             "cv": float(n.std(ddof=1) / n.mean()) if G > 1 else float("nan")}

        # Per-cluster sums of every regressor from the shifted Gram of z = [x - m, 1, y - m_y].
        packed = np.asarray(stats._core.packed)
        xsum = np.column_stack([packed[:, pack_index(K, k)] for k in range(K)])
        xsq = np.column_stack([packed[:, pack_index(k, k)] for k in range(K)])
        ssw = xsq - xsum ** 2 / n[:, None]
        intercept = int(model.intercept)
        self._intercept = self.names[intercept] if intercept >= 0 else None
        icc_x = np.array([np.nan if k == intercept else anova_icc(n, xsum[:, k], ssw[:, k]) for k in range(K)])
        u_sum, uu = np.asarray(d["u_sum"]), np.asarray(d["uu"])
        self.icc_residual = anova_icc(n, u_sum, uu - u_sum ** 2 / n)
        self.icc = pd.Series(icc_x, index=self.names, name="icc")
        self.moulton = pd.Series(moulton_factor(icc_x, self.icc_residual, n), index=self.names, name="moulton")
        self.se_ratio_variant = res.variant if res.variant != "iid" else "CV1"
        robust = res if res.variant != "iid" else res._variants(["CV1"])[0][1]
        naive = res if res.variant == "iid" else res._variants(["iid"])[0][1]
        self.se_ratio = pd.Series(np.sqrt(np.diag(robust._cov) / np.diag(naive._cov)), index=self.names,
                                  name="se_ratio")

        # Cluster-level two-valued regressors ("treatments").
        shift = np.asarray(stats._core.shift[:K])
        rows = []
        for k in range(K):
            if k == intercept or not np.all(np.abs(ssw[:, k]) <= 1e-12 * np.maximum(np.abs(xsq[:, k]), 1.0)):
                continue
            level = shift[k] + xsum[:, k] / n
            values = np.unique(level)
            if len(values) == 2:
                hi = level == values[1]
                rows.append((self.names[k], int(hi.sum()), int((~hi).sum()), float(values[1]), float(values[0])))
        self.treated = pd.DataFrame(rows, columns=["term", "treated", "control", "treated_value", "control_value"]
                                    ).set_index("term")

        # summclust quantities.
        self.leverage = pd.Series(np.asarray(d["leverage"]), index=labels, name="leverage")
        self.partial_leverage = pd.DataFrame(np.asarray(d["partial"]), index=labels, columns=self.names)
        self._Ajj = np.diag(np.asarray(model.bread()))
        self._iota_xa = np.asarray(d["iota_xa"])
        if jackknife:
            self.beta_loo = pd.DataFrame(np.asarray(res._params) + np.asarray(d["loo"]), index=labels,
                                         columns=self.names)
            self.jackknife_singular = int(d["leverage_one"])
        else:
            self.beta_loo = None
            self.jackknife_singular = None

    # -- effective number of clusters -----------------------------------------------------
    def effective_clusters(self, rho: Sequence[float] | float = (0.0, 0.5, 1.0)) -> Any:
        """G*(rho) of Carter, Schnepel and Steigerwald (2017) for every coefficient (rows) and
        each rho (columns): with a_j = (X'X)^-1 e_j and the working within-cluster correlation rho,
        ``gamma_g = (1 - rho) a_j'C_g a_j + rho (1'X_g a_j)^2``,
        ``Gamma = mean(((gamma_g - mean gamma) / mean gamma)^2)`` and ``G* = G / (1 + Gamma)``.
        G* far below G means a few clusters carry the coefficient's variance."""
        import pandas as pd

        rhos = np.atleast_1d(np.asarray(rho, dtype=float))
        if np.any((rhos < 0) | (rhos > 1)):
            raise ValueError(f"rho must lie in [0, 1]; got {rho}")
        g0 = self.partial_leverage.to_numpy() * self._Ajj
        g1 = self._iota_xa ** 2
        out = {}
        for r in rhos:
            gam = (1 - r) * g0 + r * g1
            mean = gam.mean(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                Gamma = np.mean(((gam - mean) / mean) ** 2, axis=0)
            out[float(r)] = self.n_clusters / (1 + Gamma)
        return pd.DataFrame(out, index=self.names).rename_axis(columns="rho")

    # -- per-cluster tables ---------------------------------------------------------------
    def _param(self, param: Any) -> str:
        if param is None:
            return self.names[-1]
        if isinstance(param, (int, np.integer)) and not isinstance(param, bool):
            if not -len(self.names) <= param < len(self.names):
                raise ValueError(f"param {param} out of range for {len(self.names)} coefficients")
            return self.names[param]
        if param not in self.names:
            raise ValueError(f"param {param!r} is not a coefficient; choose one of {self.names}")
        return param

    def clusters(self, param: Any = None) -> Any:
        """One row per cluster (summclust's ``table``): n, leverage, the partial leverage and the
        leave-one-cluster-out estimate of ``param`` (default: the last coefficient)."""
        import pandas as pd

        p = self._param(param)
        out = pd.DataFrame({"n": self.sizes, "leverage": self.leverage, "partial_leverage": self.partial_leverage[p]})
        if self.beta_loo is not None:
            out["beta_no_g"] = self.beta_loo[p]
        return out

    def table(self, param: Any = None) -> Any:
        """summclust's "cluster variability" table for ``param``: min, q1, median, mean, q3, max
        and coefficient of variation (sample sd / mean) of the cluster sizes, leverages, partial
        leverages and leave-one-out estimates. Quartiles follow Stata's ``summarize, detail``."""
        import pandas as pd

        per = self.clusters(param)
        rows = {}
        for col in per.columns:
            v = per[col].to_numpy(dtype=float)
            q = np.quantile(v, [0.25, 0.5, 0.75], method="averaged_inverted_cdf")
            mean = v.mean()
            cv = np.sqrt(np.sum((v - mean) ** 2) / ((len(v) - 1) * mean ** 2)) if len(v) > 1 and mean != 0 else np.nan
            rows[col] = [v.min(), q[0], q[1], mean, q[2], v.max(), abs(cv)]
        return pd.DataFrame(rows, index=["min", "q1", "median", "mean", "q3", "max", "coefvar"])

    # -- warnings -------------------------------------------------------------------------
    @property
    def alarms(self) -> list[str]:
        """Plain-language warnings about this design (also shown in ``res.summary()``)."""
        from .results import FEW_CLUSTERS

        out = []
        for term, r in self.treated.iterrows():
            treated, control = int(r.treated), int(r.control)
            few = min(treated, control)
            if few < FEW_TREATED:
                side = "treated" if treated <= control else "control"
                out.append(f"{term} is constant within clusters and only {few} of {self.n_clusters} clusters are "
                           f"{side}: with few treated (or control) clusters CV1 t tests over-reject even when G is "
                           "large; prefer the wild cluster bootstrap (res.wild_bootstrap) and check its size "
                           "with crve.certify")
        G = self.n_clusters
        if G >= FEW_CLUSTERS:
            gstar = self.effective_clusters([0.0])[0.0]
            for term, gs in gstar.items():
                if term != self._intercept and np.isfinite(gs) and gs < FEW_CLUSTERS:
                    out.append(f"effective number of clusters for {term} is G*(0) = {gs:.1f} (G = {G}): a few "
                               "clusters carry its variance, so inference behaves as with few clusters")
        if self.variant == "iid":
            big = self.moulton[self.moulton > LARGE_MOULTON]
            for term, m in big.items():
                out.append(f"classical SEs for {term} are likely too small by a factor of about {m:.2f} (Moulton: "
                           f"residual ICC {self.icc_residual:.3f}, regressor ICC {self.icc[term]:.2f}, mean cluster size "
                           f"{self.size_summary['mean']:.1f})")
        if self.jackknife_singular:
            out.append(f"{self.jackknife_singular} clusters hold all the variation of some regressor (X'X - C_g "
                       "singular): their leave-one-out estimates use the pseudo-inverse and are not identified")
        return out

    # -- report ---------------------------------------------------------------------------
    def summary(self) -> Any:
        """A :class:`~crve.report.Report` of the design diagnostics (text, Markdown, LaTeX, HTML)."""
        import pandas as pd

        from .report import Report, fmt_num

        s = self.size_summary
        facts = [("Observations", f"{self.nobs:,}"),
                 ("Clusters", f"{self.n_clusters:,}; size min {s['min']:,}, mean {s['mean']:,.1f}, max {s['max']:,}, "
                              f"coefficient of variation {s['cv']:.2f}"),
                 ("Residual ICC", f"{self.icc_residual:.4f} (one-way ANOVA estimator)")]
        for term, r in self.treated.iterrows():
            facts.append((f"Clusters by {term}", f"{int(r.treated)} at {r.treated_value:g}, {int(r.control)} at "
                                                 f"{r.control_value:g}"))
        gstar = self.effective_clusters()
        maxpl = self.partial_leverage.max()
        table = pd.DataFrame({
            "ICC(x)": [("" if not np.isfinite(v) else f"{v:.3f}") for v in self.icc],
            "Moulton": [("" if not np.isfinite(v) else fmt_num(v, 4)) for v in self.moulton],
            f"SE {self.se_ratio_variant}/iid": [fmt_num(v, 4) for v in self.se_ratio],
            "G*(0)": [f"{v:.1f}" for v in gstar[0.0]], "G*(0.5)": [f"{v:.1f}" for v in gstar[0.5]],
            "G*(1)": [f"{v:.1f}" for v in gstar[1.0]],
            "max partial leverage": [f"{v:.3f}" for v in maxpl]}, index=self.names)
        return Report("Cluster design diagnostics", facts, table, self.alarms)

    def __repr__(self) -> str:
        return self.summary().to_text()

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()
