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

So one call with ``n`` has the same distribution as ``n`` calls with 1.

On a CPU the update runs block by block (:data:`CPU_BLOCK` cells) on a pool of
worker threads (:func:`block_threads`: ``torch.get_num_threads()`` of them), each
taking the next block as it comes free; torch operations release the GIL, so the
blocks run in parallel. Every torch operation in a worker is single-threaded
(its OpenMP thread count is set to 1), so no operation goes to torch's intra-op
thread pool, whose barrier waits for every pool thread to be scheduled (which
takes milliseconds on a busy machine); and when the process gets no more than
about one core, the calls go to one thread (see ``_Balance``). Each block draws
from its own ``torch.Generator``, seeded from the array's, so the results do not
depend on the number of threads nor on their timing.
On a GPU the whole array is one block.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from ..exceptions import FitError
from ..model import DeviceModel
from ._pink import pink_markov

__all__ = ["WeakResetArray", "TORCH_LAWS", "CPU_BLOCK", "block_threads"]

_MAX_COUNT = 1 << 30
_MAX_PULSES = (1 << 31) - 1  # pulses since SET are int32
_NEVER = 1 << 30  # waiting time of a state the chain never leaves
_STATE_VERSION = 3
_GOLDEN = 0x9E3779B97F4A7C15  # odd: b * _GOLDEN differs mod 2**32 for every block
_LOG2E = 1.0 / math.log(2.0)
#: Cells per block of the CPU update. The blocks run on worker threads whose torch operations are
#: single-threaded (see :func:`block_threads`), a block at a time per thread (a multiple of 16 keeps
#: randn's layout the same for every block).
CPU_BLOCK = 131008
#: Largest operation that torch runs on one thread whatever its thread settings (its parallel grain
#: is 32768 elements): the size of the checks made on the calling thread, and the block size where
#: the worker threads cannot be made single-threaded (a torch build without OpenMP).
GRAIN_BLOCK = 32752

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_SERIAL = False
_POOL_LOCK = threading.Lock()


def _drop_pool() -> None:  # a forked child has the pool object (and maybe a held lock) but not the threads
    global _POOL, _POOL_SIZE, _POOL_SERIAL, _POOL_LOCK
    _POOL, _POOL_SIZE, _POOL_SERIAL, _POOL_LOCK = None, 0, False, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_pool)


def block_threads() -> int:
    """Threads the CPU update of a :class:`WeakResetArray` runs its blocks on: ``torch.get_num_threads()``.

    The blocks run on a pool of worker threads (torch operations release the
    GIL), each taking the next block as it comes free; every torch operation
    in a worker is single-threaded, so no operation waits at a thread-pool
    barrier (which takes milliseconds on a busy machine). ``torch.set_num_threads(1)``
    makes the update serial. The results do not depend on the thread count:
    every block draws from its own generator.
    """
    return max(1, torch.get_num_threads())


def _openmp() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _pool(workers: int) -> tuple[ThreadPoolExecutor, bool]:
    """The worker threads (at least ``workers``), and whether their torch operations are single-threaded."""
    global _POOL, _POOL_SIZE, _POOL_SERIAL
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < workers:  # (a smaller pool's threads end once it is unused)
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hfox-cells")
            serial = False
            if _openmp():
                # torch's intra-op thread count is an OpenMP setting of each thread: set it to 1 in every
                # worker (the barrier makes each task run on its own thread), then give the process-wide
                # default (used by threads started later) back its value.
                before = torch.get_num_threads()
                barrier = threading.Barrier(workers)

                def one_thread():
                    torch.set_num_threads(1)
                    barrier.wait()
                    return torch.get_num_threads() == 1

                try:
                    serial = all(f.result() for f in [pool.submit(one_thread) for _ in range(workers)])
                finally:
                    torch.set_num_threads(before)
            _POOL, _POOL_SIZE, _POOL_SERIAL = pool, workers, serial
        return _POOL, _POOL_SERIAL


