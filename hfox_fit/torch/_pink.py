r"""A compact Markov stand-in for the 15-tap pink-noise filter (numpy only).

The reference pink term is a moving sum over the last ``taps`` uniform
innovations. Keeping that history costs ``taps - 1`` numbers per cell and an
``n``-pulse update must shift it ``n`` times. :func:`pink_markov` replaces it by
a three-state linear Gaussian system (an ARMA(3, 2) process) plus a white part:

.. math::

    x_t = \lambda x_{t-1} + r e_t, \qquad \xi_t = p\, \xi_{t-1} + c\, e_t,

    w_{pink}(t) = \mu(t) + g(t) \big(x_t + \mathrm{Re}\, \xi_t + \sigma_w v_t\big)

with one real pole ``lambda``, a complex pole ``p`` (``xi`` is complex: two
real states), a shared innovation ``e ~ N(0, 1)``, an independent white part
``v ~ N(0, 1)``, all states 0 after SET, the exact mean ``mu(t)`` of the
non-centred innovations and a gain ``g(t)`` that makes the variance at every
``t`` equal the filter's.

``n`` pulses at once are exact in closed form: the states move by
``lambda**n`` and ``p**n`` and receive a Gaussian vector whose 3x3 covariance
``Q_n = sum_{k<n} v_k v_k^T`` (``v_k = (r lambda**k, Re c p**k, Im c p**k)``)
is known; :meth:`PinkMarkov.transition` gives its Cholesky factor. Three
normal draws per cell and call (plus the white one) cover any ``n``.

The poles and residues minimise the largest log-ratio between the stationary
spectra of the filter and of the stand-in. The filter's spectrum ripples (its
impulse response stops dead after ``taps`` pulses) and no sum of independent
AR(1) spectra follows the ripples (two or three AR(1) components stay 1.56-1.60
away at ``d = 1/2``); the shared innovation lets the stand-in put a notch on
the deepest ripple, and the ARMA(3, 2) stand-in is within a factor 1.40 of the
15-tap filter at every frequency (the remaining error is the ripple of the
filter's spectrum at high frequencies, which no low-order model follows).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special

from ..laws import pink_coefficients
from ..model import PinkNoise

__all__ = ["PinkMarkov", "pink_markov", "filter_spectrum", "exact_variance", "N_STATES"]

#: Real states of the stand-in (one real pole, one complex pair).
N_STATES = 3
_N_FREQ = 512
_TRANSIENT_TOL = 1e-9  # |pole|**T below this: A**n is 0 for n >= T (float32 cannot tell)
_MAX_TABLE = 1 << 15
# Unit-alpha solution for d = 1/2, 15 taps: the start of every fit.
_START = np.array([1.17517635, 2.96856437, -2.20360311, -1.98928871, 0.60408719, -0.48125268, 0.71755258])
_GOOD_ENOUGH = np.log(1.45)


@dataclass(frozen=True)
class PinkMarkov:
    """The ARMA(3, 2) stand-in of a :class:`~hfox_fit.model.PinkNoise` term.

    Attributes
    ----------
    real_pole : float
        ``lambda``, the real pole.
    pair_pole : complex
        ``p``, the complex pole (with its conjugate).
    real_input, pair_input : float, complex
        ``r`` and ``c``: how the shared innovation enters each state.
    white_scale : float
        Standard deviation ``sigma_w`` of the white Gaussian part.
    offset : ndarray of shape (T + 1,)
        Mean of the term after ``t`` pulses (``offset[min(t, T)]``).
    gain : ndarray of shape (T + 1,)
        Gain making the variance after ``t`` pulses exact (``gain[min(t, T)]``).
    max_log_ratio : float
        Largest ``|ln(S_markov / S_filter)|`` over the band (stationary spectra).
    states : int
        3, or 0 for a white filter (one tap), where only the white part is left.
    """

    real_pole: float
    pair_pole: complex
    real_input: float
    pair_input: complex
    white_scale: float
    offset: np.ndarray
    gain: np.ndarray
    max_log_ratio: float
    states: int = N_STATES

    @property
    def horizon(self) -> int:
        """``T``: the transition of ``n >= T`` pulses is the one of ``T`` pulses (``offset``, ``gain`` too)."""
        return len(self.gain) - 1

    def _impulse(self, k) -> np.ndarray:
        """``v_k``, shape (len(k), 3): the state's response ``k`` pulses after one innovation."""
        k = np.asarray(k, float)
        pk = self.pair_input * self.pair_pole ** k
        return np.stack([self.real_input * self.real_pole ** k, pk.real, pk.imag], axis=-1)

    def covariance(self, n) -> np.ndarray:
        """``Q_n``, shape (len(n), 3, 3): covariance of the states ``n`` pulses after SET."""
        n = np.minimum(np.asarray(n, int).ravel(), self.horizon)
        v = self._impulse(np.arange(self.horizon + 1))
        cum = np.concatenate([np.zeros((1, 3, 3)), np.cumsum(v[:, :, None] * v[:, None, :], axis=0)])
        return cum[n]

    def transition(self, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closed-form ``n``-pulse transition (float64, any ``n >= 0``).

        Returns ``lambda**n`` (len(n),), ``p**n`` (len(n),) and the lower
        Cholesky factor ``L_n`` of ``Q_n`` (len(n), 3, 3): ``n`` pulses move
        the states ``(x, Re xi, Im xi)`` to ``A**n (x, Re xi, Im xi) + L_n z``
        with ``z ~ N(0, I_3)``. Beyond :attr:`horizon` pulses ``A**n`` is 0
        (below 1e-9) and ``Q_n`` the stationary covariance.
        """
        n = np.asarray(n, int).ravel()
        far = n >= self.horizon
        nn = np.where(far, 0, n)
        a = np.where(far, 0.0, self.real_pole ** nn)
        pn = np.where(far, 0.0, self.pair_pole ** nn)
        return a, pn, _cholesky3(self.covariance(n))

    def variance(self, t) -> np.ndarray:
        """Variance of the stand-in after ``t`` pulses, gain included."""
        t = np.asarray(t, int)
        q = self.covariance(t.ravel())
        core = q[:, 0, 0] + 2 * q[:, 0, 1] + q[:, 1, 1] + self.white_scale**2
        g = self.gain[np.minimum(t.ravel(), self.horizon)]
        return (np.where(t.ravel() == 0, 0.0, core) * g**2).reshape(t.shape)

    def spectrum(self, f) -> np.ndarray:
        """Stationary two-sided spectrum of the stand-in at frequencies ``f`` (1/pulse)."""
        e = np.exp(-2j * np.pi * np.asarray(f, float))
        h = (self.real_input / (1 - self.real_pole * e)
             + 0.5 * self.pair_input / (1 - self.pair_pole * e)
             + 0.5 * np.conj(self.pair_input) / (1 - np.conj(self.pair_pole) * e))
        return (np.abs(h) ** 2 + self.white_scale**2) * self.gain[-1] ** 2


def _cholesky3(q: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of PSD 3x3 matrices (batch), zero columns where a pivot vanishes."""
    q = np.asarray(q, float)
    out = np.zeros_like(q)
    scale = np.maximum(np.max(np.abs(q), axis=(-2, -1)), 1e-300)
    for j in range(3):
        d = q[:, j, j] - np.sum(out[:, j, :j] ** 2, axis=-1)
        piv = np.sqrt(np.maximum(d, 0.0))
        ok = piv > 1e-7 * np.sqrt(scale)
        out[:, j, j] = np.where(ok, piv, 0.0)
        for i in range(j + 1, 3):
            s = q[:, i, j] - np.sum(out[:, i, :j] * out[:, j, :j], axis=-1)
            out[:, i, j] = np.where(ok, s / np.where(ok, piv, 1.0), 0.0)
    return out


def filter_spectrum(f, alpha: float, d: float, taps: int) -> np.ndarray:
    """Stationary spectrum of the reference filter over U(0, 1) innovations."""
    b = pink_coefficients(taps, d)
    e = np.exp(-2j * np.pi * np.asarray(f, float))
    return alpha**2 * np.abs(np.polyval(b[::-1], e)) ** 2 / 12.0


def exact_variance(t, alpha: float, d: float, taps: int) -> np.ndarray:
    """Variance of the reference term after ``t`` pulses (history empty at SET)."""
    b = pink_coefficients(taps, d)
    cum = np.concatenate([[0.0], np.cumsum(b**2)])
    return alpha**2 * cum[np.minimum(np.asarray(t, int), taps)] / 12.0


def _grid() -> tuple[np.ndarray, np.ndarray]:
    f = (np.arange(_N_FREQ) + 0.5) / (2 * _N_FREQ)
    return f, np.exp(-2j * np.pi * f)


def _unpack(p: np.ndarray) -> tuple:
    lam = float(np.tanh(p[0]))
    pole = complex(special.expit(p[1]) * np.exp(1j * np.pi * special.expit(p[2])))
    return lam, pole, float(p[3]), complex(p[4], p[5]), float(np.exp(p[6]))


def _log_ratio(p: np.ndarray, e: np.ndarray, target: np.ndarray) -> np.ndarray:
    """log(S_model / var_model) - log(S_filter / var_filter) on the grid."""
    lam, pole, r, c, white = _unpack(p)
    h = r / (1 - lam * e) + 0.5 * c / (1 - pole * e) + 0.5 * np.conj(c) / (1 - np.conj(pole) * e)
    s = np.abs(h) ** 2 + white
    return np.log(s) - np.log(np.mean(s)) - target


def _p_norm(p: np.ndarray, e: np.ndarray, target: np.ndarray, q: int) -> float:
    return float(np.log(np.mean(np.abs(_log_ratio(p, e, target)) ** q)) / q)


def _minimax(p0: np.ndarray, e: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    with np.errstate(all="ignore"):
        p = optimize.least_squares(_log_ratio, p0, args=(e, target)).x
        for q in (8, 32, 128):  # p-norms on the way to the largest error
            r = optimize.minimize(_p_norm, p, args=(e, target, q), method="BFGS", options={"gtol": 1e-8})
            if np.all(np.isfinite(r.x)):
                p = r.x
        worst = float(np.max(np.abs(_log_ratio(p, e, target))))
    return (worst if np.isfinite(worst) else np.inf), p


@lru_cache(maxsize=32)
def _fit_unit(d: float, taps: int) -> tuple:
    """Poles, inputs and white variance of the stand-in for ``alpha = 1`` (variance ``sum(b**2) / 12``)."""
    b = pink_coefficients(taps, d)
    c0 = float(np.sum(b**2) / 12.0)
    f, e = _grid()
    h = filter_spectrum(f, 1.0, d, taps)
    h = np.maximum(h, 1e-4 * h.max())  # a boxcar filter (d = 1) has true zeros
    target = np.log(h) - np.log(np.mean(h))
    worst, p = _minimax(_START, e, target)
    if worst > _GOOD_ENOUGH:  # far from d = 1/2, 15 taps: a few more starts
        rng = np.random.default_rng(0)
        for _ in range(6):
            w2, p2 = _minimax(_START + rng.normal(scale=1.5, size=_START.size), e, target)
            if w2 < worst:
                worst, p = w2, p2
    lam, pole, r, c, white = _unpack(p)
    horizon = _horizon(lam, pole)
    pm = PinkMarkov(lam, pole, r, c, 0.0, np.zeros(horizon + 1), np.ones(horizon + 1), 0.0)
    q = pm.covariance([horizon])[0]
    var = q[0, 0] + 2 * q[0, 1] + q[1, 1] + white
    k = np.sqrt(c0 / var)  # scale to the filter's stationary variance
    return lam, pole, r * k, c * k, float(np.sqrt(white) * k)


def _horizon(lam: float, pole: complex) -> int:
    rho = max(abs(lam), abs(pole), 1e-300)
    if rho >= 1.0:
        return _MAX_TABLE
    return int(min(_MAX_TABLE, max(1, np.ceil(np.log(_TRANSIENT_TOL) / np.log(rho)))))


def pink_markov(alpha: float, d: float, taps: int) -> PinkMarkov:
    """Build the Markov stand-in of the pink filter ``(alpha, d, taps)``.

    Parameters
    ----------
    alpha : float
        Filter gain (``PinkNoise.alpha``).
    d : float
        Fractional order (``PinkNoise.d``).
    taps : int
        Filter length (``PinkNoise.taps``).

    Returns
    -------
    PinkMarkov

    Examples
    --------
    >>> pm = pink_markov(0.025, 0.5, 15)
    >>> bool(pm.max_log_ratio < 0.35)     # within a factor 1.42 of the filter's spectrum
    True
    >>> bool(abs(pm.variance(100) - exact_variance(100, 0.025, 0.5, 15)) < 1e-12)
    True
    """
    taps = int(taps)
    if taps < 1:
        raise ValueError(f"the pink filter needs at least 1 tap; got taps={taps}.")
    pink = PinkNoise(alpha=alpha, d=d, taps=taps)
    b = pink.coefficients
    if taps == 1 or not np.any(b[1:]):
        lam, pole, r, c = 0.0, 0j, 0.0, 0j
        white = pink.std  # a white filter: the whole term is white
        states, horizon = 0, taps
    else:
        lam, pole, r, c, white = _fit_unit(float(d), taps)
        r, c, white = r * alpha, c * alpha, white * abs(alpha)
        states, horizon = N_STATES, max(taps, _horizon(lam, pole))
    t = np.arange(horizon + 1)
    offset = pink.offset(t)
    pm = PinkMarkov(lam, pole, r, c, white, offset, np.ones(horizon + 1), 0.0, states)
    q = pm.covariance(t)
    model_var = q[:, 0, 0] + 2 * q[:, 0, 1] + q[:, 1, 1] + white**2
    exact = exact_variance(t, alpha, d, taps)
    gain = np.zeros(t.size)
    ok = (model_var > 0) & (t > 0)
    gain[ok] = np.sqrt(exact[ok] / model_var[ok])
    pm = PinkMarkov(lam, pole, r, c, white, offset, gain, 0.0, states)
    f, _ = _grid()
    h = filter_spectrum(f, alpha, d, taps)
    ok = h > 1e-4 * h.max() if alpha else np.zeros(f.size, bool)
    worst = float(np.max(np.abs(np.log(pm.spectrum(f[ok]) / h[ok])))) if ok.any() else 0.0
    return PinkMarkov(lam, pole, r, c, white, offset, gain, worst, states)
