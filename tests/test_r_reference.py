"""crve against R reference values (tests/fixtures/r_reference.json).

The fixtures were produced by ``Rscript tests/r/make_fixtures.R`` with
sandwich 3.0.2, clubSandwich 0.5.8 and estimatr 1.0.0 (R 4.2.2); see
``test_r_fixtures.py`` for the test that regenerates them and for checks of
the fixtures themselves (published values, an independent numpy
implementation).

Convention mapping used here (each crve variant is checked against every R
implementation listed; R calls are recorded in the JSON under "call"):

=========  ===============================================================
crve       R reference
=========  ===============================================================
CV0        clubSandwich vcovCR(type="CR0")
           = sandwich::vcovCL(type="HC0", cadjust=FALSE)
           = estimatr lm_robust(se_type="CR0")                  (no factor)
CV1        clubSandwich vcovCR(type="CR1S")
           = sandwich::vcovCL(type="HC1", cadjust=TRUE)  (vcovCL's lm default)
           = estimatr lm_robust(se_type="stata")
           Stata factor G/(G-1) * (N-1)/(N-K).
           (clubSandwich "CR1" = vcovCL(type="HC0", cadjust=TRUE) is
           G/(G-1) only and is *not* crve CV1.)
CV2/CR2    clubSandwich "CR2" = vcovCL(type="HC2", cadjust=TRUE)
           = estimatr "CR2"; dof "auto" = Satterthwaite (Bell-McCaffrey with
           identity working model) = clubSandwich coef_test(test=
           "Satterthwaite") df = estimatr CR2 df.
CV3        (G-1)/G * clubSandwich "CR3".  clubSandwich's CR3 is
           sum_g X_g'(I-H_gg)^{-1} e_g e_g'(I-H_gg)^{-1} X_g sandwiched by
           (X'X)^{-1} with *no* (G-1)/G factor; crve's CV3 is the jackknife
           with the (G-1)/G factor (MacKinnon-Webb).  Equivalently
           CV3 = sandwich::vcovCL(type="HC3", cadjust=FALSE) (sandwich's
           clustered HC2/HC3 meat carries (G-1)/G internally, cadjust=TRUE
           multiplies it by G/(G-1) again, giving clubSandwich CR3).
           Inference values for CV3 are in the JSON under "derived" (computed
           in R from the CR3 output with that factor).
HC0..HC3   sandwich::vcovHC(type=...) = estimatr se_type "HC0".."HC3"
iid        vcov(lm) = estimatr se_type "classical"
=========  ===============================================================

Wald tests (clubSandwich Wald_test; tests of R beta = r):
* crve test="F"    <-> clubSandwich "Naive-F": statistic Q/q, df (q, G-1);
* crve test="chi2" <-> clubSandwich "chi-sq": crve's statistic is taken to be
  the Wald chi-square Q (clubSandwich reports Q/q as "Fstat"), df q;
* crve test="HTZ"  <-> clubSandwich "HTZ" with vcov "CR2": statistic is the
  delta-scaled F (clubSandwich "Fstat"), df_num q, df_denom the HTZ df.
clubSandwich only tests R beta = 0; the non-zero-r case ("pair_r") was made by
refitting on y - X b0 (r = R b0), which leaves residuals/vcov/HTZ unchanged.

Tolerances: covariances 1e-10 on the correlation scale (|dV_ij| <=
1e-10 sqrt(V_ii V_jj)), SEs / t 1e-10 relative, coefficients 1e-10 relative to
max(|b|, se), dof and p-values 1e-8 relative (p-values also 1e-14 absolute,
so that e.g. 1e-92 vs 0 is not a failure).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

crve = pytest.importorskip("crve")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _r_reference import (  # noqa: E402
    assert_cov_close,
    design,
    load_fixtures,
    mat,
)

RTOL = 1e-10
DF_RTOL = 1e-8
P_RTOL = 1e-8
P_ATOL = 1e-14

FIX = load_fixtures()
CASES = {c["name"]: c for c in FIX["cases"]}
CASE_NAMES = list(CASES)
_DESIGNS: dict = {}


def _design(name):
    if name not in _DESIGNS:
        _DESIGNS[name] = design(CASES[name])
    return _DESIGNS[name]


def fit(name, variant, dof="auto"):
    """crve fit for a fixture case.  Non-clustered variants get clusters=None."""
    y, X, g = _design(name)
    clustered = variant.upper().startswith(("CV", "CR"))
    return crve.cluster_robust(y, X, g if clustered else None, variant=variant,
                               dof=dof, names=CASES[name]["coef_names"])


def close(got, ref, rtol, atol=0.0, what=""):
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(ref, dtype=float),
                               rtol=rtol, atol=atol, err_msg=what)


def check_inference(res, ref, what, se=True, t=True, df=True, p=True):
    """ref: dict with some of se, t, df, p (per coefficient)."""
    if se and "se" in ref:
        close(res.bse, ref["se"], RTOL, what=f"{what} se")
    if t and "t" in ref:
        close(res.tvalues, ref["t"], RTOL, atol=RTOL, what=f"{what} t")
    if df and "df" in ref:
        close(np.broadcast_to(np.asarray(res.df, dtype=float), np.shape(ref["df"])),
              ref["df"], DF_RTOL, what=f"{what} df")
    if p and "p" in ref:
        close(res.pvalues, ref["p"], P_RTOL, atol=P_ATOL, what=f"{what} p")


# ------------------------------------------------------------------ basics
@pytest.mark.parametrize("name", CASE_NAMES)
def test_params_and_counts(name):
    case = CASES[name]
    res = fit(name, "CV1")
    b_ref = np.array(case["coefficients"])
    se_ref = np.array(case["vcov"]["clubSandwich_CR1S"]["se"])
    b = np.asarray(res.params, dtype=float)
    assert b.shape == b_ref.shape
    assert np.all(np.abs(b - b_ref) <= RTOL * np.maximum(np.abs(b_ref), se_ref)), (b, b_ref)
    assert res.nobs == case["nobs"]
    assert res.n_clusters == case["n_clusters"]


# ------------------------------------------------------------------ cluster-robust covariances
VARIANT_COV_REFS = {
    "CV0": [("vcov", "clubSandwich_CR0"), ("vcov", "sandwich_vcovCL_HC0_cadjustFALSE"),
            ("estimatr", "CR0")],
    "CV1": [("vcov", "clubSandwich_CR1S"), ("vcov", "sandwich_vcovCL_HC1_cadjustTRUE"),
            ("estimatr", "stata")],
    "CV2": [("vcov", "clubSandwich_CR2"), ("vcov", "sandwich_vcovCL_HC2_cadjustTRUE"),
            ("estimatr", "CR2")],
    # CV3 = (G-1)/G * clubSandwich CR3 (see module docstring)
    "CV3": [("derived", "CV3_G1"), ("vcov", "sandwich_vcovCL_HC3_cadjustFALSE")],
}


@pytest.mark.parametrize("variant", list(VARIANT_COV_REFS))
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cluster_cov(name, variant):
    case = CASES[name]
    res = fit(name, variant)
    for block, key in VARIANT_COV_REFS[variant]:
        ref = case[block][key]
        assert_cov_close(res.cov, mat(ref["cov"]), RTOL, what=f"{name} {variant} vs {block}/{key}")
        close(res.bse, ref["se"], RTOL, what=f"{name} {variant} se vs {block}/{key}")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cv3_is_scaled_clubsandwich_cr3(name):
    """Explicitly: crve CV3 == (G-1)/G * clubSandwich CR3."""
    case = CASES[name]
    G = case["n_clusters"]
    res = fit(name, "CV3")
    assert_cov_close(res.cov, (G - 1) / G * mat(case["vcov"]["clubSandwich_CR3"]["cov"]),
                     RTOL, what=f"{name} CV3")


@pytest.mark.parametrize("alias", ["CR2", "cv2", "cr2"])
@pytest.mark.parametrize("name", ["grunfeld_firm", "synth_few"])
def test_cv2_aliases(name, alias):
    case = CASES[name]
    res = fit(name, alias)
    assert_cov_close(res.cov, mat(case["vcov"]["clubSandwich_CR2"]["cov"]), RTOL, what=alias)
    check_inference(res, case["coef_test"]["CR2_Satterthwaite"], f"{name} {alias}")


# ------------------------------------------------------------------ t tests / dof
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cv0_inference_auto(name):
    """dof auto = G-1 for CV0: estimatr CR0 and clubSandwich naive-t."""
    case = CASES[name]
    res = fit(name, "CV0")
    G = case["n_clusters"]
    check_inference(res, case["estimatr"]["CR0"], f"{name} CV0 estimatr")
    check_inference(res, case["coef_test"]["CR0_naive-t"], f"{name} CV0 naive-t")
    close(np.broadcast_to(np.asarray(res.df, dtype=float), (case["k"],)),
          np.full(case["k"], G - 1.0), DF_RTOL)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cv1_inference_auto(name):
    case = CASES[name]
    res = fit(name, "CV1")
    check_inference(res, case["estimatr"]["stata"], f"{name} CV1 estimatr stata")
    check_inference(res, case["coef_test"]["CR1S_naive-t"], f"{name} CV1 naive-t")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cv2_inference_satterthwaite(name):
    """dof auto for CV2 = Satterthwaite = clubSandwich coef_test = estimatr CR2."""
    case = CASES[name]
    for dof in ("auto", "satterthwaite"):
        res = fit(name, "CV2", dof=dof)
        check_inference(res, case["coef_test"]["CR2_Satterthwaite"], f"{name} CV2 {dof}")
        check_inference(res, case["estimatr"]["CR2"], f"{name} CV2 {dof} estimatr")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cv2_inference_g_minus_1(name):
    case = CASES[name]
    res = fit(name, "CV2", dof="G-1")
    check_inference(res, case["coef_test"]["CR2_naive-t"], f"{name} CV2 G-1")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cv3_inference_auto(name):
    case = CASES[name]
    res = fit(name, "CV3")
    check_inference(res, case["derived"]["CV3_G1"], f"{name} CV3 auto")
    res2 = fit(name, "CV3", dof="G-1")
    check_inference(res2, case["derived"]["CV3_G1"], f"{name} CV3 G-1")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_dof_normal_and_number(name):
    case = CASES[name]
    G = case["n_clusters"]
    res = fit(name, "CV1", dof="normal")
    check_inference(res, case["derived"]["CV1_normal"], f"{name} CV1 normal", df=False)
    res = fit(name, "CV1", dof=float(G - 1))
    check_inference(res, case["estimatr"]["stata"], f"{name} CV1 dof=G-1 number")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_with_variant(name):
    case = CASES[name]
    res = fit(name, "CV1")
    r3 = res.with_variant("CV3", dof="G-1")
    assert_cov_close(r3.cov, mat(case["derived"]["CV3_G1"]["cov"]), RTOL, what="with_variant CV3")
    check_inference(r3, case["derived"]["CV3_G1"], f"{name} with_variant CV3")
    r2 = res.with_variant("CV2")
    check_inference(r2, case["coef_test"]["CR2_Satterthwaite"], f"{name} with_variant CV2")
    r0 = r2.with_variant("CV0")
    check_inference(r0, case["estimatr"]["CR0"], f"{name} with_variant CV0")


SATT_OTHER = [("CV0", "CR0_Satterthwaite", True), ("CV1", "CR1S_Satterthwaite", True),
              ("CV3", "CR3_Satterthwaite", False)]


@pytest.mark.parametrize("variant,key,same_t", SATT_OTHER)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_satterthwaite_other_variants(name, variant, key, same_t):
    """clubSandwich's Satterthwaite df for CR0/CR1S/CR3 (its adjustment
    matrices: I, c*I and (I-H_gg)^{-1}).  The df is scale invariant, so CV3's
    (G-1)/G factor does not change it; t differs by that factor, so only df is
    compared for CV3.  Skipped if crve does not offer Satterthwaite dof for the
    variant."""
    case = CASES[name]
    try:
        res = fit(name, variant, dof="satterthwaite")
    except (ValueError, NotImplementedError) as exc:
        pytest.skip(f"crve: {variant} with dof='satterthwaite' not supported ({exc})")
    ref = case["coef_test"][key]
    check_inference(res, ref, f"{name} {variant} satterthwaite", se=same_t, t=same_t, p=same_t)


# ------------------------------------------------------------------ heteroskedasticity-robust
HC_REFS = {
    "iid": [("lm_vcov", True), ("estimatr_classical", True)],
    "HC0": [("sandwich_vcovHC_HC0", False), ("estimatr_HC0", True)],
    "HC1": [("sandwich_vcovHC_HC1", False), ("estimatr_HC1", True)],
    "HC2": [("sandwich_vcovHC_HC2", False), ("estimatr_HC2", True)],
    "HC3": [("sandwich_vcovHC_HC3", False), ("estimatr_HC3", True)],
}


@pytest.mark.parametrize("variant", list(HC_REFS))
@pytest.mark.parametrize("name", CASE_NAMES)
def test_hc(name, variant):
    case = CASES[name]
    res = fit(name, variant)
    N, K = case["nobs"], case["k"]
    for key, has_inf in HC_REFS[variant]:
        ref = case["hc"][key]
        assert_cov_close(res.cov, mat(ref["cov"]), RTOL, what=f"{name} {variant} vs {key}")
        check_inference(res, ref, f"{name} {variant} vs {key}", t=has_inf, p=has_inf)
    close(np.broadcast_to(np.asarray(res.df, dtype=float), (K,)), np.full(K, N - K), DF_RTOL)


# ------------------------------------------------------------------ Wald tests
WALD_NAMES = ["slopes", "pair", "contrast", "pair_r"]
WALD_VARIANTS = {"CV0": "CR0", "CV1": "CR1S", "CV2": "CR2"}


def _wald(name, wname):
    case = CASES[name]
    w = next(x for x in case["wald"] if x["name"] == wname)
    R = mat(w["R"])
    r = np.asarray(w["r"], dtype=float)
    return case, w, R, (r if wname == "pair_r" else None)


def check_wald(wt, stat, df_num, df_denom, p, what):
    close(wt.statistic, stat, RTOL, what=f"{what} statistic")
    close(wt.df_num, df_num, 0.0, what=f"{what} df_num")
    if df_denom is not None:
        close(wt.df_denom, df_denom, DF_RTOL, what=f"{what} df_denom")
    close(wt.pvalue, p, P_RTOL, atol=P_ATOL, what=f"{what} p")


@pytest.mark.parametrize("wname", WALD_NAMES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_wald_htz(name, wname):
    case, w, R, r = _wald(name, wname)
    ref = w["results"]["CR2"]["HTZ"]
    res = fit(name, "CV2")
    wt = res.wald_test(R, r=r, test="HTZ")
    check_wald(wt, ref["Fstat"], ref["df_num"], ref["df_denom"], ref["p_val"],
               f"{name} {wname} HTZ")


@pytest.mark.parametrize("variant", list(WALD_VARIANTS))
@pytest.mark.parametrize("wname", WALD_NAMES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_wald_f_chi2(name, wname, variant):
    case, w, R, r = _wald(name, wname)
    refs = w["results"][WALD_VARIANTS[variant]]
    q = w["q"]
    res = fit(name, variant)
    f = refs["Naive-F"]
    check_wald(res.wald_test(R, r=r, test="F"), f["Fstat"], q, f["df_denom"], f["p_val"],
               f"{name} {wname} {variant} F")
    c = refs["chi-sq"]
    # clubSandwich's "Fstat" for chi-sq is Q/q; the chi-square statistic is Q
    check_wald(res.wald_test(R, r=r, test="chi2"), q * c["Fstat"], q, None, c["p_val"],
               f"{name} {wname} {variant} chi2")


@pytest.mark.parametrize("wname", WALD_NAMES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_wald_cv3(name, wname):
    case, w, R, r = _wald(name, wname)
    ref = w["results"]["CV3_derived"]
    res = fit(name, "CV3")
    check_wald(res.wald_test(R, r=r, test="F"), ref["F"], ref["df_num"], ref["df_denom"],
               ref["p_F"], f"{name} {wname} CV3 F")
    check_wald(res.wald_test(R, r=r, test="chi2"), ref["Q"], ref["df_num"], None,
               ref["p_chi2"], f"{name} {wname} CV3 chi2")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_htz_q1_equals_satterthwaite_t(name):
    """For a single restriction HTZ reduces to the Satterthwaite t test."""
    case = CASES[name]
    K = case["k"]
    res = fit(name, "CV2")
    sat = case["coef_test"]["CR2_Satterthwaite"]
    R = np.zeros((1, K))
    R[0, K - 1] = 1.0
    wt = res.wald_test(R, test="HTZ")
    close(wt.statistic, sat["t"][K - 1] ** 2, RTOL)
    close(wt.df_denom, sat["df"][K - 1], DF_RTOL)
    close(wt.pvalue, sat["p"][K - 1], P_RTOL, atol=P_ATOL)