def _serial_workers() -> bool:
    """Whether the worker threads run torch operations on one thread (builds the pool once)."""
    return _pool(1)[1]


class _Balance:
    """How many worker threads a call uses: all it may while they run in parallel, one while they don't.

    On a machine busy with other work the process may get about one core: two
    threads then take turns at the GIL and at that core, and a call is slower
    than on one thread. A call on several threads that got less than
    :attr:`MIN_CORES` cores' worth of CPU time (the workers' own CPU time over
    the call's wall time) sends the next :attr:`SERIAL_CALLS` calls to one
    thread, after which the threads are tried again. The results are the same
    either way.
    """

    MIN_CORES = 1.3
    SERIAL_CALLS = 16

    def __init__(self):
        self.serial_left = 0

    def workers(self, wanted: int) -> int:
        return 1 if self.serial_left > 0 else wanted

    def report(self, workers: int, cpu_s: float, wall_s: float) -> None:
        if workers == 1:
            self.serial_left = max(0, self.serial_left - 1)
        elif cpu_s < self.MIN_CORES * wall_s:
            self.serial_left = self.SERIAL_CALLS


_BALANCE = _Balance()


def _run_blocks(fn, count: int, workers: int, balance: bool = False) -> None:
    """Run ``fn(b)`` for ``b = 0..count-1`` on up to ``workers`` worker threads; returns when all are done.

    The threads take the next block as they come free (a thread that the OS
    holds up delays the call by at most the block it holds), and torch
    operations release the GIL, so the blocks run in parallel. ``fn`` must not
    depend on the order. See :class:`_Balance` for the number of threads used
    (``balance``: this call's timing counts).
    """
    workers = _BALANCE.workers(max(1, min(workers, count)))
    lock = threading.Lock()
    nxt = [0]
    failed = []

    def loop():
        cpu0 = time.thread_time()
        with torch.no_grad():
            while not failed:
                with lock:
                    b = nxt[0]
                    nxt[0] += 1
                if b >= count:
                    break
                try:
                    fn(b)
                except BaseException:
                    failed.append(True)
                    raise
        return time.thread_time() - cpu0

    pool, _ = _pool(workers)
    t0 = time.perf_counter()
    futures = [pool.submit(loop) for _ in range(workers)]
    errors = [f.exception() for f in futures]  # waits for every thread
    for err in errors:
        if err is not None:
            raise err
    if balance:
        _BALANCE.report(workers, sum(f.result() for f in futures), time.perf_counter() - t0)


def _block_size(dev: torch.device, num_devices: int) -> int:
    """Cells per block of the update: a GPU does the whole array at once."""
    if dev.type != "cpu":
        return num_devices
    return CPU_BLOCK if _serial_workers() else min(CPU_BLOCK, GRAIN_BLOCK)


def _block_seeds(base: int, count: int) -> list:
    """Seeds of ``count`` block generators from one 63-bit ``base``: all distinct in their low 32 bits
    (the CPU generator keeps only those), consecutive blocks far apart."""
    return [(base + b * _GOLDEN) & ((1 << 63) - 1) for b in range(count)]


def _two_slope(t, p):
    # m1 min(t, t*) + m2 max(t - t*, 0) + c1: the two-slope law, continuous at t*
    before = torch.clamp(t, max=p["t_star"])
    w = torch.addcmul(p["c1"], p["m1"], before)
    return w.addcmul_(p["m2"], torch.sub(t, before))


def _power(t, p):
    return torch.addcmul(p["c1"], p["a"], torch.pow(t, p["b"]))


def _log(t, p):
    return torch.addcmul(p["c1"], p["a"], torch.log1p(t / p["tau"]))


#: Torch versions of the drift laws of :data:`hfox_fit.laws.DRIFT_LAWS`.
TORCH_LAWS = {"two_slope": _two_slope, "power": _power, "log": _log}


