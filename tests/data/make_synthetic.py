"""Generate the small synthetic data sets used by the crve test suite.

Run from anywhere:

    python tests/data/make_synthetic.py

It (re)writes, next to this script:

* ``synth_unequal.csv`` -- 302 rows, 25 clusters of very unequal size (1..40
  rows, four singleton clusters).  Columns ``y, x1, x2, x3, g``; ``x3`` is a
  cluster-level regressor (constant within cluster); ``g`` is a non-contiguous
  integer cluster id and the rows are shuffled, so clusters are *not* stored
  contiguously.
* ``synth_few.csv`` -- 120 rows, 6 clusters with string labels ``"s1".."s6"``.
  Columns ``y, x1, x2, g``.
* ``synth_hetero.csv`` -- 200 rows, 40 clusters (2..8 rows each), strongly
  heteroskedastic errors.  Columns ``y, x1, x2, x3, x4, g`` (``x4`` is a 0/1
  dummy).

The output is deterministic (fixed seeds, numpy ``Generator``/PCG64) and the
floats are written with 17 significant digits so that they round-trip exactly
to the same IEEE doubles in Python and R.  The models in the tests add the
intercept themselves; no intercept column is stored.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
FLOAT_FORMAT = "%.17g"


def _write(df: pd.DataFrame, name: str) -> str:
    path = os.path.join(HERE, name)
    # lineterminator fixed so the files are byte-identical on every platform
    df.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return path


def make_unequal(seed: int = 20240501) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = [1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18,
             20, 22, 25, 30, 34, 40]
    G = len(sizes)
    # non-contiguous, unsorted integer ids
    ids = rng.choice(np.arange(1, 1000), size=G, replace=False)
    g = np.repeat(ids, sizes)
    n = g.size
    u_g = rng.normal(0.0, 1.0, size=G)          # cluster random effect
    z_g = rng.normal(0.0, 1.0, size=G)          # cluster-level regressor
    cl_index = np.repeat(np.arange(G), sizes)
    x1 = rng.normal(0.0, 1.0, size=n)
    # x2 is correlated within cluster (shares a cluster component)
    x2 = 0.7 * rng.normal(0.0, 1.0, size=G)[cl_index] + rng.normal(0.0, 1.0, size=n)
    x3 = z_g[cl_index]
    e = rng.normal(0.0, 1.0, size=n) * (1.0 + 0.5 * np.abs(x1))
    y = 1.0 + 0.5 * x1 - 0.3 * x2 + 0.8 * x3 + u_g[cl_index] + e
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "x3": x3, "g": g.astype(np.int64)})
    perm = rng.permutation(n)
    return df.iloc[perm].reset_index(drop=True)


def make_few(seed: int = 20240502) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = [10, 15, 20, 20, 25, 30]
    G = len(sizes)
    labels = np.array([f"s{i + 1}" for i in range(G)])
    cl_index = np.repeat(np.arange(G), sizes)
    n = cl_index.size
    u_g = rng.normal(0.0, 1.5, size=G)
    x1 = rng.normal(0.0, 1.0, size=n) + 0.5 * rng.normal(0.0, 1.0, size=G)[cl_index]
    x2 = rng.uniform(-1.0, 2.0, size=n)
    e = rng.normal(0.0, 1.0, size=n)
    y = 2.0 + 1.0 * x1 - 0.5 * x2 + u_g[cl_index] + e
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": labels[cl_index]})
    perm = rng.permutation(n)
    return df.iloc[perm].reset_index(drop=True)


def make_hetero(seed: int = 20240503) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    G = 40
    # 40 clusters with sizes 2..8 summing to 200
    sizes = np.full(G, 5)
    for _ in range(200):
        i, j = rng.integers(0, G, size=2)
        if i != j and sizes[i] < 8 and sizes[j] > 2:
            sizes[i] += 1
            sizes[j] -= 1
    assert sizes.sum() == 200
    cl_index = np.repeat(np.arange(G), sizes)
    n = cl_index.size
    x1 = rng.normal(0.0, 1.0, size=n)
    x2 = rng.exponential(1.0, size=n)
    x3 = rng.normal(0.0, 1.0, size=G)[cl_index] + 0.3 * rng.normal(0.0, 1.0, size=n)
    x4 = (rng.uniform(size=n) < 0.3).astype(np.float64)
    sd = np.exp(0.6 * x1) * (0.5 + x2)          # heteroskedastic scale
    u_g = rng.normal(0.0, 0.7, size=G)
    e = rng.normal(0.0, 1.0, size=n) * sd
    y = -1.0 + 0.4 * x1 + 0.2 * x2 - 0.6 * x3 + 1.0 * x4 + u_g[cl_index] + e
    g = cl_index + 1
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "x3": x3, "x4": x4,
                       "g": g.astype(np.int64)})
    return df


def main() -> None:
    for name, df in [("synth_unequal.csv", make_unequal()),
                     ("synth_few.csv", make_few()),
                     ("synth_hetero.csv", make_hetero())]:
        path = _write(df, name)
        # sanity: exact round trip through the CSV
        # sanity: exact round trip through the CSV (parsed with Python's
        # correctly-rounded float(), independent of the pandas CSV parser)
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for c in df.columns:
            if df[c].dtype.kind == "f":
                back = np.array([float(r[c]) for r in rows])
                assert np.array_equal(back, df[c].to_numpy()), (name, c)
        print(f"wrote {path}: {len(df)} rows, {df['g'].nunique()} clusters, "
              f"{os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
