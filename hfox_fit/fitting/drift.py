r"""Drift-law fits of every cell and cycle, vectorised across cells, robust to RTN.

Pipeline for one die (:func:`fit_drift_die`, a pure function of one
:class:`~hfox_fit.schema.DieData`):

1. ``w = ln(R / R0)`` with ``R0`` the read right after SET (pulse 0); when that
   read failed, ``R0`` is extrapolated from the first valid read and the die's
   median ``w`` there.
2. Broken trains are flagged (:mod:`hfox_fit.fitting.flags`).
3. Robust fit: the law is fitted to all reads (the first, masking fit of
   ``two_slope`` on sums over ``prefit_bin`` pulses: it only feeds the residuals
   below); a two-state HMM of RTN runs on blocks of the residuals
   (:func:`hfox_fit.fitting.noise.rtn_em`; it mostly reads the read-to-read
   variance, which the drift does not touch) and every block it finds high is
   masked with its neighbours, as are reads far from the fit (RTN excursions
   above, glitches below); ``robust_rounds`` such rounds. So telegraph jumps do
   not drag the drift (a plain least-squares fit does). The residuals of these
   rounds are float32: they only feed noise statistics.
4. A train the mask would leave with too few reads, or whose start or a long
   stretch RTN hides (``rtn_min_low``, ``rtn_late_start``, ``rtn_max_gap``), is
   fitted on all its reads instead, each high one lowered by the telegraph
   term's mean ``A / 4`` (blocks at a change of state left out); its ``note``
   says so and ``n_rtn_corrected`` counts those reads.
5. The residual spectrum of the die gives the pink and read noise; the pink
   term's non-zero mean (:meth:`hfox_fit.model.PinkNoise.offset`) is taken out
   of ``w`` so that ``c1`` is the law's own intercept, as in the model.
6. Each requested law is fitted on the same reads (so AIC/BIC compare) with
   the vectorised separable solver (:mod:`hfox_fit.fitting._separable`). The
   per-train AIC and BIC are quasi-likelihood criteria: ``-2 log L`` is divided
   by ``kappa`` (below), the overdispersion of the correlated noise.
7. ``R0`` refers to the RTN-low state: a train that is RTN-high from its first
   reads (through its first RTN block, or for only a few reads and then low)
   most likely was high at the read right after SET too, and ``r0`` is
   lowered (``c1`` raised) by that read's expected telegraph excess
   (:func:`_start_excess`; ``r0_rtn_high`` is the probability that it was high).

Standard errors come from the Jacobian at the optimum with the residual
variance, multiplied by ``kappa = (sum of the noise autocovariance) / variance``
from the fitted pink + white noise model: the pink noise is correlated over
~15 pulses, so a slope sees ``n / kappa`` effective reads (the long-run
variance, i.e. a HAC sandwich for smooth regressors). For a train fitted
through its corrected high reads, whose telegraph scatter is white, ``kappa``
is the variance-weighted mix of the two. For ``two_slope`` each variance is at
least the train's own: the long-run variance of its residual, a sandwich of its
32-pulse block scores (a disturbance the noise model does not know, e.g.
telegraph left-overs next to masked reads, weighs by the leverage of the reads it
sits on), and for ``m1`` and ``c1`` their spread over the breaks within the
break's 90 % profile region. ``c1`` carries R0's read noise, also when it is the
straight line's (a censored train).

For ``two_slope``, a break that does not improve the fit significantly over a
straight line (``(SSE_line - SSE) / (sigma^2 kappa) < break_threshold``) is not
reported: ``t_star`` and ``m2`` are NaN, ``m1`` and ``c1`` come from the best
two-slope fit when it is nearly significant (``m1_threshold``: a small early
rise, where a line's slope would be ``m2``), else from a straight line. Such a
train either breaks after its last read or its break is invisible (``m1``
close to ``m2``, or a short first segment); which one is decided over the
whole campaign by :func:`classify_breaks`, which compares the line's slope with
the post-break slopes seen elsewhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import lmfit
import numpy as np
import pandas as pd

from ..exceptions import FitConvergenceWarning, FitError, NotFittedError
from ..laws import AUTO_LAWS, DRIFT_LAWS, get_law
from ..schema import DieData
from ._clock import PhaseClock
from ._lawfit import (
    _binned_fit,
    _evaluate,
    _fit_law,
    _residual32,
    _span,
    _work_buffers,
    fit_law_rows,
)
from ._lmfit import DRIFT_MODELS, _lmfit_fallback, _lmfit_refit, _verify
from ._robust import _extrapolate_r0, _r0_at_set, _robust_scale, _rtn_hides, _rtn_states
from ._rtn_detect import with_detection_sample
from ._select import choose_law, score_laws
from ._tables import DieDriftResult, _empty_table, _law_table
from ._util import _join  # noqa: F401 - kept importable here
from .breaks import censor_late_breaks, classify_breaks, steepest_post_break_slope
from .flags import FlagOptions, detect_flags, flag_poor_fit
from .noise import (
    _VAR_U1U2,
    block_stats,
    fit_pink_spectrum,
    rtn_em,
    segment_periodograms,
)

__all__ = [
    "DRIFT_MODELS",
    "DriftOptions",
    "DieDriftResult",
    "DriftFitter",
    "drift_model",
    "fit_drift_die",
    "fit_law_rows",
    "check_law",
    "classify_breaks",
    "censor_late_breaks",
    "steepest_post_break_slope",
    "score_laws",
    "choose_law",
]

def check_law(law: str, *, allow_auto: bool = False) -> str:
    """Return ``law`` if it is a registered drift law (or "auto"), else raise a clear FitError."""
    names = sorted(DRIFT_LAWS) + (["auto"] if allow_auto else [])
    if not isinstance(law, str) or (law not in DRIFT_LAWS and not (allow_auto and law == "auto")):
        raise FitError(f"The 'law' parameter must be one of {names}. Got {law!r} instead.")
    return law


def drift_model(name: str) -> lmfit.Model:
    """The lmfit Model of drift law ``name`` (see :data:`hfox_fit.laws.DRIFT_LAWS`)."""
    return DRIFT_MODELS[check_law(name)]


@dataclass(frozen=True)
class DriftOptions:
    """Options of the per-die drift fit.

    Attributes
    ----------
    robust : bool, default=True
        False gives a plain least-squares fit of every valid read (for
        comparison; RTN is still detected and reported).
    robust_rounds : int, default=1
        Fit / mask rounds before the final fit (each detects RTN on the
        residuals of the previous fit).
    final_rtn : bool, default=False
        Run the RTN detection once more on the final fit's residuals (the
        amplitudes come from the read-to-read variance, which the drift does
        not change, so this rarely matters).
    clip_high, clip_low : float, default=3.0, 6.0
        Reads more than ``clip_high`` (above) or ``clip_low`` (below) robust
        residual standard deviations from the fit are masked.
    rtn_block : int, default=16
        Block length (pulses) of the RTN hidden Markov model.
    rtn_llr : float, default=8.0
        Log-likelihood ratio (nats) above which a train shows RTN.
    break_threshold : float, default=10.0
        Significance (chi-square units, autocorrelation-corrected) a two-slope
        break must reach over a straight line to be reported.
    min_segment : int, default=5
        Fewest fitted reads on each side of a reported break (and at least 1 %
        of the train's reads).
    m1_threshold : float, default=5.0
        For a train without a reported break, ``m1`` and ``c1`` come from the
        best two-slope fit when its significance reaches this (a small early
        rise), else from the straight line.
    prefit_bin : int, default=4
        The first (masking) two-slope fit is made on sums over this many pulses
        (1: on every read); the final fit always uses every read.
    rtn_min_low : float, default=0.1
        A train whose RTN-low reads are fewer than this fraction of its valid
        reads (or than ``flags.min_reads``) is high nearly everywhere: it is
        fitted on all its valid reads, each high one lowered by the telegraph
        term's mean ``A / 4`` (the blocks next to a change of state, and a high
        first block, are left out: they mix both states), and says so in its
        ``note`` (``n_rtn_corrected`` reads).
    rtn_late_start, rtn_max_gap : float, default=0.1, 0.5
        The same when RTN hides the start of the train (the stretch left out at
        its start is longer than ``rtn_late_start`` of the train's span: the
        intercept would be an extrapolation) or a stretch longer than
        ``rtn_max_gap`` of the span (a break could hide in it).
    r0_rtn : bool, default=True
        When a train is RTN-high from its very first reads (for a whole block or
        only a few reads), the read right after SET is most likely high too (RTN persists from pulse to pulse): ``r0``
        is then lowered by the read's expected telegraph excess, so that ``r0``
        and ``c1`` refer to the low state (column ``r0_rtn_high``: the
        probability that the read was high; see :func:`_start_excess`).
    verify : int, default=1
        Trains per die re-fitted with lmfit to verify the vectorised optimum.
    max_traces : int, default=64
        Trains per die kept as example traces (validation plots).
    flags : FlagOptions
    """

    robust: bool = True
    robust_rounds: int = 1
    final_rtn: bool = False
    clip_high: float = 3.0
    clip_low: float = 6.0
    rtn_block: int = 16
    rtn_llr: float = 8.0
    break_threshold: float = 10.0
    min_segment: int = 5
    m1_threshold: float = 5.0
    prefit_bin: int = 4
    rtn_min_low: float = 0.1
    rtn_late_start: float = 0.1
    rtn_max_gap: float = 0.5
    r0_rtn: bool = True
    verify: int = 1
    max_traces: int = 64
    flags: FlagOptions = field(default_factory=FlagOptions)


def fit_drift_die(die: DieData, laws=("two_slope",), options: DriftOptions | None = None, *,
                  timings: dict | None = None, progress=None) -> DieDriftResult:
    """Fit the drift laws ``laws`` to every (cell, cycle) of one die (see module doc).

    Parameters
    ----------
    die : DieData
    laws : sequence of str
        Laws to fit on the same reads; the first one drives the robust masking.
    options : DriftOptions, optional
    timings : dict, optional
        Filled with ``phase -> (wall s, CPU s)`` (for benchmarks): ``flags``
        (:func:`~hfox_fit.fitting.flags.detect_flags`), ``noise`` (the die's residual
        spectrum and its pink + white fit), and the drift fit's own phases
        ``prepare``, ``prefit``, ``rtn``, ``fit``, ``tables``.
    progress : callable, optional
        Called with the fraction of the die done (0 to 1) as the phases end, for a progress bar.

    Returns
    -------
    DieDriftResult
    """
    clock = PhaseClock(timings, progress)
    options = options or DriftOptions()
    laws = tuple(check_law(name) for name in laws)
    if not isinstance(die, DieData):
        raise FitError(f"expected a DieData, got {type(die).__name__}.")
    n_cells, n_cycles, P = die.resistance.shape
    n = n_cells * n_cycles
    ids = pd.DataFrame({
        "wafer": np.repeat(str(die.wafer), n),
        "die": np.repeat(str(die.die), n),
        "device": np.repeat(np.asarray(die.devices, dtype=str), n_cycles),
        "cycle": np.tile(np.asarray(die.cycles, dtype="int64"), n_cells),
    })
    res = np.asarray(die.resistance, float).reshape(n, P)
    lny = np.full((n, P), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(res, out=lny, where=res > 0)
    valid = np.isfinite(lny)
    messages = []
    clock("prepare")
    flag, reason, cut, _ = detect_flags(lny, valid, options.flags)
    clock("flags")
    t = np.arange(1, P, dtype=float)
    T = len(t)
    scale = float(max(T, 1))
    # R0 and w
    lnr0 = lny[:, 0].copy()
    r0_from_read = np.isfinite(lnr0)
    vmask = valid[:, 1:]
    if (cut < P).any():
        vmask = vmask & (np.arange(1, P)[None, :] < cut[:, None])
    r0_spread = _extrapolate_r0(lny, vmask, lnr0, r0_from_read)
    no_r0 = ~np.isfinite(lnr0)
    for i in np.nonzero(no_r0 & (flag == "ok"))[0]:
        flag[i] = "failed"
        reason[i] = "no read right after SET and none to extrapolate R0 from"
    usable = vmask & ~no_r0[:, None]
    fitrows = np.nonzero(flag != "failed")[0]
    ok = flag == "ok"
    if T < 2 * options.flags.min_reads // 2 or fitrows.size == 0:
        tables = {name: _empty_table(name, ids, flag, reason, lnr0) for name in laws}
        return DieDriftResult(str(die.wafer), str(die.die), tables,
                              segment_periodograms(np.zeros((0, max(T, 1))), np.zeros((0, max(T, 1)), bool)),
                              None, {}, np.zeros((0, T)), P, n_cells, messages=messages)
    # Y: w on the usable reads, 0 elsewhere (it becomes the final fit's data in place further down)
    Y = lny[:, 1:] - lnr0[:, None]
    np.copyto(Y, 0.0, where=~usable)
    del lny
    first_t, last_t = _span(t, usable, 1.0, float(T))
    # traces for validation plots
    ok_rows = np.nonzero(ok)[0]
    step = max(len(ok_rows) // max(options.max_traces, 1), 1)
    trace_rows = ok_rows[::step][: options.max_traces]
    traces = np.where(usable[trace_rows], Y[trace_rows], np.nan)
    B = min(options.rtn_block, T)
    start_w = np.where(usable[:, :B], Y[:, :B], np.nan)  # the first reads: the state of the read right after SET
    w_copy = Y.copy() if options.final_rtn else None
    mask = usable
    main = laws[0]
    # rows to fit: a slice when they are all of them (fancy indexing would copy every array)
    sub = slice(None) if fitrows.size == n else fitrows
    rmask = usable & ok[:, None]
    rounds = max(options.robust_rounds, 1) if options.robust else 1
    buffers = _work_buffers(n, T)
    rtn = None
    # the residual of every round in float32: it only feeds noise statistics (RTN, clipping, spectrum)
    resid = np.zeros((n, T), np.float32)
    thin = np.zeros(n, bool)
    for rnd in range(rounds):
        if rnd == 0 and get_law(main).has_break and options.prefit_bin > 1:
            # the first fit only gives the residuals the RTN detection and the clipping read: on sums
            # over a few pulses it costs a fraction of a full one
            f = _binned_fit(main, t, scale, Y[sub], usable[sub], first_t[sub], last_t[sub], options.prefit_bin,
                            _work_buffers(n, -(-T // options.prefit_bin), "prefit"))
        else:
            lo_t, hi_t = _span(t, mask, first_t, last_t)
            f = _fit_law(main, t, scale, Y[sub], mask[sub], lo_t[sub], hi_t[sub], buffers,
                         y_masked=mask is usable)
        if isinstance(sub, slice):
            _residual32(main, t, scale, f, Y, resid)
        else:
            resid[sub] = _residual32(main, t, scale, f, Y[sub], np.empty((len(fitrows), T), np.float32))
        clock("prefit")
        if rnd >= 1 or rounds == 1:
            # RTN from the second round on (the first fit may still be dragged by it)
            m_b, lv_b = block_stats(resid, rmask, options.rtn_block)
            rtn = rtn_em(m_b, lv_b, options.rtn_block, llr_threshold=options.rtn_llr, init=rtn)
            high = rtn.read_mask(T)
            high &= ok[:, None]
        else:
            high = np.zeros_like(usable)
        if not options.robust:
            break
        s_row = _robust_scale(resid, mask)
        s32 = s_row.astype(np.float32)[:, None]
        with np.errstate(invalid="ignore"):
            out = resid > options.clip_high * s32
            out |= resid < -options.clip_low * s32
        new_mask = ~out
        new_mask &= usable
        new_mask &= ~high
        # never mask a row below the minimum: a train RTN-high nearly everywhere is fitted on all its
        # valid reads (the high ones lowered by their telegraph excess after the last round)
        n_use = np.count_nonzero(usable, axis=1)
        thin = np.count_nonzero(new_mask, axis=1) < np.maximum(options.flags.min_reads, options.rtn_min_low * n_use)
        # ... or RTN hides its start (c1 would be an extrapolation) or a long stretch of it
        if rtn is not None:
            thin |= _rtn_hides(rtn, ok, first_t, last_t, options)
        new_mask[thin] = usable[thin]
        mask = new_mask
    em_rounds = max(rounds - 1, 1) + options.final_rtn  # the detection's EM runs (the pooled check mirrors them)
    if not options.final_rtn:  # a few quiet trains' residuals: pooling measures on them what the detection misses
        rtn = with_detection_sample(rtn, resid, rmask, llr_threshold=options.rtn_llr, through_rtn=rounds == 1,
                                    em_rounds=em_rounds)
    clock("rtn")
    # noise of this die
    spec_usable = usable & ~high & ok[:, None]
    spectrum = segment_periodograms(resid, spec_usable)
    del resid
    pink_info = {}
    offset = np.zeros(T)
    kappa = 1.0
    white = np.nan
    sigma_read = np.nan
    if spectrum.length and spectrum.count.sum() >= 4:
        try:
            ps = fit_pink_spectrum(spectrum, bootstrap=0)
            pn = ps.pink
            offset = pn.offset(t.astype(int))
            kappa = ps.long_run_ratio
            white = ps.white_std
            sigma_read = float(np.sqrt(ps.std**2 + ps.white_std**2))
            pink_info = {"std": ps.std, "exponent": ps.exponent, "white_std": ps.white_std, "kappa": kappa,
                         "alpha": pn.alpha, "segments": ps.n_segments}
        except FitError as err:  # pragma: no cover - guarded by the count check
            messages.append(str(err))
    else:
        messages.append(
            f"die {die.wafer}/{die.die}: too few complete residual segments for a noise fit; "
            "standard errors assume uncorrelated noise (kappa = 1) and c1 keeps the pink offset."
        )
    clock("noise")
    # Yc: w less the pink offset (and the telegraph excess of the trains fitted through their high
    # reads), 0 where not fitted; W: the fitted reads
    Yc = Y
    Yc -= offset[None, :]
    rtn_excess = {}
    n_rtn = np.zeros(n, int)
    thin_rtn = thin & high.any(1) & np.isfinite(rtn.amplitude) if (options.robust and rtn is not None) else thin & False
    if thin_rtn.any():
        # high reads lowered by A/4; the blocks next to a change of state (and a high first block: the
        # state before it is unknown) hold reads of both states and are left out
        hi_read, keep = _rtn_states(rtn, T)
        for i in np.nonzero(thin_rtn)[0]:
            m_i = usable[i] & keep[i]
            if np.count_nonzero(m_i) >= options.flags.min_reads:
                mask[i] = m_i
            ex = np.where(hi_read[i], np.float32(rtn.amplitude[i] / 4.0), np.float32(0.0))
            Yc[i] -= ex
            rtn_excess[int(i)] = ex
            n_rtn[i] = int(np.count_nonzero(hi_read[i] & mask[i]))
    np.copyto(Yc, 0.0, where=~mask)
    W = mask
    # final fits on the final reads; the main law's residuals give the reported RTN (amplitudes and
    # states from a drift no longer dragged by the telegraph reads)
    # the break lies between fitted reads (not among reads left out at the start or the end)
    lo_t, hi_t = _span(t, W, first_t, last_t)
    fits = {}
    for k, name in enumerate(laws):
        fits[name] = _fit_law(name, t, scale, Yc[sub], W[sub], lo_t[sub], hi_t[sub], buffers, y_masked=True)
        clock.within("noise", "fit", (k + 1) / len(laws))
    clock("fit")
    if options.final_rtn:
        resid_main = np.full((n, T), np.nan)
        resid_main[sub] = w_copy[sub] - offset[None, :] - _evaluate(main, t, scale, fits[main])
        m_b, lv_b = block_stats(resid_main, rmask, options.rtn_block)
        rtn = rtn_em(m_b, lv_b, options.rtn_block, llr_threshold=options.rtn_llr, init=rtn)
        rtn = with_detection_sample(rtn, resid_main, rmask, llr_threshold=options.rtn_llr, through_rtn=False,
                                    em_rounds=em_rounds)
    common = {
        "r0": np.exp(lnr0),
        "r0_stderr": np.where(r0_from_read, np.exp(lnr0) * white, np.exp(lnr0) * r0_spread),
        # reads fitted in the RTN-low state, and the other valid reads (left out, or fitted through
        # their telegraph excess: n_rtn_corrected of them)
        "n_reads": np.count_nonzero(mask, axis=1) - n_rtn,
        "last_pulse": np.where(mask.any(1), T - np.argmax(mask[:, ::-1], axis=1), 0),
        "n_masked": np.count_nonzero(usable & ~mask, axis=1) + n_rtn,
        "rtn": rtn.shows & ok,
        "rtn_amplitude": np.where(ok, rtn.amplitude, np.nan),
        "rtn_amplitude_stderr": np.where(ok, rtn.extra.get("amplitude_stderr", np.full(n, np.nan)), np.nan),
        "n_rtn_corrected": n_rtn,
        "r0_rtn_high": np.zeros(n),
    }
    r0_note = np.where(r0_from_read, "", "R0 extrapolated from the first valid read (pulse-0 read failed); ")
    if not np.isfinite(white):
        common["r0_stderr"] = np.where(r0_from_read, np.nan, common["r0_stderr"])
        r0_note = np.where(r0_from_read, "r0_stderr unknown: the read noise was not resolved; ", r0_note)
    r0_note = r0_note.astype(object)
    for i in np.nonzero(thin_rtn)[0]:
        r0_note[i] += (f"RTN high on much of the train ({n_rtn[i]} of {n_rtn[i] + common['n_reads'][i]} fitted reads): "
                       f"fitted on all its reads, the high ones lowered by their mean telegraph excess "
                       f"(A/4 = {rtn.amplitude[i] / 4:.3g}); ")
    # overdispersion per train: the die's (pink noise) except where the white telegraph scatter of the
    # corrected high reads dominates
    kappa_rows = np.full(n, float(kappa))
    if n_rtn.any() and np.isfinite(sigma_read):
        v_low = sigma_read**2
        v_rtn = _VAR_U1U2 * np.nan_to_num(rtn.amplitude) ** 2 * n_rtn / np.maximum(np.count_nonzero(mask, axis=1), 1)
        kappa_rows = np.where(n_rtn > 0, (kappa * v_low + v_rtn) / (v_low + v_rtn), kappa_rows)
    tables = {}
    verify = {}
    for name in laws:
        tables[name] = _law_table(name, fits[name], sub, ids, flag.copy(), reason.copy(), common, r0_note, t,
                                  scale, W, kappa_rows[sub], options, white, y=Yc)
        _lmfit_fallback(name, tables[name], flag, t, Yc, W, kappa_rows)
        verify[name] = _verify(name, tables[name], t, Yc, W, options.verify)
        bad = tables[name]["flag"].eq("failed") & pd.Series(flag == "ok")
        if bad.any():
            rows = tables[name].loc[bad]
            shown = "; ".join(f"{r.device} cycle {r.cycle}: {r.flag_reason}" for r in rows.head(3).itertuples())
            warnings.warn(
                f"die {die.wafer}/{die.die}, law {name!r}: {int(bad.sum())} train(s) did not converge "
                f"({shown}{'; ...' if bad.sum() > 3 else ''}). They are flagged 'failed' and kept; "
                "try another law, or check these cells' reads.",
                FitConvergenceWarning,
                stacklevel=3,
            )
    if options.r0_rtn and options.robust and rtn is not None:
        shift = _r0_at_set(tables, main, rtn, start_w, offset[:B], t[:B], ok & r0_from_read)
        if shift is not None:
            rows_in = np.isin(trace_rows, np.nonzero(shift)[0])
            traces[rows_in] += shift[trace_rows[rows_in]][:, None]
    clock("tables")
    return DieDriftResult(str(die.wafer), str(die.die), tables, spectrum, rtn, pink_info, traces, P, n_cells,
                          verify=verify, messages=messages, mask_bits=np.packbits(mask, axis=1), offset=offset,
                          rtn_excess=rtn_excess)


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------


def _as_dies(data):
    if isinstance(data, DieData):
        return [data]
    dies = list(data) if data is not None else []
    if not dies:
        raise FitError("no dies to fit: got an empty list. Pass one DieData or a non-empty list of them.")
    for d in dies:
        if not isinstance(d, DieData):
            raise FitError(f"expected DieData objects, got {type(d).__name__}.")
    return dies


class DriftFitter:
    """Fit a drift law to every cell and cycle, robust to RTN, with standard errors.

    Parameters
    ----------
    law : str, default="two_slope"
        A registered law (:data:`hfox_fit.laws.DRIFT_LAWS`) or ``"auto"``: fit
        them all on the same reads and keep the one with the lowest total AIC.
    options : DriftOptions, optional

    Attributes
    ----------
    per_cell_ : DataFrame
        One row per (cell, cycle) for the chosen law: ``wafer, die, device, cycle``,
        the law's parameters and ``<name>_stderr``, ``r0``, ``r0_stderr`` (Ohm),
        ``flag``, ``flag_reason``, ``success``, ``note``, ``aic``, ``bic``, RTN columns
        (``n_rtn_corrected``: high reads fitted with their telegraph excess removed;
        ``r0_rtn_high``: probability that the read right after SET was RTN-high).
    per_law_ : dict of str to DataFrame
    scores_ : dict
        Per law, total ``aic`` and ``bic`` over the trains all laws fitted.
    law_ : str
    die_results_ : list of DieDriftResult
    spectrum_stats_, rtn_stats_ : list
        Per-die noise statistics for :class:`~hfox_fit.fitting.NoiseFitter`.

    Examples
    --------
    >>> from hfox_fit.synth import make_wafer
    >>> wafer = make_wafer("paper", devices=64, pulses=300, seed=0)
    >>> fit = DriftFitter(law="two_slope").fit(wafer.dies)
    >>> sorted(fit.per_cell_.columns[:6])
    ['cycle', 'device', 'die', 'm1', 'm1_stderr', 'wafer']
    """

    def __init__(self, law: str = "two_slope", options: DriftOptions | None = None):
        self.law = law
        self.options = options

    def _laws(self):
        law = check_law(self.law, allow_auto=True)
        if law == "auto":
            return AUTO_LAWS
        return (law,)

    def fit(self, data):
        """Fit one DieData or a list of them; returns self."""
        laws = self._laws()
        dies = _as_dies(data)
        results = [fit_drift_die(d, laws, self.options) for d in dies]
        return self._from_results(results, laws)

    def _from_results(self, results, laws):
        self.die_results_ = results
        self.per_law_ = {name: pd.concat([r.tables[name] for r in results], ignore_index=True) for name in laws}
        self.scores_ = score_laws(self.per_law_)
        self.law_ = choose_law(self.scores_) if len(laws) > 1 else laws[0]
        if get_law(self.law_).has_break:
            self.per_law_[self.law_] = classify_breaks(self.per_law_[self.law_])
        flags = (self.options or DriftOptions()).flags
        self.per_law_ = {name: flag_poor_fit(table, flags) for name, table in self.per_law_.items()}
        self.per_cell_ = self.per_law_[self.law_]
        self.spectrum_stats_ = [r.spectrum for r in results]
        self.rtn_stats_ = [r.rtn for r in results]
        return self

    def refine(self, die: DieData, device, cycle=None, law: str | None = None):
        """Re-fit one train with lmfit, on the reads the vectorised fit used, from its optimum.

        Parameters
        ----------
        die : DieData
            The die, one of those passed to :meth:`fit`.
        device : str
        cycle : int, optional
            Default: the die's first cycle.
        law : str, optional
            Default: the chosen law.

        Returns
        -------
        lmfit.model.ModelResult
            Its ``chisqr`` should not be below the vectorised fit's (a check of the optimum).
        """
        if not hasattr(self, "per_cell_"):
            raise NotFittedError("This DriftFitter instance is not fitted yet. Call 'fit' before 'refine'.")
        law = check_law(law or self.law_)
        res = next((r for r in self.die_results_ if (r.wafer, r.die) == (str(die.wafer), str(die.die))), None)
        if res is None or law not in res.tables:
            raise FitError(f"die {die.wafer}/{die.die} (law {law!r}) was not fitted by this DriftFitter.")
        devices = list(np.asarray(die.devices, dtype=str))
        if str(device) not in devices:
            raise FitError(f"die {die.wafer}/{die.die} has no device {device!r}.")
        cycles = list(np.asarray(die.cycles))
        c = cycles[0] if cycle is None else cycle
        if c not in cycles:
            raise FitError(f"die {die.wafer}/{die.die} has no cycle {c!r}; it has {cycles}.")
        i = devices.index(str(device)) * len(cycles) + cycles.index(c)
        w = res.fitted_w(die, i, law)
        t = np.arange(1, len(w) + 1, dtype=float)
        mask = np.isfinite(w)
        start = {p: res.tables[law][p].iat[i] for p in get_law(law).params}
        return _lmfit_refit(law, t, np.where(mask, w, 0.0), mask, start)
