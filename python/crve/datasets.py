"""Simulated data sets for examples, docs and tests (no downloads).

:func:`student_performance` is shaped like the UCI Student Performance data (Cortez & Silva,
2008: final grade ``G3`` on a 0-20 scale, ``absences``, ``studytime``, ``failures``, ``sex``,
``age``), but with many schools instead of two, so that clustering by school can be studied.
Pupils in one school share a school effect on the grade and a school-level absence culture,
which is what makes naive standard errors too small.
"""
from __future__ import annotations

import numpy as np

__all__ = ["student_performance"]


def student_performance(n_schools: int = 40, pupils: int = 25, seed: int = 0, missing: float = 0.0):
    """A pandas DataFrame with one row per pupil.

    Parameters
    ----------
    n_schools, pupils : int
        Schools, and the average number of pupils per school (sizes vary from half to 1.5x).
    seed : int
        Random seed; the same seed gives the same data.
    missing : float
        Share of ``absences`` values set missing (NaN), to exercise ``missing="drop"``.

    The true model is ``G3 = 13 - 0.06 absences + 0.5 studytime - 1.2 failures + school effect
    + noise``: the school effect has standard deviation 1.5 and absences share a school-level
    factor, so errors and the regressor are both correlated within schools.

    >>> from crve.datasets import student_performance
    >>> df = student_performance(seed=1)
    >>> sorted(df.columns)
    ['G3', 'absences', 'age', 'failures', 'school', 'sex', 'studytime']
    """
    import pandas as pd

    if n_schools < 1 or pupils < 1:
        raise ValueError("need n_schools >= 1 and pupils >= 1")
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be in [0, 1); got {missing}")
    rng = np.random.default_rng(seed)
    sizes = rng.integers(max(1, pupils // 2), pupils + pupils // 2 + 1, n_schools)
    school = np.repeat(np.arange(n_schools), sizes)
    N = len(school)
    culture = rng.normal(size=n_schools)  # school-level absence culture
    effect = 1.5 * rng.normal(size=n_schools)  # school effect on grades
    absences = rng.poisson(np.exp(1.3 + 0.8 * culture[school]))
    studytime = rng.integers(1, 5, N)
    failures = rng.choice([0, 0, 0, 0, 1, 2, 3], N)
    sex = rng.choice(["F", "M"], N)
    age = rng.integers(15, 23, N)
    g3 = 13 - 0.06 * absences + 0.5 * studytime - 1.2 * failures + effect[school] + 2.5 * rng.normal(size=N)
    df = pd.DataFrame({
        "school": pd.Categorical([f"school_{s:03d}" for s in school]),
        "sex": sex, "age": age, "studytime": studytime, "failures": failures,
        "absences": absences.astype(float), "G3": np.clip(np.round(g3), 0, 20),
    })
    if missing:
        df.loc[rng.random(N) < missing, "absences"] = np.nan
    return df
