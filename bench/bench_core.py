#!/usr/bin/env python
"""Core benchmark: crve CV1 / CV2 against numpy X'X, statsmodels, pyfixest, estimatr and clubSandwich.

One run measures everything side by side and writes

    bench/results/core.md     Markdown tables, machine info, targets met / not met
    bench/results/core.json   the raw numbers (every repeat, every check)

(``--quick``: a small subset, written to core_quick.md / core_quick.json; R is skipped unless
``--with-r``.) See bench/README.md for how to run it and what each column means.

Data: K = 10 standard-normal regressors plus an intercept, y = X b + cluster effect + noise,
cluster codes (int64, 0..G-1) drawn uniformly at random per row, so rows are NOT sorted by
cluster; one extra case (N = 1e7, G = 1000) has the rows sorted by cluster for comparison.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
K_REG = 10  # regressors besides the intercept
SE_RTOL = 1e-8  # crve CV1 SEs vs statsmodels: max relative difference allowed
SLOW_CALL_S = 60.0  # a baseline call slower than this is timed once
SLOW_BUDGET_S = 150.0
NOISY_CORES = 0.2  # other processes using more than this many cores during a case: re-run it  # stop repeating a baseline once its repeats have used this much time

TARGETS = {
    "cv1_vs_xtx": 2.0,  # crve CV1 time <= 2 x numpy X'X
    "sm_speedup_1e7": 20.0,  # statsmodels / crve CV1 >= 20 at N = 1e7
    "cv2_vs_cv1": 2.0,  # crve CV2 (Satterthwaite dof) <= 2 x crve CV1
    "estimatr_speedup": 500.0,  # estimatr CR2 / crve CV2 >= 500 at N = 1e5, G = 100
    "mem_pct": 10.0,  # peak extra memory of the CV1 call <= 10 % of the inputs
}


# ----------------------------------------------------------------------------------------
# data and timing helpers
# ----------------------------------------------------------------------------------------
def make_data(N: int, G: int, sorted_rows: bool, seed: int):
    """y (N,), X (N, 11) C-contiguous with an intercept column first, int64 codes (N,)."""
    rng = np.random.default_rng(seed)
    X = np.empty((N, K_REG + 1))
    X[:, 0] = 1.0
    X[:, 1:] = rng.standard_normal((N, K_REG))
    g = rng.integers(0, G, N, dtype=np.int64)
    if sorted_rows:  # X rows are iid and independent of g, so sorting g = sorting the rows
        g.sort(kind="stable")
    b = np.linspace(-1.0, 1.0, K_REG + 1)
    y = X @ b + rng.standard_normal(G)[g] + rng.standard_normal(N)
    return y, X, g


def timed(fn, repeats: int, slow: bool = False):
    """(best seconds, all run times, the last return value). ``slow``: a baseline that is timed
    once when a call exceeds SLOW_CALL_S and stops repeating after SLOW_BUDGET_S in total."""
    times, out = [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if slow and (times[-1] > SLOW_CALL_S or sum(times) > SLOW_BUDGET_S):
            break
    return min(times), times, out


def rel_diff(a, b) -> float:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def snapshot_crve() -> tuple[Path, Path]:
    """Copy the installed crve package to a temporary directory and import it from there (also in
    the memory subprocesses), so that a reinstall during the run cannot mix builds."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("crve")
    if spec is None or spec.origin is None:
        raise SystemExit("crve is not installed: pip install . --no-build-isolation")
    src = Path(spec.origin).parent
    dst = Path(tempfile.mkdtemp(prefix="crve_bench_"))
    shutil.copytree(src, dst / "crve", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(dst))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(dst)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return src, dst


def core_sha() -> str:
    """Short sha256 of the installed crve._core extension (detects a rebuild during the run)."""
    import hashlib

    import crve._core as core

    return hashlib.sha256(Path(core.__file__).read_bytes()).hexdigest()[:12]


