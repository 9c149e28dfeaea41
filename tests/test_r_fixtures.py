"""Checks of the R reference fixtures themselves (no crve needed).

* the committed tests/fixtures/r_reference.json reproduces published numbers
  (Petersen's test data, Stata's Grunfeld example);
* it agrees with an independent, deliberately naive numpy implementation of
  CV0/CV1/CV2/CV3, HC0-HC3, iid and the CV2 Satterthwaite (Bell-McCaffrey)
  dof, so the convention mapping documented in test_r_reference.py holds;
* the committed data sets are what tests/data/make_synthetic.py writes;
* when ``Rscript`` with sandwich, clubSandwich and estimatr is available, the
  script tests/r/make_fixtures.R regenerates the committed JSON (takes ~1 min).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _r_reference import (  # noqa: E402
    DATA_DIR,
    FIXTURE_PATH,
    R_SCRIPT,
    assert_cov_close,
    design,
    load_fixtures,
    load_json,
    mat,
    read_csv_exact,
)

FIX = load_fixtures()
CASES = {c["name"]: c for c in FIX["cases"]}


# ------------------------------------------------------------------ published values
def _se(case, key, coef):
    c = CASES[case]
    return c["vcov"][key]["se"][c["coef_names"].index(coef)]


def test_published_petersen():
    # Petersen (2009) test data / sandwich vignette / Stata `cluster(firm)`
    assert round(_se("petersen_firm", "clubSandwich_CR1S", "x"), 7) == 0.0505957
    assert round(_se("petersen_firm", "sandwich_vcovCL_HC1_cadjustTRUE", "x"), 7) == 0.0505957
    assert round(CASES["petersen_firm"]["estimatr"]["stata"]["se"][1], 7) == 0.0505957
    # CR2 with Satterthwaite df (clubSandwich)
    assert round(_se("petersen_firm", "clubSandwich_CR2", "x"), 7) == 0.0506778
    assert round(CASES["petersen_firm"]["coef_test"]["CR2_Satterthwaite"]["df"][1], 3) == 308.756
    assert round(CASES["petersen_firm"]["estimatr"]["CR2"]["df"][1], 3) == 308.756
    # clustered by year
    assert round(_se("petersen_year", "clubSandwich_CR1S", "x"), 7) == 0.0333889
    # coefficient
    assert round(CASES["petersen_firm"]["coefficients"][1], 7) == 1.0348334


def test_published_grunfeld():
    # Stata: webuse grunfeld; regress invest mvalue kstock, vce(cluster company)
    c = CASES["grunfeld_firm"]
    assert c["nobs"] == 200 and c["n_clusters"] == 10
    se = dict(zip(c["coef_names"], c["vcov"]["clubSandwich_CR1S"]["se"]))
    assert round(se["value"], 8) == 0.01589434
    assert round(se["capital"], 8) == 0.08496711
    assert round(se["(Intercept)"], 6) == 20.425203
    b = dict(zip(c["coef_names"], c["coefficients"]))
    assert round(b["value"], 7) == 0.1155622
    assert round(b["capital"], 7) == 0.2306785
    assert round(b["(Intercept)"], 5) == -42.71437


# ------------------------------------------------------------------ independent numpy reference
def _groups(g):
    _, inv = np.unique(g, return_inverse=True)
    return [np.flatnonzero(inv == j) for j in range(inv.max() + 1)]


def _msqrt_inv(A):
    w, V = np.linalg.eigh((A + A.T) / 2)
    return (V / np.sqrt(w)) @ V.T


def numpy_reference(y, X, g):
    N, K = X.shape
    XtXi = np.linalg.inv(X.T @ X)
    b = XtXi @ X.T @ y
    e = y - X @ b
    idx = _groups(g)
    G = len(idx)
    out = {"b": b}

    def sandwich(scores):
        S = np.array(scores)
        return XtXi @ (S.T @ S) @ XtXi

    cv0 = sandwich([X[i].T @ e[i] for i in idx])
    out["CV0"] = cv0
    out["CV1"] = G / (G - 1) * (N - 1) / (N - K) * cv0
    A2 = [_msqrt_inv(np.eye(len(i)) - X[i] @ XtXi @ X[i].T) for i in idx]
    out["CV2"] = sandwich([X[i].T @ A @ e[i] for i, A in zip(idx, A2)])
    A3 = [np.linalg.inv(np.eye(len(i)) - X[i] @ XtXi @ X[i].T) for i in idx]
    out["CV3"] = (G - 1) / G * sandwich([X[i].T @ A @ e[i] for i, A in zip(idx, A3)])
    h = np.einsum("ij,jk,ik->i", X, XtXi, X)
    for name, w in [("HC0", np.ones(N)), ("HC1", np.full(N, N / (N - K))),
                    ("HC2", 1 / (1 - h)), ("HC3", 1 / (1 - h) ** 2)]:
        out[name] = XtXi @ (X.T * (w * e * e)) @ X @ XtXi
    out["iid"] = e @ e / (N - K) * XtXi
    # Bell-McCaffrey / clubSandwich Satterthwaite df for CV2 (working model I):
    # p_g = (I-H)[:, g] A_g a_g with a = X (X'X)^{-1} e_j; df = tr(P'P)^2 / |P'P|_F^2
    df = np.empty(K)
    for j in range(K):
        a = X @ XtXi[:, j]
        P = np.zeros((N, G))
        for col, (i, A) in enumerate(zip(idx, A2)):
            v = A @ a[i]
            P[:, col] = -X @ (XtXi @ (X[i].T @ v))
            P[i, col] += v
        M = P.T @ P
        df[j] = np.trace(M) ** 2 / np.sum(M * M)
    out["CV2_df"] = df
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_fixtures_match_numpy_reference(name):
    case = CASES[name]
    y, X, g = design(case)
    ref = numpy_reference(y, X, g)
    se1 = np.array(case["vcov"]["clubSandwich_CR1S"]["se"])
    b = np.array(case["coefficients"])
    assert np.all(np.abs(ref["b"] - b) <= 1e-10 * np.maximum(np.abs(b), se1))
    v = case["vcov"]
    assert_cov_close(ref["CV0"], mat(v["clubSandwich_CR0"]["cov"]), what="CV0")
    assert_cov_close(ref["CV0"], mat(v["sandwich_vcovCL_HC0_cadjustFALSE"]["cov"]), what="CV0 sw")
    assert_cov_close(ref["CV1"], mat(v["clubSandwich_CR1S"]["cov"]), what="CV1")
    assert_cov_close(ref["CV1"], mat(v["sandwich_vcovCL_HC1_cadjustTRUE"]["cov"]), what="CV1 sw")
    assert_cov_close(ref["CV1"], mat(case["estimatr"]["stata"]["cov"]), what="CV1 estimatr")
    assert_cov_close(ref["CV2"], mat(v["clubSandwich_CR2"]["cov"]), what="CV2")
    assert_cov_close(ref["CV3"], mat(case["derived"]["CV3_G1"]["cov"]), what="CV3")
    assert_cov_close(ref["CV3"], mat(v["sandwich_vcovCL_HC3_cadjustFALSE"]["cov"]), what="CV3 sw")
    G = case["n_clusters"]
    assert_cov_close(ref["CV3"] * G / (G - 1), mat(v["clubSandwich_CR3"]["cov"]), what="CR3")
    for hc in ("HC0", "HC1", "HC2", "HC3"):
        assert_cov_close(ref[hc], mat(case["hc"][f"sandwich_vcovHC_{hc}"]["cov"]), what=hc)
    assert_cov_close(ref["iid"], mat(case["hc"]["lm_vcov"]["cov"]), what="iid")
    np.testing.assert_allclose(ref["CV2_df"], case["coef_test"]["CR2_Satterthwaite"]["df"],
                               rtol=1e-8)
    np.testing.assert_allclose(ref["CV2_df"], case["estimatr"]["CR2"]["df"], rtol=1e-8)


def test_fixture_structure():
    raw = load_json()
    assert raw["meta"]["packages"]["clubSandwich"] == "0.5.8"
    assert raw["meta"]["packages"]["estimatr"] == "1.0.0"
    assert [c["name"] for c in raw["cases"]] == [
        "petersen_firm", "petersen_year", "grunfeld_firm",
        "synth_unequal", "synth_few", "synth_hetero"]
    for c in FIX["cases"]:
        K = c["k"]
        assert len(c["coef_names"]) == K and c["coef_names"][0] == "(Intercept)"
        for w in c["wald"]:
            assert np.shape(w["R"]) == (w["q"], K) and len(w["r"]) == w["q"]
            assert w["results"]["CR2"]["chi-sq"]["df_denom"] == math.inf
        for k, v in c["cross_checks"].items():
            assert v <= 1e-10, (c["name"], k, v)


# ------------------------------------------------------------------ data files
def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_synthetic_data_regenerate():
    mod = _load_module(os.path.join(DATA_DIR, "make_synthetic.py"), "make_synthetic")
    for fname, df in [("synth_unequal.csv", mod.make_unequal()),
                      ("synth_few.csv", mod.make_few()),
                      ("synth_hetero.csv", mod.make_hetero())]:
        d = read_csv_exact(fname)
        assert list(d) == list(df.columns)
        for col in df.columns:
            a = df[col].to_numpy()
            if a.dtype.kind == "f":
                assert np.array_equal(d[col].astype(float), a), (fname, col)
            else:
                assert [str(v) for v in d[col]] == [str(v) for v in a], (fname, col)


def test_data_shapes():
    p = read_csv_exact("petersen.csv")
    assert len(p["x"]) == 5000 and len(np.unique(p["firm"])) == 500
    assert len(np.unique(p["year"])) == 10
    gr = read_csv_exact("grunfeld.csv")
    assert len(gr["invest"]) == 200 and len(np.unique(gr["firm"])) == 10
    assert "American Steel" not in set(gr["firm"])
    u = read_csv_exact("synth_unequal.csv")
    sizes = np.unique(u["g"], return_counts=True)[1]
    assert len(sizes) == 25 and sizes.min() == 1 and sizes.max() == 40
    assert (sizes == 1).sum() >= 3
    # x3 is cluster-level
    for gid in np.unique(u["g"]):
        assert len(np.unique(u["x3"][u["g"] == gid])) == 1
    f = read_csv_exact("synth_few.csv")
    assert sorted(set(f["g"])) == [f"s{i}" for i in range(1, 7)]
    h = read_csv_exact("synth_hetero.csv")
    assert len(h["y"]) == 200 and len(np.unique(h["g"])) == 40
    for fname in ("synth_unequal.csv", "synth_few.csv", "synth_hetero.csv"):
        assert os.path.getsize(os.path.join(DATA_DIR, fname)) < 40_000


# ------------------------------------------------------------------ regeneration with R
def _r_available():
    if shutil.which("Rscript") is None:
        return False, "Rscript not on PATH"
    code = ('for (p in c("sandwich","clubSandwich","estimatr")) '
            'if (!requireNamespace(p, quietly = TRUE)) quit(status = 3)')
    r = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True)
    if r.returncode != 0:
        return False, "R packages sandwich/clubSandwich/estimatr not all installed"
    return True, ""


def _compare(a, b, path="", rtol=1e-12):
    """Recursive comparison: identical structure and strings; numbers equal up
    to rtol relative to the largest magnitude in the enclosing numeric array."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and list(a) == list(b), path
        for k in b:
            _compare(a[k], b[k], f"{path}/{k}", rtol)
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), path
        if b and all(isinstance(v, (int, float)) for v in b):
            x, y = np.array(a, dtype=float), np.array(b, dtype=float)
            scale = np.max(np.abs(y))
            assert np.all(np.abs(x - y) <= rtol * scale), (path, a, b)
        else:
            for i, (u, v) in enumerate(zip(a, b)):
                _compare(u, v, f"{path}[{i}]", rtol)
    elif isinstance(b, (int, float)) and not isinstance(b, bool):
        assert isinstance(a, (int, float)), path
        if "/cross_checks/" in path:      # ~1e-15 round-off diagnostics
            assert abs(a) <= 1e-10, path
        else:
            assert abs(a - b) <= rtol * abs(b) or a == b, (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_r_script_regenerates_fixtures(tmp_path):
    ok, why = _r_available()
    if not ok:
        pytest.skip(why)
    out = tmp_path / "r_reference.json"
    r = subprocess.run(["Rscript", R_SCRIPT, str(out)], capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    fresh, committed = load_json(str(out)), load_json(FIXTURE_PATH)
    if fresh["meta"]["packages"] != committed["meta"]["packages"]:
        pytest.skip(f"installed R packages {fresh['meta']['packages']} differ from the "
                    f"ones used for the fixtures {committed['meta']['packages']}")
    with open(out, "rb") as fh1, open(FIXTURE_PATH, "rb") as fh2:
        if fh1.read() == fh2.read():
            return                        # byte-identical (same platform)
    _compare(fresh["cases"], committed["cases"], "cases")
