"""crve: fast, trustworthy cluster-robust inference for linear regression.

One pass over the rows builds per-cluster statistics (:class:`ClusterStats`); every estimator
(CV0-CV3, HC0-HC3, Satterthwaite dof, HTZ and Wald tests) then runs on G small blocks.

>>> import numpy as np, crve
>>> rng = np.random.default_rng(0)
>>> g = np.repeat(np.arange(30), 20)
>>> X = np.column_stack([np.ones(600), rng.normal(size=600)])
>>> y = X @ [1.0, 0.0] + rng.normal(size=30)[g] + rng.normal(size=600)
>>> res = crve.cluster_robust(y, X, g)           # CV1, T(G-1)
>>> res.variant, res.n_clusters
('CV1', 30)
"""
from ._version import __version__
from .api import cluster_robust
from . import datasets, diagnostics, simulate, sums
from .bootstrap import WildBootstrapResult, wild_cluster_bootstrap
from .certify import certify
from .formula import ols
from .results import ContrastTest, CrveWarning, Result, WaldTest
from .stats import ClusterStats

__all__ = ["__version__", "ols", "certify", "simulate", "diagnostics", "datasets", "sums", "cluster_robust", "wild_cluster_bootstrap", "WildBootstrapResult", "ClusterStats", "Result", "WaldTest", "ContrastTest", "CrveWarning"]
