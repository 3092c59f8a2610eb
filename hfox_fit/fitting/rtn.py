r"""Random telegraph noise (RTN) of the drift residuals: detection per die, then rates and amplitudes.

Two-state hidden Markov model on blocks of ``B`` pulses. Each block gives
two statistics of the residual: its mean ``m`` and the log of its
first-difference variance ``ln v``. The pink noise is smooth, so ``v`` hardly
sees it, while the high state adds :math:`7A^2/144` (the variance of
:math:`U_1U_2A`) to ``v`` and :math:`A/4` to ``m``. The per-pulse
probabilities and the per-cell amplitude ``A`` are found by EM (forward-backward
over all cells at once); only cells whose likelihood ratio shows RTN count in the
transition estimates, so a wafer without RTN gives ``p_up`` near 0, not the
starting value. The probability that a train's first block is high is
estimated too (``extra["pi0"]``): real cells may start a train RTN-high.

The dies' results are pooled into campaign-level per-pulse probabilities with
intervals (bootstrap over cells, exact Poisson intervals with few transitions)
and the amplitudes of the cells that show RTN (:class:`RTNEstimate`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from ..model import TelegraphNoise
from ._util import nanquantile_rows

__all__ = ["RTNStats", "RTNEstimate", "block_stats", "rtn_em", "block_to_pulse", "pulse_to_block",
           "shown_amplitudes"]

#: Variance of U1*U2 for U1, U2 ~ U(0, 1): E[(U1 U2)^2] - E[U1 U2]^2 = 1/9 - 1/16.
_VAR_U1U2 = 7.0 / 144.0


def block_stats(resid, usable, block: int):
    """Block means and log first-difference variances of the residual.

    ``resid`` may hold anything where ``usable`` is False; float32 input is
    summed in float32 (16-read blocks: ample for noise statistics).

    Returns
    -------
    m, logv : ndarray of shape (N, nb)
        NaN where the block has fewer than ``block // 2`` usable reads.
    """
    resid = np.asarray(resid)
    dt = np.float32 if resid.dtype == np.float32 else np.float64
    n, T = resid.shape
    nb = T // block
    u = np.asarray(usable)[:, : nb * block].reshape(n, nb, block)
    r = np.where(u, resid[:, : nb * block].reshape(n, nb, block), dt(0))
    du = u[:, :, 1:] & u[:, :, :-1]
    dif = np.diff(r, axis=2)
    dif *= du
    # sums over the short block axis: einsum is several times faster than .sum(axis=2) there
    cnt = np.einsum("nbk->nb", u.astype(np.uint8)).astype(int)
    dcnt = np.einsum("nbk->nb", du.astype(np.uint8)).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.einsum("nbk->nb", r).astype(float) / cnt
        v = np.einsum("nbk,nbk->nb", dif, dif).astype(float) / dcnt / 2.0
        logv = np.log(v)
    bad = (cnt < max(block // 2, 3)) | (dcnt < 2) | ~np.isfinite(logv) | ~np.isfinite(m)
    m[bad] = np.nan
    logv[bad] = np.nan
    return m, logv


def _norm_logpdf(x, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def _q_amplitude(g, m, lv, grid, s_m2, v0, tau_h, block, lv2=None):
    """Expected high-state log-likelihood of the amplitude (N, len(grid)), from posterior-weighted sums.

    Only the read-to-read variance enters: the block mean also holds the error of
    the drift extrapolated under a long high stretch, the variance does not.
    """
    lv2 = lv * lv if lv2 is None else lv2
    G = g.sum(1)[:, None]
    sl, sll = np.einsum("nb,nb->n", g, lv)[:, None], np.einsum("nb,nb->n", g, lv2)[:, None]
    mv = _high_logv(v0, grid[None, :], block)
    return -0.5 * (sll - 2 * mv * sl + mv**2 * G) / tau_h**2


@functools.lru_cache(maxsize=8)
def _log_bias(block: int) -> float:
    """E[ln v] - ln E[v] of the first-difference variance of a block of U1*U2 draws (Monte Carlo, fixed seed).

    The log of a block's variance is biased low (Jensen); U1*U2 is skewed, so more so than for Gaussian reads.
    """
    rng = np.random.default_rng(12345)
    x = rng.uniform(size=(20000, block)) * rng.uniform(size=(20000, block))
    v = np.mean(np.diff(x, axis=1) ** 2, axis=1) / 2.0
    return float(np.mean(np.log(v)) - np.log(_VAR_U1U2))


def _high_logv(v0, amplitude, block):
    """Expected log first-difference variance of a high block (pink/read part v0 plus the telegraph part)."""
    rtn = _VAR_U1U2 * amplitude**2
    share = rtn / (v0 + rtn)
    return np.log(v0 + rtn) + _log_bias(block) * share**2


def _refine_amplitude(q, grid):
    """Parabolic vertex of q over ln(grid) around its best point; amplitude and its stderr.

    The stderr is the curvature's (observed information of ln A, posteriors held
    fixed); NaN at the edge of the grid.
    """
    n, g = q.shape
    k = np.argmax(q, axis=1)
    kk = np.clip(k, 1, g - 2)
    rows = np.arange(n)
    u = np.log(grid)
    h = u[1] - u[0]
    f0, f1, f2 = q[rows, kk - 1], q[rows, kk], q[rows, kk + 1]
    curv = (f0 - 2 * f1 + f2) / h**2
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curv < 0, -h * (f2 - f0) / (2 * h * h * curv), 0.0)
        shift = np.clip(shift, -h, h)
        a = np.exp(u[kk] + shift)
        se = np.where(curv < 0, a * np.sqrt(-1.0 / curv), np.nan)
    edge = (k == 0) | (k == g - 1)
    a = np.where(edge, grid[k], a)
    se = np.where(edge, np.nan, se)
    return a, se


def _forward_backward(ll_low, ll_high, q_up, q_down, pi0):
    """Scaled forward-backward for N independent two-state chains (vectorised over cells).

    ``pi0`` is the probability of the high state in the first block (a scalar or
    one per chain). Returns gamma_high (N, nb), xi (N, 2, 2) summed over time, loglik (N,).
    """
    n, nb = ll_low.shape
    mx = np.maximum(ll_low, ll_high)
    # (nb, N) layout: every step of the recursions reads and writes contiguous rows
    e0 = np.exp((ll_low - mx).T)
    e1 = np.exp((ll_high - mx).T)
    p00, p01, p10, p11 = 1.0 - q_up, q_up, q_down, 1.0 - q_down
    f1 = np.empty((nb, n))
    c = np.empty((nb, n))
    a0 = (1.0 - pi0) * e0[0]
    a1 = pi0 * e1[0]
    k0, k1 = p10 - p00, p11 - p01
    t0 = np.empty(n)
    t1 = np.empty(n)
    for b in range(nb):
        if b:
            h = f1[b - 1]
            np.multiply(h, k0, out=t0)
            t0 += p00
            t0 *= e0[b]
            np.multiply(h, k1, out=t1)
            t1 += p01
            t1 *= e1[b]
            a0, a1 = t0, t1
        np.add(a0, a1, out=c[b])
        np.divide(a1, c[b], out=f1[b])
    f0 = 1.0 - f1
    # backward, with the scaled emissions of every block at once
    u0 = e0 / c
    u1 = e1 / c
    g0 = np.empty((nb, n))
    g1 = np.empty((nb, n))
    g0[-1] = 1.0
    g1[-1] = 1.0
    d = np.empty(n)
    for b in range(nb - 2, -1, -1):
        np.multiply(u0[b + 1], g0[b + 1], out=t0)
        np.multiply(u1[b + 1], g1[b + 1], out=t1)
        np.subtract(t0, t1, out=d)
        # rows of the transition matrix sum to 1: g = x1 + p_i0 (x0 - x1)
        np.multiply(d, p00, out=g0[b])
        g0[b] += t1
        np.multiply(d, p10, out=g1[b])
        g1[b] += t1
    post1 = f1 * g1
    post = (post1 / (f0 * g0 + post1)).T
    xi = np.zeros((n, 2, 2))
    if nb > 1:
        x0 = u0[1:] * g0[1:]
        x1 = u1[1:] * g1[1:]
        xi[:, 0, 0] = np.einsum("bn,bn->n", f0[:-1], x0) * p00
        xi[:, 0, 1] = np.einsum("bn,bn->n", f0[:-1], x1) * p01
        xi[:, 1, 0] = np.einsum("bn,bn->n", f1[:-1], x0) * p10
        xi[:, 1, 1] = np.einsum("bn,bn->n", f1[:-1], x1) * p11
    loglik = np.log(c).sum(0) + mx.sum(1)
    return post, xi, loglik


@dataclass
class RTNStats:
    """Sufficient statistics and per-cell results of the RTN detection of one die.

    Attributes
    ----------
    block : int
        Block length in pulses.
    p_up, p_down : float
        Die-level per-pulse estimates.
    amplitude : ndarray of shape (N,)
        Per-row amplitude ``A`` (w units), NaN where no RTN was seen.
    shows : ndarray of bool, shape (N,)
        Rows whose likelihood ratio shows RTN.
    llr : ndarray of shape (N,)
    up, down, time_low, time_high : ndarray of shape (N,)
        Expected block transitions and block occupancies (all-low for rows without RTN).
    high : ndarray of shape (N, nb)
        Posterior probability of the high state per block (None in a campaign fit's
        per-die results, which keep only what pooling needs).
    """

    block: int
    p_up: float
    p_down: float
    amplitude: np.ndarray
    shows: np.ndarray
    llr: np.ndarray
    up: np.ndarray
    down: np.ndarray
    time_low: np.ndarray
    time_high: np.ndarray
    high: np.ndarray
    converged: bool = True
    extra: dict = field(default_factory=dict)

    def rows(self, idx) -> RTNStats:
        """The statistics of rows ``idx`` only (the die-level figures and state kept as they are)."""
        n = len(self.up)

        def pick(v):
            return v[idx] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v

        per_row = ("amplitude", "shows", "llr", "up", "down", "time_low", "time_high", "high")
        extra = {k: pick(v) for k, v in self.extra.items()}
        sample = self.extra.get("detection_sample")
        if sample is not None:  # the sampled quiet trains among the rows kept, renumbered
            kept, pos = np.arange(n)[idx], np.full(n, -1)
            pos[kept] = np.arange(len(kept))
            at = pos[sample["rows"]]
            inside = at >= 0
            extra["detection_sample"] = {**sample, "rows": at[inside], "resid": sample["resid"][inside],
                                         "usable": sample["usable"][inside]}
        return replace(self, **{k: pick(getattr(self, k)) for k in per_row}, extra=extra)

    def read_mask(self, n_pulses: int, threshold: float = 0.5, dilate: int = 1) -> np.ndarray:
        """Bool (N, n_pulses): reads in blocks more likely high than low, and ``dilate`` blocks around.

        A transition falls anywhere inside a block, so the neighbours of a high
        block may hold high reads too; the trailing partial block follows the last one.
        """
        n, nb = self.high.shape
        hb = self.high > threshold
        grown = hb.copy()
        for k in range(1, dilate + 1):
            grown[:, k:] |= hb[:, :-k]
            grown[:, :-k] |= hb[:, k:]
        m = np.zeros((n, n_pulses), bool)
        m[:, : nb * self.block] = np.repeat(grown, self.block, axis=1)
        if n_pulses > nb * self.block and nb:
            m[:, nb * self.block:] = grown[:, -1:]
        return m


def block_to_pulse(q_up, q_down, block):
    """Per-pulse (p_up, p_down) whose ``block``-th matrix power has off-diagonals (q_up, q_down).

    Floats for numbers; for arrays, arrays (element by element).
    """
    q_up, q_down = np.asarray(q_up, float), np.asarray(q_down, float)
    s_b = q_up + q_down
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 1.0 - np.clip(1.0 - s_b, 1e-12, 1.0) ** (1.0 / block)
        pi = np.where(s_b > 0, q_up / s_b, 0.0)
    p_up, p_down = np.where(s_b > 0, pi * s, 0.0), np.where(s_b > 0, (1 - pi) * s, 0.0)
    if p_up.ndim == 0:
        return float(p_up), float(p_down)
    return p_up, p_down


def pulse_to_block(p_up, p_down, block):
    s = p_up + p_down
    if s <= 0:
        return 0.0, 0.0
    lam = (1 - s) ** block
    return p_up / s * (1 - lam), p_down / s * (1 - lam)


def rtn_em(m, logv, block: int, *, max_iter: int = 30, llr_threshold: float = 8.0,
           p_up0: float = 1e-3, p_down0: float = 3e-3, tol: float = 1e-3, init=None) -> RTNStats:
    """Fit the block HMM of RTN to the block statistics of a die (EM, all cells together).

    Parameters
    ----------
    m, logv : ndarray of shape (N, nb)
        From :func:`block_stats` (NaN = missing block).
    block : int
        Block length in pulses.
    llr_threshold : float, default=8.0
        Log-likelihood ratio (nats) above which a row counts as showing RTN.
    p_up0, p_down0 : float
        Starting per-pulse probabilities (EM moves them; they are not priors).
    tol : float, default=1e-3
        Stop when the log-likelihood changes by less than ``tol`` nats per row
        (or every parameter by less than ``tol`` relative).
    init : RTNStats, optional
        A previous result on the same rows to start from (its parameters and amplitudes).
    """
    n, nb = m.shape
    miss = ~np.isfinite(m) | ~np.isfinite(logv)
    m0 = np.where(miss, 0.0, m)
    lv = np.where(miss, 0.0, logv)
    A_grid = np.geomspace(2e-3, 4.0, 48)
    empty = RTNStats(block, 0.0, 0.0, np.full(n, np.nan), np.zeros(n, bool), np.zeros(n),
                     np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, nb)))
    if nb < 2 or (~miss).sum() < 10:
        empty.converged = False
        return empty
    fin_lv = lv[~miss]
    fin_m = m0[~miss]
    mu_v = float(np.median(fin_lv))
    tau_v = float(1.4826 * np.median(np.abs(fin_lv - mu_v))) or 0.3
    tau_h = tau_v
    s_m2 = float((1.4826 * np.median(np.abs(fin_m - np.median(fin_m)))) ** 2) or 1e-6
    q_up, q_down = pulse_to_block(p_up0, p_down0, block)
    pi0 = q_up  # probability that a train's first block is high (estimated too: trains may start high)
    # starting amplitude from each row's largest variance excess
    top = nanquantile_rows(np.where(miss, np.nan, logv), 0.9)
    excess = np.maximum(np.exp(np.nan_to_num(top, nan=mu_v)) - np.exp(mu_v), 0.0)
    A = np.clip(np.sqrt(excess / _VAR_U1U2), A_grid[0], A_grid[-1])
    if init is not None and init.extra.get("state") is not None and len(init.shows) == n:
        st = init.extra["state"]
        q_up, q_down, mu_v, tau_v, tau_h, s_m2 = st["q_up"], st["q_down"], st["mu_v"], st["tau_v"], st["tau_h"], st["s_m2"]
        pi0 = st.get("pi0", q_up)
        A = np.where(np.isfinite(st["A"]), st["A"], A)
    nvalid = np.maximum((~miss).sum(1), 1)
    present = (~miss).astype(float)
    m0sq = m0 * m0
    lv2 = lv * lv
    log2pi = np.log(2 * np.pi)
    converged = False
    prev = None
    history = []
    for _ in range(max_iter):
        v0 = np.exp(mu_v)
        # log-likelihoods of every block in each state (0 for missing blocks); the high state's
        # parameters are per row, so only (N,) arrays carry them
        ll_low = (lv - mu_v) ** 2
        ll_low *= -0.5 / tau_v**2
        ll_low -= (0.5 / s_m2) * m0sq
        ll_low += -0.5 * (2 * log2pi + np.log(s_m2) + 2 * np.log(tau_v))
        ll_low *= present
        var_m = s_m2 + _VAR_U1U2 * A**2 / block
        mean_v = _high_logv(v0, A, block)
        ll_high = (m0 - (A / 4.0)[:, None]) ** 2
        ll_high *= (-0.5 / var_m)[:, None]
        ll_high -= (0.5 / tau_h**2) * (lv - mean_v[:, None]) ** 2
        ll_high += (-0.5 * (2 * log2pi + np.log(var_m) + 2 * np.log(tau_h)))[:, None]
        ll_high *= present
        gh, xi, loglik = _forward_backward(ll_low, ll_high, q_up, q_down, pi0)
        llr = loglik - ll_low.sum(1)
        shows = llr > llr_threshold
        ghm = gh * present
        gl = present - ghm
        # amplitude per row: maximise the expected high-state log-likelihood over the grid
        q = _q_amplitude(ghm, m0, lv, A_grid, s_m2, v0, tau_h, block, lv2=lv2)
        A = A_grid[np.argmax(q, axis=1)]
        # die-level low-state noise (weighted by the low posterior)
        wl = gl.sum()
        if wl > 0:
            mu_v = float(np.einsum("nb,nb->", gl, lv) / wl)
            tau_v = float(np.sqrt(max(np.einsum("nb,nb->", gl, lv2) / wl - mu_v**2, 1e-4)))
            s_m2 = float(max(np.einsum("nb,nb->", gl, m0sq) / wl, 1e-12))
        gs = ghm[shows]
        wh = gs.sum()
        if wh > 1:
            pred = _high_logv(np.exp(mu_v), A[shows], block)[:, None]
            tau_h = float(np.sqrt(max(np.einsum("nb,nb->", gs, (lv[shows] - pred) ** 2) / wh, 1e-4)))
        # transitions: only rows showing RTN; the others count as low throughout
        nl = np.where(shows, xi[:, 0, 0] + xi[:, 0, 1], nvalid - 1.0).sum()
        nh = np.where(shows, xi[:, 1, 0] + xi[:, 1, 1], 0.0).sum()
        up = np.where(shows, xi[:, 0, 1], 0.0).sum()
        down = np.where(shows, xi[:, 1, 0], 0.0).sum()
        q_up = float(np.clip(up / max(nl, 1e-12), 1e-9, 0.5))
        q_down = float(np.clip(down / nh, 1e-9, 0.5)) if nh > 1e-9 else q_down
        if shows.sum() == 0:
            q_up = 1e-9
        # first-block state of the rows showing RTN (one pseudo-train at the previous value)
        pi0 = float(np.clip((gh[shows, 0].sum() + pi0) / (shows.sum() + 1.0), 1e-6, 1.0 - 1e-6))
        # EM creeps in the parameters long after the likelihood has settled: stop on the likelihood
        # (mean change per row below tol nats) or on the parameters
        # (the amplitude grid can also make it hop between two neighbouring states: a 2-cycle)
        cur = np.array([q_up, q_down, mu_v, tau_v, s_m2])
        total = float(np.sum(loglik))
        history.append(total)
        if prev is not None and (
                abs(total - history[-2]) <= tol * n
                or (len(history) >= 3 and abs(total - history[-3]) <= tol * n)
                or np.all(np.abs(cur - prev) <= tol * np.maximum(np.abs(prev), 1e-12) + 1e-12)):
            converged = True
            break
        prev = cur
    A, A_se = _refine_amplitude(_q_amplitude(ghm, m0, lv, A_grid, s_m2, np.exp(mu_v), tau_h, block, lv2=lv2),
                                A_grid)
    shows_f = shows.astype(float)
    p_up, p_down = block_to_pulse(q_up if shows.any() else 0.0, q_down, block)
    if not shows.any():
        p_down = float("nan")
    return RTNStats(
        block=block,
        p_up=p_up,
        p_down=p_down,
        amplitude=np.where(shows, A, np.nan),
        shows=shows,
        llr=llr,
        up=xi[:, 0, 1] * shows_f,
        down=xi[:, 1, 0] * shows_f,
        time_low=np.where(shows, xi[:, 0, 0] + xi[:, 0, 1], nvalid - 1.0),
        time_high=np.where(shows, xi[:, 1, 0] + xi[:, 1, 1], 0.0),
        high=np.where(shows[:, None], gh, 0.0),
        converged=converged,
        extra={"mu_v": mu_v, "tau_v": tau_v, "tau_h": tau_h, "s_m": float(np.sqrt(s_m2)), "pi0": pi0,
               "amplitude_stderr": np.where(shows, A_se, np.nan),
               # the first block's high posterior, kept when the per-block states are dropped (pooling needs it)
               "started_high": np.where(shows, gh[:, 0], 0.0),
               "state": {"q_up": q_up, "q_down": q_down, "mu_v": mu_v, "tau_v": tau_v, "tau_h": tau_h,
                         "s_m2": s_m2, "A": A, "pi0": pi0}},
    )

@dataclass
class RTNEstimate:
    """Campaign-level RTN: per-pulse probabilities with intervals, and observed amplitudes."""

    p_up: float
    p_down: float | None
    p_up_stderr: float | None
    p_down_stderr: float | None
    p_up_ci90: list | None
    p_down_ci90: list | None
    n_cells: int
    n_showing: int
    amplitudes: np.ndarray
    detection_limit: float
    note: str = ""

    @property
    def telegraph(self) -> TelegraphNoise:
        return TelegraphNoise(p_up=float(self.p_up), p_down=float(self.p_down or 0.0))


def _poisson_ci(k, level=0.90):
    """Exact (Garwood) interval of a Poisson mean for an observed (possibly fractional) count k."""
    a = (1 - level) / 2
    lo = 0.5 * stats.chi2.ppf(a, 2 * k) if k > 0 else 0.0
    hi = 0.5 * stats.chi2.ppf(1 - a, 2 * k + 2)
    return float(lo), float(hi)


#: Largest chance that a train starting low stays low over its length for the quiet-train correction of
#: ``p_up`` (:func:`_up_per_block`).
_MAX_STAY_LOW = 0.5


def _started_high(s) -> np.ndarray:
    """Per row, the probability that its first block was high (0 where RTN is not seen)."""
    if s.extra.get("started_high") is not None:
        return np.asarray(s.extra["started_high"], float)
    if s.high is not None and s.high.ndim == 2 and s.high.shape[1]:
        return np.asarray(s.high[:, 0], float)
    return np.zeros(len(s.shows))


def _up_per_block(n_up: float, time_low, shows, n_started_high: float, iters: int = 50) -> float:
    """Per-block probability of going high, counting only the low time of trains whose RTN could be seen.

    A train shows RTN only when it switched and its amplitude is above the detection
    limit; one that shows none either never left the low state (its low time counts)
    or has an amplitude too small to see (its low time does not: its switches are not
    counted either). Counting every quiet train as low throughout biases the rate low
    (wafer_b: by about 10 %). With ``s`` the probability that a train starting low
    never goes high over its length and ``pi`` the share of trains starting high, a
    share ``f`` of undetectable amplitudes makes the quiet trains
    ``N ((1 - f)(1 - pi) s + f)``; ``f`` follows from the count of quiet trains, and
    the quiet trains' low time is weighted by the share of them that could have shown
    RTN, ``(1 - f)(1 - pi) s N / N_quiet``, solved together with the rate.

    Only where a train starting low more likely switches than not over its length
    (``s`` <= :data:`_MAX_STAY_LOW` at the uncorrected rate): over shorter trains most
    quiet trains are quiet because they did not switch, ``f`` is the small difference
    of two near counts (its error grows as ``1 / (1 - s)``), and switches too short to
    see make more quiet trains than ``f`` stands for; there the rate is counted as it
    is (the 300-pulse example campaign: 0.00085 against the true 0.0008, where the
    correction gave 0.0017).
    """
    time_low = np.asarray(time_low, float)
    quiet = ~np.asarray(shows, bool)
    n, n_quiet = len(time_low), int(quiet.sum())
    seen_low, quiet_low = time_low[~quiet].sum(), time_low[quiet].sum()
    q = n_up / (seen_low + quiet_low) if seen_low + quiet_low > 0 else 0.0
    if n_quiet == 0 or quiet_low <= 0 or n == 0:
        return float(q)
    pi = float(np.clip(n_started_high / n, 0.0, 1.0))
    length = float(np.mean(time_low[quiet]))  # block steps of a quiet train
    if (1.0 - q) ** length > _MAX_STAY_LOW:
        return float(q)
    for _ in range(iters):
        stay_low = (1.0 - pi) * (1.0 - q) ** length
        f = float(np.clip((n_quiet / n - stay_low) / max(1.0 - stay_low, 1e-12), 0.0, 1.0))
        weight = min(1.0, (1.0 - f) * stay_low * n / n_quiet)
        new = n_up / (seen_low + weight * quiet_low)
        if abs(new - q) <= 1e-9 * max(q, 1e-12):
            q = new
            break
        q = new
    return float(q)


def _draw_counts(rng, n: int, size: int) -> np.ndarray:
    """(size, n) times each of n rows is drawn in ``size`` resamples of n with replacement."""
    idx = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n).astype(float)


def _replicate_rates(counts, up, down, tl, th, shows, started_high, block) -> np.ndarray:
    """(B, 2) per-pulse (p_up, p_down) of the resamples ``counts`` (B, rows): ``estimate`` of :func:`_pool_rtn`
    on each, :func:`_up_per_block` iterated on all of them together (one pass where a loop took 95 % of it)."""
    n, quiet = counts.shape[1], ~np.asarray(shows, bool)
    u, dn, h = counts @ up, counts @ down, counts @ th
    seen_low, quiet_low = counts @ np.where(quiet, 0.0, tl), counts @ np.where(quiet, tl, 0.0)
    n_quiet, pi = counts @ quiet.astype(float), np.clip(counts @ started_high / n, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(seen_low + quiet_low > 0, u / (seen_low + quiet_low), 0.0)
        length = quiet_low / n_quiet
        active = (u > 0) & (n_quiet > 0) & (quiet_low > 0) & ~((1.0 - q) ** length > _MAX_STAY_LOW)
        for _ in range(50):
            if not active.any():
                break
            stay_low = (1.0 - pi) * (1.0 - q) ** length
            f = np.clip((n_quiet / n - stay_low) / np.maximum(1.0 - stay_low, 1e-12), 0.0, 1.0)
            new = u / (seen_low + np.minimum(1.0, (1.0 - f) * stay_low * n / n_quiet) * quiet_low)
            done = np.abs(new - q) <= 1e-9 * np.maximum(q, 1e-12)
            q = np.where(active, new, q)
            active &= ~done
        qu, qd = np.where(u > 0, q, 0.0), np.where(h > 0, dn / h, 0.0)
    p_up, p_down = block_to_pulse(qu, qd, block)
    return np.column_stack([np.where(u > 0, p_up, 0.0), np.where(u > 0, p_down, np.nan)])


def shown_amplitudes(stats_list) -> np.ndarray:
    """The amplitudes of the trains that show RTN, die after die (dies without a detection skipped)."""
    return np.concatenate([s.amplitude[s.shows & np.isfinite(s.amplitude)] for s in stats_list
                           if s is not None and len(s.up)] or [np.empty(0)])


def _pool_rtn(stats_list, bootstrap: int, rng) -> RTNEstimate:
    block = stats_list[0].block
    up = np.concatenate([s.up for s in stats_list])
    down = np.concatenate([s.down for s in stats_list])
    tl = np.concatenate([s.time_low for s in stats_list])
    th = np.concatenate([s.time_high for s in stats_list])
    shows = np.concatenate([s.shows for s in stats_list])
    amps = shown_amplitudes(stats_list)
    started_high = np.concatenate([_started_high(s) for s in stats_list])
    n = len(up)

    n_up, n_down, t_high = up.sum(), down.sum(), th.sum()
    qu = _up_per_block(n_up, tl, shows, started_high.sum()) if n_up > 0 else 0.0
    qd = n_down / t_high if t_high > 0 else 0.0
    p_up, p_down = block_to_pulse(qu, qd, block) if n_up > 0 else (0.0, np.nan)
    # the high stretches too short to detect: RTN of these rates injected into the dies' sampled quiet trains
    from . import _rtn_detect as detect  # here: it imports this module

    check, factor, few_injected = detect.correct_p_down(stats_list, p_up, p_down, amps, block)
    p_down *= factor
    ci_up = ci_down = None
    se_up = se_down = None
    if bootstrap and n >= 2:
        rng = np.random.default_rng(rng)
        # the draws of one replicate after another, as rows of counts: every replicate at once
        chunk = max(1, 2_000_000 // n)
        reps = np.concatenate([_replicate_rates(_draw_counts(rng, n, min(chunk, bootstrap - i)), up, down, tl, th,
                                                shows, started_high, block) for i in range(0, bootstrap, chunk)])
        if check is not None:  # the injected trains resampled too: the interval carries the factor's error
            reps[:, 1] *= detect.factor_replicates(check, bootstrap, rng, block)
        ci_up = [float(np.percentile(reps[:, 0], 5)), float(np.percentile(reps[:, 0], 95))]
        se_up = float(np.std(reps[:, 0], ddof=1))
        fin = np.isfinite(reps[:, 1])
        if fin.sum() >= 2:
            ci_down = [float(np.percentile(reps[fin, 1], 5)), float(np.percentile(reps[fin, 1], 95))]
            se_down = float(np.std(reps[fin, 1], ddof=1))
    # few transitions: exact Poisson intervals on the counts (the bootstrap is degenerate there)
    t_low = n_up / qu if qu > 0 else tl.sum()  # the low time that could have shown an up switch
    if n_up < 20 and t_low > 0:
        lo, hi = _poisson_ci(n_up)
        ci_up = [block_to_pulse(lo / t_low, qd, block)[0], block_to_pulse(hi / t_low, qd, block)[0]]
        se_up = None
    if 0 < t_high and n_down < 20:
        lo, hi = _poisson_ci(n_down)
        ci_down = [factor * block_to_pulse(qu, x / t_high, block)[1] for x in (lo, hi)]
        se_down = None
    note = ""
    if n_up < 20 or n_down < 20:
        note = (f"few transitions seen ({n_up:.1f} up, {n_down:.1f} down): exact Poisson 90 % intervals, "
                "no stderr")
    if shows.any():
        note = detect.correction_note(note, factor, check is not None, few_injected, block)
    else:
        total_low = tl.sum() * block
        note = (f"no RTN seen in {n} trains; p_up = 0 with a 95 % upper bound of "
                f"{3.0 / max(total_low, 1):.2g} per pulse (rule of three); p_down not identifiable")
        ci_up = [0.0, float(3.0 / max(total_low, 1))]
        se_up = None
        ci_down = None
    return RTNEstimate(
        p_up=float(p_up), p_down=(float(p_down) if np.isfinite(p_down) else None),
        p_up_stderr=se_up, p_down_stderr=se_down, p_up_ci90=ci_up, p_down_ci90=ci_down,
        n_cells=n, n_showing=int(shows.sum()), amplitudes=amps,
        detection_limit=float(amps.min()) if amps.size else float("nan"), note=note,
    )

