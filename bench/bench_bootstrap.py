#!/usr/bin/env python
"""Wild cluster bootstrap benchmark: crve against wildboottest and pyfixest, side by side.

    python bench/bench_bootstrap.py            # about 3 minutes on 2 cores
    python bench/bench_bootstrap.py --quick    # N = 1e5 only, fewer repeats

Writes bench/results/bootstrap.md (tables, targets) and bench/results/bootstrap.json.

Cases (see bench/README.md):
  A. N in {1e5, 1e6}, G = 50, y ~ 1 + x1 + x2, H0: x1 = 0, WCR11 Rademacher, B = 9999:
     crve (whole call, and the share spent after the statistics pass), wildboottest
     (WildboottestCL, the full pipeline), pyfixest (Feols.wildboottest, model already fitted).
     The sample t statistics must agree to 1e-8 (relative) or the run fails.
  B. nlsw88 (shared/data): regress wage tenure ttl_exp collgrad, cluster(industry), H0 tenure = 0,
     Webb, B = 999,999, with the confidence interval (boottest: 0.69 s on one core, published).
  C. Individual-level (heteroskedastic) bootstrap, G = N = 42,000, K = 10 (intercept + 9 normal
     regressors), Rademacher, B = 9999, with the confidence interval: time and peak memory (a fresh
     process; boottest: 9.7 minutes and 4.5 GB, published).
  D. Threads: cases A (N = 1e6) and C with 1 thread and with all cores.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
TARGETS = {"wildboottest_speedup_1e6": 100.0, "nlsw88_s": 0.5, "individual_s": 10.0, "individual_gb": 1.0}


def best_of(fn, repeats: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def data_a(N: int, G: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, N, dtype=np.int64)
    X = np.column_stack([np.ones(N), rng.standard_normal((N, 2))])
    y = X @ [1.0, 0.0, 0.5] + rng.standard_normal(G)[g] + rng.standard_normal(N)
    return y, X, g


def case_a(N: int, repeats: int, peers: bool) -> dict:
    import crve

    y, X, g = data_a(N)
    B = 9999
    run = lambda: crve.wild_cluster_bootstrap(y, X, g, param=1, B=B, seed=1, conf_int=False)
    run_ci = lambda: crve.wild_cluster_bootstrap(y, X, g, param=1, B=B, seed=1)
    stats_only = lambda: crve.ClusterStats.from_arrays(y, X, g).fit()
    crve_repeats = max(7, repeats)  # milliseconds per call: cheap to repeat, and noisy
    t_crve, all_crve, bt = best_of(run, crve_repeats)
    t_ci, _, bt_ci = best_of(run_ci, crve_repeats)
    t_stats, _, _ = best_of(stats_only, crve_repeats)
    out = {"N": N, "G": 50, "B": B, "crve_s": t_crve, "crve_runs": all_crve, "crve_ci_s": t_ci,
           "crve_stats_s": t_stats, "bootstrap_share": max(0.0, (t_crve - t_stats) / t_crve),
           "crve_t": bt.t_stat, "crve_p": bt.pvalue, "crve_ci": list(bt_ci.conf_int)}
    if not peers:
        return out
    warnings.simplefilter("ignore")
    try:
        from wildboottest.wildboottest import WildboottestCL

        def wb():
            w = WildboottestCL(X=X, Y=y, cluster=g, R=np.array([0, 1.0, 0]), B=B, seed=1)
            w.get_scores(bootstrap_type="11", impose_null=True)
            w.get_weights(weights_type="rademacher")
            w.get_numer()
            w.get_denom()
            w.get_tboot()
            w.get_vcov()
            w.get_tstat()
            w.get_pvalue()
            return w

        small = data_a(2000)
        WildboottestCL(X=small[1], Y=small[0], cluster=small[2], R=np.array([0, 1.0, 0]), B=99, seed=1)  # import
        t_wb, all_wb, w = best_of(wb, max(1, repeats - 1))
        out.update(wildboottest_s=t_wb, wildboottest_runs=all_wb, wildboottest_t=float(np.ravel(w.t_stat)[0]),
                   wildboottest_p=float(w.pvalue))
    except ImportError:
        pass
    try:
        import pandas as pd
        import pyfixest as pf

        df = pd.DataFrame({"y": y, "x1": X[:, 1], "x2": X[:, 2], "g": g})
        fit = pf.feols("y ~ x1 + x2", data=df, vcov={"CRV1": "g"})
        fit.wildboottest(param="x1", reps=99, seed=1)  # numba JIT warm-up
        t_pf, all_pf, r = best_of(lambda: fit.wildboottest(param="x1", reps=B, seed=1), max(1, repeats - 1))
        out.update(pyfixest_s=t_pf, pyfixest_runs=all_pf, pyfixest_t=float(np.ravel(r["t value"])[0]),
                   pyfixest_p=float(np.ravel(r["Pr(>|t|)"])[0]))
    except ImportError:
        pass
    for peer in ("wildboottest", "pyfixest"):
        if f"{peer}_s" in out:
            out[f"{peer}_ratio"] = out[f"{peer}_s"] / t_crve
            rel = abs(out[f"{peer}_t"] - bt.t_stat) / abs(bt.t_stat)
            out[f"{peer}_t_reldiff"] = rel
            if rel > 1e-8:
                raise SystemExit(f"t statistic differs from {peer}: {out[f'{peer}_t']} vs {bt.t_stat}")
    return out


def case_b(repeats: int) -> dict | None:
    import pandas as pd

    import crve

    path = SHARED / "nlsw88.dta"
    if not path.exists():
        return None
    d = pd.read_stata(path, convert_categoricals=False)[["wage", "tenure", "ttl_exp", "collgrad", "industry"]].dropna()
    X = d[["tenure", "ttl_exp", "collgrad"]].astype(float).assign(_cons=1.0)
    run = lambda: crve.wild_cluster_bootstrap(d["wage"], X, d["industry"], param="tenure", weights="webb",
                                              B=999_999, seed=1)
    t, runs, bt = best_of(run, repeats)
    t1, _, _ = best_of(lambda: crve.wild_cluster_bootstrap(d["wage"], X, d["industry"], param="tenure",
                                                           weights="webb", B=999_999, seed=1, threads=1), repeats)
    t_noci, _, _ = best_of(lambda: crve.wild_cluster_bootstrap(d["wage"], X, d["industry"], param="tenure",
                                                               weights="webb", B=999_999, seed=1, conf_int=False),
                           repeats)
    return {"N": len(d), "G": bt.n_clusters, "B": bt.B, "crve_s": t, "crve_runs": runs, "crve_1thread_s": t1,
            "crve_no_ci_s": t_noci, "t": bt.t_stat, "p": bt.pvalue, "ci": list(bt.conf_int),
            "boottest_published_s": 0.69}


_CHILD = r"""
import json, sys, time, warnings
import numpy as np
import crve
warnings.simplefilter("ignore")
def status(key):  # this process's own figures (getrusage's maxrss is inherited across fork/exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

