"""Printable reports: one object rendered as text, Markdown, LaTeX or HTML.

A :class:`Report` has a title, a list of (label, value) facts, an optional table (a pandas
DataFrame whose cells are already formatted strings) and notes. ``Result.summary()`` and
``WildBootstrapResult.summary()`` build one; everything a referee asks for goes in the facts and
notes, so every rendering carries it.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "fmt_num", "fmt_p"]


def fmt_num(x: float, digits: int = 6) -> str:
    """Significant-digit formatting that never shows a rounded-away value as 0."""
    if x is None:
        return ""
    if not math.isfinite(x):
        return "inf" if x == math.inf else ("-inf" if x == -math.inf else "nan")
    return f"{x:.{digits}g}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "nan"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_df(df: float) -> str:
    if not math.isfinite(df):
        return "inf"
    return f"{df:.0f}" if abs(df - round(df)) < 1e-9 else f"{df:.2f}"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(s))


@dataclass
class Report:
    """A result rendered as ``str(report)`` (text), :meth:`to_markdown`, :meth:`to_latex`, or HTML
    in notebooks. ``facts`` are (label, value) pairs; ``table`` has formatted string cells."""

    title: str
    facts: list[tuple[str, str]]
    table: Any = None
    notes: list[str] = field(default_factory=list)

    # -- text ---------------------------------------------------------------------------
    def to_text(self) -> str:
        lines = [self.title, "=" * max(len(self.title), 20)]
        if self.facts:
            w = max(len(k) for k, _ in self.facts)
            lines += [f"{k + ':':<{w + 1}} {v}" for k, v in self.facts]
        if self.table is not None:
            lines += ["", self._table_text()]
        if self.notes:
            lines += ["", "Notes:"] + [f"  [{i}] {n}" for i, n in enumerate(self.notes, 1)]
        return "\n".join(lines)

    def _table_text(self) -> str:
        t = self.table
        header = [""] + [str(c) for c in t.columns]
        rows = [[str(i)] + [str(v) for v in r] for i, r in zip(t.index, t.itertuples(index=False))]
        widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
        fmt = lambda r: "  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r))  # noqa: E731
        rule = "-" * len(fmt(header))
        return "\n".join([rule, fmt(header), rule] + [fmt(r) for r in rows] + [rule])

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def __contains__(self, text: str) -> bool:
        return text in self.to_text()

    # -- markdown -----------------------------------------------------------------------
    def to_markdown(self) -> str:
        esc = lambda s: str(s).replace("|", r"\|")  # noqa: E731
        lines = [f"**{esc(self.title)}**", ""]
        lines += [f"- {esc(k)}: {esc(v)}" for k, v in self.facts]
        if self.table is not None:
            t = self.table
            lines += ["", "| term | " + " | ".join(esc(c) for c in t.columns) + " |",
                      "|:---|" + "---:|" * len(t.columns)]
            lines += ["| " + esc(i) + " | " + " | ".join(esc(v) for v in r) + " |"
                      for i, r in zip(t.index, t.itertuples(index=False))]
        if self.notes:
            lines += [""] + [f"{i}. {esc(n)}" for i, n in enumerate(self.notes, 1)]
        return "\n".join(lines) + "\n"

    # -- LaTeX --------------------------------------------------------------------------
    def to_latex(self) -> str:
        """A ``table`` environment (booktabs rules) with the facts and notes below the table."""
        lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{_tex(self.title)}}}"]
        if self.table is not None:
            t = self.table
            lines += [r"\begin{tabular}{l" + "r" * len(t.columns) + "}", r"\toprule",
                      " & ".join([""] + [_tex(c) for c in t.columns]) + r" \\", r"\midrule"]
            lines += [" & ".join([_tex(i)] + [_tex(v) for v in r]) + r" \\"
                      for i, r in zip(t.index, t.itertuples(index=False))]
            lines += [r"\bottomrule", r"\end{tabular}"]
        foot = [f"{_tex(k)}: {_tex(v)}" for k, v in self.facts] + [_tex(n) for n in self.notes]
        if foot:
            lines += [r"\par\smallskip", r"\begin{minipage}{0.9\linewidth}\footnotesize"]
            lines += [s + r"\\" for s in foot]
            lines += [r"\end{minipage}"]
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    # -- HTML (notebooks) ---------------------------------------------------------------
    def _repr_html_(self) -> str:
        e = html.escape
        out = [f"<div class='crve-report'><strong>{e(self.title)}</strong>", "<table>"]
        out += [f"<tr><th style='text-align:left'>{e(k)}</th><td style='text-align:left'>{e(str(v))}</td></tr>"
                for k, v in self.facts]
        out.append("</table>")
        if self.table is not None:
            t = self.table
            out.append("<table><thead><tr><th></th>" + "".join(f"<th>{e(str(c))}</th>" for c in t.columns)
                       + "</tr></thead><tbody>")
            out += ["<tr><th style='text-align:left'>" + e(str(i)) + "</th>"
                    + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                    for i, r in zip(t.index, t.itertuples(index=False))]
            out.append("</tbody></table>")
        if self.notes:
            out.append("<ol>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ol>")
        out.append("</div>")
        return "\n".join(out)


# -- builders -------------------------------------------------------------------------------
def adjustment_text(variant: str, N: int, K: int, G: int) -> str:
    """The small-sample adjustment of a variant, with its value where it is one number."""
    if variant == "iid":
        return "classical: s^2 (X'X)^-1 with s^2 = SSR/(N-K)"
    if variant in ("HC0", "CV0"):
        return "none"
    if variant == "HC1":
        return f"N/(N-K) = {N / (N - K):.6g}"
    if variant == "HC2":
        return "1/(1 - h_ii) per row"
    if variant == "HC3":
        return "1/(1 - h_ii)^2 per row"
    if variant == "CV1":
        return f"G/(G-1) x (N-1)/(N-K) = {G / (G - 1) * (N - 1) / (N - K):.6g} (Stata)"
    if variant == "CV2":
        return "Bell-McCaffrey (I - H_gg)^(-1/2) per cluster (clubSandwich CR2)"
    if variant == "CV3":
        return f"leave-one-cluster-out jackknife x (G-1)/G = {(G - 1) / G:.6g} (= clubSandwich CR3 x (G-1)/G)"
    return f"jackknife centred at the mean leave-one-out estimate x (G-1)/G = {(G - 1) / G:.6g}"


_DOF_TEXT = {"G-1": "G-1 (clusters minus one)", "N-K": "N-K (residual)", "normal": "none (large-sample normal)",
             "satterthwaite": "Satterthwaite, per coefficient (Bell-McCaffrey / Pustejovsky-Tipton)"}


def reference_text(rule: Any, df: Any, G: int, N: int, K: int) -> str:
    if isinstance(rule, float):
        return f"T({fmt_df(rule)}) (user-supplied dof)"
    if rule == "normal":
        return "standard normal"
    if rule == "G-1":
        return f"T(G-1) = T({G - 1})"
    if rule == "N-K":
        return f"T(N-K) = T({N - K})"
    return f"T(Satterthwaite dof per coefficient: {fmt_df(min(df))} to {fmt_df(max(df))})"


def coef_table(res: Any, alpha: float) -> Any:
    """The tidy frame with formatted cells, for reports."""
    t = res.tidy(alpha)
    lo, hi = f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"
    out = {"estimate": t.estimate.map(fmt_num), "std error": t.std_error.map(fmt_num),
           "t": t.statistic.map(lambda v: fmt_num(v, 4)), "df": t.df.map(fmt_df), "p-value": t.p_value.map(fmt_p),
           lo: t.conf_low.map(fmt_num), hi: t.conf_high.map(fmt_num)}
    import pandas as pd

    return pd.DataFrame(out).set_index(t.term.to_numpy())


def result_report(res: Any, alpha: float = 0.05) -> Report:
    N, K, G = res.nobs, len(res._params), res.n_clusters
    facts: list[tuple[str, str]] = []
    if res.depvar:
        facts.append(("Dependent variable", res.depvar))
    if res.formula:
        facts.append(("Formula", res.formula))
    obs = f"{N:,}"
    if res.n_dropped:
        by = ", ".join(f"{k} {v:,}" for k, v in res.dropped_by.items())
        obs += f" ({res.n_dropped:,} row{'s' if res.n_dropped != 1 else ''} with missing values dropped: {by})"
    facts.append(("Observations", obs))
    clustered = not res._singletons and res.variant.startswith("CV")
    if not res._singletons:
        sizes = res._stats.counts
        name = f" by {res.cluster_name}" if res.cluster_name else ""
        facts.append(("Clusters", f"{G:,}{name}; size min {sizes.min():,}, mean {sizes.mean():,.1f}, max {sizes.max():,}"))
    else:
        facts.append(("Clusters", "none (every row its own cluster)"))
    facts.append(("Covariance", f"{res.variant}: {adjustment_text(res.variant, N, K, G if clustered else N)}"))
    facts.append(("Degrees of freedom", _DOF_TEXT.get(res.dof_rule, str(res.dof_rule)) if isinstance(res.dof_rule, str)
                  else f"{res.dof_rule:g} (user-supplied)"))
    facts.append(("Reference distribution", reference_text(res.dof_rule, res._df, G, N, K)))
    r2 = res.rsquared
    facts.append(("R-squared", f"{r2:.4f}" if math.isfinite(r2) else "undefined (the outcome is constant)"))
    notes = list(res.notes)
    if not res._singletons and res._stats.counts.max() > 0.25 * N and G > 2:
        notes.append(f"the largest cluster holds {res._stats.counts.max() / N:.0%} of the rows: with unbalanced "
                     "clusters the effective number of clusters is smaller than G")
    if res.variant == "iid" and not res._singletons and G > 1:
        notes.append("iid standard errors ignore the clustering; use a CV variant for inference")
    if not res._singletons and G > 1:
        notes += res.diagnostics(jackknife=False).alarms  # only what is alarming (res.diagnostics() has all)
    return Report("OLS with cluster-robust inference" if clustered else "OLS", facts, coef_table(res, alpha), notes)


def bootstrap_report(bt: Any) -> Report:
    kind = "WCR" if bt.impose_null else "WCU"
    if bt.n_clusters == bt.n_boot_clusters and bt.q == 1 and bt.param is not None:
        what = f"{bt.param} = {bt.h0:g}"
    else:
        what = f"{bt.q} restriction{'s' if bt.q > 1 else ''} R b = r"
    facts = [("Null hypothesis", what),
             ("Bootstrap", f"{kind}{bt.bootstrap_type} ({'imposing' if bt.impose_null else 'not imposing'} "
                           f"the null), {bt.weights} weights"),
             ("Clusters", f"{bt.n_clusters}" + (f"; bootstrap clusters {bt.n_boot_clusters}"
                                                  if bt.n_boot_clusters != bt.n_clusters else ""))]
    if bt.enumerated:
        facts.append(("Draws", f"B = {bt.B:,}: all sign vectors enumerated (exact)"))
    else:
        facts.append(("Draws", f"B = {bt.B:,} random draws, seed {bt.seed}"))
    stat = "t" if bt.q == 1 else "Wald F"
    facts.append(("Statistic", f"{stat} = {bt.t_stat:.4f}"))
    if bt.q == 1 and bt.estimate is not None:
        facts.append(("Estimate", f"{fmt_num(float(bt.estimate))} (CV{'3' if bt.bootstrap_type[-1] == '3' else '1'} "
                                  f"std error {fmt_num(float(bt.std_error))})"))
    facts.append(("Bootstrap p-value", f"{bt.pvalue:.4f} ({bt.pvalue_type})"))
    facts.append(("Tie rule", "a draw counts as more extreme only if it exceeds the sample statistic by more "
                              "than 1e-10 relative"))
    floor = 1.0 / bt.B
    facts.append(("p-value resolution", f"steps of 1/B = {floor:.2g}" + ("" if bt.pvalue >= floor else
                                                                         f"; p = 0 means p < {floor:.2g}")))
    if bt.conf_int is not None:
        lo, hi = bt.conf_int
        facts.append((f"{100 * bt.level:g}% confidence interval", f"[{fmt_num(lo)}, {fmt_num(hi)}] (test inversion)"))
    title = f"Wild {'cluster ' if not bt._rows else ''}bootstrap test"
    return Report(title, facts, None, list(bt.notes))
