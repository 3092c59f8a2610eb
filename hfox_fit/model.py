"""DeviceModel: the weak-RESET model of a cell population, as plain numpy.

The same object describes the ground truth of a synthetic wafer (``synth``),
the result of a fit (``fitting``) and what the torch export simulates
(``hfox_fit.torch``). It holds no lmfit or torch objects and round-trips
through :meth:`DeviceModel.to_dict` as JSON-safe data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import special

from .exceptions import FitError
from .laws import ParameterLaw, get_law, pink_coefficients, pink_std

__all__ = ["PinkNoise", "TelegraphNoise", "ConditionLaw", "DeviceModel", "MODEL_PRESETS", "preset_model",
           "scaled_law"]


@dataclass
class PinkNoise:
    r"""Pink (1/f) read-to-read noise: a moving sum of uniform innovations.

    .. math:: w_{pink}(t) = \alpha \sum_{k=0}^{K-1} b_k u_{t-k},\quad u \sim U(0, 1)

    with ``b`` from :func:`hfox_fit.laws.pink_coefficients` (order ``d``,
    spectral exponent ``2 d``). The history is empty after SET, so the term
    starts at 0 and adds a growing positive offset during the first K pulses.
    """

    alpha: float = 0.025
    d: float = 0.5
    taps: int = 15

    @property
    def coefficients(self) -> np.ndarray:
        return pink_coefficients(self.taps, self.d)

    @property
    def std(self) -> float:
        """Standard deviation once the history is full (u has variance 1/12)."""
        return float(pink_std(self.alpha, self.d, self.taps))

    @property
    def exponent(self) -> float:
        """Spectral exponent beta of S(f) ~ f**-beta."""
        return 2.0 * self.d

    def offset(self, t) -> np.ndarray:
        """Mean of the term after ``t`` pulses (alpha * 0.5 * partial sum of b)."""
        cum = np.concatenate([[0.0], np.cumsum(self.coefficients)])
        t = np.minimum(np.asarray(t, dtype=int), self.taps)
        return self.alpha * 0.5 * cum[t]

    @classmethod
    def from_std(cls, std: float, exponent: float = 1.0, taps: int = 15) -> PinkNoise:
        """Build the filter whose full-history standard deviation is ``std``."""
        b = pink_coefficients(taps, exponent / 2.0)
        return cls(alpha=float(std / np.sqrt(np.sum(b**2) / 12.0)), d=exponent / 2.0, taps=taps)


@dataclass
class TelegraphNoise:
    """Random telegraph noise: a two-state chain advanced once per pulse.

    In the high state ``w_rtn = U1 * U2 * A`` with fresh ``U1, U2 ~ U(0, 1)`` at
    each read and a per-cell amplitude ``A`` (the ``rtn_amplitude`` D2D law).
    Every pulse train starts in the low state.
    """

    p_up: float = 8e-4
    p_down: float = 2e-3

    @property
    def stationary_high(self) -> float:
        s = self.p_up + self.p_down
        return self.p_up / s if s > 0 else 0.0


def scaled_law(law: ParameterLaw, factor: float = 1.0, shift: float = 0.0) -> ParameterLaw:
    """The law of ``factor * X + shift`` for ``X`` of ``law`` (``factor > 0``): loc, scale and bounds move alike.

    Every family of :data:`hfox_fit.laws.FAMILIES` is a location-scale family, so the result
    has the same family and shape, and its median is ``factor * median + shift`` exactly.
    """
    if not factor > 0:
        raise FitError(f"a law can only be scaled by a positive factor, got {factor!r}.")
    params = dict(law.params)
    params["loc"] = params.get("loc", 0.0) * factor + shift
    params["scale"] = params.get("scale", 1.0) * factor
    bounds = None if law.bounds is None else (law.bounds[0] * factor + shift, law.bounds[1] * factor + shift)
    return ParameterLaw(law.family, params, bounds)


@dataclass
class ConditionLaw:
    r"""How the D2D laws' location moves with the pulse condition (amplitude ``V``, width ``w``).

    For a parameter on the ``"log"`` scale (positive parameters)

    .. math:: \ln \mathrm{median}(V, w) = a + b_v (V - V_{ref}) + b_w \ln(w / w_{ref})

    and on the ``"linear"`` scale (parameters that may be <= 0, such as ``c1``) the same right-hand
    side gives the median itself. The shape of each law (its spread) does not move: the law at
    a condition is the reference law scaled (log) or shifted (linear) to the predicted median.

    Attributes
    ----------
    v_ref, width_ref : float
        Reference amplitude (V) and width (s).
    params : dict of str to dict
        Per parameter: ``a``, ``b_v`` (1/V), ``b_w`` (per e-fold of width), ``scale``
        (``"log"`` or ``"linear"``), and, when fitted, ``b_v_stderr``, ``b_w_stderr``, ``a_stderr`` and
        ``law`` (the law of the fitted condition nearest the reference, as a dict: the shape the law
        takes at every condition).
    v_range, width_range : tuple of float or None
        The conditions the law was fitted on (None: not fitted, e.g. a synthetic truth).
    fitted_v, fitted_width : bool
        Whether each factor varied in the data (a factor that did not vary has no slope).
    """

    v_ref: float
    width_ref: float
    params: dict
    v_range: tuple | None = None
    width_range: tuple | None = None
    fitted_v: bool = True
    fitted_width: bool = True

    def __post_init__(self):
        if not (np.isfinite(self.v_ref) and self.width_ref > 0):
            raise FitError(f"condition law: v_ref must be finite and width_ref > 0; got {self.v_ref}, "
                           f"{self.width_ref}.")
        self.params = {k: dict(v) for k, v in self.params.items()}
        for name, c in self.params.items():
            c.setdefault("scale", "log")
            if c["scale"] not in ("log", "linear"):
                raise FitError(f"condition law of {name!r}: scale must be 'log' or 'linear', got {c['scale']!r}.")

    def predicted(self, name: str, v_pulse: float, pulse_width: float) -> float:
        """The law's prediction at the condition: ``ln median`` (log scale) or the median (linear)."""
        if not pulse_width > 0:
            raise FitError(f"pulse_width must be > 0 s, got {pulse_width!r}.")
        c = self.params[name]
        return float(c["a"] + c.get("b_v", 0.0) * (v_pulse - self.v_ref)
                     + c.get("b_w", 0.0) * np.log(pulse_width / self.width_ref))

    def median(self, name: str, v_pulse: float, pulse_width: float) -> float:
        """The median of parameter ``name`` at the condition."""
        y = self.predicted(name, v_pulse, pulse_width)
        return float(np.exp(y)) if self.params[name]["scale"] == "log" else y

    def law_at(self, name: str, law: ParameterLaw, v_pulse: float, pulse_width: float) -> ParameterLaw:
        """``law`` moved so that its median is the one the condition law predicts (same shape)."""
        if name not in self.params:
            return law
        if "law" in self.params[name]:  # the law of the fitted condition nearest the reference: its shape
            law = ParameterLaw.from_dict(self.params[name]["law"])
        target, now = self.median(name, v_pulse, pulse_width), law.median()
        if self.params[name]["scale"] == "log":
            if not (now > 0 and target > 0):
                raise FitError(f"condition law of {name!r}: the log scale needs a positive median, got {now!r}.")
            return scaled_law(law, target / now)
        return scaled_law(law, 1.0, target - now)

    def to_dict(self) -> dict:
        return {"v_ref": self.v_ref, "width_ref": self.width_ref,
                "params": {k: dict(v) for k, v in self.params.items()},
                "v_range": list(self.v_range) if self.v_range is not None else None,
                "width_range": list(self.width_range) if self.width_range is not None else None,
                "fitted_v": self.fitted_v, "fitted_width": self.fitted_width}

    @classmethod
    def from_dict(cls, d: dict) -> ConditionLaw:
        vr, wr = d.get("v_range"), d.get("width_range")
        return cls(float(d["v_ref"]), float(d["width_ref"]), {k: dict(v) for k, v in d["params"].items()},
                   tuple(vr) if vr is not None else None, tuple(wr) if wr is not None else None,
                   bool(d.get("fitted_v", True)), bool(d.get("fitted_width", True)))

    @classmethod
    def from_slopes(cls, model: DeviceModel, slopes: dict, v_ref: float, width_ref: float) -> ConditionLaw:
        """The law whose reference condition ``(v_ref, width_ref)`` is described by ``model``.

        ``slopes`` maps a parameter to ``{"b_v": ..., "b_w": ...}``; ``a`` is the log (or the
        value) of the model's median, on the log scale wherever the median is positive.
        """
        params = {}
        for name, c in slopes.items():
            if name not in model.d2d:
                raise FitError(f"condition law: the model has no D2D law for {name!r}; it has {sorted(model.d2d)}.")
            med = model.d2d[name].median()
            scale = c.get("scale", "log" if med > 0 else "linear")
            params[name] = {"a": float(np.log(med)) if scale == "log" else float(med),
                            "b_v": float(c.get("b_v", 0.0)), "b_w": float(c.get("b_w", 0.0)), "scale": scale}
        return cls(float(v_ref), float(width_ref), params)


