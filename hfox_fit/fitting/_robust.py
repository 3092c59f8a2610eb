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
from .rtn import _VAR_U1U2, _norm_logpdf


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


def _excess_grid(amplitude, amp_law, amp_se=None):
    """Grid (K, G) of the telegraph excess ``U1 U2 A`` of each train and its log weights.

    ``A`` of a train is known only roughly (from a few high blocks, or not at
    all where it shows no RTN on its blocks): its law is the die's (the
    amplitudes ``amp_law`` of the trains that show RTN) weighted by how well
    each agrees with the train's own estimate (``amplitude`` +- ``amp_se``;
    NaN: no estimate, the die's law as it is), and the excess density is that
    mixture of ``U1 U2 A`` densities. Without a die's law, a train's own ``A``
    is taken as exact; where neither is known the weights are ``-inf`` (the
    train cannot be told high).
    """
    k, g = amplitude.shape[0], _U_GRID.size
    known = np.isfinite(amplitude) & (amplitude > 0)
    law = np.asarray(amp_law if amp_law is not None else [], float)
    law = law[np.isfinite(law) & (law > 0)]
    if law.size < 5:
        e = np.where(known, amplitude, 0.0)[:, None] * _U_GRID[None, :]
        logw = np.where(known[:, None], _U_LOGW[None, :], -np.inf)
        return e, logw
    if law.size > 64:  # the law by 64 equally likely amplitudes (its quantiles): the cost stays flat
        law = np.quantile(law, (np.arange(64) + 0.5) / 64)
    top = float(law.max())
    eg = top * _U_GRID
    ratio = np.minimum(eg[None, :] / law[:, None], 1.0)
    basis = -np.log(ratio) / law[:, None] * (top / g)  # (M, G): density of U1 U2 a_i times the cell width
    se = np.full(k, np.nan) if amp_se is None else np.asarray(amp_se, float)
    se = np.where(np.isfinite(se), np.maximum(se, 0.1 * amplitude), 0.25 * amplitude)
    z = np.where(known[:, None], (law[None, :] - np.where(known, amplitude, 0.0)[:, None]) / se[:, None], 0.0)
    lw = -0.5 * z * z
    wts = np.exp(lw - lw.max(axis=1, keepdims=True))
    wts /= wts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        logw = np.log(wts @ basis)
    return np.broadcast_to(eg, (k, g)), logw


