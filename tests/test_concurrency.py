"""Calls from many Python threads at once (the core releases the GIL, so they really run
together) give exactly the answers of serial calls: no shared mutable state in the core."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import crve


def _job(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    N, G = 40_000, 60 + seed
    g = rng.integers(0, G, N)
    X = np.column_stack([np.ones(N), rng.normal(size=G)[g], rng.normal(size=N)])
    y = X @ [1.0, 0.2, -0.5] + rng.normal(size=G)[g] + rng.normal(size=N)
    res = crve.cluster_robust(y, X, g, variant="CV2", threads=2)
    cv3 = res.with_variant("CV3")
    hc = crve.cluster_robust(y, X, None, variant="HC2", threads=2)
    bt = res.wild_bootstrap(1, B=4999, weights="webb", seed=seed, threads=2, progress=False)
    d = res.diagnostics()
    return {"cov": res._cov, "df": res._df, "cv3": cv3._cov, "hc": hc._cov, "t_star": bt.t_star,
            "ci": np.asarray(bt.conf_int), "loo": d.beta_loo.to_numpy(), "gstar": d.effective_clusters().to_numpy()}


def test_threads_give_the_serial_answers():
    seeds = list(range(8))
    serial = [_job(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(2):  # twice, in different interleavings
            concurrent = list(pool.map(_job, seeds))
            for a, b in zip(serial, concurrent):
                for key in a:
                    assert np.array_equal(a[key], b[key]), key


def test_a_forked_child_runs_parallel_calls():
    """The core keeps its worker threads between calls; a child made by fork (multiprocessing's
    default on Linux) has none of them and must start its own rather than wait on the parent's."""
    import os
    import pickle

    if not hasattr(os, "fork"):
        pytest.skip("no os.fork on this platform")
    parent = _job(3)  # the parent's pool threads now exist
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the same job, on two threads, then its answer up the pipe
        import signal

        signal.alarm(60)  # a child left waiting on threads it does not have dies, and the test fails
        try:
            with os.fdopen(write, "wb") as out:
                pickle.dump(_job(3), out)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        child = pickle.load(inp)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    for key in parent:
        assert np.array_equal(parent[key], child[key]), key