threads = int(sys.argv[1]) or None
rng = np.random.default_rng(0)
N, K = 42000, 10
X = np.column_stack([np.ones(N), rng.standard_normal((N, K - 1))])
y = X @ np.linspace(-1, 1, K) + rng.standard_normal(N) * (1 + np.abs(X[:, 1]))
crve.wild_cluster_bootstrap(y[:500], X[:500], None, param=1, B=99, seed=1)  # warm
before = status("VmRSS")
t0 = time.perf_counter()
bt = crve.wild_cluster_bootstrap(y, X, None, param=1, B=9999, seed=1, threads=threads)
t = time.perf_counter() - t0
peak = status("VmHWM")
print(json.dumps({"s": t, "peak_rss_mb": peak, "rss_before_mb": before, "p": bt.pvalue,
                  "ci": list(bt.conf_int), "t": bt.t_stat}))
"""


def case_c(threads: int) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(threads)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import crve

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "crve": crve.__version__, "date": _dt.datetime.now().isoformat(timespec="seconds")}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    for mod in ("wildboottest", "pyfixest", "numba"):
        try:
            from importlib.metadata import version

            info[mod] = version(mod)
        except Exception:
            pass
    return info


def report(res: dict) -> str:
    L = ["# Wild cluster bootstrap benchmark", "",
         f"Machine: {res['machine'].get('cpu', '?')}, {res['machine']['cpus']} cores; crve {res['machine']['crve']}, "
         f"wildboottest {res['machine'].get('wildboottest', '-')}, pyfixest {res['machine'].get('pyfixest', '-')}; "
         f"{res['machine']['date']}.", "",
         "Reproduce: `python bench/bench_bootstrap.py` (see bench/README.md).", "",
         "## A. WCR11, Rademacher, B = 9999, G = 50, y ~ 1 + x1 + x2 (best of repeats, seconds)", "",
         "| N | crve | crve + CI | bootstrap share of crve | wildboottest | pyfixest | wildboottest / crve | pyfixest / crve | t rel. diff |",
         "|---|---|---|---|---|---|---|---|---|"]
    for a in res["A"]:
        f = lambda k: f"{a[k]:.4f}" if k in a else "-"
        r = lambda k: f"{a[k]:.0f}x" if k in a else "-"
        diff = max(a.get("wildboottest_t_reldiff", 0), a.get("pyfixest_t_reldiff", 0))
        L.append(f"| {a['N']:.0e} | {a['crve_s']:.4f} | {a['crve_ci_s']:.4f} | {100 * a['bootstrap_share']:.0f}% | "
                 f"{f('wildboottest_s')} | {f('pyfixest_s')} | {r('wildboottest_ratio')} | {r('pyfixest_ratio')} | "
                 f"{diff:.1e} |")
    L += ["", "crve's bootstrap share = (whole call - the statistics pass and fit alone) / whole call.", ""]
    b = res.get("B")
    if b:
        L += ["## B. nlsw88, Webb, B = 999,999, with the confidence interval", "",
              "| N | G | crve (all cores) | crve (1 thread) | crve without CI | boottest (published, 1 core) | p | 95% CI |",
              "|---|---|---|---|---|---|---|---|",
              f"| {b['N']} | {b['G']} | {b['crve_s']:.3f} s | {b['crve_1thread_s']:.3f} s | {b['crve_no_ci_s']:.3f} s | "
              f"{b['boottest_published_s']} s | {b['p']:.4f} | [{b['ci'][0]:.5f}, {b['ci'][1]:.5f}] |", ""]
    L += ["## C. Individual-level bootstrap, G = N = 42,000, K = 10, Rademacher, B = 9999, with CI", "",
          "| threads | time | peak RSS of the process | RSS before the call | boottest (published) |",
          "|---|---|---|---|---|"]
    for th, c in res["C"].items():
        L.append(f"| {th} | {c['s']:.2f} s | {c['peak_rss_mb']:.0f} MB | {c['rss_before_mb']:.0f} MB | 9.7 min, 4.5 GB |")
    L += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, (val, ok, txt) in res["targets"].items():
        L.append(f"| {txt} | {val} | {'yes' if ok else 'no'} |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args()
    repeats = 2 if args.quick else args.repeats
    res = {"machine": machine(), "A": [], "C": {}}
    for N in ([100_000] if args.quick else [100_000, 1_000_000]):
        res["A"].append(case_a(N, repeats, peers=True))
        print(res["A"][-1], flush=True)
    res["B"] = case_b(repeats)
    print(res["B"], flush=True)
    res["C"]["all"] = case_c(0)
    if not args.quick:
        res["C"]["1"] = case_c(1)
    print(res["C"], flush=True)
    t = {}
    big = [a for a in res["A"] if a["N"] == 1_000_000 and "wildboottest_ratio" in a]
    if big:
        v = big[0]["wildboottest_ratio"]
        t["wildboottest"] = (f"{v:.0f}x", v >= TARGETS["wildboottest_speedup_1e6"],
                             "at least 100x faster than wildboottest at N = 1e6")
    if res["B"]:
        v = res["B"]["crve_s"]
        t["nlsw88"] = (f"{v:.3f} s", v < TARGETS["nlsw88_s"], "nlsw88, B = 999,999, with CI: under 0.5 s")
    c = res["C"]["all"]
    t["individual"] = (f"{c['s']:.2f} s, {c['peak_rss_mb']:.0f} MB",
                       c["s"] < TARGETS["individual_s"] and c["peak_rss_mb"] < 1024 * TARGETS["individual_gb"],
                       "G = N = 42,000, B = 9999, with CI: under 10 s and 1 GB")
    res["targets"] = t
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bootstrap_quick" if args.quick else "bootstrap"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float))
    (out / f"{stem}.md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
