"""Correlation between the per-cell parameters: Spearman's rho and the Gaussian-copula correlation.

The copula correlation is the Pearson correlation of normal scores
``Phi^-1(rank / (n + 1))``, pairwise complete, projected to the nearest
correlation matrix.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = ["correlations"]


def _nearest_correlation(c):
    c = (c + c.T) / 2
    w, v = np.linalg.eigh(c)
    w = np.clip(w, 1e-6, None)
    c = v @ np.diag(w) @ v.T
    d = np.sqrt(np.diag(c))
    c = c / np.outer(d, d)
    np.fill_diagonal(c, 1.0)
    return c


def correlations(table: pd.DataFrame, names) -> dict:
    """Spearman and Gaussian-copula correlation matrices of ``names`` (pairwise complete).

    Returns
    -------
    dict with ``names``, ``spearman``, ``copula`` (lists of lists) and ``n_pairs``.
    """
    names = list(names)
    k = len(names)
    sp = np.eye(k)
    cop = np.eye(k)
    npairs = np.zeros((k, k), int)
    for i in range(k):
        for j in range(i + 1, k):
            a, b = table[names[i]].to_numpy(float), table[names[j]].to_numpy(float)
            m = np.isfinite(a) & np.isfinite(b)
            npairs[i, j] = npairs[j, i] = int(m.sum())
            if m.sum() < 5:
                sp[i, j] = sp[j, i] = 0.0
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = stats.spearmanr(a[m], b[m]).statistic
            sp[i, j] = sp[j, i] = r if np.isfinite(r) else 0.0
            ra = stats.rankdata(a[m]) / (m.sum() + 1)
            rb = stats.rankdata(b[m]) / (m.sum() + 1)
            za, zb = special.ndtri(ra), special.ndtri(rb)
            c = np.corrcoef(za, zb)[0, 1]
            cop[i, j] = cop[j, i] = c if np.isfinite(c) else 0.0
    if k:
        cop = _nearest_correlation(cop)
    return {"names": names, "spearman": sp.tolist(), "copula": cop.tolist(), "n_pairs": npairs.tolist()}