class CpuWatch:
    """CPU used by OTHER processes (cores, averaged) between two snapshots: /proc/stat busy time
    minus this process and its waited-for children. A benchmark on a 2-core machine is only as
    good as how idle the rest of the machine was."""

    def __init__(self):
        self.t0 = self._snap()

    @staticmethod
    def _snap():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
        busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()

    def foreign_cores(self) -> float:
        b1, o1, w1 = self._snap()
        b0, o0, w0 = self.t0
        return max(0.0, (b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-9)


def wait_quiet(max_wait: float, threshold: float = 0.15) -> dict:
    """Wait (up to max_wait s) until other processes use < threshold cores over a 1 s window."""
    t0 = time.monotonic()
    while True:
        w = CpuWatch()
        time.sleep(1.0)
        load = w.foreign_cores()
        if load < threshold or time.monotonic() - t0 > max_wait:
            return {"waited_s": round(time.monotonic() - t0, 1), "foreign_cores_at_start": round(load, 2)}


# ----------------------------------------------------------------------------------------
# memory: one fresh subprocess per case
# ----------------------------------------------------------------------------------------
def mem_child(N: int, G: int, sorted_rows: bool, seed: int) -> dict:
    """Run in a fresh interpreter: peak RSS of the crve call beyond its inputs."""
    import crve

    # Warm up on tiny data first so lazy imports (pandas, scipy.stats) and one-off allocations
    # are not charged to the call.
    yw, Xw, gw = make_data(2000, 20, False, 1)
    crve.cluster_robust(yw, Xw, gw)
    crve.cluster_robust(yw, Xw, gw, variant="CV2")
    del yw, Xw, gw

    y, X, g = make_data(N, G, sorted_rows, seed)
    touch = float(y.sum() + X.sum() + g.sum())  # every page of the inputs resident
    input_bytes = y.nbytes + X.nbytes + g.nbytes
    out = {"input_mb": input_bytes / 2**20, "touch": touch, "core_sha": core_sha()}
    for variant in ("CV1", "CV2"):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
            fh.write("5")
        rss0 = proc_status_kb("VmRSS")
        res = crve.cluster_robust(y, X, g, variant=variant)
        hwm = proc_status_kb("VmHWM")
        _ = res.bse
        extra_mb = (hwm - rss0) / 1024
        out[variant] = {"rss_before_mb": rss0 / 1024, "hwm_mb": hwm / 1024, "extra_mb": extra_mb,
                        "pct_of_inputs": 100.0 * extra_mb / out["input_mb"]}
        del res
    return out


STRICT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def measure_memory(N: int, G: int, sorted_rows: bool, seed: int) -> dict:
    """Fresh subprocess, default glibc malloc (the headline number), then again with a fixed
    mmap threshold so that no allocation >= 64 KiB can reuse pages freed before the call
    (the 'strict' number: everything the call touches)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mem-child", str(N), str(G),
           "1" if sorted_rows else "0", str(seed)]
    out = {}
    for name, extra_env in (("default", {}), ("strict", STRICT_MALLOC)):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env.update(extra_env)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        if p.returncode != 0:
            return {"error": p.stderr[-2000:]}
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if name == "default":
            out.update(r)
        else:
            out["strict"] = {v: r[v] for v in ("CV1", "CV2")}
            out["strict_core_sha"] = r["core_sha"]
    return out


# ----------------------------------------------------------------------------------------
# one benchmark case
# ----------------------------------------------------------------------------------------
def run_case(N: int, G: int, sorted_rows: bool, seed: int, args) -> dict:
    import crve

    repeats = 3 if N >= 10**7 else args.repeats
    quiet = wait_quiet(args.max_wait)
    y, X, g = make_data(N, G, sorted_rows, seed)
    watch = CpuWatch()
    case = {"N": N, "G_requested": G, "rows": "sorted" if sorted_rows else "random", "seed": seed,
            "repeats": repeats, "input_mb": (y.nbytes + X.nbytes + g.nbytes) / 2**20, "quiet": quiet}
    label = f"N={N:.0e} G={G:g} {case['rows']}"

    # Millisecond calls are noisy (gc, scheduling): crve and numpy get at least 15 runs below 1e7.
    fast = repeats if N >= 10**7 else max(repeats, 15)
    t, ts, res1 = timed(lambda: crve.cluster_robust(y, X, g), fast)
    case["G"] = res1.n_clusters
    case["crve_cv1"] = {"best_s": t, "runs_s": ts}
    print(f"[{label}] crve CV1 {t:.4f}s", flush=True)

    t, ts, res2 = timed(lambda: crve.cluster_robust(y, X, g, variant="CV2"), fast)
    case["crve_cv2"] = {"best_s": t, "runs_s": ts, "df_min": float(np.min(res2.df)), "df_max": float(np.max(res2.df))}
    print(f"[{label}] crve CV2 {t:.4f}s", flush=True)

    t, ts, _ = timed(lambda: X.T @ X, fast)
    case["numpy_xtx"] = {"best_s": t, "runs_s": ts}
    print(f"[{label}] numpy X'X {t:.4f}s", flush=True)

    if not args.no_statsmodels:
        import statsmodels.api as sm

        def sm_fit():
            return sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g})

        sm_repeats = 1 if (N >= 10**7 and args.sm_once_at_1e7) else repeats
        t, ts, r = timed(sm_fit, sm_repeats, slow=True)
        d = rel_diff(res1.bse, r.bse)
        case["statsmodels"] = {"best_s": t, "runs_s": ts, "n_runs": len(ts),
                               "timed_once": len(ts) < repeats,
                               "se_rel_diff_vs_crve_cv1": d, "se_check_pass": bool(d <= SE_RTOL)}
        print(f"[{label}] statsmodels {t:.3f}s ({len(ts)} runs); crve CV1 SE max rel diff {d:.2e}", flush=True)
        del r

    if not args.no_pyfixest:
        import pandas as pd
        import pyfixest as pf

        cols = [f"x{i}" for i in range(1, K_REG + 1)]
        df = pd.DataFrame(X[:, 1:], columns=cols)
        df["y"] = y
        df["g"] = g
        fml = "y ~ " + " + ".join(cols)
        t, ts, r = timed(lambda: pf.feols(fml, data=df, vcov={"CRV1": "g"}), repeats, slow=True)
        d = rel_diff(res1.bse, np.asarray(r.se()))
        case["pyfixest"] = {"best_s": t, "runs_s": ts, "n_runs": len(ts), "se_rel_diff_vs_crve_cv1": d}
        print(f"[{label}] pyfixest {t:.3f}s ({len(ts)} runs); SE max rel diff {d:.2e}", flush=True)
        del r, df

    case["foreign_cores"] = round(watch.foreign_cores(), 3)
    del y, X, g, res1, res2
    gc.collect()
    if not args.no_memory:
        case["memory"] = measure_memory(N, G, sorted_rows, seed)
        m = case["memory"]
        if "error" in m:
            print(f"[{label}] memory child failed: {m['error']}", flush=True)
        else:
            print(f"[{label}] peak extra memory CV1 {m['CV1']['extra_mb']:.1f} MB "
                  f"({m['CV1']['pct_of_inputs']:.2f} % of {m['input_mb']:.0f} MB)", flush=True)
    return case


# ----------------------------------------------------------------------------------------
# R: estimatr and clubSandwich at N = 1e5, G = 100
# ----------------------------------------------------------------------------------------
R_SCRIPT = r"""
suppressMessages({library(estimatr); library(clubSandwich)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
f <- as.formula(paste("y ~", paste0("x", 1:%(K)d, collapse = " + ")))
emit <- function(tag, v) cat(tag, format(v, digits = 17), "\n")
cat("R_VERSION", R.version.string, "\n")
cat("ESTIMATR_VERSION", as.character(packageVersion("estimatr")), "\n")
cat("CLUBSANDWICH_VERSION", as.character(packageVersion("clubSandwich")), "\n")
t0 <- proc.time()[["elapsed"]]
fit <- lm_robust(f, data = d, clusters = g, se_type = "CR2")
t1 <- proc.time()[["elapsed"]]
emit("ESTIMATR_TIME", t1 - t0)
emit("ESTIMATR_SE", fit$std.error)
emit("ESTIMATR_DF", fit$df)
t0 <- proc.time()[["elapsed"]]
m <- lm(f, data = d)
t1 <- proc.time()[["elapsed"]]
ct <- coef_test(m, vcov = "CR2", cluster = d$g, test = "Satterthwaite")
t2 <- proc.time()[["elapsed"]]
emit("CLUB_TIME", t2 - t0)
emit("CLUB_LM_TIME", t1 - t0)
emit("CLUB_SE", ct$SE)
emit("CLUB_DF", ct$df_Satt)
"""


def run_r(args) -> dict:
    import crve
    import pandas as pd

    N, G, seed = 10**5, 100, 777
    wait_quiet(args.max_wait)
    y, X, g = make_data(N, G, False, seed)
    watch = CpuWatch()
    out = {"N": N, "G": G, "rows": "random", "seed": seed}
    r_bin = shutil_which("Rscript")
    if r_bin is None:
        out["skipped"] = "Rscript not found"
        return out
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "data.csv"
        df = pd.DataFrame(X[:, 1:], columns=[f"x{i}" for i in range(1, K_REG + 1)])
        df["y"] = y
        df["g"] = g
        df.to_csv(csv, index=False, float_format="%.17g")
        script = Path(tmp) / "bench.R"
        script.write_text(R_SCRIPT % {"K": K_REG})
        print(f"[R] running estimatr + clubSandwich (N={N}, G={G}); clubSandwich takes minutes", flush=True)
        try:
            p = subprocess.run([r_bin, str(script), str(csv)], capture_output=True, text=True, timeout=args.r_timeout)
        except subprocess.TimeoutExpired:
            out["error"] = f"Rscript exceeded {args.r_timeout} s"
            return out
    if p.returncode != 0:
        out["error"] = p.stderr[-2000:]
        return out
    vals: dict[str, list[str]] = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts:
            vals[parts[0]] = parts[1:]
    out["r_version"] = " ".join(vals.get("R_VERSION", []))
    out["estimatr_version"] = vals.get("ESTIMATR_VERSION", ["?"])[0]
    out["clubsandwich_version"] = vals.get("CLUBSANDWICH_VERSION", ["?"])[0]
    out["estimatr_s"] = float(vals["ESTIMATR_TIME"][0])
    out["clubsandwich_s"] = float(vals["CLUB_TIME"][0])
    out["clubsandwich_lm_s"] = float(vals["CLUB_LM_TIME"][0])
    t, ts, res = timed(lambda: crve.cluster_robust(y, X, g, variant="CV2"), args.repeats)
    out["crve_cv2"] = {"best_s": t, "runs_s": ts}
    t, ts, _ = timed(lambda: crve.cluster_robust(y, X, g), args.repeats)
    out["crve_cv1"] = {"best_s": t, "runs_s": ts}
    se, dfv = np.asarray(res.bse), np.asarray(res.df)
    out["se_rel_diff_vs_estimatr"] = rel_diff(se, [float(v) for v in vals["ESTIMATR_SE"]])
    out["df_rel_diff_vs_estimatr"] = rel_diff(dfv, [float(v) for v in vals["ESTIMATR_DF"]])
    out["se_rel_diff_vs_clubsandwich"] = rel_diff(se, [float(v) for v in vals["CLUB_SE"]])
    out["df_rel_diff_vs_clubsandwich"] = rel_diff(dfv, [float(v) for v in vals["CLUB_DF"]])
    out["foreign_cores"] = round(watch.foreign_cores(), 3)
    print(f"[R] estimatr {out['estimatr_s']:.2f}s, clubSandwich {out['clubsandwich_s']:.2f}s, "
          f"crve CV2 {t:.4f}s; SE rel diff {out['se_rel_diff_vs_estimatr']:.1e} / "
          f"{out['se_rel_diff_vs_clubsandwich']:.1e}", flush=True)
    return out


def shutil_which(name: str):
    import shutil

    return shutil.which(name)


# ----------------------------------------------------------------------------------------
# machine info
# ----------------------------------------------------------------------------------------
def machine_info() -> dict:
    import crve
    import pandas
    import scipy

    info = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "python": sys.version.split()[0],
            "core_sha_start": core_sha(), "crve_path": str(Path(crve.__file__).parent),
            "platform": platform.platform(), "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pandas.__version__, "crve": crve.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/cpuinfo") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
        info["cpu_simd"] = " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags)
    except OSError:
        pass
    info["cores_os_cpu_count"] = os.cpu_count()
    info["cores_affinity"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001
        pass
    for mod in ("statsmodels", "pyfixest"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    try:
        info["crve_git"] = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "cpp", "python"],
                               capture_output=True, text=True).stdout.strip()
        info["crve_git"] += " (+local changes)" if dirty else ""
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------
def fmt_s(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if x >= 0.1 else f"{x * 1000:.1f} ms"


def fmt_r(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def ratios(c: dict) -> dict:
    cv1 = c["crve_cv1"]["best_s"]
    r = {"cv1_over_xtx": cv1 / c["numpy_xtx"]["best_s"], "cv2_over_cv1": c["crve_cv2"]["best_s"] / cv1}
    r["sm_over_cv1"] = c["statsmodels"]["best_s"] / cv1 if "statsmodels" in c else None
    r["pf_over_cv1"] = c["pyfixest"]["best_s"] / cv1 if "pyfixest" in c else None
    m = c.get("memory", {})
    r["mem_pct"] = m["CV1"]["pct_of_inputs"] if "CV1" in m else None
    r["mem_pct_cv2"] = m["CV2"]["pct_of_inputs"] if "CV2" in m else None
    return r


def met(ok) -> str:
    return "-" if ok is None else ("met" if ok else "**NOT met**")


def write_report(results: dict, md_path: Path, json_path: Path) -> None:
    cases = results["cases"]
    for c in cases:
        c["ratios"] = ratios(c)
    info = results["machine"]
    L = ["# crve core benchmark", ""]
    L.append(f"Generated by `python bench/bench_core.py{' --quick' if results['quick'] else ''}` on "
             f"{info.get('date')}. Raw numbers: `{json_path.name}`. Column meanings: `bench/README.md`.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- CPU: {info.get('cpu_model')} ({info.get('cpu_simd')}); cores: {info.get('cores_affinity')} usable "
             f"(os.cpu_count {info.get('cores_os_cpu_count')}); RAM {info.get('mem_total_gb')} GB; {info.get('platform')}")
    L.append(f"- Python {info.get('python')}, numpy {info.get('numpy')} ({info.get('numpy_blas')}), scipy "
             f"{info.get('scipy')}, pandas {info.get('pandas')}")
    L.append(f"- crve {info.get('crve')} (git {info.get('crve_git')}), default threads; statsmodels "
             f"{info.get('statsmodels')}; pyfixest {info.get('pyfixest')}")
    shas = {info.get("core_sha_start"), info.get("core_sha_end")} | {
        c["memory"].get(k) for c in cases for k in ("core_sha", "strict_core_sha") if "memory" in c}
    shas.discard(None)
    L.append(f"- crve._core sha256: {', '.join(sorted(shas))}"
             + (" -- **the installed extension changed during the run; numbers mix builds**" if len(shas) > 1 else ""))
    rr = results.get("r")
    if rr and "r_version" in rr:
        L.append(f"- {rr['r_version']}; estimatr {rr['estimatr_version']}; clubSandwich {rr['clubsandwich_version']}")
    L.append("")
    L.append("Data: K = 10 standard-normal regressors + intercept, y = X b + N(0,1) cluster effect + N(0,1) noise, "
             "int64 cluster codes drawn uniformly at random per row (rows not sorted by cluster) unless the "
             "row order says `sorted`. `other load` = cores used by other processes during the case "
             "(/proc/stat); a case above 0.2 is re-run (up to --retries times) and the least disturbed run kept. "
             "Times are best of "
             f"{results['repeats']} runs (3 at N = 1e7; crve and numpy X'X at least 15 below N = 1e7); statsmodels / pyfixest stop repeating once a call takes "
             f"> {SLOW_CALL_S:.0f} s or their runs total > {SLOW_BUDGET_S:.0f} s (runs column).")
    L.append("")
    L.append("## Timings (seconds unless ms)")
    L.append("")
    L.append("| N | G | rows | crve CV1 | crve CV2 | numpy X'X | statsmodels (runs) | pyfixest (runs) | "
             "CV1 / X'X | CV2 / CV1 | sm / CV1 | pf / CV1 | SE rel diff vs sm | check | other load |")
    L.append("|" + "---|" * 15)
    for c in cases:
        r = c["ratios"]
        sm_ = c.get("statsmodels")
        pf_ = c.get("pyfixest")
        m = c.get("memory", {})
        sm_cell = f"{fmt_s(sm_['best_s'])} ({sm_['n_runs']}{', once' if sm_['timed_once'] else ''})" if sm_ else "-"
        pf_cell = f"{fmt_s(pf_['best_s'])} ({pf_['n_runs']})" if pf_ else "-"
        chk = "-"
        if sm_:
            chk = "ok" if sm_["se_check_pass"] else "**FAIL**"
        L.append(f"| {c['N']:.0e} | {c['G']} | {c['rows']} | {fmt_s(c['crve_cv1']['best_s'])} | "
                 f"{fmt_s(c['crve_cv2']['best_s'])} | {fmt_s(c['numpy_xtx']['best_s'])} | {sm_cell} | {pf_cell} | "
                 f"{fmt_r(r['cv1_over_xtx'], 2)} | {fmt_r(r['cv2_over_cv1'], 2)} | {fmt_r(r['sm_over_cv1'])} | "
                 f"{fmt_r(r['pf_over_cv1'])} | "
                 f"{'%.1e' % sm_['se_rel_diff_vs_crve_cv1'] if sm_ else '-'} | {chk} | "
                 f"{c.get('foreign_cores', 0):.2f} |")
    L.append("")
    if any("memory" in c for c in cases):
        L.append("## Peak memory of the crve call beyond its inputs (fresh subprocess per case)")
        L.append("")
        L.append("| N | G | rows | inputs MB | CV1 extra MB | CV1 % of inputs | CV2 extra MB | CV2 % | "
                 "strict CV1 MB | strict CV1 % | strict CV2 MB | strict CV2 % |")
        L.append("|" + "---|" * 12)
        for c in cases:
            m = c.get("memory", {})
            if "CV1" not in m:
                L.append(f"| {c['N']:.0e} | {c['G']} | {c['rows']} | memory child failed |" + " |" * 8)
                continue
            st = m.get("strict", {})
            cells = [m["input_mb"], m["CV1"]["extra_mb"], m["CV1"]["pct_of_inputs"], m["CV2"]["extra_mb"],
                     m["CV2"]["pct_of_inputs"]]
            if st:
                cells += [st["CV1"]["extra_mb"], st["CV1"]["pct_of_inputs"], st["CV2"]["extra_mb"],
                          st["CV2"]["pct_of_inputs"]]
            else:
                cells += [None] * 4
            L.append(f"| {c['N']:.0e} | {c['G']} | {c['rows']} | " + " | ".join(
                fmt_r(v, 2 if i in (2, 4, 6, 8) else 1) for i, v in enumerate(cells)) + " |")
        L.append("")
        L.append("`extra` = VmHWM after the call - VmRSS before it (peak counter reset via /proc/self/clear_refs), "
                 "default glibc malloc; the target is judged on this. `strict` = the same with "
                 "MALLOC_MMAP_THRESHOLD_=65536, MALLOC_TRIM_THRESHOLD_=0, so allocations of 64 KiB or more "
                 "cannot hide in heap pages freed before the call.")
        L.append("")
    if rr:
        L.append("## R comparison (N = 1e5, G = 100, random row order; one run each, timed inside R)")
        L.append("")
        if "estimatr_s" in rr:
            cv2 = rr["crve_cv2"]["best_s"]
            L.append("| method | seconds | / crve CV2 | SE rel diff vs crve CV2 | dof rel diff vs crve CV2 |")
            L.append("|---|---|---|---|---|")
            L.append(f"| crve CV2 + Satterthwaite (best of {len(rr['crve_cv2']['runs_s'])}) | {fmt_s(cv2)} | 1 | - | - |")
            L.append(f"| crve CV1 (best of {len(rr['crve_cv1']['runs_s'])}) | {fmt_s(rr['crve_cv1']['best_s'])} | "
                     f"{rr['crve_cv1']['best_s'] / cv2:.2f} | - | - |")
            L.append(f"| estimatr lm_robust CR2 | {rr['estimatr_s']:.2f} | {rr['estimatr_s'] / cv2:.0f} | "
                     f"{rr['se_rel_diff_vs_estimatr']:.1e} | {rr['df_rel_diff_vs_estimatr']:.1e} |")
            L.append(f"| clubSandwich lm + coef_test CR2 Satterthwaite | {rr['clubsandwich_s']:.2f} "
                     f"(lm {rr['clubsandwich_lm_s']:.2f}) | {rr['clubsandwich_s'] / cv2:.0f} | "
                     f"{rr['se_rel_diff_vs_clubsandwich']:.1e} | {rr['df_rel_diff_vs_clubsandwich']:.1e} |")
        else:
            L.append(f"R comparison not run: {rr.get('skipped') or rr.get('error')}")
        L.append("")

    # Targets
    L.append("## Targets")
    L.append("")
    L.append("| target | case | value | status |")
    L.append("|---|---|---|---|")
    tgt = []
    for c in cases:
        name = f"N={c['N']:.0e} G={c['G']} {c['rows']}"
        r = c["ratios"]
        ok = r["cv1_over_xtx"] <= TARGETS["cv1_vs_xtx"]
        tgt.append(("CV1 time <= 2x numpy X'X", name, f"{r['cv1_over_xtx']:.2f}x", ok))
    for c in cases:
        if c["N"] >= 10**7 and c["ratios"]["sm_over_cv1"] is not None:
            name = f"N={c['N']:.0e} G={c['G']} {c['rows']}"
            v = c["ratios"]["sm_over_cv1"]
            tgt.append((">= 20x faster than statsmodels at N=1e7", name, f"{v:.1f}x", v >= TARGETS["sm_speedup_1e7"]))
    for c in cases:
        name = f"N={c['N']:.0e} G={c['G']} {c['rows']}"
        v = c["ratios"]["cv2_over_cv1"]
        tgt.append(("CV2 + Satterthwaite <= 2x CV1", name, f"{v:.2f}x", v <= TARGETS["cv2_vs_cv1"]))
    if rr and "estimatr_s" in rr:
        v = rr["estimatr_s"] / rr["crve_cv2"]["best_s"]
        tgt.append((">= 500x faster than estimatr CR2", "N=1e5 G=100 random", f"{v:.0f}x", v >= TARGETS["estimatr_speedup"]))
    for c in cases:
        if c["ratios"]["mem_pct"] is not None:
            name = f"N={c['N']:.0e} G={c['G']} {c['rows']}"
            v = c["ratios"]["mem_pct"]
            tgt.append(("CV1 peak extra memory <= 10% of inputs", name, f"{v:.2f}%", v <= TARGETS["mem_pct"]))
    for t in tgt:
        L.append(f"| {t[0]} | {t[1]} | {t[2]} | {met(t[3])} |")
    results["targets"] = [{"target": t[0], "case": t[1], "value": t[2], "met": bool(t[3])} for t in tgt]
    L.append("")
    summary: dict[str, list[bool]] = {}
    for t in tgt:
        summary.setdefault(t[0], []).append(bool(t[3]))
    L.append("Summary: " + "; ".join(f"{k}: {sum(v)}/{len(v)} met" for k, v in summary.items()) + ".")
    L.append("")
    checks = [c["statsmodels"]["se_check_pass"] for c in cases if "statsmodels" in c]
    L.append(f"Correctness: crve CV1 SEs agree with statsmodels to {SE_RTOL:g} relative in "
             f"{sum(checks)}/{len(checks)} cases.")
    L.append("")
    md_path.write_text("\n".join(L))
    json_path.write_text(json.dumps(results, indent=2))


# ----------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N in {1e5, 1e6}, G in {50, 1000}, 3 repeats, no R")
    ap.add_argument("--repeats", type=int, default=None, help="repeats below N = 1e7 (default 5; 3 with --quick)")
    ap.add_argument("--with-r", action="store_true", help="run the R comparison even with --quick")
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--no-statsmodels", action="store_true")
    ap.add_argument("--no-pyfixest", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--sm-once-at-1e7", action="store_true", help="time statsmodels once at N = 1e7")
    ap.add_argument("--r-timeout", type=float, default=1800.0, help="seconds allowed for the Rscript step")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--no-snapshot", action="store_true",
                    help="import the installed crve directly instead of a private copy made at start")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-runs of a case during which other processes used > 0.2 cores")
    ap.add_argument("--max-wait", type=float, default=120.0,
                    help="seconds to wait before each case for other processes to go idle")
    ap.add_argument("--mem-child", nargs=4, metavar=("N", "G", "SORTED", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.mem_child:
        N, G, s, seed = (int(v) for v in args.mem_child)
        print(json.dumps(mem_child(N, G, bool(s), seed)))
        return 0

    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.quick:
        grid = [(N, G, False) for N in (10**5, 10**6) for G in (50, 1000)]
    else:
        grid = [(N, G, False) for N in (10**5, 10**6, 10**7) for G in (50, 1000, 10**5) if G < N]
        grid.append((10**7, 1000, True))
    run_r_step = (not args.no_r) and (not args.quick or args.with_r)

    snap = None
    if not args.no_snapshot:
        snap = snapshot_crve()
    import crve

    # Warm-ups: imports, pyfixest/numba JIT, BLAS threads.
    yw, Xw, gw = make_data(5000, 50, False, 0)
    crve.cluster_robust(yw, Xw, gw)
    crve.cluster_robust(yw, Xw, gw, variant="CV2")
    if not args.no_statsmodels:
        import statsmodels.api as sm

        sm.OLS(yw, Xw).fit(cov_type="cluster", cov_kwds={"groups": gw})
    if not args.no_pyfixest:
        import pandas as pd
        import pyfixest as pf

        dfw = pd.DataFrame(Xw[:, 1:], columns=[f"x{i}" for i in range(1, K_REG + 1)])
        dfw["y"], dfw["g"] = yw, gw
        pf.feols("y ~ " + " + ".join(dfw.columns[:K_REG]), data=dfw, vcov={"CRV1": "g"})

    results = {"quick": args.quick, "repeats": args.repeats, "machine": machine_info(), "targets_def": TARGETS,
               "se_rtol": SE_RTOL, "cases": []}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "core_quick" if args.quick else "core"
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    t_start = time.perf_counter()
    for i, (N, G, s) in enumerate(grid):
        case = None
        for attempt in range(args.retries + 1):  # re-run a case that other processes disturbed
            c = run_case(N, G, s, 1000 + i, args)
            c["attempt"] = attempt + 1
            if case is None or c["foreign_cores"] < case["foreign_cores"]:
                case = c
            if case["foreign_cores"] <= NOISY_CORES:
                break
            print(f"  other processes used {c['foreign_cores']:.2f} cores during the case; re-running", flush=True)
        results["cases"].append(case)
        write_report(results, md_path, json_path)  # partial results survive an interruption
    if run_r_step:
        results["r"] = run_r(args)
    results["wall_s"] = time.perf_counter() - t_start
    results["machine"]["core_sha_end"] = core_sha()
    if snap is not None:
        import shutil

        results["machine"]["crve_snapshot_of"] = str(snap[0])
        shutil.rmtree(snap[1], ignore_errors=True)
    write_report(results, md_path, json_path)
    print(f"wrote {md_path} and {json_path} ({results['wall_s']:.0f} s)")
    print(md_path.read_text())
    failed = [c for c in results["cases"] if "statsmodels" in c and not c["statsmodels"]["se_check_pass"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