def _dense(law, names, t, rows, x, xr, xi, coef, z, white, off, gain, pink_on, states):
    """Drift plus pink term of one block after its pulses; updates the pink states in place.

    Plain tensor code, run as it is or through ``torch.compile``. ``t`` (B,) pulses
    since SET (already advanced, as floats); ``rows`` the block's parameters; ``x``
    (B,) the pink stand-in's real state, ``xr`` and ``xi`` (B,) the real and
    imaginary parts of its complex state;
    ``coef`` the n-step coefficients ``lambda**n, L00, L22, Re p**n, Im p**n,
    L10, L20, L11, L21`` (each (B,) or (1,)); ``z`` (rows, B) normal draws;
    ``off``, ``gain`` (B,) the pink mean and gain at ``t``.
    """
    w = law(t, dict(zip(names, rows)))
    if not pink_on:
        return w
    if states:
        a0, l00, l22, pc, ps, l10, l20, l11, l21 = coef
        # x <- lambda**n x + L00 z0
        x.mul_(a0).addcmul_(l00, z[0])
        # xr + i xi <- p**n (xr + i xi) + (L10 + i L20) z0 + (L11 + i L21) z1 + i L22 z2, in real arithmetic
        re = torch.mul(xr, pc).addcmul_(xi, ps, value=-1.0)
        re.addcmul_(l10, z[0]).addcmul_(l11, z[1])
        xi.mul_(pc).addcmul_(xr, ps).addcmul_(l20, z[0]).addcmul_(l21, z[1]).addcmul_(l22, z[2])
        xr.copy_(re)
        core = re.add_(x)
        if white > 0:
            core.add_(z[3], alpha=white)
    else:
        core = z[0].mul(white)
    # exact mean of the non-centred innovations, and the gain making the variance exact
    return w.add_(off).addcmul_(gain, core)


_COMPILED = None


