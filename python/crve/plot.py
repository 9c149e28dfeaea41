"""Plots of crve results: the bootstrap distribution, the bootstrap p-value curve, a
coefficient plot across variance estimators and the measured size of methods (certify).

matplotlib is an optional dependency (``pip install 'crve[plot]'``); it is imported only when a
plot is drawn. Every function draws into `ax` (a new figure when None) and returns the Axes.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["plot_bootstrap", "plot_pvalue_curve", "plot_coefficients", "plot_certify"]


def _axes(ax: Any) -> Any:
    """`ax`, or the Axes of a new figure when None (importing matplotlib only now)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("crve's plots need matplotlib: pip install 'crve[plot]'") from None
    if ax is None:
        ax = plt.subplots()[1]
    return ax


def _pct(x: float) -> str:
    return f"{100 * x:.4g}%"


def _hypothesis_label(bt: Any) -> str:
    return bt.param if bt.param is not None else "R b"


def _critical_values(bt: Any) -> np.ndarray:
    """The bootstrap critical values of `bt` at its level, from the finite draws."""
    t = bt.t_star[np.isfinite(bt.t_star)]
    if t.size == 0:
        raise ValueError("no finite bootstrap statistics to plot")
    level = bt.level
    if bt.q > 1:  # Wald F: one-sided in Q whatever pvalue_type says
        return np.quantile(t, [level])
    if bt.pvalue_type == "symmetric":
        c = np.quantile(np.abs(t), level)
        return np.array([-c, c])
    if bt.pvalue_type == "equal-tailed":
        return np.quantile(t, [(1 - level) / 2, (1 + level) / 2])
    if bt.pvalue_type == "upper":
        return np.quantile(t, [level])
    return np.quantile(t, [1 - level])  # lower


def plot_bootstrap(bt: Any, ax: Any = None, bins: Any = None) -> Any:
    """Histogram of the bootstrap statistics with the observed statistic and the critical values.

    Parameters
    ----------
    bt : WildBootstrapResult
        From :func:`crve.wild_cluster_bootstrap` or :meth:`crve.Result.wild_bootstrap`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    bins : int, sequence or str, optional
        Passed to ``ax.hist`` (default ``"auto"``).

    Returns
    -------
    matplotlib Axes

    Notes
    -----
    The histogram (a density) shows the finite bootstrap statistics ``bt.t_star`` (t statistics;
    Wald F = Q/q for a joint test). The solid line is the sample statistic ``bt.t_stat``; the
    dashed lines are the bootstrap critical values at ``bt.level``: +-c with c the level quantile
    of |t*| (symmetric p-value), the (1 - level)/2 and (1 + level)/2 quantiles of t*
    (equal-tailed), the level (upper) or 1 - level (lower) quantile of t*, and the level quantile
    of the Wald statistics for a joint test.

    Examples
    --------
    >>> import numpy as np, crve
    >>> from crve.plot import plot_bootstrap
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 30)
    >>> X = np.column_stack([np.ones(600), rng.normal(size=600)])
    >>> y = X @ [1.0, 0.1] + rng.normal(size=20)[g] + rng.normal(size=600)
    >>> bt = crve.cluster_robust(y, X, g, names=["const", "x"]).wild_bootstrap("x", B=999, seed=1, weights="webb")
    >>> ax = plot_bootstrap(bt)
    >>> ax.get_title()
    'Wild bootstrap: x = 0'
    """
    ax = _axes(ax)
    crit = _critical_values(bt)
    draws = f"bootstrap draws (B = {bt.B}{', enumerated' if bt.enumerated else ''}, {bt.weights} weights)"
    ax.hist(bt.t_star[np.isfinite(bt.t_star)], bins="auto" if bins is None else bins, density=True,
            alpha=0.5, color="C0", label=draws)
    name = "t" if bt.q == 1 else "F"
    ax.axvline(bt.t_stat, color="C3", lw=2, label=f"observed {name} = {bt.t_stat:.3g} (p = {bt.pvalue:.3g})")
    for i, c in enumerate(crit):
        ax.axvline(c, color="k", ls="--", lw=1, label=f"{_pct(bt.level)} critical value" if i == 0 else None)
    if bt.q == 1:
        ax.set_title(f"Wild bootstrap: {_hypothesis_label(bt)} = {bt.h0:g}")
        ax.set_xlabel("t statistic")
    else:
        ax.set_title(f"Wild bootstrap: joint test of {bt.q} restrictions")
        ax.set_xlabel("Wald statistic F = Q / q")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return ax