def _start_excess(d, sigma_d, amplitude, p_up, n_trains: int, c1=None, c1_law=None, pi0: float = 0.01,
                  iters: int = 50, *, p_down: float = 2e-3, amp_law=None, amp_se=None,
                  with_reads: bool = False):
    """Probability that the read right after SET was RTN-high, and its expected excess.

    The first ``B`` reads after SET (pulses 1..B) are explained by the paths of
    the telegraph chain that change state at most twice there; a path is told
    by the read-to-read changes: small between low reads, as wide as the
    telegraph scatter between high ones, a jump up (``+U1 U2 A``) where the
    train goes high and down where it goes low, whatever the drift. With the
    read right after SET (pulse 0) high, the train stays high through the
    block, or goes low after read ``m`` (high for its first ``m + 1`` reads,
    ``m = 0..B - 1``); with it low, the train stays low, goes high at some
    read, or has a short high stretch (up, then down) inside the block. The
    priors come from the die: the rate at which trains start high (estimated
    by EM over the die's ``n_trains`` trains, starting from ``pi0``) and the
    per-pulse ``p_up`` and ``p_down``. The read right after SET leaves no trace
    in the changes, so a train high only at that read (``m = 0``) is told only
    by its prior (``rate * p_down``, far below any threshold): it is known in
    law only. The excess of a high read is ``U1 U2 A``; given the train's
    apparent ``c1`` and the die's ``c1`` law, its posterior mean is the
    correction (empirical Bayes: the telegraph law combined with the die's
    spread of ``c1``).

    Parameters
    ----------
    d : ndarray of shape (K, B - 1)
        Changes from read ``k - 1`` to read ``k`` (pulses 2..B) of the K
        candidate trains, less the fitted law's change (NaN where a read is missing).
    sigma_d : float
        Standard deviation of a change between two low reads.
    amplitude : ndarray of shape (K,)
        Each train's telegraph amplitude ``A`` (NaN: unknown); with ``amp_law``
        (amplitudes of the die's trains that show RTN) and ``amp_se`` (their
        standard errors) it selects the train's part of the die's law
        (:func:`_excess_grid`).
    p_up, p_down : float
        Per-pulse probabilities of going high and low (the die's).
    n_trains : int
        Trains of the die that could have started high (the denominator of the rate).
    c1 : ndarray of shape (K,), optional
        The candidates' fitted ``c1`` (against the read right after SET).
    c1_law : (float, float), optional
        Median and spread of ``c1`` over the die's trains that start low.
    pi0 : float
        Starting value of the rate.
    amp_law, amp_se : ndarray, optional
        See ``amplitude``.
    with_reads : bool
        Also return the most probable number of high reads from SET.

    Returns
    -------
    p_high, excess, var : ndarray of shape (K,)
        Posterior probability that the read at pulse 0 was high; the posterior
        mean of its excess; and the posterior variance of that excess.
    n_high : ndarray of int, shape (K,)
        Only with ``with_reads``: given that read 0 was high, the most probable
        number of high reads from SET (``B + 1``: high through the block).
    """
    k, nc = d.shape
    if k == 0:
        z = np.zeros(0)
        return (z, z, z, np.zeros(0, int)) if with_reads else (z, z, z)
    miss = ~np.isfinite(d)
    x = np.where(miss, 0.0, d)
    s2 = sigma_d * sigma_d
    e, logw0 = _excess_grid(np.asarray(amplitude, float), amp_law, amp_se)
    possible = np.isfinite(logw0).any(axis=1)
    logw0 = np.where(possible[:, None], logw0, 0.0)
    w0 = np.exp(logw0 - logw0.max(axis=1, keepdims=True))
    w0 /= w0.sum(axis=1, keepdims=True)
    # two high reads of one train share its A: their difference varies by 2 Var(U1 U2) A^2, averaged
    # over A's law (E[A^2] = 9 E[e^2]); the spread of A between trains does not enter it
    var_hh = 2.0 * _VAR_U1U2 * 9.0 * (w0 * e * e).sum(1)
    # per change: both low; low -> high (+excess); high -> low (-excess); both high (difference of two excesses)
    ll_ll = _norm_logpdf(x, 0.0, s2)
    c0 = -0.5 * np.log(2 * np.pi * s2)
    ll_lh = logsumexp(-0.5 * (x[..., None] - e[:, None, :]) ** 2 / s2 + logw0[:, None, :], axis=2) + c0
    ll_hl = logsumexp(-0.5 * (x[..., None] + e[:, None, :]) ** 2 / s2 + logw0[:, None, :], axis=2) + c0
    ll_hh = _norm_logpdf(x, 0.0, (s2 + var_hh)[:, None])
    for a in (ll_ll, ll_lh, ll_hl, ll_hh):
        a[miss] = 0.0
    zero = np.zeros((k, 1))
    s_ll = np.concatenate([zero, np.cumsum(ll_ll, axis=1)], axis=1)  # s_ll[:, j]: changes < j
    s_hh = np.concatenate([zero, np.cumsum(ll_hh, axis=1)], axis=1)
    tot_ll, tot_hh = s_ll[:, -1:], s_hh[:, -1:]
    j = np.arange(nc)
    # high through the block (reads 1..B); up at change j (reads 1..j+1 low, then high)
    l_long = tot_hh[:, 0]
    l_onset = s_ll[:, :-1] + ll_lh + tot_hh - s_hh[:, 1:]
    # high for reads 1..m, low from m + 1 (down at change m - 1), m = 1..B - 1
    l_short = s_hh[:, :-1] + ll_hl + tot_ll - s_ll[:, 1:]
    # up at change a, down at change b > a: a high stretch inside the block, from a read-0-low train
    up_part = (s_ll[:, :-1] + ll_lh - s_hh[:, 1:])[:, :, None]
    down_part = (s_hh[:, :-1] + ll_hl + tot_ll - s_ll[:, 1:])[:, None, :]
    l_burst = np.where((j[None, :] > j[:, None])[None], up_part + down_part, -np.inf).reshape(k, -1)
    lpu = np.log(float(np.clip(p_up, 1e-6, 0.5)))
    lpd = np.log(float(np.clip(p_down if np.isfinite(p_down) else 2e-3, 1e-6, 0.5)))
    null = tot_ll[:, 0]
    # log-likelihood of the reads given read 0 high / low, each path weighted by its prior (the rate apart)
    hi_paths = np.concatenate([l_long[:, None], l_short + lpd, null[:, None] + lpd], axis=1)
    lo_paths = np.concatenate([null[:, None], l_onset + lpu, l_long[:, None] + lpu,
                               l_short + lpu + lpd, l_burst + lpu + lpd], axis=1)
    lhi, llo = logsumexp(hi_paths, axis=1), logsumexp(lo_paths, axis=1)
    # odds of high against low, the rate apart (clipped where exp would overflow: certainly high or low)
    lr = np.exp(np.clip(lhi - llo, -700.0, 700.0))
    lr[~possible] = 0.0
    # the excess given high, from the telegraph law and the apparent c1 (c1_true = c1 + excess)
    logw = logw0
    if c1 is not None and c1_law is not None and np.isfinite(c1_law[1]) and c1_law[1] > 0:
        mu, sc = c1_law
        cc = np.where(np.isfinite(c1), c1, mu)
        logw = logw - 0.5 * ((cc[:, None] + e - mu) / sc) ** 2
    post = np.exp(logw - logw.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    e1 = (post * e).sum(axis=1)
    e2 = (post * e * e).sum(axis=1)
    n_trains = max(int(n_trains), k)
    rate = float(np.clip(pi0, 1e-4, 0.5))
    for _ in range(iters):
        p = rate * lr / (rate * lr + (1.0 - rate))
        new = float(np.clip(p.sum() / n_trains, 1e-6, 0.5))
        done = abs(new - rate) <= 1e-6 * max(rate, 1e-6)
        rate = new
        if done:
            break
    excess = p * e1
    var = np.maximum(p * e2 - excess**2, 0.0)
    if not with_reads:
        return p, excess, var
    best = np.argmax(hi_paths, axis=1)  # 0: through the block; 1..B-1: m high reads after SET; B: none
    n_high = np.where(best == 0, nc + 2, np.where(best == nc + 1, 1, best + 1))
    return p, excess, var, n_high


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

    The candidates are the trains whose first RTN block is high, and those
    whose first reads drop by more than three read-to-read spreads (a high
    stretch from SET shorter than a block, which the block states do not
    see). For them :func:`_start_excess` gives the probability that the read
    right after SET (``R0``) was high and its expected excess; ``r0`` is
    divided by ``exp(excess)``, ``c1`` (and ``c1_line``) raised by it, their
    standard errors widened by its spread, and a note says so (with the number
    of reads high from SET). Modifies ``tables`` in place; returns the per-row
    shift of ``w`` (None if none).
    """
    nb = rtn.high.shape[1]
    if nb == 0 or not rtn.shows.any():
        return None
    sigma_d = float(np.sqrt(2.0 * np.exp(rtn.extra.get("mu_v", np.nan))))
    if not np.isfinite(sigma_d) or sigma_d <= 0:
        return None
    tab = tables[main]
    law = get_law(main)
    rows = np.nonzero(eligible)[0]
    params = {p: tab[p].to_numpy(float)[rows] for p in law.params}
    if law.has_break:
        # trains without a reported break: the straight line (or best fit) that gave m1 and c1
        params = law.fill_no_break(params)
    fin = np.all(np.isfinite(np.stack(list(params.values()), axis=1)), axis=1)
    rows, params = rows[fin], {k: v[fin] for k, v in params.items()}
    if rows.size == 0:
        return None
    model = law(t[None, :], **{k: v[:, None] for k, v in params.items()})
    d = np.diff(start_w[rows] - offset[None, :] - model, axis=1)
    high_first = (rtn.high[rows, 0] > 0.5) & np.isfinite(rtn.amplitude[rows])
    drops = (np.where(np.isfinite(d), d, np.inf).min(axis=1) < -3.0 * sigma_d if d.shape[1]
             else np.zeros(len(rows), bool))
    keep = high_first | drops
    cand, d = rows[keep], d[keep]
    if cand.size == 0:
        return None
    # the die's c1 law, from the trains that start low
    c1_all = tab["c1"].to_numpy(float)
    ref = eligible & (tab["flag"].to_numpy() == "ok") & np.isfinite(c1_all)
    ref[cand] = False
    ref &= ~(rtn.high[:, 0] > 0.5)
    c1_law = None
    if ref.sum() >= 10:
        med = float(np.median(c1_all[ref]))
        c1_law = (med, float(1.4826 * np.median(np.abs(c1_all[ref] - med))))
    amp_law = rtn.amplitude[rtn.shows]
    p, excess, var, n_high = _start_excess(
        d, sigma_d, rtn.amplitude[cand], rtn.p_up, int(eligible.sum()), c1=c1_all[cand], c1_law=c1_law,
        pi0=float(rtn.extra.get("pi0", 0.01)), p_down=float(rtn.p_down), amp_law=amp_law,
        amp_se=np.asarray(rtn.extra.get("amplitude_stderr", np.full(len(tab), np.nan)))[cand], with_reads=True)
    shift = np.zeros(len(tab))
    use = p > 0.01
    cand, p, excess, var, n_high = cand[use], p[use], excess[use], var[use], n_high[use]
    if cand.size == 0:
        return None
    shift[cand] = excess
    through = start_w.shape[1] + 1
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
        df.loc[idx, "note"] = [
            _join(nt, ("RTN high from the first reads: " if nh >= through else
                       f"RTN high for the first {nh} read{'s' if nh != 1 else ''} after SET, then low: ")
                  + f"the read right after SET was high with probability {pp:.2f}; r0 lowered and c1 raised "
                    f"by its expected telegraph excess {ex:.3g}")
            for nt, pp, ex, nh in zip(notes, p, excess, n_high)]
    return shift
