"""Correlation between the per-cell parameters: Spearman's rho and the Gaussian-copula correlation.

The copula correlation is the Pearson correlation of normal scores
``Phi^-1(rank / (n + 1))``, pairwise complete, projected to the nearest
correlation matrix. Each pair's 90 % interval and standard error are a
percentile bootstrap over cells (the pair's cells drawn with replacement, the
ranks taken again in each replicate). A right-censored value (``t_star`` of a
train whose break was not seen, with its bound ``t_star_lo``) is paired by the
censored likelihood of :mod:`._censored_copula` instead, so that the cells with
the latest breaks are not left out; Spearman's rho stays pairwise complete.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import special, stats

from ._censored_copula import censored_copulas
from ._ranks import _resample_ranks2, _score_table
from ._util import robust_sd

__all__ = ["COPULA_NOTE", "RELIABLE", "correlations", "copula_note"]

#: How the reported copula correlations were computed (the summary's and the result's note).
COPULA_NOTE = ("Gaussian-copula correlation (normal scores of the ranks), pairwise complete; a pair with t_star "
               "counts the cells whose break was not seen through its bound (censored likelihood, n_censored), "
               "except m2, which exists only past a seen break: m2's pairs come from the cells whose break was "
               "seen before the censoring point (t_star's exact values), and a break shows less where m1 and "
               "m2 are close, a selection that can still bias them a little; t_star~m2, m1~c1 and c1~r0 less "
               "what each train's correlated fit errors add (copula_error_shift, to first order)")


#: Below this reliability (the share of a parameter's spread over the cells that is not fit error:
#: ``1 - median(stderr)^2 / (IQR / 1.349)^2``) the copula pairs of the parameter are said to be unreliable.
#: The example campaign's m2 (300-pulse trains, 47 breaks seen) has 0.47: its m1~m2 copula came out +0.47
#: [0.26, 0.63] where the same cells' true values give -0.09 (its errors grow where m1 is small); the
#: slow coverage test's 1000-pulse wafers have 0.84 or more for every parameter.
RELIABLE = 0.7


def _reliability(table: pd.DataFrame, names) -> list:
    """Per name, ``1 - median(stderr)^2 / (IQR / 1.349)^2`` over the cells with a value and a stderr (None without)."""
    out = []
    for p in names:
        if p + "_stderr" not in table:
            out.append(None)
            continue
        x, se = table[p].to_numpy(float), table[p + "_stderr"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(se)
        spread = robust_sd(x[ok]) if ok.sum() >= 5 else 0.0
        out.append(float(1.0 - np.median(se[ok]) ** 2 / spread**2) if spread > 0 else None)
    return out


def copula_note(names, reliability=None) -> str:
    """:data:`COPULA_NOTE`, and the parameters whose copula pairs their fit errors may drive (reliability < RELIABLE)."""
    weak = [f"{p} {r:.2f}" for p, r in zip(names, reliability or []) if r is not None and r < RELIABLE]
    if not weak:
        return COPULA_NOTE
    return (f"{COPULA_NOTE}; fit errors are a large share of the cells' spread of {', '.join(weak)} (reliability, "
            f"1 - median stderr^2 / robust variance, below {RELIABLE:g}): their pairs can show how their errors "
            "depend on the other parameter rather than how the cells do, so read them as unreliable")


def _nearest_correlation(c):
    c = (c + c.T) / 2
    w, v = np.linalg.eigh(c)
    w = np.clip(w, 1e-6, None)
    c = v @ np.diag(w) @ v.T
    d = np.sqrt(np.diag(c))
    c = c / np.outer(d, d)
    np.fill_diagonal(c, 1.0)
    return c


def _normal_scores(x):
    """Normal scores ``Phi^-1(rank / (n + 1))`` along the last axis."""
    return special.ndtri(stats.rankdata(x, axis=-1) / (x.shape[-1] + 1))


def _row_corr(a, b):
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        return np.sum(a * b, axis=-1) / np.sqrt(np.sum(a * a, axis=-1) * np.sum(b * b, axis=-1))


def _score_slopes(x):
    """``dz/dx`` of the normal scores ``z`` of ``x`` at each value: a secant over ``n / 20`` neighbours each side."""
    n = len(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    zs = special.ndtri(stats.rankdata(xs) / (n + 1))
    k = max(3, n // 20)
    lo, hi = np.clip(np.arange(n) - k, 0, n - 1), np.clip(np.arange(n) + k, 0, n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (zs[hi] - zs[lo]) / (xs[hi] - xs[lo])
    out = np.empty(n)
    out[order] = slope
    return out


def _error_shift(a, b, se_a, se_b, err_corr):
    """Per cell, what its correlated fit errors add to the copula correlation of ``a`` and ``b``.

    To first order a cell's error ``e`` moves its normal score by ``(dz/dx) e``, so the errors add
    ``mean((dz/dx)_a (dz/dx)_b cov(e_a, e_b))`` to the correlation of the scores; the moves are
    capped at 1 (an error cannot carry a score much further than the scores' own spread). 0 where
    a term is unknown.
    """
    move_a = np.clip(_score_slopes(a) * se_a, 0.0, 1.0)
    move_b = np.clip(_score_slopes(b) * se_b, 0.0, 1.0)
    shift = move_a * move_b * err_corr
    return np.where(np.isfinite(shift), shift, 0.0)


def _bootstrap_pair(a, b, n_boot, rng, shift=None, copula=True):
    """Percentile 90 % intervals and standard errors of the copula and Spearman correlations of one pair.

    ``shift``: per cell, what its correlated fit errors add to the copula correlation
    (:func:`_error_shift`), taken out of each replicate with that replicate's cells.
    ``copula=False``: Spearman's only (the copula's interval comes from elsewhere; the
    draws are the same, so later pairs' replicates do not change).
    """
    m = len(a)
    cop, spear = [], []
    chunk = max(1, 1_000_000 // m)
    (ua, ka), (ub, kb) = np.unique(a, return_inverse=True), np.unique(b, return_inverse=True)
    scores = _score_table(m)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, m, (min(chunk, n_boot - start), m))
        twice_a, twice_b = _resample_ranks2(ka, len(ua), idx), _resample_ranks2(kb, len(ub), idx)
        if copula:
            cop.append(_row_corr(scores[twice_a], scores[twice_b]) - (0.0 if shift is None else shift[idx].mean(1)))
        spear.append(_row_corr(twice_a / 2.0, twice_b / 2.0))
    out = []
    for reps in (np.concatenate(cop) if copula else np.array([]), np.concatenate(spear)):
        reps = reps[np.isfinite(reps)]
        if len(reps) < max(10, n_boot // 2):
            out.append((None, None))
            continue
        out.append(([float(np.percentile(reps, 5)), float(np.percentile(reps, 95))], float(np.std(reps, ddof=1))))
    return out


def correlations(table: pd.DataFrame, names, bootstrap: int = 0, rng=None, censored=None,
                 exact_only=(), error_correlation=None) -> dict:
    """Spearman and Gaussian-copula correlation matrices of ``names`` (pairwise complete).

    Parameters
    ----------
    table : DataFrame
    names : sequence of str
    bootstrap : int, default=0
        Replicates of the bootstrap over cells behind each pair's interval (0: none).
    rng : int or Generator, optional
    censored : dict of str to str, optional
        A column of ``names`` that is right-censored where NaN, and the column of its
        lower bounds (``{"t_star": "t_star_lo"}``): its copula correlation with another
        column counts the censored cells too (:func:`._censored_copula.censored_copula`).
    exact_only : sequence of str
        Columns that exist only with an exact censored value (``m2``, the slope after a
        break that was seen): their pairs with it stay pairwise complete.
    error_correlation : dict of (str, str) to str, optional
        For a pair ``(a, b)``, the column of each cell's correlation of the fit errors of ``a``
        and ``b`` (with ``<a>_stderr`` and ``<b>_stderr`` in ``table``): the copula correlation
        those errors add is taken out (:func:`_error_shift`), in the estimate and in each replicate.

    Returns
    -------
    dict with ``names``, ``spearman``, ``copula`` (lists of lists) and ``n_pairs``;
    with ``bootstrap``, also ``copula_stderr``, ``copula_ci90``, ``spearman_stderr``
    and ``spearman_ci90`` (per pair: a number / ``[lo, hi]``, None on the diagonal
    and for pairs with fewer than 5 cells). With ``censored``, also ``n_censored``:
    the censored cells each pair's copula correlation counts (``n_pairs`` counts them too).
    With ``error_correlation``, also ``copula_error_shift``: per pair, what the cells' correlated
    fit errors added to the copula correlation and was taken out (0 where none).
    """
    names = list(names)
    k = len(names)
    sp = np.eye(k)
    cop = np.eye(k)
    npairs = np.zeros((k, k), int)
    rng = np.random.default_rng(rng)
    unc = {key: [[None] * k for _ in range(k)] for key in
           ("copula_ci90", "copula_stderr", "spearman_ci90", "spearman_stderr")}
    censored = {c: lo for c, lo in (censored or {}).items() if c in names and lo in table}
    ncens = np.zeros((k, k), int)
    errors = {pair: col for pair, col in (error_correlation or {}).items()
              if col in table and all(p in names and p + "_stderr" in table for p in pair)}
    shifts = np.zeros((k, k))
    cens_pairs = _censored_pairs(table, names, censored, exact_only, bootstrap, rng)
    for i in range(k):
        for j in range(i + 1, k):
            a, b = table[names[i]].to_numpy(float), table[names[j]].to_numpy(float)
            m = np.isfinite(a) & np.isfinite(b)
            npairs[i, j] = npairs[j, i] = int(m.sum())
            pair = cens_pairs.get((names[i], names[j])) or cens_pairs.get((names[j], names[i]))
            if pair is not None:
                npairs[i, j] = npairs[j, i] = pair["n"]
                ncens[i, j] = ncens[j, i] = pair["n_censored"]
            if m.sum() < 5:
                sp[i, j] = sp[j, i] = 0.0
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = stats.spearmanr(a[m], b[m]).statistic
            sp[i, j] = sp[j, i] = r if np.isfinite(r) else 0.0
            col = errors.get((names[i], names[j])) or errors.get((names[j], names[i]))
            shift = None
            if pair is None:
                if col is not None:
                    shift = _error_shift(a[m], b[m], table[names[i] + "_stderr"].to_numpy(float)[m],
                                         table[names[j] + "_stderr"].to_numpy(float)[m], table[col].to_numpy(float)[m])
                    shifts[i, j] = shifts[j, i] = float(shift.mean())
                c = np.corrcoef(_normal_scores(a[m]), _normal_scores(b[m]))[0, 1] - shifts[i, j]
            else:
                c = pair["copula"]
            cop[i, j] = cop[j, i] = float(np.clip(c, -0.999, 0.999)) if np.isfinite(c) else 0.0
            if bootstrap > 0:
                (c_ci, c_se), (s_ci, s_se) = _bootstrap_pair(a[m], b[m], bootstrap, rng, shift, copula=pair is None)
                if pair is not None:
                    c_ci, c_se = pair.get("copula_ci90"), pair.get("copula_stderr")
                for key, val in (("copula_ci90", c_ci), ("copula_stderr", c_se), ("spearman_ci90", s_ci),
                                 ("spearman_stderr", s_se)):
                    unc[key][i][j] = unc[key][j][i] = val
    if k:
        cop = _nearest_correlation(cop)
    out = {"names": names, "spearman": sp.tolist(), "copula": cop.tolist(), "n_pairs": npairs.tolist(),
           "reliability": _reliability(table, names)}
    if censored:
        out["n_censored"] = ncens.tolist()
    if errors:
        out["copula_error_shift"] = shifts.tolist()
    if bootstrap > 0:
        out.update(unc)
    return out


def _censored_pairs(table, names, censored, exact_only, bootstrap, rng) -> dict:
    """``{(other, value): result}``: the censored likelihood's copula of each censored ``value`` with the others.

    The others that pair with it on the same cells share one bootstrap (:func:`._censored_copula.censored_copulas`),
    on a child generator, so that the other pairs' bootstrap draws stay as they were.
    """
    out = {}
    for value, bound in censored.items():
        others = [o for o in names if o != value and o not in censored and o not in exact_only]
        t, t_lo = table[value].to_numpy(float), table[bound].to_numpy(float)
        known = np.isfinite(t) | np.isfinite(t_lo)
        groups = {}
        for o in others:  # grouped by the cells each pair uses
            groups.setdefault((np.isfinite(table[o].to_numpy(float)) & known).tobytes(), []).append(o)
        for group in groups.values():
            results = censored_copulas([table[o].to_numpy(float) for o in group], t, t_lo, bootstrap,
                                       rng.spawn(1)[0])
            out.update({(o, value): r for o, r in zip(group, results) if r is not None})
    return out