@dataclass
class DeviceModel:
    """The weak-RESET model of a population of cells.

    Attributes
    ----------
    law : str
        Drift law name (see :data:`hfox_fit.laws.DRIFT_LAWS`).
    d2d : dict of str to ParameterLaw
        Device-to-device law of every drift parameter, of ``r0`` (Ohm) and of
        ``rtn_amplitude``.
    correlation_names : list of str
        Parameters tied by the Gaussian copula.
    correlation : ndarray of shape (k, k)
        Copula correlation matrix over ``correlation_names`` (identity = independent).
    c2c : dict of str to ParameterLaw
        Cycle-to-cycle law of the additive deviation of a parameter from the
        cell's own value, drawn afresh at every SET. Empty = no C2C.
    pink : PinkNoise
    rtn : TelegraphNoise
    meta : dict
        JSON-safe provenance (fit time, store hash, cells used, ...); ``meta["pulse_condition"]``
        (``{"v_pulse", "pulse_width"}``) is the one condition a model was fitted at, or the one
        :meth:`at` gave it.
    condition_law : ConditionLaw or None
        How the D2D laws move with the pulse condition (a fit over several conditions); see :meth:`at`.
    """

    law: str
    d2d: dict
    pink: PinkNoise = field(default_factory=PinkNoise)
    rtn: TelegraphNoise = field(default_factory=TelegraphNoise)
    correlation_names: list = field(default_factory=list)
    correlation: np.ndarray | None = None
    c2c: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    condition_law: ConditionLaw | None = None

    def __post_init__(self):
        law = get_law(self.law)
        needed = set(law.params) | {"r0", "rtn_amplitude"}
        missing = needed - set(self.d2d)
        if missing:
            raise FitError(f"DeviceModel for law {self.law!r} lacks D2D laws for {sorted(missing)}.")
        k = len(self.correlation_names)
        if self.correlation is None:
            self.correlation = np.eye(k)
        self.correlation = np.asarray(self.correlation, dtype=float)
        if self.correlation.shape != (k, k):
            raise FitError(
                f"correlation must be {k}x{k} for names {self.correlation_names}, "
                f"got shape {self.correlation.shape}."
            )
        unknown = set(self.correlation_names) - set(self.d2d)
        if unknown:
            raise FitError(f"correlation names {sorted(unknown)} have no D2D law.")

    @property
    def parameter_names(self) -> tuple:
        """Per-cell parameters: the law's, then r0 and rtn_amplitude."""
        return get_law(self.law).params + ("r0", "rtn_amplitude")

    def sample_parameters(self, n: int, rng=None) -> dict:
        """Draw the per-cell parameters of ``n`` cells (Gaussian copula for correlated ones)."""
        rng = np.random.default_rng(rng)
        u = {}
        if self.correlation_names:
            z = rng.multivariate_normal(np.zeros(len(self.correlation_names)), self.correlation, size=n)
            for j, name in enumerate(self.correlation_names):
                u[name] = special.ndtr(z[:, j])
        out = {}
        for name in self.parameter_names:
            uu = u[name] if name in u else rng.uniform(size=n)
            out[name] = np.asarray(self.d2d[name].ppf(uu), dtype=float)
        return out

    def cycle_parameters(self, cell_params: dict, n_cycles: int, rng=None) -> dict:
        """Per-(cell, cycle) parameters: the cell's own plus C2C deviations, clipped to D2D bounds."""
        rng = np.random.default_rng(rng)
        out = {}
        for name, values in cell_params.items():
            v = np.repeat(np.asarray(values, float)[:, None], n_cycles, axis=1)
            if name in self.c2c:
                v = v + self.c2c[name].sample(v.size, rng).reshape(v.shape)
                b = self.d2d[name].bounds
                if b is not None:
                    v = np.clip(v, *b)
            out[name] = v
        return out

    def mean_w(self, t, params: dict) -> np.ndarray:
        """Drift ``w_mean`` at pulses ``t`` for parameter arrays broadcasting against ``t``; 0 at t = 0."""
        law = get_law(self.law)
        t = np.asarray(t)
        w = law(t, **{k: params[k] for k in law.params})
        return np.where(t == 0, 0.0, w)

    def simulate(self, n_cells: int, n_pulses: int, *, n_cycles: int = 1, rng=None, params=None,
                 d2d: bool = True, pink: bool = True, rtn: bool = True) -> tuple[np.ndarray, dict]:
        """Simulate ``w = ln(R/R0)`` of ``n_cells`` cells over pulse trains of ``n_pulses`` pulses.

        Parameters
        ----------
        n_cells, n_pulses : int
        n_cycles : int, default=1
            SET / weak-RESET cycles per cell (C2C draws at every SET).
        rng : numpy Generator or seed
        params : dict, optional
            Per-cell parameters (arrays of shape (n_cells,)); drawn from the
            D2D laws when omitted.
        d2d, pink, rtn : bool
            Switch each imperfection off (``d2d=False`` gives every cell the
            median parameters), as in the paper's ablation.

        Returns
        -------
        w : ndarray of shape (n_cells, n_cycles, n_pulses + 1)
            ``w[..., 0] == 0`` (the read right after SET defines R0).
        cycle_params : dict of ndarray of shape (n_cells, n_cycles)
            The parameters of each train, including ``r0`` (Ohm).
        """
        rng = np.random.default_rng(rng)
        if params is None:
            if d2d:
                params = self.sample_parameters(n_cells, rng)
            else:
                params = {k: np.full(n_cells, self.d2d[k].median()) for k in self.parameter_names}
        cyc = self.cycle_parameters(params, n_cycles, rng)
        t = np.arange(n_pulses + 1)
        shape = (n_cells, n_cycles, n_pulses + 1)
        w = self.mean_w(t, {k: v[..., None] for k, v in cyc.items()})
        w = np.broadcast_to(w, shape).copy()
        if pink and n_pulses > 0:
            u = rng.uniform(size=(n_cells, n_cycles, n_pulses))
            acc = np.zeros_like(u)
            for k, bk in enumerate(self.pink.coefficients):
                if k >= n_pulses:
                    break
                acc[..., k:] += bk * u[..., : n_pulses - k]
            w[..., 1:] += self.pink.alpha * acc
        if rtn and n_pulses > 0:
            w[..., 1:] += self.simulate_rtn(cyc["rtn_amplitude"], n_pulses, rng)
        return w, cyc

    def simulate_rtn(self, amplitude: np.ndarray, n_pulses: int, rng) -> np.ndarray:
        """RTN term after pulses 1..n_pulses, every train starting low; shape amplitude.shape + (n_pulses,)."""
        amplitude = np.asarray(amplitude, float)
        jumps = rng.uniform(size=amplitude.shape + (n_pulses,))
        high = np.zeros(amplitude.shape + (n_pulses,), bool)
        state = np.zeros(amplitude.shape, bool)
        for p in range(n_pulses):
            flip = np.where(state, jumps[..., p] < self.rtn.p_down, jumps[..., p] < self.rtn.p_up)
            state = state ^ flip
            high[..., p] = state
        u12 = rng.uniform(size=high.shape) * rng.uniform(size=high.shape)
        return np.where(high, u12 * amplitude[..., None], 0.0)

    def at(self, v_pulse: float, pulse_width: float) -> DeviceModel:
        """The model of the population programmed at pulse amplitude ``v_pulse`` (V) and width ``pulse_width`` (s).

        With a condition law, every law it covers is moved to the median it predicts there
        (same shape); a condition outside the fitted range warns that it extrapolates, and one
        along a factor that did not vary in the fit is refused. A model fitted at one condition
        returns itself for that condition and refuses any other, naming the one it knows.

        Raises
        ------
        FitError
            A condition the model cannot speak for.
        """
        v, w = float(v_pulse), float(pulse_width)
        if not (np.isfinite(v) and np.isfinite(w) and w > 0):
            raise FitError(f"at(): v_pulse must be finite and pulse_width > 0 s; got {v_pulse!r}, {pulse_width!r}.")
        law = self.condition_law
        here = self.meta.get("pulse_condition")
        if law is None:
            if not here or here.get("v_pulse") is None:
                raise FitError("at(): this model has no condition law and no record of the pulse condition it was "
                               "fitted at; fit a campaign measured at several conditions to move between them.")
            if np.isclose(v, here["v_pulse"], rtol=1e-9, atol=1e-12) and np.isclose(w, here["pulse_width"],
                                                                                    rtol=1e-9, atol=0.0):
                return replace(self, meta=dict(self.meta))
            raise FitError(f"at(): this model was fitted at one pulse condition, v_pulse {here['v_pulse']:g} V and "
                           f"pulse_width {here['pulse_width']:g} s; it cannot tell the laws at {v:g} V, {w:g} s. "
                           "Fit a campaign measured at several conditions.")
        for name, value, ref, fitted, rng_, unit in (
                ("v_pulse", v, law.v_ref, law.fitted_v, law.v_range, "V"),
                ("pulse_width", w, law.width_ref, law.fitted_width, law.width_range, "s")):
            if not fitted and not np.isclose(value, ref, rtol=1e-9, atol=1e-12):
                raise FitError(f"at(): the condition law was fitted at one {name} only ({ref:g} {unit}); it cannot "
                               f"tell the laws at {name} {value:g} {unit}.")
            if rng_ is not None and not rng_[0] * (1 - 1e-9) <= value <= rng_[1] * (1 + 1e-9) + 1e-12:
                warnings.warn(f"at(): {name} {value:g} {unit} lies outside the fitted range [{rng_[0]:g}, "
                              f"{rng_[1]:g}] {unit}: the condition law extrapolates", UserWarning, stacklevel=2)
        d2d = {n: law.law_at(n, lw, v, w) for n, lw in self.d2d.items()}
        return replace(self, d2d=d2d, meta={**self.meta, "pulse_condition": {"v_pulse": v, "pulse_width": w}})

    def to_dict(self) -> dict:
        """JSON-safe description (inverse: :meth:`from_dict`)."""
        out = self._dict()
        if self.condition_law is not None:
            out["condition_law"] = self.condition_law.to_dict()
        return out

    def _dict(self) -> dict:
        return {
            "law": self.law,
            "d2d": {k: v.to_dict() for k, v in self.d2d.items()},
            "c2c": {k: v.to_dict() for k, v in self.c2c.items()},
            "correlation": {"names": list(self.correlation_names), "matrix": self.correlation.tolist()},
            "pink": {"alpha": self.pink.alpha, "d": self.pink.d, "taps": self.pink.taps},
            "rtn": {"p_up": self.rtn.p_up, "p_down": self.rtn.p_down},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict) -> DeviceModel:
        corr = d.get("correlation") or {"names": [], "matrix": []}
        return cls(
            law=d["law"],
            d2d={k: ParameterLaw.from_dict(v) for k, v in d["d2d"].items()},
            c2c={k: ParameterLaw.from_dict(v) for k, v in d.get("c2c", {}).items()},
            correlation_names=list(corr["names"]),
            correlation=np.asarray(corr["matrix"], float).reshape(len(corr["names"]), len(corr["names"])),
            pink=PinkNoise(**d.get("pink", {})),
            rtn=TelegraphNoise(**d.get("rtn", {})),
            meta=dict(d.get("meta", {})),
            condition_law=ConditionLaw.from_dict(d["condition_law"]) if d.get("condition_law") else None,
        )


