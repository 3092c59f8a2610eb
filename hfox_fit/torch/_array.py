r"""WeakResetArray: a population of simulated HfOx cells as an ``nn.Module``.

Each cell follows the weak-RESET model of a :class:`~hfox_fit.model.DeviceModel`:

.. math:: w(t) = \ln(R / R_0) = w_{mean}(t) + w_{pink}(t) + w_{rtn}(t)

with ``t`` the pulses since the last SET. ``pulse(n)`` applies ``n`` pulses to
every cell at a cost that does not depend on ``n``:

* the drift law is a function of ``t``;
* the pink term is the AR(1)-sum stand-in of :mod:`hfox_fit.torch._pink`, whose
  ``n``-step transition is exact in closed form;
* the telegraph chain of each cell keeps its waiting time to the next switch
  (geometric, drawn at each switch); a chain that switches within the ``n``
  pulses ends them in the closed-form law of the 2x2 matrix power, so only the
  few cells that switch cost anything.

So one call with ``n`` has the same distribution as ``n`` calls with 1.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings

import numpy as np
import torch
from torch import nn

from ..exceptions import FitError
from ..model import DeviceModel
from ._pink import pink_markov

__all__ = ["WeakResetArray", "TORCH_LAWS"]

_MAX_COUNT = 1 << 30
_TABLE_PULSES = 64  # counts up to this read their transition coefficients from a table
_NEVER = 1 << 30  # waiting time of a state the chain never leaves
_STATE_VERSION = 1


def _two_slope(t, p):
    # m1 min(t, t*) + m2 max(t - t*, 0) + c1: the two-slope law, continuous at t*
    ts = p["t_star"]
    w = torch.addcmul(p["c1"], p["m1"], torch.minimum(t, ts))
    return w.addcmul_(p["m2"], torch.sub(t, ts).clamp_(min=0))


def _power(t, p):
    return torch.addcmul(p["c1"], p["a"], torch.pow(t, p["b"]))


def _log(t, p):
    return torch.addcmul(p["c1"], p["a"], torch.log1p(t / p["tau"]))


#: Torch versions of the drift laws of :data:`hfox_fit.laws.DRIFT_LAWS`.
TORCH_LAWS = {"two_slope": _two_slope, "power": _power, "log": _log}


def _advance(law, names, c2c_rows, n, pulses, cell_params, c2c_dev, c2c_scale, pink_state, a, sd, active,
             pink_table, z, white, v, rtn_read, w, pink_on):
    """Advance every cell by its ``n`` pulses given the draws; update the state in place; return R.

    Plain tensor code, run as it is or through ``torch.compile``. ``n`` has shape
    () or (N,); ``a``, ``sd`` (K, N or 1) are ``phi**n`` and the sd of the n-step
    AR(1) innovation; ``active`` (N or ()) is 1.0 where ``n > 0``; ``z`` (K, N)
    normal draws or None; ``v`` (N,) uniform draws or None (no white part);
    ``rtn_read`` (N,) the telegraph term of this read or None.
    """
    dtype = w.dtype
    pulses.add_(n)
    t = pulses.to(dtype)
    rows = list(cell_params.unbind(0))
    for j, i in enumerate(c2c_rows):
        rows[i] = rows[i] + c2c_dev[j].to(dtype) * c2c_scale[j]
    p = dict(zip(names, rows))
    w_new = law(t, p)
    core = None
    if z is not None:
        # n steps of each AR(1) component at once: x <- phi**n x + sqrt(var (1 - phi**(2 n))) z
        pink_state.mul_(a).addcmul_(sd, z)
        core = pink_state.sum(0)
    if v is not None:
        v = v.sub_(0.5).mul_(white)
        core = v if core is None else core.add_(v)
    if pink_on:
        # exact mean of the non-centred innovations, and the gain making the variance exact
        tab = pink_table.index_select(1, torch.clamp(pulses, max=pink_table.shape[1] - 1))
        w_new.add_(tab[0])
        if core is not None:
            w_new.addcmul_(tab[1], core)
    if rtn_read is not None:
        w_new.add_(rtn_read)
    # cells given 0 pulses keep their read (active is 1.0 where n > 0, else 0.0)
    w.lerp_(w_new, active)
    return p["r0"] * torch.exp(w)


_COMPILED = None


def _compiled_advance():
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(_advance, fullgraph=True, dynamic=False)
    return _COMPILED


def resolve_device(device) -> torch.device:
    """Return ``torch.device(device)`` after checking a tensor can live there."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError, TypeError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"cannot place the cell array on device {str(device)!r}: {detail}. "
            f"Pass device='cpu' or one of the devices this machine has "
            f"(torch.cuda.is_available() = {torch.cuda.is_available()})."
        ) from err
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class WeakResetArray(nn.Module):
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
        Use this generator instead (its device must be the array's).
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
        Run the pulse update through ``torch.compile`` (one fused kernel; the
        first call compiles, which takes tens of seconds on a CPU and needs a
        C++ compiler or Triton). Falls back to eager mode, with a warning,
        when compiling fails. The draws are the same either way.

    Attributes
    ----------
    model : DeviceModel
    num_devices : int
    param_names : tuple of str
        Rows of the ``cell_params`` buffer (the law's, then ``r0``, ``rtn_amplitude``).
    provenance : dict or None
        The checkpoint's provenance when built by :meth:`from_checkpoint`.

    Notes
    -----
    State and parameters per cell at float32: the cell's parameters (4 B each),
    the C2C deviations of this cycle (float16, 2 B each), the pulses since SET
    (int32), the pink stand-in (2 x float32), the RTN state (bool) and waiting
    time (int32), and the last read ``w`` (float32): 45 B for the paper's model. Every value is a buffer,
    and the generator's state travels in ``state_dict()`` (extra state), so
    ``load_state_dict`` resumes a run exactly on the same kind of device.

    The pink term is the AR(1)-sum stand-in of :func:`~hfox_fit.torch.pink_markov`:
    its mean and variance after every pulse are the 15-tap filter's, its
    stationary spectrum is within a factor 1.6 of the filter's (which ripples),
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
        if model.law not in TORCH_LAWS:
            raise FitError(
                f"WeakResetArray has no torch version of drift law {model.law!r}; "
                f"it simulates {sorted(TORCH_LAWS)}."
            )
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
        self._const_cache = None
        self._law = TORCH_LAWS[model.law]
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

        # Noise constants.
        pm = pink_markov(model.pink.alpha, model.pink.d, model.pink.taps)
        self.pink_markov = pm
        self.register_buffer("pink_phi", torch.tensor(pm.phi, **fkw))
        self.register_buffer("pink_var", torch.tensor(pm.var, **fkw))
        self.register_buffer("pink_white", torch.tensor(pm.white_scale, **fkw))
        # Row 0: mean of the term after t pulses; row 1: gain making its variance exact.
        self.register_buffer("pink_table", torch.tensor(np.stack([pm.offset, pm.gain]), **fkw))
        # P(low -> high), P(high -> low) per pulse, kept in float64 (they can be small)
        self.register_buffer("rtn_rates", torch.tensor([float(model.rtn.p_up), float(model.rtn.p_down)],
                                                       dtype=torch.float64, device=dev))

        # Per-cell state.
        self.register_buffer("pulses", torch.zeros(num_devices, dtype=torch.int32, device=dev))
        self.register_buffer("pink_state", torch.zeros(len(pm.phi), num_devices, **fkw))
        self.register_buffer("rtn_high", torch.zeros(num_devices, dtype=torch.bool, device=dev))
        # pulses until the cell's next RTN switch (geometric waiting time)
        self.register_buffer("rtn_wait", torch.full((num_devices,), _NEVER, dtype=torch.int32, device=dev))
        self.register_buffer("w", torch.zeros(num_devices, **fkw))
        self.set_()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path, num_devices: int, *, seed=None, device=None, dtype=torch.float32,
                        **switches) -> WeakResetArray:
        """Build an array from a checkpoint written by :func:`~hfox_fit.torch.export_checkpoint`.

        Parameters
        ----------
        path : str or path-like
        num_devices : int
        seed : int, optional
        device : str or torch.device, optional
        dtype : torch.dtype, default=torch.float32
        **switches
            ``d2d``, ``c2c``, ``pink``, ``rtn`` (see the class).

        Raises
        ------
        CheckpointError
            When the file is damaged, too new, or from a fit with no usable cells.
        ValueError
            When ``device`` is not available here.
        """
        from ._checkpoint import load_checkpoint

        dev = resolve_device(device)  # fail on the device before reading the file
        model, provenance = load_checkpoint(path)
        arr = cls(model, num_devices, seed=seed, device=dev, dtype=dtype, **switches)
        arr.provenance = provenance
        return arr

    def _constants(self) -> dict:
        """Noise constants in the form the update uses (cached; dropped on load and on moves)."""
        if self._const_cache is None:
            p_up, p_down = self.rtn_rates.double().cpu().tolist()
            phi = self.pink_phi.double().cpu().numpy()[:, None]
            var = self.pink_var.double().cpu().numpy()[:, None]
            k = np.arange(_TABLE_PULSES + 1, dtype=float)
            # n-step coefficients for n = 0.._TABLE_PULSES: phi**n, the AR(1) step's sd, [n > 0]
            table = np.vstack([phi**k, np.sqrt(var * (1.0 - phi ** (2 * k))), np.minimum(k, 1.0)])
            consts = {
                "components": self.pink_phi.numel(),
                "table": torch.as_tensor(table, dtype=self.w.dtype).to(self.device),
                "log_phi_t": torch.log(self.pink_phi.clamp(min=1e-30))[:, None],
                "var_t": self.pink_var[:, None],
                "white": float(self.pink_white),
                "p_up": p_up,
                "p_down": p_down,
            }
            self._const_cache = consts
        return self._const_cache

    def _coefficients(self, n, scalar, n_max) -> tuple:
        """Closed-form n-step coefficients of the pink stand-in.

        Returns ``phi**n`` and the sd of the n-step AR(1) innovation (K, N or 1),
        and 1.0 where ``n > 0`` (N or ()).
        """
        c = self._constants()
        k = c["components"]
        dtype = self.w.dtype
        if n_max <= _TABLE_PULSES:
            rows = c["table"].index_select(1, n.reshape(-1))  # (2K + 1, N) or (2K + 1, 1)
        elif scalar is not None:
            a = self.pink_phi.double()[:, None] ** scalar
            sd = torch.sqrt(self.pink_var.double()[:, None] * (1.0 - a * a))
            one = torch.ones(1, 1, dtype=torch.float64, device=self.device)
            rows = torch.cat([a, sd, one]).to(dtype)
        else:
            e = torch.mul(c["log_phi_t"], n.to(dtype))
            sd = torch.mul(e, 2.0).expm1_().mul_(c["var_t"]).neg_().sqrt_()
            return e.exp_(), sd, torch.clamp(n, max=1).to(dtype)
        if scalar is not None:
            return rows[:k], rows[k:2 * k], rows[2 * k, 0]
        return rows[:k], rows[k:2 * k], rows[2 * k]

    def _geometric(self, high: torch.Tensor) -> torch.Tensor:
        """Pulses until the next switch of chains now in state ``high`` (>= 1; _NEVER if they cannot leave)."""
        rates = self.rtn_rates.to(self.device)
        p = torch.where(high, rates[1], rates[0])
        u = torch.rand(high.shape, generator=self._generator, device=self.device, dtype=torch.float64)
        # P(wait = k) = (1 - p)**(k - 1) p
        wait = torch.floor(torch.log1p(-u) / torch.log1p(-p.clamp(max=1.0))) + 1.0
        wait = torch.where(p > 0, wait, float(_NEVER))
        return wait.clamp_(min=1, max=_NEVER).to(torch.int32)

    def _rtn_step(self, n) -> torch.Tensor:
        """Advance the telegraph chains by ``n`` pulses; return this read's RTN term (N,).

        A chain whose waiting time runs out within the ``n`` pulses switches, spends
        the pulses left in the closed-form n-step law of the 2x2 matrix, and draws a
        new waiting time from the state it ends in (the chain is memoryless).
        """
        c = self._constants()
        self.rtn_wait.sub_(n)
        idx = torch.nonzero(self.rtn_wait <= 0).squeeze(1)
        if idx.numel():
            p_up, p_down = c["p_up"], c["p_down"]
            was_high = self.rtn_high[idx]
            can_leave = torch.where(was_high, p_down > 0, p_up > 0)
            left = (-self.rtn_wait[idx]).to(torch.float64)  # pulses after the first switch
            s = p_up + p_down
            lam_m = torch.pow(torch.tensor(1.0 - s, dtype=torch.float64, device=self.device), left)
            pi_high = p_up / s if s > 0 else 0.0
            p_high = pi_high * (1.0 - lam_m) + lam_m * (~was_high)
            u = torch.rand(idx.shape, generator=self._generator, device=self.device, dtype=torch.float64)
            final = torch.where(can_leave, u < p_high, was_high)
            self.rtn_high[idx] = final
            self.rtn_wait[idx] = self._geometric(final)
        high = torch.nonzero(self.rtn_high).squeeze(1)
        read = torch.zeros_like(self.w)
        if high.numel():
            amp = self.cell_params[self.param_names.index("rtn_amplitude")][high]
            if "rtn_amplitude" in self.c2c_names:
                j = self.c2c_names.index("rtn_amplitude")
                amp = amp + self.c2c_dev[j][high].to(amp.dtype) * self.c2c_scale[j]
            u = torch.rand(2, high.numel(), generator=self._generator, device=self.device, dtype=read.dtype)
            read[high] = u[0].mul_(u[1]).mul_(amp)  # U1 U2 A, fresh at each read
        return read

    def _numpy_seed(self) -> int:
        g = self._generator
        return int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.w.device

    @property
    def dtype(self) -> torch.dtype:
        return self.w.dtype

    @property
    def generator(self) -> torch.Generator:
        """The generator every draw of the array comes from."""
        return self._generator

    @property
    def cell_parameters(self) -> dict:
        """Parameters of the current cycle (cell's own plus C2C), name -> tensor of shape (num_devices,)."""
        rows = list(self.cell_params.unbind(0))
        for j, i in enumerate(self._c2c_rows):
            rows[i] = rows[i] + self.c2c_dev[j].to(rows[i].dtype) * self.c2c_scale[j]
        return dict(zip(self.param_names, rows))

    @property
    def r0(self) -> torch.Tensor:
        """Resistance right after the last SET (Ohm), shape (num_devices,)."""
        return self.cell_parameters["r0"]

    @property
    def resistance(self) -> torch.Tensor:
        """Resistance at the last read (Ohm), shape (num_devices,)."""
        return self.r0 * torch.exp(self.w)

    @property
    def conductance(self) -> torch.Tensor:
        """Conductance at the last read (S), shape (num_devices,)."""
        return torch.exp(-self.w) / self.r0

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
            self.pink_state.zero_()
            self.rtn_high.zero_()
            self.rtn_wait.copy_(self._geometric(self.rtn_high))
            self.w.zero_()
            count = self.num_devices
        else:
            self.pulses.masked_fill_(m, 0)
            self.pink_state.masked_fill_(m[None, :], 0)
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
    def _counts(self, n) -> tuple[torch.Tensor, int | None, int]:
        """Validate pulse counts; return an int32 tensor (shape () or (N,)), its value if scalar, its max."""
        big = f"pulse counts above {_MAX_COUNT} are not supported"
        if isinstance(n, (numbers.Integral, float)) and not isinstance(n, bool):
            if isinstance(n, float) and not n.is_integer():
                raise ValueError(f"pulse counts must be whole numbers; got {n}.")
            if n < 0:
                raise ValueError(f"pulse counts must be >= 0; got {n}.")
            if n > _MAX_COUNT:
                raise ValueError(f"{big}; got {n}.")
            return torch.tensor(int(n), dtype=torch.int32, device=self.device), int(n), int(n)
        t = n if isinstance(n, torch.Tensor) else torch.as_tensor(np.asarray(n))
        if t.dtype == torch.bool:
            t = t.to(torch.int32)
        if t.is_complex():
            raise ValueError(f"pulse counts must be integers; got dtype {t.dtype}.")
        if tuple(t.shape) not in ((), (1,), (self.num_devices,)):
            raise ValueError(
                f"pulse counts of shape {tuple(t.shape)} do not match the array of {self.num_devices} "
                f"cells; pass an int, or a tensor of shape (), (1,) or ({self.num_devices},)."
            )
        if t.numel() == 0:
            raise ValueError("pulse counts are empty.")
        if t.is_floating_point():
            bad = ~torch.isfinite(t) | (t != torch.round(t))
            if bool(bad.any()):
                i = int(torch.nonzero(bad.reshape(-1))[0])
                raise ValueError(
                    f"pulse counts must be whole numbers; cell {i} got {float(t.reshape(-1)[i])}. "
                    "Round them first (e.g. torch.round)."
                )
        lo, hi = torch.aminmax(t)
        if bool(lo < 0):
            i = int(torch.nonzero(t.reshape(-1) < 0)[0])
            raise ValueError(f"pulse counts must be >= 0; cell {i} got {t.reshape(-1)[i].item()}.")
        n_max = int(hi)
        if n_max > _MAX_COUNT:
            raise ValueError(f"{big}; got {n_max}.")
        t = t.to(device=self.device, dtype=torch.int32)
        if t.dim() == 1 and t.numel() == 1 and self.num_devices != 1:
            t = t.reshape(())
        return t, (n_max if t.dim() == 0 else None), n_max

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
            On negative, non-integer or mis-shaped counts.

        Notes
        -----
        A call costs the same for any ``n`` (no loop over pulses), and one call
        with ``n`` has the distribution of ``n`` calls with 1: the drift is a
        function of the pulses since SET, the pink stand-in's n-step transition
        and the RTN chain's (waiting times, 2x2 matrix power) are exact.
        """
        if self.w.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the array simulates in float32 or float64; its state is {self.w.dtype}.")
        n, scalar, n_max = self._counts(n)
        if scalar == 0:
            return self.resistance
        dtype, dev, g, size = self.w.dtype, self.device, self._generator, self.num_devices
        c = self._constants()
        # The draws, in a fixed order: pink AR innovations, white part, RTN switches, RTN reads.
        z = None
        if self.pink and c["components"]:
            z = torch.randn(self.pink_state.shape, generator=g, device=dev, dtype=dtype)
        v = None
        if self.pink and c["white"] > 0:
            v = torch.rand(size, generator=g, device=dev, dtype=dtype)
        rtn_read = self._rtn_step(n) if self.rtn else None
        args = (
            self._law, self.param_names, self._c2c_rows, n, self.pulses, self.cell_params, self.c2c_dev,
            self.c2c_scale, self.pink_state, *self._coefficients(n, scalar, n_max), self.pink_table, z,
            c["white"], v, rtn_read, self.w, self.pink,
        )
        if self.compile:
            try:
                return _compiled_advance()(*args)
            except Exception as err:  # no C++ compiler / Triton, unsupported op, ...
                self.compile = False
                warnings.warn(
                    f"torch.compile of the pulse update failed ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}); this array goes on in eager mode.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return _advance(*args)

    def forward(self, n=1) -> torch.Tensor:
        """Same as :meth:`pulse`."""
        return self.pulse(n)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "rng_state": self._generator.get_state(),
            "rng_device": self._generator.device.type,
            "pink": self.pink,
            "rtn": self.rtn,
            "d2d": self.d2d,
            "c2c": self.c2c,
        }

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError("this state_dict was not written by this version of WeakResetArray.")
        self.pink, self.rtn = bool(state["pink"]), bool(state["rtn"])
        self.d2d, self.c2c = bool(state["d2d"]), bool(state["c2c"])
        rng_state = state["rng_state"].cpu()
        if state["rng_device"] == self._generator.device.type:
            self._generator.set_state(rng_state)
        else:
            seed = int.from_bytes(hashlib.sha256(rng_state.cpu().numpy().tobytes()).digest()[:8], "little")
            self._generator.manual_seed(seed >> 1)
            warnings.warn(
                f"the state_dict's random generator comes from a {state['rng_device']} device and this "
                f"array lives on {self._generator.device.type}: the run goes on with a generator seeded "
                "from it, so it continues in distribution but not draw for draw.",
                RuntimeWarning,
                stacklevel=2,
            )

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._const_cache = None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._const_cache = None
        dev = self.w.device
        if self._generator.device != dev:
            seed = self._numpy_seed()
            self._generator = torch.Generator(device=dev)
            self._generator.manual_seed(seed)
        return self
