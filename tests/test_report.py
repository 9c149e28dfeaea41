"""Summaries, tidy and compare: content, renderings and a golden text output."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

import crve
from crve.report import Report

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def school_data(G=12, n=25, seed=3):
    rng = np.random.default_rng(seed)
    N = G * n
    df = pd.DataFrame({"school": np.repeat([f"s{i}" for i in range(G)], n),
                       "absences": rng.poisson(5, N).astype(float), "female": rng.integers(0, 2, N).astype(float)})
    df["G3"] = 11 - 0.12 * df.absences + rng.normal(size=G).repeat(n) + rng.normal(size=N)
    df.loc[[4, 9], "absences"] = np.nan
    return df


def fit(vcov="CV1"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", crve.CrveWarning)
        return crve.ols("G3 ~ absences + female", school_data(), cluster="school", vcov=vcov)


def test_summary_states_what_a_referee_asks():
    res = fit("CV1")
    text = str(res.summary())
    for needle in ["Dependent variable:     G3", "Observations:           298 (2 rows with missing values dropped: absences 2)",
                   "Clusters:               12 by school; size min 23, mean 24.8, max 25",
                   f"G/(G-1) x (N-1)/(N-K) = {12 / 11 * 297 / 295:.6g}", "T(G-1) = T(11)",
                   "few clusters (G = 12)", "absences", "female", "Intercept"]:
        assert needle in text, needle
    cv2 = str(fit("CV2").summary())
    assert "Bell-McCaffrey" in cv2 and "Satterthwaite dof per coefficient" in cv2


def test_summary_numbers_are_the_results():
    res = fit("CV2")
    table = res.summary().table
    assert table.loc["absences", "std error"] == f"{res.bse['absences']:.6g}"
    assert table.loc["absences", "df"] == f"{res.df['absences']:.2f}"
    assert table.loc["absences", "estimate"] == f"{res.params['absences']:.6g}"


def test_golden_summary_text():
    """The printed summary, byte for byte (formatting regressions show up here)."""
    text = str(fit("CV1").summary()) + "\n"
    path = os.path.join(GOLDEN, "summary_cv1.txt")
    if os.environ.get("CRVE_UPDATE_GOLDEN"):
        with open(path, "w") as fh:
            fh.write(text)
    with open(path) as fh:
        assert text == fh.read()


def test_markdown_latex_html():
    s = fit("CV2").summary()
    md = s.to_markdown()
    assert "| term | estimate | std error | t | df | p-value |" in md and "| absences |" in md
    tex = s.to_latex()
    assert r"\begin{tabular}{lrrrrrrr}" in tex and r"\toprule" in tex and r"(I - H\_gg)" in tex
    assert tex.count(r"\\") >= 5 and "~" not in tex.replace(r"\textasciitilde{}", "")
    html = fit().summary()._repr_html_()
    assert html.count("<tr>") >= 4 and "<th style='text-align:left'>absences</th>" in html
    assert fit()._repr_html_() == html


def test_latex_escapes_specials():
    r = Report("a_b & c", [("x%", "1$")], None, ["50% #1 {x}"])
    tex = r.to_latex()
    assert r"a\_b \& c" in tex and r"x\%: 1\$" in tex and r"50\% \#1 \{x\}" in tex


def test_tidy_columns_and_values():
    res = fit("CV2")
    t = res.tidy()
    assert list(t.columns) == ["term", "estimate", "std_error", "statistic", "df", "p_value", "conf_low", "conf_high"]
    np.testing.assert_allclose(t.std_error, res.bse.to_numpy())
    np.testing.assert_allclose(t.p_value, res.pvalues.to_numpy())
    np.testing.assert_allclose(t[["conf_low", "conf_high"]].to_numpy(), res.conf_int().to_numpy())
    t90 = res.tidy(alpha=0.10)
    assert (t90.conf_high - t90.conf_low < t.conf_high - t.conf_low).all()


def test_compare_side_by_side():
    res = fit("CV1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compare silences crve's own warnings
        cmp = res.compare(["iid", "CV1", "CV2", ("CV3", "normal"), "HC1"])
    assert list(cmp.columns.get_level_values(0).unique()) == ["estimate", "iid", "CV1 (G-1)", "CV2 (satterthwaite)",
                                                              "CV3 (normal)", "HC1"]
    for label, v, dof in [("iid", "iid", "auto"), ("CV2 (satterthwaite)", "CV2", "auto"), ("CV3 (normal)", "CV3", "normal")]:
        ref = res.with_variant(v, dof)
        np.testing.assert_allclose(cmp[(label, "std_error")], ref.bse)
        np.testing.assert_allclose(cmp[(label, "p_value")], ref.pvalues)
    # naive vs robust: clustering matters here
    assert cmp[("CV1 (G-1)", "std_error")]["Intercept"] > cmp[("iid", "std_error")]["Intercept"]


def test_bootstrap_summary_renderings():
    res = fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", crve.CrveWarning)
        bt = res.wild_bootstrap("absences", B=999, seed=3, weights="webb")
        ex = res.wild_bootstrap("absences", B=9999, seed=3)  # 2^12 <= B: enumerated
    s = str(bt.summary())
    assert "B = 999 random draws, seed 3" in s and "webb" in s and "1e-10" in s and "steps of 1/B = 0.001" in s
    assert f"[{bt.conf_int[0]:.6g}, {bt.conf_int[1]:.6g}]" in s
    assert "all sign vectors enumerated" in str(ex.summary()) and ex.B == 4096
    assert bt.summary().to_markdown().startswith("**Wild cluster bootstrap test**")
    assert r"\begin{table}" in bt.summary().to_latex()


def test_pvalue_at_matches_bootstrap_and_ci():
    res = fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", crve.CrveWarning)
        bt = res.wild_bootstrap("absences", B=999, seed=4, weights="webb")
        moved = res.wild_bootstrap("absences", h0=-0.05, B=999, seed=4, weights="webb", conf_int=False)
    assert bt.pvalue_at(0.0)[0] == bt.pvalue
    # p(h) from the draws at h0 = 0 equals a new bootstrap at h0 = -0.05 with the same seed
    assert bt.pvalue_at([-0.05])[0] == pytest.approx(moved.pvalue, abs=1.5 / 999)
    lo, hi = bt.conf_int
    eps = 1e-6 * bt.std_error
    p = bt.pvalue_at([lo + eps, hi - eps, lo - eps, hi + eps])
    assert (p[:2] > 0.05).all() and (p[2:] <= 0.05).all()
