r"""The noise laws of the weak-RESET model: the pink-noise filter and the RTN two-state chain (pure numpy)."""

from __future__ import annotations

import numpy as np

__all__ = ["pink_coefficients", "pink_std", "pink_autocovariance", "rtn_transition_power"]


def pink_coefficients(taps: int = 15, d: float = 0.5) -> np.ndarray:
    r"""Coefficients of the truncated fractional integrator :math:`(1 - z^{-1})^{-d}`.

    :math:`b_0 = 1,\ b_k = b_{k-1} (k - 1 + d) / k`. With ``d = 1/2`` this is the
    paper's pink-noise filter (1, 0.5, 0.375, 0.3125, ...); its spectrum falls as
    :math:`f^{-2d}` over the band the taps cover. ``d`` may be an array: shape
    ``d.shape + (taps,)``.
    """
    d = np.asarray(d, float)
    b = np.empty(d.shape + (taps,))
    b[..., 0] = 1.0
    for k in range(1, taps):
        b[..., k] = b[..., k - 1] * (k - 1 + d) / k
    return b


def pink_std(alpha, d, taps: int):
    """Standard deviation of the pink term once its history is full (``u`` uniform: variance 1/12).

    ``alpha`` and ``d`` may be arrays (one value per element).
    """
    b = pink_coefficients(taps, d)
    return np.asarray(alpha, float) * np.sqrt(np.sum(b**2, axis=-1) / 12.0)


def pink_autocovariance(alpha, d, white, taps):
    """Autocovariance at lags ``0 .. taps - 1`` of the pink term plus white read noise.

    The pink term is the ``taps``-tap filter :func:`pink_coefficients` over uniform
    innovations of amplitude ``alpha`` (variance ``alpha**2 / 12``); ``white`` is the
    std of the independent read noise, added at lag 0.
    """
    b = pink_coefficients(taps, d)
    g = np.array([np.dot(b[: taps - k], b[k:]) for k in range(taps)]) * alpha**2 / 12.0
    g[0] += white**2
    return g


def rtn_transition_power(p_up, p_down, n):
    """Return P(high after n pulses | low) and P(high after n | high) of the two-state chain.

    Closed form of the n-th power of ``[[1-p_up, p_up], [p_down, 1-p_down]]``:
    with ``s = p_up + p_down`` and ``lam = 1 - s``,
    ``P(high | low) = p_up/s * (1 - lam**n)`` and
    ``P(high | high) = p_up/s + p_down/s * lam**n``. Broadcasts over ``n``.
    """
    n = np.asarray(n, dtype=float)
    s = p_up + p_down
    if s <= 0:
        zero = np.zeros_like(n)
        return zero, np.ones_like(n)
    lam_n = np.power(1.0 - s, n)
    pi_high = p_up / s
    return pi_high * (1.0 - lam_n), pi_high + (p_down / s) * lam_n