def plot_pvalue_curve(bt: Any, ax: Any = None, points: int = 400) -> Any:
    """The bootstrap p-value p(h) of ``param = h`` against h, with the confidence interval.

    The curve comes from the same draws (:meth:`WildBootstrapResult.pvalue_at`); the confidence
    set is where it lies above 1 - level. The h range is the confidence interval widened by half
    its width on each side (estimate +- 6 standard errors where a bound is infinite).

    Parameters
    ----------
    bt : WildBootstrapResult
        A test of one restriction (``bt.q == 1``); a joint test raises ValueError.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    points : int
        Number of values of h.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np, crve
    >>> from crve.plot import plot_pvalue_curve
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 30)
    >>> X = np.column_stack([np.ones(600), rng.normal(size=600)])
    >>> y = X @ [1.0, 0.1] + rng.normal(size=20)[g] + rng.normal(size=600)
    >>> bt = crve.cluster_robust(y, X, g, names=["const", "x"]).wild_bootstrap("x", B=999, seed=1, weights="webb")
    >>> ax = plot_pvalue_curve(bt)
    >>> ax.get_ylabel()
    'bootstrap p-value'
    """
    if bt.q != 1:
        raise ValueError(f"the p-value curve p(h) is available for a single restriction (q = 1) only; this "
                         f"bootstrap is a joint test of q = {bt.q} restrictions")
    est, se = float(bt.estimate), float(bt.std_error)
    lo, hi = bt.conf_int if bt.conf_int is not None else (np.nan, np.nan)
    if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
        x0, x1 = lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)
    else:  # no or unbounded interval: +-6 se about the estimate, and any finite bound
        x0, x1 = est - 6 * se, est + 6 * se
        x0 = min(x0, lo - se) if np.isfinite(lo) else x0
        x1 = max(x1, hi + se) if np.isfinite(hi) else x1
    bounds = [b for b in (lo, hi) if np.isfinite(b)]
    h = np.unique(np.concatenate([np.linspace(x0, x1, points), bounds]))  # the jumps at the bounds exactly
    p = bt.pvalue_at(h)

    ax = _axes(ax)
    ax.plot(h, p, drawstyle="steps-mid", color="C0", label="p(h)")
    ax.axhline(1 - bt.level, color="k", ls="--", lw=1, label=f"1 - level = {1 - bt.level:g}")
    for i, (a, b) in enumerate(bt.conf_set or []):
        ax.axvspan(max(a, x0), min(b, x1), color="C0", alpha=0.15,
                   label=f"{_pct(bt.level)} confidence set" if i == 0 else None)
    for i, b in enumerate(bounds):
        ax.axvline(b, color="C0", ls=":", lw=1,
                   label=f"CI [{lo:.4g}, {hi:.4g}]" if i == 0 else None)
    ax.plot([est], bt.pvalue_at([est]), "o", color="C3", label=f"estimate = {est:.4g}")
    ax.set_xlim(x0, x1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_hypothesis_label(bt))
    ax.set_ylabel("bootstrap p-value")
    ax.set_title(f"Bootstrap p-value curve: {_hypothesis_label(bt)} (B = {bt.B}, {bt.weights} weights)")
    ax.legend(fontsize="small")
    return ax


