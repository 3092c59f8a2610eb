"""Robust to RTN: the noise scale that sets the masking, the RTN stretches that hide a train, and R0 at SET.

The per-die fit (:func:`~hfox_fit.fitting.fit_drift_die`) masks reads far from
the fit (:func:`_robust_scale`), falls back to all reads where RTN hides the
start or a long stretch of a train (:func:`_rtn_hides`, :func:`_rtn_states`),
extrapolates ``R0`` where the read right after SET failed
(:func:`_extrapolate_r0`) and refers ``R0`` and ``c1`` to the RTN-low state
for trains that start high (:func:`_r0_at_set`, :func:`_start_excess`).
"""

from __future__ import annotations

import numpy as np

from ..laws import get_law
from ._util import _join, logsumexp, nanquantile_rows
from .noise import _VAR_U1U2


def _robust_scale(resid, mask):
    """Per-row noise scale from the residuals below zero (RTN only adds positive ones)."""
    neg = resid < 0
    neg &= mask
    cnt = np.count_nonzero(neg, axis=1)
    r = np.where(neg, resid, resid.dtype.type(0))
    s = np.sqrt(np.einsum("nt,nt->n", r, r).astype(float) / np.maximum(cnt, 1))
    s[cnt < 3] = np.nan
    return s


def _extrapolate_r0(lny, vmask, lnr0, r0_from_read):
    """``ln R0`` of the trains whose read right after SET failed, from their first valid read.

    Such a train's ``ln R0`` is its first valid read (pulse ``j``) less the die's
    median ``w`` at pulse ``j`` over the trains whose read right after SET
    succeeded. Fills ``lnr0`` (N,) in place where it can; returns the spread
    (1.4826 MAD of that ``w``) of each ``ln R0`` so extrapolated (NaN elsewhere).
    """
    n = lny.shape[0]
    need = ~r0_from_read & vmask.any(1)
    r0_spread = np.full(n, np.nan)
    if need.any():
        # the die's median w at the first valid read of each train that needs it
        rows_need = np.nonzero(need)[0]
        first_j = np.argmax(vmask[rows_need], axis=1)
        cols = np.unique(first_j)
        ref = vmask[:, cols] & r0_from_read[:, None]
        wref = np.where(ref, lny[:, cols + 1] - lnr0[:, None], np.nan).T
        med_w = nanquantile_rows(wref, 0.5)
        mad_w = nanquantile_rows(np.abs(wref - med_w[:, None]), 0.5)
        for i, j in zip(rows_need, first_j):
            k = int(np.searchsorted(cols, j))
            if np.isfinite(med_w[k]):
                lnr0[i] = lny[i, j + 1] - med_w[k]
                r0_spread[i] = 1.4826 * mad_w[k]
    return r0_spread

#: Grid of U1*U2 in (0, 1) (midpoints) with log of its density -ln(u) times the cell width, for the
#: likelihood of a read in the RTN high state (:func:`_start_excess`).
_U_GRID = (np.arange(256) + 0.5) / 256
_U_LOGW = np.log(-np.log(_U_GRID) / 256)


