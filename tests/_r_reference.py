"""Shared helpers for the R-reference tests (loading data and fixtures).

Not a test module itself (leading underscore); imported by
``test_r_reference.py`` and ``test_r_fixtures.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(TESTS_DIR, "data")
FIXTURE_PATH = os.path.join(TESTS_DIR, "fixtures", "r_reference.json")
R_SCRIPT = os.path.join(TESTS_DIR, "r", "make_fixtures.R")

_NONFINITE = {"Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan, "NA": math.nan}


def decode_nonfinite(obj):
    """The R writer encodes non-finite doubles as the strings Inf/-Inf/NaN/NA."""
    if isinstance(obj, dict):
        return {k: decode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_nonfinite(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def load_json(path: str = FIXTURE_PATH) -> dict:
    with open(path) as fh:
        return json.load(fh)


def load_fixtures(path: str = FIXTURE_PATH) -> dict:
    return decode_nonfinite(load_json(path))


def read_csv_exact(name: str) -> dict:
    """Read tests/data/<name> into a dict of numpy arrays.

    Uses Python's correctly rounded ``float()`` so the values are bit-identical
    to what R's read.csv produced when the fixtures were generated (checked
    when the data were written).  Integer-looking columns become int64,
    non-numeric columns stay strings.
    """
    with open(os.path.join(DATA_DIR, name), newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = {}
    for c in rows[0].keys():
        raw = [r[c] for r in rows]
        try:
            cols[c] = np.array([int(v) for v in raw], dtype=np.int64)
            continue
        except ValueError:
            pass
        try:
            cols[c] = np.array([float(v) for v in raw], dtype=np.float64)
        except ValueError:
            cols[c] = np.array(raw, dtype=object)
    return cols


def design(case: dict):
    """(y, X, clusters) for a fixture case; X = [intercept, regressors...]."""
    d = read_csv_exact(case["data"])
    y = d[case["response"]].astype(np.float64)
    cols = [np.ones(y.shape[0])] + [d[v].astype(np.float64) for v in case["regressors"]]
    X = np.column_stack(cols)
    clusters = d[case["cluster"]]
    return y, X, clusters


def mat(rows) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


def assert_cov_close(got, ref, rtol: float = 1e-10, what: str = "") -> None:
    """|got - ref|_ij <= rtol * sqrt(ref_ii ref_jj) (i.e. on the correlation
    scale, so near-zero off-diagonal elements are not compared relatively)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
    err = np.abs(got - ref) / scale
    assert np.all(np.isfinite(got)), what
    assert err.max() <= rtol, f"{what}: max scaled error {err.max():.3e} > {rtol:g}"
