"""Ranks of resampled values by counting (the bootstraps of the copula correlations)."""

from __future__ import annotations

import numpy as np
from scipy import special


def _resample_ranks2(keys, n_keys: int, idx):
    """Twice ``stats.rankdata(x[idx], axis=-1)`` (average ranks, integers) from ``keys``, the dense ranks of ``x``.

    By counting: O(m) per replicate instead of a sort. Twice the rank is an integer (a sum of
    integers and halves), which indexes the normal scores of :func:`_score_table`.
    """
    k = keys[idx]
    n_rows = k.shape[0]
    counts = np.bincount((k + (np.arange(n_rows) * n_keys)[:, None]).ravel(),
                         minlength=n_rows * n_keys).reshape(n_rows, n_keys)
    twice = 2 * (np.cumsum(counts, axis=1) - counts) + counts + 1
    return np.take_along_axis(twice, k, axis=1)


def _resample_ranks(keys, n_keys: int, idx):
    """``stats.rankdata(x[idx], axis=-1)`` (average ranks) from ``keys``, the dense ranks of ``x``, by counting."""
    return _resample_ranks2(keys, n_keys, idx) / 2.0


def _score_table(m: int):
    """``ndtri(rank / (m + 1))`` for every rank ``r = j / 2`` (j = 0..2m): the normal scores of ``m`` values.

    The same numbers as computing them for each resampled rank (the same divisions of the same
    half-integers), with one ndtri per possible rank instead of one per draw.
    """
    return special.ndtri((np.arange(2 * m + 1) / 2.0) / (m + 1))
