"""The documentation runs: package doctests, the README's example and every docs/ page."""
from __future__ import annotations

import doctest
import glob
import importlib
import os
import re
import subprocess
import sys

import pytest

import crve
import crve.api
import crve.datasets
import crve.formula
import crve.results
import crve.stats

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = os.path.join(ROOT, "README.md")
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


@pytest.mark.parametrize("name", ["crve", "crve.api", "crve.stats", "crve.formula", "crve.results", "crve.datasets", "crve.sums", "crve.stream", "crve.dask",
                                  "crve.diagnostics", "crve.simulate", "crve.certify"])
def test_doctests(name):
    module = importlib.import_module(name)  # (crve.certify the attribute is the function)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_readme_example_runs():
    with open(README) as fh:
        blocks = re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    first: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, "README.md", "exec"), namespace)
        if i == 0:
            first = dict(namespace)
    # The worked example's prose: -0.043; se 0.020 -> 0.056; p 0.036 -> 0.45 / 0.47 (14 dof) / 0.46.
    naive, res, bt = first["naive"], first["res"], first["bt"]
    assert round(naive.params["absences"], 3) == -0.043
    assert round(naive.bse["absences"], 3) == 0.020 and round(res.bse["absences"], 3) == 0.056
    assert round(naive.pvalues["absences"], 3) == 0.036 and round(res.pvalues["absences"], 2) == 0.45
    cv2 = res.with_variant("CV2")
    assert round(cv2.pvalues["absences"], 2) == 0.47 and round(cv2.df["absences"]) == 14
    assert round(bt.pvalue, 2) == 0.46
    assert str(res.summary()).split("\n")[:20] == README_SUMMARY()


def README_SUMMARY() -> list[str]:
    """The summary printed in the README (the fenced block after 'The summary:')."""
    with open(README) as fh:
        text = fh.read()
    block = re.search(r"The summary:\n\n```\n(.*?)```", text, flags=re.S).group(1)
    return block.rstrip("\n").split("\n")


def test_docs_pages_exist():
    assert {os.path.basename(p) for p in PAGES} >= {"tutorial.md", "bootstrap.md", "cli.md", "diagnostics.md"}


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_docs_page_runs(page, tmp_path, monkeypatch, capsys):
    """Python blocks run in order in one namespace; bash blocks run in a shell; both in tmp_path."""
    pytest.importorskip("matplotlib")
    with open(page) as fh:
        blocks = re.findall(r"```(python|bash)\n(.*?)```", fh.read(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    namespace: dict = {"__name__": "__docs__"}
    for lang, code in blocks:
        if lang == "python":
            exec(compile(code, page, "exec"), namespace)
        else:
            for line in code.strip().splitlines():
                r = subprocess.run(line, shell=True, capture_output=True, text=True, env=env, timeout=300)
                assert r.returncode == 0, f"{line}\n{r.stderr}"
    if os.path.basename(page) == "diagnostics.md":
        _check_sweep_table(page, namespace["sweep"])


def _check_sweep_table(page, sweep):
    """The size table written in docs/diagnostics.md is what the page's own run measures."""
    with open(page) as fh:
        rows = re.findall(r"^\| (\d+) \| ([\d. |]+)\|$", fh.read(), flags=re.M)
    assert len(rows) == 5
    methods = ["CV1-normal", "CV1", "CV2-satterthwaite", "CV3", "WCR-webb"]
    rate = sweep.set_index(["G", "method"]).rejection_rate
    for G, cells in rows:
        written = [float(c) for c in cells.split("|")]
        measured = [float(rate[int(G), m]) for m in methods]
        assert written == pytest.approx(measured, abs=5.01e-4), (G, written, measured)  # 3 decimals


def test_demo_runs(capsys):
    from crve.__main__ import main

    assert main(["--clusters", "6", "--size", "200"]) == 0
    out = capsys.readouterr().out
    assert "CV2" in out and "satterthwaite" in out