def plot_coefficients(res: Any, variants: Sequence[Any] = ("iid", "CV1", "CV2", "CV3"),
                      terms: Sequence[str] | None = None, alpha: float = 0.05, ax: Any = None) -> Any:
    """Coefficient plot: each estimate with its 1 - alpha confidence interval under several variants.

    Parameters
    ----------
    res : crve.Result
        A fit; each variant is computed as in :meth:`crve.Result.compare` (warnings of
        category :class:`crve.CrveWarning` are suppressed here; see each variant's ``notes``).
    variants : sequence
        Variant names (with their default dof rule) or ``(variant, dof)`` pairs, as in
        :meth:`crve.Result.compare`.
    terms : sequence of str, optional
        The terms shown, top to bottom (default all of ``res.names``).
    alpha : float
        The intervals are 1 - alpha.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.

    Returns
    -------
    matplotlib Axes
        One errorbar container per variant, in order, labelled by variant.

    Examples
    --------
    >>> import numpy as np, crve
    >>> from crve.plot import plot_coefficients
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 30)
    >>> X = np.column_stack([np.ones(600), rng.normal(size=600)])
    >>> y = X @ [1.0, 0.1] + rng.normal(size=20)[g] + rng.normal(size=600)
    >>> ax = plot_coefficients(crve.cluster_robust(y, X, g, names=["const", "x"]), variants=["iid", "CV2"])
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['const', 'x']
    """
    names = list(res.names)
    terms = names if terms is None else list(terms)
    missing = [t for t in terms if t not in names]
    if missing:
        raise ValueError(f"unknown terms {missing}; terms are {names}")
    idx = [names.index(t) for t in terms]
    ax = _axes(ax)
    y = np.arange(len(terms), dtype=float)
    step = 0.7 / max(len(variants), 1)
    for j, (label, r) in enumerate(res._variants(variants)):
        est = np.asarray(r.params, dtype=float)[idx]
        ci = np.asarray(r.conf_int(alpha), dtype=float)[idx]
        ax.errorbar(est, y + (j - (len(variants) - 1) / 2) * step, xerr=[est - ci[:, 0], ci[:, 1] - est],
                    fmt="o", ms=4, capsize=3, color=f"C{j}", label=label)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels(terms)
    ax.set_ylim(len(terms) - 0.5, -0.5)  # first term on top
    ax.set_xlabel(f"estimate with {_pct(1 - alpha)} confidence interval")
    ax.set_title("Coefficients by variance estimator")
    ax.legend(title="variance", fontsize="small")
    return ax


def plot_certify(table: Any, ax: Any = None, x: str = "G") -> Any:
    """Rejection rate against G (or another numeric column, ``x``) per method, with the Monte
    Carlo intervals as error bars and the nominal alpha as a dashed line.

    Parameters
    ----------
    table : CertifyTable
        From :func:`crve.certify` (or a slice of it with the same columns).
    """
    needed = {x, "method", "rejection_rate", "mc_ci_low", "mc_ci_high"}
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks column(s) {sorted(missing)} needed for the plot")
    ax = _axes(ax)
    alpha = table.attrs.get("alpha")
    for method in dict.fromkeys(table["method"]):
        t = table[table["method"] == method].sort_values(x)
        rate = t["rejection_rate"].to_numpy(dtype=float)
        err = np.vstack([rate - t["mc_ci_low"].to_numpy(dtype=float), t["mc_ci_high"].to_numpy(dtype=float) - rate])
        ax.errorbar(t[x].to_numpy(), rate, yerr=err, marker="o", capsize=3, label=str(method))
    if alpha is not None:
        ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"nominal {alpha:g}")
    ax.set_xlabel("number of clusters G" if x == "G" else x)
    ax.set_ylabel("rejection rate under H0")
    design = table.attrs.get("design")
    reps = table.attrs.get("reps")
    if design:
        ax.set_title(f"{design}: measured size" + (f" ({reps:,} replications per point)" if reps else ""))
    ax.legend(fontsize="small")
    return ax
