r"""WeakResetArray: a population of simulated HfOx cells as an ``nn.Module``.

Each cell follows the weak-RESET model of a :class:`~hfox_fit.model.DeviceModel`:

.. math:: w(t) = \ln(R / R_0) = w_{mean}(t) + w_{pink}(t) + w_{rtn}(t)

with ``t`` the pulses since the last SET. ``pulse(n)`` applies ``n`` pulses to
every cell at a cost that does not depend on ``n``:

* the drift law is a function of ``t``;
* the pink term is the ARMA(3, 2) stand-in of :mod:`hfox_fit.torch._pink`, whose
  ``n``-step transition is exact in closed form (a table of ``n``-step
  coefficients, constant beyond the stand-in's memory);
* the telegraph chain of each cell keeps its waiting time to the next switch
  (geometric, drawn at each switch); a chain that switches within the ``n``
  pulses ends them in the closed-form law of the 2x2 matrix power, so only the
  few cells that switch cost anything.

So one call with ``n`` has the same distribution as ``n`` calls with 1. A cell
given 0 pulses keeps its state and read: blocks where few cells get pulses update
only those, and ``pulse_pairs`` pulses one cell of each pair (the layout of
:class:`~hfox_fit.torch.CellBackedWeights`) without touching its partner. The last
read is kept (``resistance``) until something changes it.

On a CPU the update runs block by block on worker threads (see
:mod:`hfox_fit.torch._threads`); each block draws from its own
``torch.Generator``, seeded from the array's, so the results do not depend on
the number of threads nor on their timing. On a GPU the whole array is one block.
The closed-form block update is in :mod:`hfox_fit.torch._update`, the drift
formulas in :mod:`hfox_fit.torch._laws`, the checks of pulse counts in
:mod:`hfox_fit.torch._counts`, the generators and ``state_dict`` handling in
:mod:`hfox_fit.torch._state`.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

from ..exceptions import FitError
from ..model import DeviceModel
from . import _update
from ._counts import pulse_counts
from ._laws import torch_law
from ._pink import pink_markov
from ._state import ResumableState, resolve_device
from ._threads import GRAIN_BLOCK, _block_size, _run_blocks, block_threads
from ._update import LOG2E, NEVER, geometric_wait, pulse_block

__all__ = ["WeakResetArray"]

_MAX_PULSES = (1 << 31) - 1  # pulses since SET are int32


class WeakResetArray(ResumableState, nn.Module):
    r"""A 1-D array of ``num_devices`` simulated weak-RESET cells.

    Parameters
    ----------
    model : DeviceModel
        The fitted model (or a preset: ``hfox_fit.preset_model("paper")``).
    num_devices : int
        Number of cells.
    seed : int, optional
        Seed of the array's ``torch.Generator``; None draws a fresh one.
    generator : torch.Generator, optional
        Use this generator instead (its device must be the array's). The
        update's per-block generators are seeded from it.
    device : str or torch.device, optional
        Where the state lives (default CPU).
    dtype : torch.dtype, default=torch.float32
        float32 or float64.
    d2d : bool, default=True
        Device-to-device variability; False gives every cell the median parameters.
    c2c : bool, default=True
        Cycle-to-cycle draws at every SET (where the model has C2C laws).
    pink, rtn : bool, default=True
        Pink (1/f) and random telegraph noise. Both may be switched later
        through the attributes of the same name (the noise state then stays
        frozen while it is off).
    compile : bool, default=False
        Run the drift and pink update of each block through ``torch.compile``
        (fused kernels; the first call compiles, which takes seconds to tens of
        seconds and needs a C++ compiler or Triton). Falls back to eager mode,
        with a warning, when compiling fails. The draws are the same either way.
        On a small CPU the eager block update is as fast (see
        ``benchmarks/bench_simulator.py``); on a GPU the fused kernel saves launches.

    Attributes
    ----------
    model : DeviceModel
    num_devices : int
    param_names : tuple of str
        Rows of the ``cell_params`` buffer (the law's, then ``r0``, ``rtn_amplitude``).
    pink_markov : PinkMarkov
        The pink-noise stand-in (poles, inputs, mean and gain tables).
    provenance : dict or None
        The checkpoint's (or fit's) provenance when built by :meth:`from_checkpoint`
        or :meth:`from_fit`.

    Notes
    -----
    State and parameters per cell at float32: the cell's parameters (4 B each),
    the C2C deviations of this cycle (float16, 2 B each), the pulses since SET
    (int32), the pink stand-in (3 x float32), the RTN state (bool) and waiting
    time (int32), and the last read ``w`` (float32): 49 B for the paper's model
    (plus the stand-in's coefficient tables, about 20 kB for the whole array).
    Every value is a buffer, and the generators' states travel in
    ``state_dict()`` (extra state: the array's generator and one per block of
    the update, about 5 kB each, i.e. 0.04 B per cell on a CPU), so
    ``load_state_dict`` resumes a run exactly on the same kind of device.

    The pink term is the ARMA(3, 2) stand-in of :func:`~hfox_fit.torch.pink_markov`:
    its mean and variance after every pulse are the 15-tap filter's, its
    stationary spectrum is within a factor 1.40 of the filter's (which ripples),
    and it is Gaussian where the filter's first reads after SET are sums of a
    few uniforms (visible only with D2D off, in the first 2-3 reads).

    Examples
    --------
    >>> import torch
    >>> from hfox_fit import preset_model
    >>> arr = WeakResetArray(preset_model("paper"), 1000, seed=0)
    >>> r = arr.pulse(100)               # 100 pulses to every cell, one call
    >>> r.shape, bool((r > 5000).all())
    (torch.Size([1000]), True)
    >>> r = arr.pulse(torch.randint(0, 15, (1000,)))   # a count per cell
    >>> arr.set_()                        # back to the post-SET state
    WeakResetArray(num_devices=1000, law='two_slope', d2d=True, c2c=True, pink=True, rtn=True, device=cpu, dtype=torch.float32)
    """

    def __init__(self, model: DeviceModel, num_devices: int, *, seed=None, generator=None, device=None,
                 dtype=torch.float32, d2d: bool = True, c2c: bool = True, pink: bool = True,
                 rtn: bool = True, compile: bool = False):
        super().__init__()
        if not isinstance(model, DeviceModel):
            raise TypeError(f"WeakResetArray needs a DeviceModel, got {type(model).__name__}.")
        law = torch_law(model.law)  # a FitError naming the law when it has no torch formula
        if isinstance(num_devices, bool) or not isinstance(num_devices, numbers.Integral) or num_devices < 1:
            raise ValueError(f"num_devices must be a positive int; got {num_devices!r}.")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}.")
        num_devices = int(num_devices)
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
            dev = resolve_device(generator.device if device is None else device)
            if generator.device.type != dev.type:
                raise ValueError(f"the generator lives on {generator.device} but the array on {dev}.")
            if seed is not None:
                raise ValueError("pass either seed or generator, not both.")
        else:
            dev = resolve_device(device)
            generator = torch.Generator(device=dev)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(seed))
        self.model = model
        self.num_devices = num_devices
        self.seed = seed
        self.d2d, self.c2c = bool(d2d), bool(c2c)
        self.pink, self.rtn = bool(pink), bool(rtn)
        self.compile = bool(compile)
        self.provenance = None
        self._generator = generator
        self._block_size = _block_size(dev, num_devices)
        self._block_gens = []
        self._const_cache = None
        self._law = law
        self.param_names = tuple(model.parameter_names)
        self.c2c_names = tuple(k for k in self.param_names if k in model.c2c) if self.c2c else ()
        self._c2c_rows = tuple(self.param_names.index(k) for k in self.c2c_names)
        fkw = {"device": dev, "dtype": dtype}

        # Per-cell parameters, drawn with numpy from a seed taken from the generator.
        rng = np.random.default_rng(self._numpy_seed())
        if self.d2d:
            params = model.sample_parameters(num_devices, rng)
        else:
            params = {k: np.full(num_devices, model.d2d[k].median()) for k in self.param_names}
        cell = np.stack([np.asarray(params[k], float) for k in self.param_names])
        self.register_buffer("cell_params", torch.as_tensor(cell, dtype=dtype).to(dev))
        scales = []
        for k in self.c2c_names:
            s = float(model.c2c[k].dist.std())
            scales.append(s if np.isfinite(s) and s > 0 else 1.0)
        self.register_buffer("c2c_scale", torch.tensor(scales, **fkw))
        self.register_buffer("c2c_dev", torch.zeros(len(self.c2c_names), num_devices, dtype=torch.float16,
                                                    device=dev))

        # Noise constants (derived from the model: not in the state_dict).
        pm = pink_markov(model.pink.alpha, model.pink.d, model.pink.taps)
        self.pink_markov = pm
        steps = np.arange(pm.horizon + 1)
        a0, pn, chol = pm.transition(steps)
        # n-step coefficients for n = 0..T (T: the stand-in's memory; n > T reads row T): lambda**n,
        # L00, L22, Re p**n, Im p**n, L10, L20, L11, L21 (see _dense), and [n > 0]
        table = np.stack([a0, chol[:, 0, 0], chol[:, 2, 2], pn.real, pn.imag, chol[:, 1, 0], chol[:, 2, 0],
                          chol[:, 1, 1], chol[:, 2, 1], np.minimum(steps, 1.0)])
        self.register_buffer("pink_coef", torch.tensor(table, **fkw), persistent=False)
        # Row 0: mean of the term after t pulses; row 1: gain making its variance exact.
        self.register_buffer("pink_table", torch.tensor(np.stack([pm.offset, pm.gain]), **fkw), persistent=False)
        # P(low -> high), P(high -> low) per pulse, kept in float64 (they can be small)
        self.register_buffer("rtn_rates", torch.tensor([float(model.rtn.p_up), float(model.rtn.p_down)],
                                                       dtype=torch.float64, device=dev))

        # Per-cell state.
        self.register_buffer("pulses", torch.zeros(num_devices, dtype=torch.int32, device=dev))
        # pink stand-in: the real state x, and the complex state xi as (re, im)
        self.register_buffer("pink_x", torch.zeros(num_devices, **fkw))
        self.register_buffer("pink_xi", torch.zeros(2, num_devices, **fkw))  # rows: real, imaginary part
        self.register_buffer("rtn_high", torch.zeros(num_devices, dtype=torch.bool, device=dev))
        # pulses until the cell's next RTN switch (geometric waiting time)
        self.register_buffer("rtn_wait", torch.full((num_devices,), NEVER, dtype=torch.int32, device=dev))
        self.register_buffer("w", torch.zeros(num_devices, **fkw))
        self._pulse_bound = 0  # no cell has had more pulses since SET than this
        self._last_read = None  # (R of every cell, its key): see resistance
        self._seed_blocks()
        self.set_()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path, num_devices: int, *, seed=None, device=None, dtype=torch.float32,
                        v_pulse: float | None = None, pulse_width: float | None = None,
                        **switches) -> WeakResetArray:
        """Build an array from a checkpoint written by :func:`~hfox_fit.torch.export_checkpoint`.

        Parameters
        ----------
        path : str or path-like
        num_devices : int
        seed : int, optional
        device : str or torch.device, optional
        dtype : torch.dtype, default=torch.float32
        v_pulse, pulse_width : float, optional
            Simulate the cells programmed at this pulse condition (V, s): the model's
            :meth:`~hfox_fit.model.DeviceModel.at`. Give both or neither.
        **switches
            ``d2d``, ``c2c``, ``pink``, ``rtn``, ``compile`` (see the class).

        Raises
        ------
        CheckpointError
            When the file is damaged, too new, or from a fit with no usable cells.
        FitError
            When the model cannot speak for the condition asked (see ``DeviceModel.at``).
        ValueError
            When ``device`` is not available here.
        """
        from ._checkpoint import load_checkpoint

        dev = resolve_device(device)  # fail on the device before reading the file
        model, provenance = load_checkpoint(path)
        if v_pulse is not None or pulse_width is not None:
            if v_pulse is None or pulse_width is None:
                raise FitError("from_checkpoint: give both v_pulse and pulse_width (the pulse condition), or neither.")
            model = model.at(v_pulse=v_pulse, pulse_width=pulse_width)
        arr = cls(model, num_devices, seed=seed, device=dev, dtype=dtype, **switches)
        arr.provenance = provenance
        return arr

    @classmethod
    def from_fit(cls, fit, num_devices: int, *, seed=None, device=None, dtype=torch.float32,
                 **switches) -> WeakResetArray:
        """Build an array from an in-memory fit (no checkpoint file in between).

        Parameters
        ----------
        fit : CampaignResult or DeviceModel
            What :func:`hfox_fit.fitting.fit_campaign` returned (its ``model``
            is simulated), or a model.
        num_devices : int
        seed, device, dtype, **switches
            As for the class.

        Raises
        ------
        FitError
            When the fit used no cells.

        Examples
        --------
        >>> from hfox_fit.synth import make_wafer
        >>> from hfox_fit.fitting import fit_campaign
        >>> fit = fit_campaign(make_wafer("paper", devices=64, pulses=300, seed=1).dies,
        ...                    law="two_slope", bootstrap=5)             # doctest: +SKIP
        >>> cells = WeakResetArray.from_fit(fit, 10_000, seed=0)        # doctest: +SKIP
        """
        model = fit if isinstance(fit, DeviceModel) else getattr(fit, "model", None)
        if not isinstance(model, DeviceModel):
            raise TypeError(f"from_fit needs a CampaignResult or a DeviceModel; got {type(fit).__name__}.")
        summary = fit.summary() if callable(getattr(fit, "summary", None)) else {}
        devices = summary.get("devices") or {}
        fitted = devices.get("fitted")
        if fitted is not None and int(fitted) <= 0:
            raise FitError(
                f"the fit used no cells (0 fitted of {devices.get('total', '?')}): there is no model to "
                "simulate. Check the cell flags (fit.cells['flag']) and the fit options."
            )
        arr = cls(model, num_devices, seed=seed, device=device, dtype=dtype, **switches)
        arr.provenance = {**{k: v for k, v in model.meta.items() if isinstance(v, (str, int, float))},
                          "built_from": "in-memory fit", "cells_used": None if fitted is None else int(fitted)}
        return arr

    def _constants(self) -> dict:
        """Per-array constants in the form the update uses (cached; dropped on load and on moves)."""
        if self._const_cache is None:
            p_up, p_down = self.rtn_rates.double().cpu().tolist()
            pm = self.pink_markov
            n = self.num_devices
            block = self._block_size
            self._const_cache = {
                "states": pm.states,
                "horizon": pm.horizon,
                "white": float(pm.white_scale),
                "draws": (pm.states + (pm.white_scale > 0)) if pm.states else 1,
                "p_up": p_up,
                "p_down": p_down,
                "c2c_scale": [float(v) for v in self.c2c_scale.cpu()],
                # CPU, more than one block or more cells than a serial torch operation takes: worker threads
                "threaded": self.device.type == "cpu" and n > min(block, GRAIN_BLOCK),
                # per block, views of the state and parameters (made once: slicing costs microseconds)
                "views": [
                    {"range": (s, min(s + block, n)), "pulses": self.pulses[s:s + block],
                     "wait": self.rtn_wait[s:s + block], "high": self.rtn_high[s:s + block],
                     "x": self.pink_x[s:s + block], "xr": self.pink_xi[0, s:s + block],
                     "xi": self.pink_xi[1, s:s + block], "w": self.w[s:s + block],
                     "params": tuple(self.cell_params[:, s:s + block].unbind(0)),
                     "c2c": tuple(self.c2c_dev[:, s:s + block].unbind(0))}
                    for s in range(0, n, block)],
                "coef": self.pink_coef,  # 9 rows of n-step coefficients, then [n > 0]
                "table": self.pink_table,  # mean and gain after t pulses
                "amp_row": self.param_names.index("rtn_amplitude"),
                "r0_row": self.param_names.index("r0"),
            }
        return self._const_cache

    def _geometric(self, high: torch.Tensor) -> torch.Tensor:
        """Waiting times to the next RTN switch of chains in state ``high``, from the array's generator."""
        c = self._constants()
        return geometric_wait(high, c["p_up"], c["p_down"], self._generator)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.w.device

    @property
    def dtype(self) -> torch.dtype:
        return self.w.dtype

    @property
    def generator(self) -> torch.Generator:
        """The array's generator: it draws the cells' parameters and SET states, and seeds the
        generators of the update's blocks (see ``state_dict()``), from which ``pulse`` draws."""
        return self._generator

    @property
    def cell_parameters(self) -> dict:
        """Parameters of the current cycle (cell's own plus C2C), name -> tensor of shape (num_devices,)."""
        return dict(zip(self.param_names, self._rows(slice(None))))

    def _block_rows(self, v: dict) -> list:
        """The parameter rows of a block (views from ``_constants()['views']``), C2C deviations added."""
        rows = list(v["params"])
        for j, (i, dev) in enumerate(zip(self._c2c_rows, v["c2c"])):
            rows[i] = torch.add(rows[i], dev, alpha=self._constants()["c2c_scale"][j])
        return rows

    def _rows(self, sl) -> list:
        """The parameter rows of cells ``sl`` for this cycle (C2C deviations added)."""
        rows = list(self.cell_params[:, sl].unbind(0))
        for j, i in enumerate(self._c2c_rows):
            rows[i] = torch.add(rows[i], self.c2c_dev[j, sl], alpha=self._constants()["c2c_scale"][j])
        return rows

    @property
    def r0(self) -> torch.Tensor:
        """Resistance right after the last SET (Ohm), shape (num_devices,)."""
        return self.cell_parameters["r0"]

    @property
    def resistance(self) -> torch.Tensor:
        """Resistance at the last read (Ohm), shape (num_devices,).

        The tensor the last :meth:`pulse` returned while nothing has changed the
        state, the parameters or that tensor since (their version counters say so);
        else computed afresh (and kept).
        """
        kept = self._last_read
        if kept is not None and kept[1] is not None and kept[1] == self._read_key(kept[0]):
            return kept[0]
        r = torch.mul(self.w, LOG2E).exp2_().mul_(self.r0)  # as pulse() computes it
        self._keep_read(r)
        return r

    def _read_key(self, r: torch.Tensor):
        """Version counters of ``r`` and of what a read depends on (None where they are not tracked)."""
        try:
            return (r._version, self.w._version, self.cell_params._version, self.c2c_dev._version)
        except RuntimeError:  # inference tensors keep no version counter: nothing is kept
            return None

    def _keep_read(self, r: torch.Tensor) -> None:
        self._last_read = (r, self._read_key(r))

    @property
    def conductance(self) -> torch.Tensor:
        """Conductance at the last read (S), shape (num_devices,)."""
        return torch.exp(-self.w) / self.r0

    @property
    def pink_state(self) -> torch.Tensor:
        """The pink stand-in's states ``(x, Re xi, Im xi)``, shape (3, num_devices) (a copy)."""
        return torch.cat([self.pink_x[None, :], self.pink_xi])

    def bytes_per_cell(self) -> float:
        """Bytes of buffers (state, parameters and constants) per cell."""
        return sum(b.numel() * b.element_size() for b in self.buffers()) / self.num_devices

    def extra_repr(self) -> str:
        return (f"num_devices={self.num_devices}, law={self.model.law!r}, d2d={self.d2d}, c2c={self.c2c}, "
                f"pink={self.pink}, rtn={self.rtn}, device={self.device}, dtype={self.dtype}")

    # ------------------------------------------------------------------ SET
    def _mask(self, mask, what: str = "mask") -> torch.Tensor | None:
        if mask is None:
            return None
        m = torch.as_tensor(mask)
        if m.dtype != torch.bool:
            raise ValueError(f"{what} must be a bool tensor of shape ({self.num_devices},); got dtype {m.dtype}.")
        if tuple(m.shape) != (self.num_devices,):
            raise ValueError(
                f"{what} of shape {tuple(m.shape)} does not match the array of {self.num_devices} cells; "
                f"expected shape ({self.num_devices},)."
            )
        return m.to(self.device)

    @torch.no_grad()
    def set_(self, mask=None) -> WeakResetArray:
        """Bring cells back to their post-SET state (``w = 0``, ``t = 0``, RTN low, noise history empty).

        Cells with C2C laws draw new cycle parameters.

        Parameters
        ----------
        mask : bool tensor of shape (num_devices,), optional
            Cells to SET; all when omitted.

        Returns
        -------
        WeakResetArray
            self
        """
        m = self._mask(mask)
        if m is None:
            self.pulses.zero_()
            self.pink_x.zero_()
            self.pink_xi.zero_()
            self.rtn_high.zero_()
            self.rtn_wait.copy_(self._geometric(self.rtn_high))
            self.w.zero_()
            self._pulse_bound = 0
            count = self.num_devices
        else:
            self.pulses.masked_fill_(m, 0)
            self.pink_x.masked_fill_(m, 0)
            self.pink_xi.masked_fill_(m[None, :], 0)
            self.rtn_high.masked_fill_(m, False)
            self.rtn_wait[m] = self._geometric(torch.zeros(int(m.sum()), dtype=torch.bool, device=self.device))
            self.w.masked_fill_(m, 0)
            count = int(m.sum())
        if self.c2c_names and count:
            rng = np.random.default_rng(self._numpy_seed())
            for j, (name, row) in enumerate(zip(self.c2c_names, self._c2c_rows)):
                base_t = self.cell_params[row] if m is None else self.cell_params[row][m]
                base = base_t.double().cpu().numpy()
                value = base + self.model.c2c[name].sample(count, rng)
                bounds = self.model.d2d[name].bounds
                if bounds is not None:
                    value = np.clip(value, *bounds)
                dev = torch.as_tensor((value - base) / float(self.c2c_scale[j]), dtype=torch.float16)
                if m is None:
                    self.c2c_dev[j].copy_(dev)
                else:
                    self.c2c_dev[j][m] = dev.to(self.device)
        return self

    # ------------------------------------------------------------------ pulses
    def _counts(self, n) -> tuple[torch.Tensor, int | None, int, int, list | None]:
        """Validate pulse counts (see :func:`~hfox_fit.torch._counts.pulse_counts`)."""
        return pulse_counts(n, self.num_devices, self.device, self._block_bounds)

    def _block_bounds(self, flat: torch.Tensor) -> list:
        """``torch.aminmax`` of each block of ``flat`` (num_devices,), block by block."""
        views = self._constants()["views"]
        bounds = [None] * len(views)

        def check(b):
            s, e = views[b]["range"]
            bounds[b] = torch.aminmax(flat[s:e])

        self._blocks(check)
        return bounds

    @torch.no_grad()
    def pulse(self, n=1) -> torch.Tensor:
        """Apply ``n`` weak RESET pulses to every cell and read it.

        Parameters
        ----------
        n : int or int tensor of shape () or (num_devices,), default=1
            Pulses per cell (>= 0; whole-number floats are accepted). A cell
            given 0 pulses keeps its state and its last read.

        Returns
        -------
        torch.Tensor of shape (num_devices,)
            Resistance (Ohm) read after the pulses.

        Raises
        ------
        ValueError
            On negative, non-integer or mis-shaped counts, or when a cell would
            pass 2**31 - 1 pulses since its last SET.

        Notes
        -----
        A call costs the same for any ``n`` (no loop over pulses), and one call
        with ``n`` has the distribution of ``n`` calls with 1: the drift is a
        function of the pulses since SET, the pink stand-in's n-step transition
        and the RTN chain's (waiting times, 2x2 matrix power) are exact.
        """
        if self.w.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the array simulates in float32 or float64; its state is {self.w.dtype}.")
        n, scalar, lo, hi, lows = self._counts(n)
        if hi == 0:
            return self.resistance
        if self._pulse_bound + hi > _MAX_PULSES:
            raise ValueError(
                f"these pulses would take a cell past {_MAX_PULSES} pulses since its last SET "
                f"(up to {self._pulse_bound} so far, {hi} more); SET the cells (set_()) first."
            )
        c = self._constants()
        fixed = None  # n-step coefficients of the pink stand-in when every cell gets the same count
        if self.pink and c["states"] and scalar is not None:
            k = min(scalar, c["horizon"])
            fixed = c["coef"][:, k:k + 1]
        call = {
            "n": n, "scalar": scalar, "lows": lows, "fixed": fixed, "clamp": hi > c["horizon"],
            "t_clamp": self._pulse_bound + hi > c["horizon"],
            "compiled": _update._compiled_dense() if self.compile else None,
            "out": torch.empty_like(self.w),
            "prev": self.resistance if lo == 0 else None,  # the read of the cells given 0 pulses
        }
        self._pulse_bound += hi
        views = c["views"]
        self._blocks(lambda b: pulse_block(self, b, views[b], call), balance=True)
        self._keep_read(call["out"])
        return call["out"]

    def _blocks(self, fn, balance: bool = False) -> None:
        """``fn(b)`` for every block: on the worker threads (CPU), or here (GPU, small arrays)."""
        c = self._constants()
        if c["threaded"]:
            _run_blocks(fn, len(c["views"]), block_threads(), balance)
        else:
            for b in range(len(c["views"])):
                fn(b)

    def pulse_pairs(self, n, *, in_place: bool = False, record: dict | None = None) -> torch.Tensor:
        """Pulse one cell of each pair ``(i, i + num_devices // 2)``, by the sign of ``n[i]``.

        Cell ``i`` gets ``n[i]`` pulses where ``n[i] > 0``, cell ``i + num_devices // 2`` gets
        ``-n[i]`` where ``n[i] < 0`` (``n``: ints of shape ``(num_devices // 2,)``): the BL / BLb
        layout of :class:`~hfox_fit.torch.CellBackedWeights`. The same law as :meth:`pulse` with
        those counts, at a fraction of the cost: only the pairs given pulses are updated, each
        pulsed cell drawing only the normal numbers its count needs (see :mod:`hfox_fit.torch._pairs`);
        its partner keeps its state and read. Returns the resistance of every cell.

        ``in_place=True`` writes the new reads into the tensor of the last read (:attr:`resistance`)
        and returns it, instead of a new tensor: no copy of every cell's read, but a read returned
        before changes. ``record``: a dict that receives ``"pairs"`` (the indices of the pairs given
        pulses: int64 tensors, one per block of pairs, in no set order) and ``"pulses"`` (their total,
        a 0-d int64 tensor), where the update lists them (the default path; a compiled array leaves
        it empty).
        """
        from ._pairs import pulse_pairs

        return pulse_pairs(self, n, in_place=in_place, record=record)

    def _pulse_pairs_reading(self, n, bounds, signs, record):
        """:meth:`pulse_pairs` in place with each pulsed pair read into ``signs`` (see
        :func:`hfox_fit.torch._pairs.pulse_pairs_reading`, the compiled loop's path)."""
        from ._pairs import pulse_pairs_reading

        return pulse_pairs_reading(self, n, bounds, signs, record)

    def forward(self, n=1) -> torch.Tensor:
        """Same as :meth:`pulse`."""
        return self.pulse(n)
