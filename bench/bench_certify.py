#!/usr/bin/env python
"""crve.certify on the grid of issue 5, and the cost per replication next to a peer pipeline.

    python bench/bench_certify.py            # about 1 minute on 2 cores
    python bench/bench_certify.py --quick    # 500 replications

Writes bench/results/certify.md and bench/results/certify.json.

1. The harness: ``crve.certify(design="cluster-randomized", G=[5, 10, 20, 30, 50], icc=0.02,
   mean_size=36, methods=[naive, HC1, CV1, CV2-satterthwaite, CV3, WCR-webb], reps=2000, B=399)``
   timed with workers = 1 and with all cores (target: under 60 s on 2 cores), plus the
   user-randomized design; the tables themselves are written out (they are the measured sizes).
2. Per replication at G = 50: crve's pipeline (one fit, the five analytic variants, a WCR Webb
   bootstrap with B = 399) against the same replication done with peers: statsmodels OLS with
   classical, HC1 and cluster (CV1) covariances, and wildboottest's WCR (Webb, B = 399); the
   peers offer no CV2-Satterthwaite or CV3, so the peer pipeline does less work. Reported as
   seconds per replication and the ratio.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import crve
from crve.simulate import ClusteredDGP

HERE = Path(__file__).resolve().parent
METHODS = ["naive", "HC1", "CV1", "CV2-satterthwaite", "CV3", "WCR-webb"]
GRID = [5, 10, 20, 30, 50]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def crve_replication(y, X, g, seed):
    res = crve.cluster_robust(y, X, g, threads=1)
    p = [res.with_variant(v, d).pvalues[1] for v, d in
         [("iid", "N-K"), ("HC1", "auto"), ("CV2", "satterthwaite"), ("CV3", "G-1")]] + [res.pvalues[1]]
    bt = res.wild_bootstrap(1, weights="webb", B=399, seed=seed, conf_int=False, progress=False, threads=1)
    return p + [bt.pvalue]


def peer_replication(y, X, g, seed):
    import statsmodels.api as sm
    from wildboottest.wildboottest import wildboottest

    fit = sm.OLS(y, X)
    p = [fit.fit().pvalues[1], fit.fit(cov_type="HC1").pvalues[1],
         fit.fit(cov_type="cluster", cov_kwds={"groups": g}).pvalues[1]]
    df = pd.DataFrame({"y": y, "x": X[:, 1], "g": g})
    model = sm.OLS.from_formula("y ~ x", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = wildboottest(model, param="x", cluster=df.g, B=399, weights_type="webb", seed=seed, show=False)
    return p + [float(np.asarray(out["p-value"])[0])]


def per_replication(reps: int) -> dict:
    dgp = ClusteredDGP(G=50, sizes=36, icc=0.02, treatment="cluster")
    data = [dgp.draw(np.random.default_rng([0, r])) for r in range(reps)]
    data = [(y, np.column_stack([np.ones(len(y)), x]), g) for y, x, g in data]
    peer_replication(*data[0], 1)  # warm-up (imports)
    crve_replication(*data[0], 1)
    t_crve, _ = timed(lambda: [crve_replication(y, X, g, r) for r, (y, X, g) in enumerate(data)])
    t_peer, _ = timed(lambda: [peer_replication(y, X, g, r) for r, (y, X, g) in enumerate(data)])
    return {"reps": reps, "crve_s_per_rep": t_crve / reps, "peer_s_per_rep": t_peer / reps,
            "ratio": t_peer / t_crve}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 500 if args.quick else 2000
    cores = len(os.sched_getaffinity(0))
    kw = dict(design="cluster-randomized", G=GRID, icc=0.02, mean_size=36, methods=METHODS, reps=reps, seed=1,
              progress=False)
    t1, table1 = timed(lambda: crve.certify(workers=1, **kw))
    tn, table = timed(lambda: crve.certify(workers=cores, **kw))
    pd.testing.assert_frame_equal(table1, table)  # the same table whatever the number of workers
    tu, user = timed(lambda: crve.certify(**{**kw, "design": "user-randomized", "G": [10, 50]}))
    per = per_replication(30 if args.quick else 100)

    cols = ["G", "method", "rejection_rate", "mc_ci_low", "mc_ci_high", "se_ratio", "moulton", "coverage", "verdict"]
    from crve.cli import _markdown

    fmt = lambda t: _markdown(t[cols])  # noqa: E731
    md = [f"# crve.certify ({_dt.date.today()}, {platform.processor() or platform.machine()}, {cores} cores)", "",
          f"Grid: G = {GRID}, ICC 0.02, 36 rows per cluster, {len(METHODS)} methods, {reps} replications per cell, "
          "WCR with B = 399.", "",
          "| run | seconds |", "|:---|---:|",
          f"| cluster-randomized grid, workers = 1 | {t1:.1f} |",
          f"| cluster-randomized grid, workers = {cores} | {tn:.1f} |",
          f"| user-randomized, G = 10, 50, workers = {cores} | {tu:.1f} |", "",
          f"Target (issue 5): the grid in under 60 s on 2 cores: **{'met' if tn < 60 else 'NOT met'}** ({tn:.1f} s).",
          "The tables are identical with 1 and with all workers (checked).", "",
          "## Per replication at G = 50 (one data set, 6 methods) against peers", "",
          "| | seconds per replication |", "|:---|---:|",
          f"| crve (iid, HC1, CV1, CV2-Satterthwaite, CV3, WCR Webb B = 399) | {per['crve_s_per_rep'] * 1e3:.2f} ms |",
          f"| statsmodels (iid, HC1, CV1) + wildboottest (WCR Webb B = 399) | {per['peer_s_per_rep'] * 1e3:.2f} ms |",
          f"| ratio peer / crve | {per['ratio']:.1f}x |", "",
          "## Cluster-randomized A/A", "", fmt(table), "", "## User-randomized A/A", "", fmt(user), ""]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "certify.md").write_text("\n".join(md))
    (HERE / "results" / "certify.json").write_text(json.dumps(
        {"seconds_workers_1": t1, "seconds_workers_all": tn, "cores": cores, "seconds_user": tu,
         "per_replication": per, "cluster_randomized": table.to_dict("records"),
         "user_randomized": user.to_dict("records")}, indent=1, default=float))
    print("\n".join(md[:16]))


if __name__ == "__main__":
    main()
