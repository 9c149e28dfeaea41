"""NIST StRD-style accuracy against exact rational references (tests/nist_exact.py): crve's
log relative errors next to statsmodels'. Floors guard the current accuracy (RELIABILITY.md has
the table; matching statsmodels on Wampler2, whose decimal y is rounded before the normal
equations square the conditioning, is open work, see issue 7)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import nist_exact  # noqa: E402

pytest.importorskip("statsmodels")

FLOORS = {"Longley": (11.0, 12.0), "NoInt1": (14.5, 14.5), "NoInt2": (14.5, 14.5), "Wampler1": (14.5, None),
          "Wampler2": (9.0, None)}


def test_exact_reference_is_exact():
    beta, se = nist_exact.exact_ols([[4.0], [5.0], [6.0]], [3.0, 4.0, 4.0])  # NoInt2 by hand: 56/77
    assert beta[0] == nist_exact.Fraction(8, 11)
    assert abs(float(se[0]) - 0.0420827318078432) < 1e-16  # NIST's certified value


@pytest.fixture(scope="module")
def scores():
    return {r["data"]: r for r in nist_exact.scores()}


@pytest.mark.parametrize("name", list(FLOORS))
def test_accuracy_floor(scores, name):
    r = scores[name]
    coef, se = FLOORS[name]
    assert r["crve_coef"] >= coef, r
    if se is not None:
        assert r["crve_se"] >= se, r


def test_longley_at_least_as_accurate_as_statsmodels(scores):
    r = scores["Longley"]
    assert r["crve_coef"] >= r["sm_coef"] and r["crve_se"] >= r["sm_se"] - 0.5


@pytest.mark.parametrize("name", ["NoInt1", "NoInt2", "Wampler1"])
def test_exact_data_at_least_as_accurate_as_statsmodels(scores, name):
    """Data exact in binary: exact statistics, exact (power-of-two) scaling and refinement with
    double-double residuals give every digit."""
    r = scores[name]
    assert r["crve_coef"] >= r["sm_coef"]
    if r["sm_se"] is not None and r["crve_se"] is not None:
        assert r["crve_se"] >= r["sm_se"]