def _start_excess(d, sigma_d, amplitude, p_up, n_trains: int, c1=None, c1_law=None, pi0: float = 0.01,
                  iters: int = 50):
    """Probability that the read right after SET was RTN-high, and its expected excess, for trains high at the start.

    A train that is RTN-high over its first block either started high (the read
    right after SET, which defines ``R0``, was high too: RTN persists from pulse
    to pulse) or went high within the block. The two are told apart by where
    the high stretch begins: the read-to-read changes are small between low
    reads and as wide as the telegraph scatter between high ones, whatever the
    drift, so the changes over the first block place the onset (at pulse 1, or
    after some low reads); and by how often trains start high on this die (a
    rate estimated by EM over the die's ``n_trains`` trains; the others start
    low). The excess of a high read is ``U1 U2 A``; given the train's apparent
    ``c1`` and the die's ``c1`` law, its posterior mean is the correction
    (empirical Bayes: the telegraph law combined with the die's spread of ``c1``).

    Parameters
    ----------
    d : ndarray of shape (K, B - 1)
        Changes from read ``k - 1`` to read ``k`` (pulses 2..B) of the K
        candidate trains, less the fitted law's change (NaN where a read is missing).
    sigma_d : float
        Standard deviation of a change between two low reads.
    amplitude : ndarray of shape (K,)
        Each train's telegraph amplitude ``A``.
    p_up : float
        Per-pulse probability of going high (the die's).
    n_trains : int
        Trains of the die that could have started high (the denominator of the rate).
    c1 : ndarray of shape (K,), optional
        The candidates' fitted ``c1`` (against the read right after SET).
    c1_law : (float, float), optional
        Median and spread of ``c1`` over the die's trains that start low.
    pi0 : float
        Starting value of the rate.

    Returns
    -------
    p_high, excess, var : ndarray of shape (K,)
        Posterior probability that the read at pulse 0 was high; the posterior
        mean of its excess; and the posterior variance of that excess.
    """
    k = d.shape[0]
    if k == 0:
        z = np.zeros(0)
        return z, z, z
    miss = ~np.isfinite(d)
    x = np.where(miss, 0.0, d)
    s2 = sigma_d * sigma_d
    A = amplitude[:, None]
    # both low, low -> high at this change, both high (the difference of two U1 U2 A: its variance)
    ll_ll = -0.5 * x * x / s2 - 0.5 * np.log(2 * np.pi * s2)
    e = A * _U_GRID[None, :]  # (K, G) excess grid, log weights _U_LOGW
    q = -0.5 * (x[..., None] - e[:, None, :]) ** 2 / s2 + _U_LOGW - 0.5 * np.log(2 * np.pi * s2)
    ll_lh = logsumexp(q, axis=2)
    v_hh = s2 + 2.0 * _VAR_U1U2 * A * A
    ll_hh = -0.5 * x * x / v_hh - 0.5 * np.log(2 * np.pi * v_hh)
    for a in (ll_ll, ll_lh, ll_hh):
        a[miss] = 0.0
    # onset at change j (reads up to j low, from j + 1 on high); column 0 of ll: high from pulse 1
    zero = np.zeros((k, 1))
    before = np.concatenate([zero, np.cumsum(ll_ll, axis=1)], axis=1)[:, :-1]  # sum of ll_ll over changes < j
    after = np.concatenate([np.cumsum(ll_hh[:, ::-1], axis=1)[:, ::-1], zero], axis=1)  # over changes >= j
    ll = np.concatenate([after[:, :1], before + ll_lh + after[:, 1:]], axis=1)
    lk = np.exp(ll - ll.max(axis=1, keepdims=True))
    # the excess given high, from the telegraph law and the apparent c1 (c1_true = c1 + excess)
    logw = np.broadcast_to(_U_LOGW, e.shape)
    if c1 is not None and c1_law is not None and np.isfinite(c1_law[1]) and c1_law[1] > 0:
        mu, sc = c1_law
        cc = np.where(np.isfinite(c1), c1, mu)
        logw = logw - 0.5 * ((cc[:, None] + e - mu) / sc) ** 2
    post = np.exp(logw - logw.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    e1 = (post * e).sum(axis=1)
    e2 = (post * e * e).sum(axis=1)
    p_up = float(np.clip(p_up, 1e-6, 0.5))
    n_trains = max(int(n_trains), k)
    rate = float(np.clip(pi0, 1e-4, 0.5))
    for _ in range(iters):
        started = rate * lk[:, 0]  # high at pulse 0 already, and still at pulse 1
        later = (1.0 - rate) * p_up * lk.sum(axis=1)  # low at pulse 0, up before pulse 1 or later
        p = started / (started + later)
        new = float(p.sum() / n_trains)
        done = abs(new - rate) <= 1e-6 * max(rate, 1e-6)
        rate = new
        if done:
            break
    excess = p * e1
    var = np.maximum(p * e2 - excess**2, 0.0)
    return p, excess, var


def _rtn_hides(rtn, rows_ok, first_t, last_t, options) -> np.ndarray:
    """Rows (bool, N) whose RTN-high stretches hide the start of the train, or a long stretch of it.

    On the blocks the RTN mask leaves out (high, and their neighbours): the
    stretch hidden at the start is longer than ``rtn_late_start`` of the train's
    span (``c1`` would be an extrapolation), or a hidden stretch anywhere is
    longer than ``rtn_max_gap`` of it (a break could hide in it).
    """
    n, nb = rtn.high.shape
    out = np.zeros(n, bool)
    if nb == 0:
        return out
    hb = rtn.high > 0.5
    hidden = hb.copy()
    hidden[:, 1:] |= hb[:, :-1]
    hidden[:, :-1] |= hb[:, 1:]
    hidden &= rows_ok[:, None]
    rows = np.nonzero(hidden.any(1))[0]
    if rows.size == 0:
        return out
    h = hidden[rows]
    run = np.zeros(rows.size)
    longest = np.zeros(rows.size)
    for b in range(nb):  # length (blocks) of the hidden stretch ending at block b
        run = (run + 1.0) * h[:, b]
        np.maximum(longest, run, out=longest)
    lead = np.where(h.all(1), nb, np.argmin(h, axis=1)) * rtn.block
    span = (last_t - first_t)[rows]
    out[rows] = (lead > options.rtn_late_start * span) | (longest * rtn.block > options.rtn_max_gap * span)
    return out


def _rtn_states(rtn, T: int):
    """Per read (N, T): RTN-high (its block more likely high than low), and away from a change of state.

    ``keep`` is False in the blocks on either side of a change of state (they
    may hold reads of both states) and in a high first block; the trailing
    partial block follows the last one.
    """
    n, nb = rtn.high.shape
    hb = rtn.high > 0.5
    edge = np.zeros((n, nb), bool)
    if nb:
        change = hb[:, 1:] != hb[:, :-1]
        edge[:, 1:] |= change
        edge[:, :-1] |= change
        edge[:, 0] |= hb[:, 0]

    def per_read(b):
        out = np.zeros((n, T), bool)
        if nb:
            out[:, : nb * rtn.block] = np.repeat(b, rtn.block, axis=1)
            out[:, nb * rtn.block:] = b[:, -1:]
        return out

    return per_read(hb), ~per_read(edge)


def _r0_at_set(tables, main, rtn, start_w, offset, t, eligible):
    """Refer ``r0`` and ``c1`` to the RTN-low state for trains that are high from their first reads.

    For the trains whose first RTN block is high, :func:`_start_excess` gives the
    probability that the read right after SET (``R0``) was high too and its
    expected excess; ``r0`` is divided by ``exp(excess)``, ``c1`` (and ``c1_line``)
    raised by it, their standard errors widened by its spread, and a note says
    so. Modifies ``tables`` in place; returns the per-row shift of ``w`` (None if none).
    """
    nb = rtn.high.shape[1]
    if nb == 0 or not rtn.shows.any():
        return None
    cand = np.nonzero(eligible & rtn.shows & (rtn.high[:, 0] > 0.5) & np.isfinite(rtn.amplitude))[0]
    if cand.size == 0:
        return None
    tab = tables[main]
    law = get_law(main)
    params = {p: tab[p].to_numpy(float)[cand] for p in law.params}
    if law.has_break:
        # trains without a reported break: the straight line (or best fit) that gave m1 and c1
        params = law.fill_no_break(params)
    fin = np.all(np.isfinite(np.stack(list(params.values()), axis=1)), axis=1)
    cand, params = cand[fin], {k: v[fin] for k, v in params.items()}
    if cand.size == 0:
        return None
    model = law(t[None, :], **{k: v[:, None] for k, v in params.items()})
    d = np.diff(start_w[cand] - offset[None, :] - model, axis=1)
    # the die's c1 law, from the trains that start low
    c1_all = tab["c1"].to_numpy(float)
    ref = eligible & (tab["flag"].to_numpy() == "ok") & np.isfinite(c1_all)
    ref[cand] = False
    ref &= ~(rtn.high[:, 0] > 0.5)
    c1_law = None
    if ref.sum() >= 10:
        med = float(np.median(c1_all[ref]))
        c1_law = (med, float(1.4826 * np.median(np.abs(c1_all[ref] - med))))
    sigma_d = float(np.sqrt(2.0 * np.exp(rtn.extra.get("mu_v", np.nan))))
    if not np.isfinite(sigma_d) or sigma_d <= 0:
        return None
    p, excess, var = _start_excess(d, sigma_d, rtn.amplitude[cand], rtn.p_up, int(eligible.sum()),
                                   c1=c1_all[cand], c1_law=c1_law, pi0=float(rtn.extra.get("pi0", 0.01)))
    shift = np.zeros(len(tab))
    use = p > 0.01
    cand, p, excess, var = cand[use], p[use], excess[use], var[use]
    if cand.size == 0:
        return None
    shift[cand] = excess
    for df in tables.values():
        idx = df.index[cand]
        r0 = df["r0"].to_numpy(float)[cand]
        r0_se = df["r0_stderr"].to_numpy(float)[cand]
        new_r0 = r0 * np.exp(-excess)
        df.loc[idx, "r0"] = new_r0
        df.loc[idx, "r0_stderr"] = np.sqrt(np.nan_to_num(r0_se / r0) ** 2 + var) * new_r0
        for col in ("c1", "c1_line"):
            if col in df:
                df.loc[idx, col] = df[col].to_numpy(float)[cand] + excess
            if col + "_stderr" in df:
                df.loc[idx, col + "_stderr"] = np.sqrt(df[col + "_stderr"].to_numpy(float)[cand] ** 2 + var)
        df.loc[idx, "r0_rtn_high"] = p
        notes = df["note"].to_numpy(object)[cand]
        df.loc[idx, "note"] = [_join(nt, f"RTN high from the first reads: the read right after SET was high with "
                                         f"probability {pp:.2f}; r0 lowered and c1 raised by its expected "
                                         f"telegraph excess {ex:.3g}") for nt, pp, ex in zip(notes, p, excess)]
    return shift
