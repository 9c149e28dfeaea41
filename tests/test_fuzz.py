"""The fuzz targets of tests/fuzz_targets.py, a few hundred cases each (the at-scale runs, 1e5
cases per target, are `python tests/fuzz_targets.py`; RELIABILITY.md has the figures)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import fuzz_targets  # noqa: E402


@pytest.mark.parametrize("name,examples", [("arrays", 300), ("formula", 200), ("cli_args", 300), ("cli_files", 100),
                                           ("stream", 200), ("staged", 300), ("csv_stream", 200)])
def test_fuzz_target(name, examples):
    pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    fuzz_targets.run(name, examples, seed=0)