def _paper_model() -> DeviceModel:
    """The reference model of Majumdar et al. 2021 (weak-reset-model.md)."""
    P = ParameterLaw
    return DeviceModel(
        law="two_slope",
        d2d={
            "m1": P("expon", {"loc": 3.74e-5, "scale": 6.56e-4}, (3.74e-5, 7.6e-3)),
            "t_star": P("lognorm", {"s": 0.803, "loc": 0.0, "scale": 542.5}, (41.0, 2000.0)),
            "m2": P("expon", {"loc": 0.0, "scale": 2.89e-5}, (0.0, 1.3e-4)),
            "c1": P("norm", {"loc": 5.29e-3, "scale": 5.32e-2}, (-0.15, 0.15)),
            "r0": P("norm", {"loc": 6988.0, "scale": 381.7}, (6252.0, 7897.0)),
            "rtn_amplitude": P("uniform", {"loc": 0.0, "scale": 0.5}, None),
        },
        pink=PinkNoise(alpha=0.025, d=0.5, taps=15),
        rtn=TelegraphNoise(p_up=8e-4, p_down=2e-3),
        meta={"source": "Majumdar et al., IEEE TED 2021 (arXiv:2107.06064)"},
    )


def _wafer_b_model() -> DeviceModel:
    """A second wafer unlike the paper's: other families, m1 and t* anti-correlated, C2C, other noise."""
    P = ParameterLaw
    return DeviceModel(
        law="two_slope",
        d2d={
            "m1": P("lognorm", {"s": 0.5, "loc": 0.0, "scale": 8e-4}, (1e-4, 6e-3)),
            "t_star": P("gamma", {"a": 6.0, "loc": 0.0, "scale": 60.0}, (40.0, 1500.0)),
            "m2": P("expon", {"loc": 0.0, "scale": 5e-5}, (0.0, 3e-4)),
            "c1": P("norm", {"loc": 0.02, "scale": 0.03}, (-0.1, 0.15)),
            "r0": P("lognorm", {"s": 0.08, "loc": 0.0, "scale": 9000.0}, (6500.0, 12500.0)),
            "rtn_amplitude": P("uniform", {"loc": 0.0, "scale": 0.3}, None),
        },
        correlation_names=["m1", "t_star"],
        correlation=np.array([[1.0, -0.6], [-0.6, 1.0]]),
        c2c={
            "r0": P("norm", {"loc": 0.0, "scale": 60.0}, (-300.0, 300.0)),
            "m1": P("norm", {"loc": 0.0, "scale": 4e-5}, (-2e-4, 2e-4)),
        },
        pink=PinkNoise(alpha=0.035, d=0.5, taps=15),
        rtn=TelegraphNoise(p_up=2e-3, p_down=5e-3),
        meta={"source": "hfox_fit synthetic preset 'wafer_b'"},
    )


#: Device-model presets by name (the synthetic wafer generator's ground truths).
MODEL_PRESETS = {"paper": _paper_model, "wafer_b": _wafer_b_model}


def preset_model(name: str) -> DeviceModel:
    """Return a fresh copy of the preset device model ``name``."""
    try:
        return MODEL_PRESETS[name]()
    except KeyError:
        raise FitError(f"unknown preset {name!r}; the presets are {sorted(MODEL_PRESETS)}.") from None
