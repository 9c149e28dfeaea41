"""NIST StRD-style accuracy with exact references (issue 7).

The NIST StRD linear-regression data are exact decimals, so their certified values are the
exact rational least-squares solution. This module computes that solution with Python's
``fractions`` (coefficients exactly, standard errors to 40 digits with ``decimal``) and scores
a fit by the log relative error (LRE, the number of correct significant digits, capped at 15).

Data sets: Longley (statsmodels ships the data), NoInt1, NoInt2, Wampler1 and Wampler2
(defined by formulas), and Norris, Pontius, Filip and Wampler3-5, whose NIST files are vendored
in tests/data/nist/ (y x per line; the header names the copy they were transcribed from and
repeats NIST's certified values, which the exact solution of the file reproduces to every
printed digit: tests/test_nist_exact.py checks it). The polynomial models get the design
x**j: crve and statsmodels are given the doubles nearest to the exact powers, the reference
uses the exact powers (Filip's x**j of 10-digit decimals are not doubles), so the LRE is
against NIST's certified values. crve refuses a design whose scaled X'X has reciprocal
condition number below 1e-12 (Filip): the table says so.

    python tests/nist_exact.py        # the table: crve and statsmodels, LRE per data set
"""
from __future__ import annotations

import math
import os
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np

getcontext().prec = 50

NIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "nist")
# vendored NIST files -> degree of the polynomial model y = b0 + b1 x + ... + bd x^d
NIST_FILES = {"Norris": 1, "Pontius": 2, "Filip": 10, "Wampler3": 5, "Wampler4": 5, "Wampler5": 5}


def _frac(v) -> Fraction:
    return Fraction(repr(float(v))) if not isinstance(v, Fraction) else v


def exact_ols(X, y) -> tuple[list[Fraction], list[Decimal]]:
    """Exact OLS coefficients and classical standard errors of decimal data."""
    Xf = [[_frac(v) for v in row] for row in X]
    yf = [_frac(v) for v in y]
    N, K = len(Xf), len(Xf[0])
    XtX = [[sum(Xf[i][a] * Xf[i][b] for i in range(N)) for b in range(K)] for a in range(K)]
    Xty = [sum(Xf[i][a] * yf[i] for i in range(N)) for a in range(K)]
    # Gauss-Jordan on [X'X | I | X'y], exact.
    M = [XtX[a] + [Fraction(int(a == b)) for b in range(K)] + [Xty[a]] for a in range(K)]
    for c in range(K):
        p = next(r for r in range(c, K) if M[r][c] != 0)
        M[c], M[p] = M[p], M[c]
        piv = M[c][c]
        M[c] = [v / piv for v in M[c]]
        for r in range(K):
            if r != c and M[r][c] != 0:
                f = M[r][c]
                M[r] = [a - f * b for a, b in zip(M[r], M[c])]
    beta = [M[a][2 * K] for a in range(K)]
    inv = [[M[a][K + b] for b in range(K)] for a in range(K)]
    resid = [yf[i] - sum(Xf[i][a] * beta[a] for a in range(K)) for i in range(N)]
    s2 = sum(r * r for r in resid) / (N - K)
    se = [(Decimal(s2.numerator) / Decimal(s2.denominator) * Decimal(inv[a][a].numerator)
           / Decimal(inv[a][a].denominator)).sqrt() for a in range(K)]
    return beta, se


def lre(est: float, cert) -> float:
    """Correct significant digits: -log10(|est - cert| / |cert|) (absolute when cert = 0), capped at 15."""
    c = float(cert)
    if not math.isfinite(est):
        return 0.0
    err = abs(est - c) / abs(c) if c != 0 else abs(est)
    return 15.0 if err == 0 else float(min(15.0, max(0.0, -math.log10(err))))


def load_nist(name: str) -> dict:
    """A vendored NIST file, tests/data/nist/<name>.dat: x and y as exact decimals (Fraction),
    NIST's certified estimates ``beta``, their standard deviations ``sd`` and the residual
    standard deviation ``rsd`` (Decimal, as printed), from the header's ``# B<j> est sd`` and
    ``# residual_standard_deviation`` lines."""
    x, y, beta, sd, rsd = [], [], [], [], None
    with open(os.path.join(NIST_DIR, f"{name}.dat")) as f:
        for line in f:
            t = line.split()
            if not t:
                continue
            if t[0] == "#":
                if len(t) == 4 and t[1][0] == "B" and t[1][1:].isdigit():
                    assert int(t[1][1:]) == len(beta), line
                    beta.append(Decimal(t[2]))
                    sd.append(Decimal(t[3]))
                elif len(t) == 3 and t[1] == "residual_standard_deviation":
                    rsd = Decimal(t[2])
                continue
            y.append(Fraction(t[0]))
            x.append(Fraction(t[1]))
    return {"x": x, "y": y, "beta": beta, "sd": sd, "rsd": rsd}


