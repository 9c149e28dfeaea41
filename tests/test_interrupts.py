"""Ctrl-C and memory limits (issue 7): a long bootstrap or streaming build stops promptly with
KeyboardInterrupt; work that cannot fit in memory is refused up front, saying how much it needs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import crve

LONG_BOOTSTRAP = """
import numpy as np, crve, sys
rng = np.random.default_rng(0)
g = rng.integers(0, 200, 20000)
X = np.column_stack([np.ones(20000), rng.normal(size=20000)])
y = X @ [1, 0] + rng.normal(size=20000)
print("ready", flush=True)
try:
    crve.wild_cluster_bootstrap(y, X, g, param=1, B=200_000_000, weights="webb", seed=1, conf_int=False, progress=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""

LONG_STREAM = """
import numpy as np, pandas as pd, crve, sys, tempfile, os
rng = np.random.default_rng(0)
N = 2_000_000
df = pd.DataFrame({"y": rng.normal(size=N), "x": rng.normal(size=N), "g": rng.integers(0, 1000, N)})
path = os.path.join(tempfile.mkdtemp(), "d.parquet")
df.to_parquet(path, row_group_size=10_000)
print("ready", flush=True)
try:
    for _ in range(1000):
        crve.ClusterStats.from_parquet(path, y="y", x=["x"], cluster="g", batch_size=10_000)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("script", [LONG_BOOTSTRAP, LONG_STREAM], ids=["bootstrap", "stream"])
def test_ctrl_c_stops_promptly(script):
    pytest.importorskip("pyarrow")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # well inside the long call
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert time.perf_counter() - t0 < 2.0, "took more than 2 s to stop"
    assert p.returncode == 3 and "interrupted" in out, err


def test_bootstrap_too_big_for_memory_is_refused_up_front():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 20, 500)
    X = np.column_stack([np.ones(500), rng.normal(size=500)])
    y = rng.normal(size=500)
    with pytest.raises(ValueError, match=r"B = 100,000,000,000,000 draws needs about .* TB of memory .* lower B"):
        crve.wild_cluster_bootstrap(y, X, g, param=1, B=10**14, weights="webb", seed=1, progress=False)


def test_statistics_too_big_for_memory_are_refused_up_front():
    from crve._memory import available_bytes

    if (available_bytes() or 0) > 90e9:
        pytest.skip("this machine could hold the 100 GB")
    N, K = 100_000, 500  # every row its own cluster: 1e5 blocks of 502 x 503 / 2 doubles, about 100 GB
    X = np.broadcast_to(np.arange(1.0, K + 1), (N, K))  # no memory: a stride-0 view
    with pytest.raises(ValueError, match=r"cluster statistics for 100,000 clusters and 500 columns needs about"):
        crve.ClusterStats.from_arrays(np.ones(N), X, np.arange(N))
