"""The documentation runs: package doctests and the README's example."""
from __future__ import annotations

import doctest
import os
import re

import pytest

import crve
import crve.api
import crve.stats

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


@pytest.mark.parametrize("module", [crve, crve.api, crve.stats])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_readme_example_runs():
    with open(README) as fh:
        blocks = re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    res = namespace["res"]
    assert res.variant == "CV2" and res.n_clusters == 40


def test_demo_runs(capsys):
    from crve.__main__ import main

    assert main(["--clusters", "6", "--size", "200"]) == 0
    out = capsys.readouterr().out
    assert "CV2" in out and "satterthwaite" in out
