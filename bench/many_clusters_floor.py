#!/usr/bin/env python
"""What bounds CV1 at N = 1e6, G = 1e5 (10 rows per cluster, K = 10 + intercept): numpy X'X next
to reading X once, writing the per-cluster statistics' size of fresh memory (the API keeps them:
bench/README.md), and crve's CV1 with rows in random order and grouped by cluster (no gather).
Best of 9 of each, in one process. Prints the times in ms.

    python bench/many_clusters_floor.py [N] [G]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import crve


def best(f, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main() -> None:
    N = int(float(sys.argv[1])) if len(sys.argv) > 1 else 1_000_000
    G = int(float(sys.argv[2])) if len(sys.argv) > 2 else 100_000
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(N), rng.standard_normal((N, 10))])
    y = rng.standard_normal(N)
    g = rng.integers(0, G, N)
    K = X.shape[1]
    npack = (K + 2) * (K + 3) // 2  # crve's block per cluster: the shifted [X, 1, y] Gram
    xtx = best(lambda: X.T @ X)
    print(f"N = {N:,}, G = {G:,}, K = {K}")
    print(f"numpy X'X                              {xtx:7.1f} ms")
    print(f"read X once (X.sum())                  {best(lambda: X.sum()):7.1f} ms")
    print(f"fresh memory of the statistics' size   {best(lambda: np.ones(G * npack)):7.1f} ms  ({G * npack * 8 / 1e6:.0f} MB)")
    print(f"... of X_g'X_g alone (K(K+1)/2 each)   {best(lambda: np.ones(G * K * (K + 1) // 2)):7.1f} ms")
    rand = best(lambda: crve.cluster_robust(y, X, g))
    grouped = np.sort(g)
    sort = best(lambda: crve.cluster_robust(y, X, grouped))
    print(f"crve CV1, rows in random order         {rand:7.1f} ms  ({rand / xtx:.2f}x X'X)")
    print(f"crve CV1, rows grouped by cluster      {sort:7.1f} ms  ({sort / xtx:.2f}x X'X)")


if __name__ == "__main__":
    main()
