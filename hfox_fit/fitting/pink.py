r"""Pink (1/f) noise of the drift residuals: averaged periodograms and the spectrum fit.

The residual of every cell in its RTN-low state is cut into segments of
``L`` pulses (after the filter history is full), each segment is linearly
detrended and Hann-windowed, and the periodograms are averaged over all
segments. The model is the project's own: a ``taps``-long fractional
integrator of order ``d`` driven by uniform innovations, plus white read
noise,

.. math:: \gamma(k) = \frac{\alpha^2}{12}\sum_i b_i b_{i+k} + \sigma_w^2 \delta_k ,

and its *expected* periodogram after the same detrending and window is
linear in the autocovariance, :math:`E[I_j] = \sum_k C_{jk}\gamma(k)`, so
the fit (lmfit, on the log of the averaged periodogram) has no leakage or
detrending bias. ``std`` is the pink term's standard deviation once its
history is full and ``exponent = 2 d`` the slope of ``S(f) ~ f**-exponent``
(:class:`hfox_fit.model.PinkNoise`). Intervals come from a bootstrap over cells.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import lmfit
import numpy as np
from scipy import optimize

from ..exceptions import FitError
from ..laws import pink_autocovariance, pink_coefficients
from ..model import PinkNoise

__all__ = ["SpectrumStats", "PinkSpectrum", "segment_periodograms", "fit_pink_spectrum"]


def _segment_length(n_pulses: int, taps: int) -> int:
    avail = n_pulses - taps - 1
    for L in (128, 64, 32, 16):
        if avail >= 2 * L or (L == 16 and avail >= L):
            return L
    return 0


@functools.lru_cache(maxsize=8)
def _design(L: int, max_lag: int) -> np.ndarray:
    """C (F, max_lag + 1): expected periodogram of a linearly detrended, Hann-windowed segment (read-only)."""
    t = np.arange(L, dtype=float)
    x = np.stack([np.ones(L), t - t.mean()], axis=1)
    proj = np.eye(L) - x @ np.linalg.pinv(x)
    h = np.hanning(L + 2)[1:-1]
    freqs = np.arange(1, L // 2 + 1)
    e = np.exp(-2j * np.pi * np.outer(t, freqs) / L)  # (L, F)
    a = proj @ (h[:, None] * e)  # (L, F): I_j = |a_j^H x|^2 / sum(h^2)
    c = np.empty((len(freqs), max_lag + 1))
    c[:, 0] = np.sum(np.abs(a) ** 2, axis=0)
    for k in range(1, max_lag + 1):
        c[:, k] = 2.0 * np.real(np.sum(np.conj(a[:-k]) * a[k:], axis=0))
    c = c / np.sum(h**2)
    c.flags.writeable = False  # cached: shared by every call
    return c


@dataclass
class SpectrumStats:
    """Averaged periodograms of residual segments (additive across dies).

    Attributes
    ----------
    length : int
        Segment length ``L`` in pulses.
    taps : int
        Pink filter length assumed (segments start after the history is full).
    freqs : ndarray of shape (F,)
        Frequencies in 1/pulse (``j / L``, ``j = 1..L/2``).
    power_sum : ndarray of shape (n_cells, F)
        Per cell, the sum of its segment periodograms (w^2 per 1/pulse).
    count : ndarray of shape (n_cells,)
        Segments per cell.
    """

    length: int
    taps: int
    freqs: np.ndarray
    power_sum: np.ndarray
    count: np.ndarray

    @classmethod
    def concat(cls, parts):
        parts = [p for p in parts if p is not None and p.length > 0]
        if not parts:
            return None
        L = max(p.length for p in parts)
        parts = [p for p in parts if p.length == L]
        return cls(L, parts[0].taps, parts[0].freqs,
                   np.concatenate([p.power_sum for p in parts]), np.concatenate([p.count for p in parts]))

    @property
    def mean(self) -> np.ndarray:
        n = self.count.sum()
        return self.power_sum.sum(axis=0) / max(n, 1)


def segment_periodograms(resid, usable, taps: int = 15, length: int | None = None) -> SpectrumStats:
    """Periodogram sums of the fully usable, non-overlapping segments of each row.

    Parameters
    ----------
    resid : ndarray of shape (N, T)
        Residual ``w - w_mean`` at pulses ``1..T`` (NaN where unknown). float32
        input is transformed in float32 (the sums are float64).
    usable : ndarray of bool, shape (N, T)
        Reads that may enter (finite, RTN-low, cell not flagged).
    taps : int, default=15
        Segments start at pulse ``taps + 1``, once the pink history is full.
    """
    resid = np.asarray(resid)
    if resid.dtype not in (np.float32, np.float64):
        resid = resid.astype(float)
    n, T = resid.shape
    L = length or _segment_length(T, taps)
    F = L // 2
    if L == 0:
        return SpectrumStats(0, taps, np.zeros(0), np.zeros((n, 0)), np.zeros(n))
    start = taps  # index of pulse taps + 1
    nseg = (T - start) // L
    span = slice(start, start + nseg * L)
    ok = np.asarray(usable)[:, span].reshape(n, nseg, L).all(axis=2)
    # only the complete segments are transformed
    seg = resid[:, span].reshape(n, nseg, L)[ok]
    finite = np.isfinite(seg).all(axis=1)
    if not finite.all():
        ok[ok] = finite
        seg = seg[finite]
    power_sum = np.zeros((n, F))
    if seg.shape[0]:
        x = (np.arange(L) - (L - 1) / 2.0).astype(seg.dtype)
        seg -= seg.mean(axis=1, keepdims=True)
        seg -= np.einsum("kl,l->k", seg, x)[:, None] * (x / np.dot(x, x))
        h = np.hanning(L + 2)[1:-1]
        seg *= h.astype(seg.dtype)
        spec = np.abs(np.fft.rfft(seg, axis=1)[:, 1: F + 1]) ** 2
        rows = np.nonzero(ok)[0]  # row of every kept segment, in row order
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        power_sum[rows[first]] = np.add.reduceat(spec.astype(float), first, axis=0) / np.sum(h**2)
    return SpectrumStats(L, taps, np.arange(1, F + 1) / L, power_sum, ok.sum(axis=1).astype(float))


@dataclass
class PinkSpectrum:
    """Result of the pink-noise spectrum fit.

    Attributes
    ----------
    std, std_stderr : float
        Pink term's standard deviation (in w = ln R/R0, i.e. relative) and its stderr.
    exponent, exponent_stderr : float
        Spectral exponent ``2 d``.
    white_std, white_std_stderr : float
        White (read) noise standard deviation in w.
    std_ci90, exponent_ci90, white_std_ci90 : list of float
        Bootstrap (over cells) 90 % intervals; None when fewer than 2 cells.
    taps : int
    n_segments : int
    freqs, measured, fitted : ndarray
        The averaged periodogram and the model's expectation (for validation plots).
    lmfit_result : lmfit.minimizer.MinimizerResult
    """

    std: float
    std_stderr: float | None
    exponent: float
    exponent_stderr: float | None
    white_std: float
    white_std_stderr: float | None
    taps: int
    n_segments: int
    freqs: np.ndarray
    measured: np.ndarray
    fitted: np.ndarray
    std_ci90: list | None = None
    exponent_ci90: list | None = None
    white_std_ci90: list | None = None
    lmfit_result: object = None

    @property
    def pink(self) -> PinkNoise:
        return PinkNoise.from_std(self.std, self.exponent, taps=self.taps)

    def autocov(self) -> np.ndarray:
        """Autocovariance (lags 0..taps-1) of pink + white noise, in w^2."""
        p = self.pink
        return pink_autocovariance(p.alpha, p.d, self.white_std, p.taps)

    @property
    def long_run_ratio(self) -> float:
        """Long-run variance over variance of the noise (``kappa``, >= 1 for positive correlation)."""
        g = self.autocov()
        return float(max((g[0] + 2 * g[1:].sum()) / g[0], 1.0))


def _spectrum_residual(values, c, measured, weight, taps):
    alpha, d, white = values
    model = c @ pink_autocovariance(alpha, d, white, taps)
    return (np.log(measured) - np.log(np.maximum(model, 1e-300))) * weight


def fit_pink_spectrum(stats: SpectrumStats, *, bootstrap: int = 100, rng=0) -> PinkSpectrum:
    """Fit the pink + white model to averaged residual periodograms (lmfit, least squares in log).

    Parameters
    ----------
    stats : SpectrumStats
    bootstrap : int, default=100
        Bootstrap replicates over cells for the 90 % intervals (0 for none).

    Raises
    ------
    FitError
        When no complete residual segment exists (trains too short or all flagged).
    """
    if stats is None or stats.length == 0 or stats.count.sum() < 1:
        raise FitError(
            "no complete residual segment to estimate the pink noise from: the pulse trains "
            "are too short (need at least 32 valid reads after the first 15) or every cell is flagged."
        )
    taps = stats.taps
    c = _design(stats.length, taps - 1)
    measured = stats.mean
    K = stats.count.sum()
    # log of an average of K chi2_2/2 variables has sd ~ 1/sqrt(K) (bins are not independent;
    # the bootstrap gives the honest interval).
    weight = np.sqrt(K)
    g0 = float(np.mean(measured))
    params = lmfit.Parameters()
    # rough start: all variance pink, exponent 1
    b = pink_coefficients(taps, 0.5)
    params.add("alpha", value=np.sqrt(12 * g0 / np.sum(b**2)), min=0.0)
    params.add("d", value=0.5, min=0.01, max=1.5)
    params.add("white", value=0.2 * np.sqrt(g0), min=0.0)

    def resid(p):
        return _spectrum_residual((p["alpha"].value, p["d"].value, p["white"].value), c, measured, weight, taps)

    result = lmfit.minimize(resid, params, method="least_squares")
    alpha, d, white = (result.params[k].value for k in ("alpha", "d", "white"))
    std = PinkNoise(alpha=alpha, d=d, taps=taps).std
    # stderr of std by the delta method
    std_err = exp_err = white_err = None
    if result.errorbars and result.covar is not None:
        names = result.var_names
        cov = result.covar
        eps = 1e-6

        def std_of(a, dd):
            return PinkNoise(alpha=a, d=dd, taps=taps).std

        grad = np.zeros(len(names))
        for i, nm in enumerate(names):
            if nm == "alpha":
                grad[i] = std / max(alpha, 1e-300)
            elif nm == "d":
                grad[i] = (std_of(alpha, d + eps) - std_of(alpha, d - eps)) / (2 * eps)
        std_err = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
        if "d" in names:
            exp_err = float(2 * np.sqrt(cov[names.index("d"), names.index("d")]))
        if "white" in names and result.params["white"].stderr is not None:
            white_err = float(result.params["white"].stderr)
    fitted = c @ pink_autocovariance(alpha, d, white, taps)
    out = PinkSpectrum(std=float(std), std_stderr=std_err, exponent=float(2 * d), exponent_stderr=exp_err,
                       white_std=float(white), white_std_stderr=white_err, taps=taps, n_segments=int(K),
                       freqs=stats.freqs, measured=measured, fitted=fitted, lmfit_result=result)
    n_cells = int((stats.count > 0).sum())
    if bootstrap and n_cells >= 2:
        rng = np.random.default_rng(rng)
        has = np.nonzero(stats.count > 0)[0]
        x0 = np.array([alpha, max(d, 0.02), max(white, 1e-9)])
        reps = []
        for _ in range(bootstrap):
            pick = rng.choice(has, size=len(has), replace=True)
            m = stats.power_sum[pick].sum(0) / stats.count[pick].sum()
            r = optimize.least_squares(_spectrum_residual, x0, args=(c, m, weight, taps),
                                       bounds=([0, 0.01, 0], [np.inf, 1.5, np.inf]))
            a_, d_, w_ = r.x
            reps.append((PinkNoise(alpha=a_, d=d_, taps=taps).std, 2 * d_, w_))
        reps = np.array(reps)
        lo, hi = np.percentile(reps, [5, 95], axis=0)
        out.std_ci90 = [float(lo[0]), float(hi[0])]
        out.exponent_ci90 = [float(lo[1]), float(hi[1])]
        out.white_std_ci90 = [float(lo[2]), float(hi[2])]
    return out

