"""The crve command end to end: demo, fit on CSV and Parquet files (text, Markdown, LaTeX, JSON), errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import crve
from crve.cli import main


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(5)
    G, n = 25, 16
    df = pd.DataFrame({"school": np.repeat([f"s{i}" for i in range(G)], n),
                       "absences": rng.poisson(4, G * n).astype(float), "sex": rng.choice(["F", "M"], G * n)})
    df["G3"] = 12 - 0.1 * df.absences + rng.normal(size=G).repeat(n) + rng.normal(size=G * n)
    df.loc[6, "absences"] = np.nan
    paths = {"csv": str(d / "students.csv"), "df": df}
    df.to_csv(paths["csv"], index=False)
    if pytest.importorskip("pyarrow"):
        paths["parquet"] = str(d / "students.parquet")
        df.to_parquet(paths["parquet"])
    return paths


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_fit_text(capsys, data_files, fmt):
    rc, out, err = run(capsys, "fit", data_files[fmt], "--formula", "G3 ~ absences + C(sex)", "--cluster", "school",
                       "--vcov", "CV2")
    assert rc == 0 and err == ""
    ref = crve.ols("G3 ~ absences + C(sex)", data_files["df"], cluster="school", vcov="CV2")
    assert str(ref.summary()) in out
    assert "1 row with missing values dropped" in out


def test_fit_json_with_bootstrap(capsys, data_files):
    rc, out, _ = run(capsys, "fit", data_files["parquet"], "-f", "G3 ~ absences", "-c", "school",
                     "--bootstrap", "absences", "--B", "999", "--seed", "1", "--weights", "webb", "--json")
    assert rc == 0
    doc = json.loads(out)
    ref = crve.ols("G3 ~ absences", data_files["df"], cluster="school")
    bt = ref.wild_bootstrap("absences", B=999, seed=1, weights="webb")
    assert doc["nobs"] == 399 and doc["n_dropped"] == 1 and doc["n_clusters"] == 25 and doc["vcov"] == "CV1"
    coef = {c["term"]: c for c in doc["coefficients"]}
    assert coef["absences"]["std_error"] == pytest.approx(ref.bse["absences"], rel=1e-12)
    assert coef["absences"]["df"] == 24
    assert doc["bootstrap"]["pvalue"] == bt.pvalue and doc["bootstrap"]["conf_int"] == pytest.approx(list(bt.conf_int))


def test_fit_json_is_strict_with_normal_dof(capsys, data_files):
    rc, out, _ = run(capsys, "fit", data_files["csv"], "-f", "G3 ~ absences", "-c", "school", "--dof", "normal", "--json")
    assert rc == 0
    doc = json.loads(out)  # strict JSON: infinite dof become null
    assert doc["coefficients"][1]["df"] is None and "Infinity" not in out


def test_fit_markdown_and_latex(capsys, data_files):
    rc, out, _ = run(capsys, "fit", data_files["csv"], "-f", "G3 ~ absences", "-c", "school", "--markdown")
    assert rc == 0 and "| absences |" in out
    rc, out, _ = run(capsys, "fit", data_files["csv"], "-f", "G3 ~ absences", "-c", "school", "--latex")
    assert rc == 0 and r"\begin{tabular}" in out


@pytest.mark.parametrize("args,msg", [
    (["-f", "G3 ~ absnces", "-c", "school"], "column 'absnces' is not in students.csv; did you mean 'absences'?"),
    (["-f", "G3 ~ absences", "-c", "schol"], "column 'schol' is not in students.csv"),
    (["-f", "G3 ~ (absences", "-c", "school"], "cannot parse formula"),
    (["-f", "sex ~ absences", "-c", "school"], "outcome 'sex' must be numeric"),
    (["-f", "G3 ~ absences", "-c", "school", "--vcov", "CV9"], "unknown variant 'CV9'"),
    (["-f", "G3 ~ absences", "-c", "school", "--missing", "raise"], "column 'absences' has missing values in 1 row"),
])
def test_fit_errors_are_one_line(capsys, data_files, args, msg):
    rc, out, err = run(capsys, "fit", data_files["csv"], *args)
    assert rc == 1 and out == ""
    assert err.startswith("crve: error: ") and msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_file_and_unknown_format(capsys, tmp_path):
    rc, _, err = run(capsys, "fit", str(tmp_path / "nope.csv"), "-f", "y ~ x")
    assert rc == 1 and "no such file" in err
    p = tmp_path / "data.xyz"
    p.write_text("y,x\n1,2\n")
    rc, _, err = run(capsys, "fit", str(p), "-f", "y ~ x")
    assert rc == 1 and "cannot tell the format" in err


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "x.csv"])
    assert e.value.code == 2


def test_demo(capsys):
    rc, out, _ = run(capsys, "demo", "--clusters", "8", "--size", "300", "--B", "999")
    assert rc == 0
    for needle in ["iid, N-K", "CV1, G-1", "CV2, satterthwaite", "CV3, G-1", "wild bootstrap, B=999", "95% CI"]:
        assert needle in out


def test_console_script_and_module_entry(data_files):
    """`python -m crve` runs the same command in a fresh interpreter (no traceback on error)."""
    r = subprocess.run([sys.executable, "-m", "crve", "fit", data_files["csv"], "-f", "G3 ~ nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("crve: error:") and "Traceback" not in r.stderr
    exe = os.path.join(os.path.dirname(sys.executable), "crve")
    if os.path.exists(exe):
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and crve.__version__ in r.stdout


def test_fit_with_diagnostics(data_files, capsys):
    rc, out, _ = run(capsys, "fit", data_files["csv"], "-f", "G3 ~ absences", "-c", "school", "--diagnostics")
    assert rc == 0 and "Cluster design diagnostics" in out and "Residual ICC" in out
    rc, out, _ = run(capsys, "fit", data_files["csv"], "-f", "G3 ~ absences", "-c", "school", "--diagnostics", "--json")
    d = json.loads(out)["diagnostics"]
    res = crve.ols("G3 ~ absences", data_files["df"], cluster="school")
    assert d["icc_residual"] == pytest.approx(res.diagnostics().icc_residual)
    assert [t["term"] for t in d["terms"]] == ["Intercept", "absences"]
    rc, _, err = run(capsys, "fit", data_files["csv"], "-f", "G3 ~ absences", "--diagnostics")
    assert rc == 1 and "--diagnostics describes clusters" in err


def test_certify_command(tmp_path, capsys):
    png, csv = str(tmp_path / "size.png"), str(tmp_path / "size.csv")
    args = ["certify", "--G", "4", "8", "--mean-size", "5", "--methods", "naive", "CV1", "--reps", "40",
            "--seed", "2", "--workers", "1"]
    rc, out, _ = run(capsys, *args, "--csv", csv)
    assert rc == 0 and "cluster-randomized: 40 replications per cell" in out and "verdict" in out
    table = pd.read_csv(csv)
    direct = crve.certify(G=[4, 8], mean_size=5, methods=["naive", "CV1"], reps=40, seed=2, workers=1, progress=False)
    np.testing.assert_allclose(table.rejection_rate, direct.rejection_rate)
    rc, out, _ = run(capsys, *args, "--json")
    assert [r["method"] for r in json.loads(out)] == ["naive", "CV1", "naive", "CV1"]
    rc, out, _ = run(capsys, *args, "--markdown")
    assert out.startswith("| G | icc |") and out.count("\n") == 6
    pytest.importorskip("matplotlib")
    rc, _, _ = run(capsys, *args, "--plot", png)
    assert rc == 0 and os.path.getsize(png) > 1000
    rc, _, err = run(capsys, "certify", "--G", "1", "--reps", "5")
    assert rc == 1 and "every G must be an int >= 2" in err
