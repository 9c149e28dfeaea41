"""Degrees of freedom and joint tests from the cluster statistics (DESIGN.md section 3).

Satterthwaite / Bell–McCaffrey (2002) dof for a contrast c uses the G x G matrix
Omega = diag(d) - W'AW, never formed: the core returns tr(Omega) and tr(Omega^2) in O(G K^2),
and dof = tr(Omega)^2 / tr(Omega^2).

HTZ is the Hotelling-T^2 approximation of Pustejovsky & Tipton (2018, JBES, section 3.2), as
clubSandwich implements it for an unweighted lm (working model Phi = I):
  Omega_st = tr P^{(s,t)}     (the expected R V R' up to sigma^2; a q x q matrix)
  W = Omega^{-1/2};  B^{(s,t)} = P computed for the rotated contrasts W R
  nu = q (q + 1) / sum_{s,t} [ tr(B^{st} B^{st}) + tr(B^{ss} B^{tt}) ]
  F = (nu - q + 1) / (nu q) * Q   ~   F(q, nu - q + 1),   Q = (R b - r)'(R V R')^{-1}(R b - r).
Omega's rank is judged on its correlation form D^-1/2 Omega D^-1/2 (eigenvalues below 1e-12
times the largest treated as zero), and W = (D^-1/2 Omega D^-1/2)^{-1/2} D^-1/2 (W Omega W' = I,
the symmetric root up to a rotation, which nu does not see). clubSandwich uses an absolute
1e-12, which makes its HTZ depend on the units of X; ours does not, even where the restricted
coefficients' scales differ by many orders of magnitude.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["satterthwaite", "htz_pieces", "parse_dof", "correlation_scale"]

DOF_RULES = ("auto", "G-1", "satterthwaite", "N-K", "normal")


def parse_dof(dof: Any) -> str | float:
    """Normalise a dof spec: one of DOF_RULES (case-insensitive) or a positive number."""
    if isinstance(dof, str):
        key = dof.strip().lower().replace("_", "-")
        table = {"auto": "auto", "g-1": "G-1", "satterthwaite": "satterthwaite", "bm": "satterthwaite",
                 "n-k": "N-K", "normal": "normal", "z": "normal", "inf": "normal"}
        if key not in table:
            raise ValueError(f"unknown dof {dof!r}; use one of {DOF_RULES} or a positive number")
        return table[key]
    try:
        value = float(dof)
    except (TypeError, ValueError):
        raise ValueError(f"dof must be one of {DOF_RULES} or a positive number; got {dof!r}") from None
    if not value > 0:
        raise ValueError(f"dof must be positive; got {dof!r}")
    return value


OmegaFn = Callable[[np.ndarray, bool], dict]


def satterthwaite(omega: OmegaFn, R: np.ndarray) -> np.ndarray:
    """Bell–McCaffrey dof for each row of R (contrasts in the caller's basis)."""
    o = omega(np.atleast_2d(R), False)
    tr = np.diag(o["trace"])
    fro = np.diag(o["tr_abab"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fro > 0, tr * tr / fro, np.nan)


def correlation_scale(V: np.ndarray) -> np.ndarray:
    """sqrt|diag V| (of each matrix in a stack), 1 where that is 0: V / (d d') is V's
    correlation form, on which ranks do not depend on the units of the coefficients."""
    d = np.sqrt(np.abs(np.diagonal(V, axis1=-2, axis2=-1)))
    return np.where(d > 0, d, 1.0)


def htz_pieces(omega: OmegaFn, R: np.ndarray) -> tuple[float, int]:
    """(nu, rank of Omega) for the HTZ test of the rows of R."""
    q = R.shape[0]
    Om = omega(R, True)["trace"]
    Om = (Om + Om.T) / 2
    d = correlation_scale(Om)
    w, V = np.linalg.eigh(Om / np.outer(d, d))
    keep = w > 1e-12 * max(w.max(), 0.0)
    W = (V[:, keep] / np.sqrt(w[keep])) @ V[:, keep].T / d  # (D^-1/2 Omega D^-1/2)^{-1/2} D^-1/2
    o = omega(W @ R, True)
    denom = np.nansum(o["tr_abab"]) + np.nansum(o["tr_aabb"])
    return float(q * (q + 1) / denom), int(keep.sum())