def _compiled_dense():
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(_dense, fullgraph=True, dynamic=False)
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
        self._block_size = _block_size(dev, num_devices)
        self._block_gens = []
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
        self.register_buffer("rtn_wait", torch.full((num_devices,), _NEVER, dtype=torch.int32, device=dev))
        self.register_buffer("w", torch.zeros(num_devices, **fkw))
        self._pulse_bound = 0  # no cell has had more pulses since SET than this
        self._seed_blocks()
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
            ``d2d``, ``c2c``, ``pink``, ``rtn``, ``compile`` (see the class).

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

    @classmethod
    def from_fit(cls, fit, num_devices: int, *, seed=None, device=None, dtype=torch.float32,
                 **switches) -> WeakResetArray:
        """Build an array from an in-memory fit (no checkpoint file in between).

        Parameters
        ----------
        fit : CampaignFit or DeviceModel
            What :func:`hfox_fit.fitting.fit_campaign` returned (its ``model_``
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
        model = getattr(fit, "model_", fit)
        if not isinstance(model, DeviceModel):
            raise TypeError(f"from_fit needs a CampaignFit or a DeviceModel; got {type(fit).__name__}.")
        summary = getattr(fit, "summary_", None) or {}
        devices = summary.get("devices") or {}
        fitted = devices.get("fitted")
        if fitted is not None and int(fitted) <= 0:
            raise FitError(
                f"the fit used no cells (0 fitted of {devices.get('total', '?')}): there is no model to "
                "simulate. Check the cell flags (fit.cells_['flag']) and the fit options."
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

    def _seed_blocks(self) -> None:
        """One generator per block of the update, seeded from the array's generator.

        Every draw of :meth:`pulse` comes from the generator of the block it is for, so the
        results do not depend on the threads the blocks run on, nor on their timing.
        """
        g = self._generator
        count = -(-self.num_devices // self._block_size)
        base = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
        gens = []
        for seed in _block_seeds(base, count):
            gb = torch.Generator(device=g.device)
            gb.manual_seed(seed)
            gens.append(gb)
        self._block_gens = gens

    def _geometric(self, high: torch.Tensor, generator=None) -> torch.Tensor:
        """Pulses until the next switch of chains now in state ``high`` (>= 1; _NEVER if they cannot leave).

        ``P(wait = k) = (1 - p)**(k - 1) p`` with ``p`` the state's switching
        probability, drawn by ``Tensor.geometric_`` (a serial kernel: no thread
        pool, no MKL VML call, whose thread team costs milliseconds on a busy machine).
        """
        c = self._constants()
        g = self._generator if generator is None else generator
        any_high = bool(high.any())
        needed = (not bool(high.all()) if any_high else True, any_high)  # low chains, high chains
        waits = []
        for p, need in zip((c["p_up"], c["p_down"]), needed):
            w = torch.empty(high.shape if need else (0,), dtype=torch.float64, device=high.device)
            if need and 0.0 < p < 1.0:
                w.geometric_(p, generator=g)
            else:
                w.fill_(1.0 if p >= 1.0 else float(_NEVER))
            waits.append(w)
        if not needed[0]:
            wait = waits[1]
        elif not needed[1]:
            wait = waits[0]
        else:
            wait = torch.where(high, waits[1], waits[0])
        return wait.clamp_(max=_NEVER).to(torch.int32)

    def _rtn_switch(self, idx: torch.Tensor, high: torch.Tensor, wait: torch.Tensor, g) -> None:
        """Chains ``idx`` (of the block ``high``, ``wait``) whose waiting time ran out within this call's pulses.

        A chain switches at the end of its waiting time, spends the pulses left in the
        closed-form n-step law of the 2x2 matrix, and draws a new waiting time from the
        state it ends in (the chain is memoryless). Draws come from ``g``.
        """
        c = self._constants()
        p_up, p_down = c["p_up"], c["p_down"]
        was_high = high.index_select(0, idx)
        can_leave = torch.where(was_high, p_down > 0, p_up > 0)
        left = wait.index_select(0, idx).neg_().to(torch.float64)  # pulses after the first switch
        s = p_up + p_down
        lam_m = torch.pow(1.0 - s, left)
        pi_high = p_up / s if s > 0 else 0.0
        p_high = lam_m.mul_((~was_high).double().sub_(pi_high)).add_(pi_high)  # pi (1 - l) + l [low after switch]
        u = torch.rand(idx.shape, generator=g, device=idx.device, dtype=torch.float64)
        final = torch.where(can_leave, u < p_high, was_high)
        high.index_copy_(0, idx, final)
        wait.index_copy_(0, idx, self._geometric(final, g))

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
        """Resistance at the last read (Ohm), shape (num_devices,)."""
        return torch.mul(self.w, _LOG2E).exp2_().mul_(self.r0)  # as pulse() computes it

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
        """Validate pulse counts.

        Returns an int tensor on the array's device (shape () or (N,)), its value
        if it is a scalar, the smallest and largest count, and the smallest count
        of each block (None for a scalar).
        """
        big = f"pulse counts above {_MAX_COUNT} are not supported"
        if isinstance(n, (numbers.Integral, float)) and not isinstance(n, bool):
            if isinstance(n, float) and not n.is_integer():
                raise ValueError(f"pulse counts must be whole numbers; got {n}.")
            if n < 0:
                raise ValueError(f"pulse counts must be >= 0; got {n}.")
            if n > _MAX_COUNT:
                raise ValueError(f"{big}; got {n}.")
            return torch.tensor(int(n), dtype=torch.int64, device=self.device), int(n), int(n), int(n), None
        t = n if isinstance(n, torch.Tensor) else torch.as_tensor(np.asarray(n))
        if t.dtype == torch.bool:
            t = t.to(torch.int64)
        if t.is_complex():
            raise ValueError(f"pulse counts must be integers; got dtype {t.dtype}.")
        if tuple(t.shape) not in ((), (1,), (self.num_devices,)):
            raise ValueError(
                f"pulse counts of shape {tuple(t.shape)} do not match the array of {self.num_devices} "
                f"cells; pass an int, or a tensor of shape (), (1,) or ({self.num_devices},)."
            )
        if t.numel() == 0:
            raise ValueError("pulse counts are empty.")
        t = t.detach()
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
            if bool(hi > _MAX_COUNT):
                raise ValueError(f"{big}; got {float(hi):.0f}.")
            t = t.to(torch.int64)
        elif t.dtype not in (torch.int32, torch.int64):
            t = t.to(torch.int64)
        t = t.to(device=self.device)
        if t.dim() == 1 and t.numel() == 1 and self.num_devices != 1:
            t = t.reshape(())
        flat = t.reshape(-1)
        if flat.numel() > 1:  # block by block (a whole-array reduction would go to torch's thread pool)
            views = self._constants()["views"]
            bounds = [None] * len(views)

            def check(b):
                s, e = views[b]["range"]
                bounds[b] = torch.aminmax(flat[s:e])

            self._blocks(check)
            lows = [int(b[0]) for b in bounds]  # the smallest count of each block
            lo, hi = min(lows), max(int(b[1]) for b in bounds)
        else:
            lo = hi = int(flat[0])
            lows = None
        if lo < 0:
            i = int(torch.nonzero(flat < 0)[0])
            raise ValueError(f"pulse counts must be >= 0; cell {i} got {int(flat[i])}.")
        if hi > _MAX_COUNT:
            raise ValueError(f"{big}; got {hi}.")
        return t, (hi if t.dim() == 0 else None), lo, hi, lows

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
            "compiled": _compiled_dense() if self.compile else None,
            "out": torch.empty_like(self.w),
        }
        self._pulse_bound += hi
        views = c["views"]
        self._blocks(lambda b: self._pulse_block(b, views[b], call), balance=True)
        return call["out"]

    def _blocks(self, fn, balance: bool = False) -> None:
        """``fn(b)`` for every block: on the worker threads (CPU), or here (GPU, small arrays)."""
        c = self._constants()
        if c["threaded"]:
            _run_blocks(fn, len(c["views"]), block_threads(), balance)
        else:
            for b in range(len(c["views"])):
                fn(b)

    def _pulse_block(self, b: int, v: dict, call: dict) -> None:
        """``pulse()`` for block ``b`` (views ``v``): every draw from the block's own generator."""
        c = self._constants()
        g, dtype = self._block_gens[b], self.dtype
        horizon = c["horizon"]
        s, e = v["range"]
        scalar = call["scalar"]
        if scalar is not None:
            nb32 = scalar
            block_lo = scalar
        else:
            nb32 = call["n"][s:e]
            if nb32.dtype != torch.int32:  # counts are <= 2**30 (checked)
                nb32 = nb32.to(torch.int32)
            block_lo = call["lows"][b]
        t = v["pulses"]
        t.add_(nb32)
        if self.rtn:  # the telegraph chains whose waiting time runs out within these pulses
            wait = v["wait"]
            wait.sub_(nb32)
            idx = torch.nonzero(wait <= 0).squeeze(1)
            if idx.numel():
                self._rtn_switch(idx, v["high"], wait, g)
        rows = self._block_rows(v)
        z = off = gain = coef = table = None
        pink_on, states = self.pink, c["states"]
        if scalar is None and (block_lo == 0 or (pink_on and states)):
            # the n-step coefficients (one gather of all the rows) and [n > 0]
            table = c["coef"].index_select(1, nb32 if not call["clamp"] else nb32.clamp(max=horizon))
        if pink_on:
            z = torch.randn(c["draws"], e - s, generator=g, device=t.device, dtype=dtype)
            if states:
                coef = call["fixed"] if scalar is not None else table
                coef = tuple(coef[:9].unbind(0))
            if not call["t_clamp"]:
                off, gain = c["table"].index_select(1, t).unbind(0)
            elif t.device.type == "cpu" and int(t.min()) >= horizon:
                # every cell of the block is past the stand-in's memory: row T (a GPU skips the sync)
                off, gain = c["table"][:, horizon:].unbind(0)
            else:
                off, gain = c["table"].index_select(1, t.clamp(max=horizon)).unbind(0)
        args = (self._law, self.param_names, t.to(dtype), rows, v["x"], v["xr"], v["xi"], coef, z, c["white"],
                off, gain, pink_on, states)
        w_new = None
        compiled = call["compiled"] if self.compile else None
        if compiled is not None:
            try:
                w_new = compiled(*args)
            except Exception as err:  # no C++ compiler / Triton, unsupported op, ...
                with _POOL_LOCK:
                    warn, self.compile = self.compile, False
                if warn:
                    warnings.warn(
                        f"torch.compile of the pulse update failed ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); this array goes on in eager mode.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        if w_new is None:
            w_new = _dense(*args)
        if self.rtn:
            high = torch.nonzero(v["high"]).squeeze(1)
            if high.numel():
                amp = rows[c["amp_row"]].index_select(0, high)
                u = torch.rand(2, high.numel(), generator=g, device=t.device, dtype=dtype)
                w_new.index_add_(0, high, u[0].mul_(u[1]).mul_(amp))  # U1 U2 A, fresh at each read
        wb = v["w"]
        if block_lo == 0:  # cells given 0 pulses keep their read (weight 0 or 1: exact)
            wb.lerp_(w_new, table[9])
        else:
            wb.copy_(w_new)
        # R = r0 exp(w) = r0 2**(w log2 e) (torch.exp runs on the thread pool from 2048 elements on)
        ob = torch.mul(wb, _LOG2E, out=call["out"][s:e])
        ob.exp2_().mul_(rows[c["r0_row"]])

    def forward(self, n=1) -> torch.Tensor:
        """Same as :meth:`pulse`."""
        return self.pulse(n)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "rng_state": self._generator.get_state(),
            "rng_device": self._generator.device.type,
            "block_rng_states": torch.stack([gb.get_state() for gb in self._block_gens]),
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
        blocks = state["block_rng_states"].cpu()
        if state["rng_device"] == self._generator.device.type and len(blocks) == len(self._block_gens):
            self._generator.set_state(rng_state)
            for gb, st in zip(self._block_gens, blocks):
                gb.set_state(st.clone())
            return
        if state["rng_device"] == self._generator.device.type:
            self._generator.set_state(rng_state)
            why = (f"the state_dict comes from an update in {len(blocks)} block(s) and this array runs in "
                   f"{len(self._block_gens)}")
        else:
            seed = int.from_bytes(hashlib.sha256(rng_state.numpy().tobytes()).digest()[:8], "little")
            self._generator.manual_seed(seed >> 1)
            why = (f"the state_dict's random generator comes from a {state['rng_device']} device and this "
                   f"array lives on {self._generator.device.type}")
        self._seed_blocks()
        warnings.warn(
            f"{why}: the run goes on with generators seeded from it, so it continues in distribution "
            "but not draw for draw.",
            RuntimeWarning,
            stacklevel=2,
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_const_cache"] = None  # views of the buffers: rebuilt on demand
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._const_cache = None
        self._pulse_bound = int(self.pulses.max()) if self.num_devices else 0

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._const_cache = None
        dev = self.w.device
        if self._generator.device != dev:
            seed = self._numpy_seed()
            self._generator = torch.Generator(device=dev)
            self._generator.manual_seed(seed)
            self._block_size = _block_size(dev, self.num_devices)
            self._seed_blocks()
        return self
