"""Broken-cell flags, from the raw reads of one die.

A pulse train (one cell, one cycle) is flagged

* ``open`` when its first read is more than ``open_ratio`` times the die's
  median resistance right after SET (the cell never formed);
* ``abrupt`` when ``ln R`` jumps up by more than ``abrupt_jump`` between two
  consecutive valid reads and stays up (a full RESET); the reads from the jump
  on are left out of the drift fit;
* ``stuck`` when the pulses do nothing: its read-to-read noise is under
  ``stuck_noise_ratio`` times the die's typical noise (no pink noise, only the
  read noise) and ``w`` does not move;
* ``failed`` when it has fewer than ``min_reads`` valid reads after SET, or
  later when its fit fails (see :mod:`hfox_fit.fitting.drift`).

Flagged trains keep their row and reason; they are left out of the noise and
population fits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._util import nanquantile_rows

__all__ = ["FLAG_NAMES", "FlagOptions", "detect_flags"]

#: Flags in the order of the summary (``ok`` is no flag).
FLAG_NAMES = ("stuck", "abrupt", "open", "failed")


@dataclass(frozen=True)
class FlagOptions:
    """Thresholds of the broken-cell flags (see the module doc).

    Attributes
    ----------
    open_ratio : float, default=20
        First read over the die's median R0 (ratio) above which a cell is open.
    abrupt_jump : float, default=1.0
        Jump of ``ln R`` (i.e. a factor e = 2.7 in resistance) between consecutive
        reads that counts as an abrupt RESET.
    stuck_noise_ratio : float, default=0.5
        Read-to-read noise relative to the die's median below which a flat cell is stuck.
    min_reads : int, default=12
        Fewest valid reads after SET for a fit.
    """

    open_ratio: float = 20.0
    abrupt_jump: float = 1.0
    stuck_noise_ratio: float = 0.5
    min_reads: int = 12


def _step_diffs(lny, valid):
    """Change of ``ln R`` from the previous valid read at every valid read (NaN where none), (N, P)."""
    n, P = lny.shape
    d = np.full((n, P), np.nan)
    d[:, 1:] = lny[:, 1:] - lny[:, :-1]  # NaN next to a failed read
    gappy = np.nonzero(~valid.all(axis=1))[0]
    if gappy.size:  # only rows with failed reads need the previous *valid* read
        v = valid[gappy]
        idx = np.maximum.accumulate(np.where(v, np.arange(P)[None, :], -1), axis=1)
        before = np.concatenate([np.full((len(gappy), 1), -1), idx[:, :-1]], axis=1)
        rows = np.arange(len(gappy))[:, None]
        x = lny[gappy]
        d[gappy] = np.where(v & (before >= 0), x - x[rows, np.maximum(before, 0)], np.nan)
    return d


def _robust_noise(d):
    """Per-row read-to-read noise: 1.4826 * MAD of the step changes / sqrt(2) (NaN-aware)."""
    med = nanquantile_rows(d, 0.5)
    mad = nanquantile_rows(np.abs(d - med[:, None]), 0.5)
    return 1.4826 * mad / np.sqrt(2.0)


def detect_flags(lny, valid, options: FlagOptions = FlagOptions()):
    """Flag the broken pulse trains of one die.

    Parameters
    ----------
    lny : ndarray of shape (N, P)
        ``ln R`` (R in Ohm) at pulses 0..P-1, NaN where no valid read.
    valid : ndarray of bool, shape (N, P)

    Returns
    -------
    flag : ndarray of str, shape (N,)
        ``"ok"`` or one of :data:`FLAG_NAMES`.
    reason : ndarray of object, shape (N,)
        Human-readable reason ("" for ok).
    cut : ndarray of int, shape (N,)
        First pulse not to fit (P for none; the abrupt jump otherwise).
    noise : ndarray of shape (N,)
        Read-to-read noise of each train (in ln R).
    """
    n, P = lny.shape
    flag = np.full(n, "ok", dtype=object)
    reason = np.full(n, "", dtype=object)
    cut = np.full(n, P, dtype=int)
    n_after = valid[:, 1:].sum(axis=1)
    # failed: too few reads
    few = n_after < options.min_reads
    for i in np.nonzero(few)[0]:
        flag[i] = "failed"
        reason[i] = (f"only {int(n_after[i])} valid read(s) after SET; the fit needs at least "
                     f"{options.min_reads}")
    first_idx = np.argmax(valid, axis=1)
    has_any = valid.any(axis=1)
    first = np.where(has_any, lny[np.arange(n), first_idx], np.nan)
    # open: never formed
    r0 = lny[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med_r0 = np.nanmedian(r0) if np.isfinite(r0).any() else np.nanmedian(first)
    if np.isfinite(med_r0):
        is_open = has_any & (first - med_r0 > np.log(options.open_ratio)) & ~few
        for i in np.nonzero(is_open)[0]:
            flag[i] = "open"
            reason[i] = (f"never formed: first read {np.exp(first[i]):.3g} Ohm is "
                         f"{np.exp(first[i] - med_r0):.0f}x the die's median R0 ({np.exp(med_r0):.4g} Ohm)")
    # abrupt: a big upward jump that stays
    jump = _step_diffs(lny, valid)
    with np.errstate(invalid="ignore"):
        big = jump > options.abrupt_jump
    cand = np.nonzero(big.any(axis=1) & (flag == "ok"))[0]
    for i in cand:
        for j in np.nonzero(big[i])[0]:
            after = lny[i, j:][valid[i, j:]][:5]
            pre = lny[i, :j][valid[i, :j]][-5:]
            if len(pre) and np.median(after) - np.median(pre) > 0.8 * options.abrupt_jump:
                flag[i] = "abrupt"
                reason[i] = (f"abrupt RESET at pulse {j}: R jumps x{np.exp(jump[i, j]):.3g} "
                             f"to {np.exp(lny[i, j]):.3g} Ohm; reads from there on are not fitted")
                cut[i] = j
                break
    # stuck: only read noise, no drift
    w = lny - np.where(np.isfinite(r0), r0, first)[:, None]
    noise = _robust_noise(jump)
    good = (flag == "ok") & np.isfinite(noise)
    if good.any():
        die_noise = float(np.median(noise[good]))
        wa = np.where(valid, w, np.nan)[:, 1:]
        k = max(min(50, wa.shape[1] // 5), 1)
        early = nanquantile_rows(wa[:, :k], 0.5)
        late = nanquantile_rows(wa[:, -k:], 0.5)
        level = nanquantile_rows(wa, 0.5)
        flat = (np.abs(late - early) < 5 * noise) & (np.abs(level) < 5 * noise)
        quiet = noise < options.stuck_noise_ratio * die_noise
        stuck = good & quiet & flat
        for i in np.nonzero(stuck)[0]:
            flag[i] = "stuck"
            reason[i] = (f"stuck: read-to-read noise {noise[i]:.2g} is {noise[i] / die_noise:.2f}x the die's "
                         f"({die_noise:.2g}) and w moves by {late[i] - early[i]:+.2g} over the train")
    return flag, reason, cut, noise