def nist_design(name: str) -> tuple[list[list[Fraction]], list[Fraction]]:
    """The exact design [x**0, ..., x**d] and y of a vendored NIST file (polynomial model)."""
    d = load_nist(name)
    return [[v ** j for j in range(NIST_FILES[name] + 1)] for v in d["x"]], d["y"]


def datasets() -> dict:
    """name -> (X with intercept column where the model has one, y, exact design or None).

    X and y are the doubles a user would pass; the third item is the exact (Fraction) design
    where X's doubles are not the data exactly (the powers of the vendored NIST files), else
    None (exact_ols reads the doubles back as the shortest decimals, which are the data)."""
    import statsmodels.api as sm

    out = {}
    d = sm.datasets.longley.load_pandas().data
    out["Longley"] = (np.column_stack([np.ones(len(d)), d.iloc[:, 1:].to_numpy(dtype=float)]), d.iloc[:, 0].to_numpy(dtype=float), None)
    x = np.arange(60.0, 71.0)
    out["NoInt1"] = (x[:, None], np.arange(130.0, 141.0), None)
    out["NoInt2"] = (np.array([[4.0], [5.0], [6.0]]), np.array([3.0, 4.0, 4.0]), None)
    x = np.arange(21.0)
    P = np.column_stack([x ** k for k in range(6)])
    for name, coef in (("Wampler1", [1] * 6), ("Wampler2", [Fraction(1, 10 ** k) for k in range(6)])):
        # y as NIST prints it: the exact polynomial value (a short decimal), then the nearest double
        y = np.array([float(sum(Fraction(c) * Fraction(int(v)) ** k for k, c in enumerate(coef))) for v in x])
        out[name] = (P, y, None)
    for name in NIST_FILES:
        Xq, yq = nist_design(name)
        # the doubles nearest the exact powers (np.array(x) ** j would round x and every product)
        out[name] = (np.array([[float(v) for v in row] for row in Xq]), np.array([float(v) for v in yq]), Xq)
    return out


def scores() -> list[dict]:
    """LRE of coefficients and SEs (minimum over coefficients) for crve and statsmodels."""
    import warnings

    import statsmodels.api as sm

    import crve

    rows = []
    for name, (X, y, Xq) in datasets().items():
        beta, se = exact_ols(X if Xq is None else Xq, y)
        row = {"data": name, "N": len(y), "K": X.shape[1]}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = crve.cluster_robust(y, X, None, variant="iid")
            row["crve_coef"] = min(lre(b, c) for b, c in zip(r._params, beta))
            row["crve_se"] = min(lre(s, c) for s, c in zip(np.sqrt(np.diag(r._cov)), se)) if any(se) else None
        except ValueError as exc:
            row["crve_coef"] = row["crve_se"] = None
            msg = row["crve_error"] = str(exc)
            row["crve_note"] = "refused (rank deficiency error)" if "rank deficient" in msg else msg.split(";")[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Filip: statsmodels warns that X is rank deficient, then fits by pinv
            f = sm.OLS(y, X).fit()
        row["sm_coef"] = min(lre(b, c) for b, c in zip(f.params, beta))
        row["sm_se"] = min(lre(s, c) for s, c in zip(f.bse, se)) if any(se) else None
        rows.append(row)
    return rows


if __name__ == "__main__":
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    se_fmt = lambda v: "exact fit" if v is None else f"{v:.1f}"  # noqa: E731  (certified SEs all 0)
    print("| data | N | K | crve coef LRE | statsmodels coef LRE | crve SE LRE | statsmodels SE LRE |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in scores():
        cc, cs = (r["crve_note"],) * 2 if r.get("crve_note") else (fmt(r["crve_coef"]), se_fmt(r["crve_se"]))
        print(f"| {r['data']} | {r['N']} | {r['K']} | {cc} | {fmt(r['sm_coef'])} | {cs} | {se_fmt(r['sm_se'])} |")
