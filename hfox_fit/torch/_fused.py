"""pulse_pairs' update on a CPU as one compiled loop per block of pairs (numba), with its own random numbers.

The torch class path (:func:`~hfox_fit.torch._pairs._class_block`) lists a block's
pulsed pairs, gathers some 15 fields of each pulsed cell by index, updates them by
whole-tensor passes (a pass per operation, the normal numbers drawn as a tensor
first) and scatters them back. Here one loop, compiled by numba with the GIL
released (so the blocks still run on the array's worker threads), lists the block's
pulsed pairs and then reads, updates and writes back each pulsed cell in place:
its pulse count, its telegraph chain (a switch within the pulses ends them in the
closed-form law of the 2x2 matrix power and draws the next waiting time), the drift
law, the pink stand-in's n-step transition and the telegraph term, with the cache
lines of every other cell asked for a dozen cells ahead. It goes through the pairs
pulsed on their first cell, then those pulsed on their second: one half of the
array at a time.

The random numbers come from a splitmix64 stream per block and call, seeded by one
draw from the array's block generator: the numbers depend on the seed and the
counts only (not on the threads), and a resumed array (its generators restored)
draws them again. Normal numbers by the ziggurat method of Marsaglia and Tsang
(2000), with the layer and the value from separate bits. The law is the class
path's; the numbers are not (``tests/export/test_torch_fused.py`` compares the laws,
and the draws' own laws). The read ``R = R0 2**(w log2 e)`` is computed by the
torch call of the other paths, so a read does not depend on the path that made it.

Used by :func:`~hfox_fit.torch._pairs.pulse_pairs` on a CPU where numba is
installed (the ``train`` extra) and :data:`~hfox_fit.torch._pairs.FUSED` is on;
without numba, or where its loops fail to build, the torch class path runs.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings

import numpy as np
import torch
from torch.autograd.graph import increment_version

try:  # (optional: the ``train`` extra)
    import numba
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None

from ._update import _PAD, LOG2E, NEVER

__all__ = ["AVAILABLE", "LAW_IDS", "count_writes", "counts_block", "fused_block", "read_block", "read_signs",
           "usable"]

#: Whether numba is installed (the fused loops can run).
AVAILABLE = numba is not None
_LOCK = threading.Lock()

#: The drift laws the loops compute, by the name of :data:`hfox_fit.laws.DRIFT_LAWS`, and the parameters
#: each reads (in this order).
LAW_IDS = {"two_slope": (0, ("m1", "t_star", "m2", "c1")), "power": (1, ("a", "b", "c1")),
           "log": (2, ("a", "tau", "c1"))}


def _jit(fn=None, **options):
    if fn is None:
        return lambda f: _jit(f, **options)
    return numba.njit(nogil=True, cache=True, **options)(fn) if AVAILABLE else fn


def _prefetch_intrinsics():
    """``prefetch(array, i)`` and ``prefetch_row(array, i, j)``: a hint that the cache line of ``array[i(, j)]`` will be read soon
    (LLVM's ``llvm.prefetch``). The loops below gather cells some way apart; the hint keeps several of
    their cache lines on the way at once, where the loop body alone is too long for the processor to look
    that far ahead (one pass took 20 ms instead of 30-48 ms on this machine)."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, list(args[1:]), wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        # read (0), high locality (3), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    @intrinsic
    def prefetch(typingctx, arr, i):
        return types.void(arr, i), codegen

    @intrinsic
    def prefetch_row(typingctx, arr, i, j):
        return types.void(arr, i, j), codegen

    return prefetch, prefetch_row


if AVAILABLE:
    prefetch, prefetch_row = _prefetch_intrinsics()

#: How many cells ahead the loops ask for the cache lines of (8 and 16 did best on a 2-core EPYC).
AHEAD = 12

# ---------------------------------------------------------------- random numbers
# splitmix64 (Steele, Lea and Flood 2014): the state advances by a constant, each output is a mix of it.
# (numba mixes unsigned and signed integers into floats: every constant here is a uint64.)
_U = np.uint64
_GOLDEN, _M1, _M2 = _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
_S30, _S27, _S31, _S32, _S40, _S11, _LOW7 = _U(30), _U(27), _U(31), _U(32), _U(40), _U(11), _U(127)


def _ziggurat_tables():
    """Marsaglia and Tsang's 128-layer ziggurat for the standard normal: the layers' integer bounds ``kn``,
    widths ``wn`` (per unit of a signed 32-bit integer) and densities ``fn``; ``R`` is the base's edge."""
    r, v, scale = 3.442619855899, 9.91256303526217e-3, 2147483648.0
    kn, wn, fn = np.zeros(128, np.int64), np.zeros(128), np.zeros(128)
    dn = tn = r
    q = v / math.exp(-0.5 * dn * dn)
    kn[0], kn[1] = int(dn / q * scale), 0
    wn[0], wn[127] = q / scale, dn / scale
    fn[0], fn[127] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(v / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int(dn / tn * scale)
        tn = dn
        fn[i], wn[i] = math.exp(-0.5 * dn * dn), dn / scale
    return r, kn, wn, fn


# (module-level arrays: numba compiles them in as constants, so no call passes them)
_R, _KN, _WN, _FN = _ziggurat_tables()


@_jit(inline="always")
def _mix(s):  # pragma: no cover - compiled
    z = (s ^ (s >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@_jit(inline="always")
def _uniform(s):  # pragma: no cover - compiled
    """The next state and a uniform number in [0, 1) with 53 random bits."""
    s = s + _GOLDEN
    return s, (_mix(s) >> _S11) * (1.0 / 9007199254740992.0)


@_jit(inline="always")
def _uniform24(s):  # pragma: no cover - compiled
    """The next state and a uniform number in [0, 1) with 24 random bits (torch.rand's float32 law)."""
    s = s + _GOLDEN
    return s, (_mix(s) >> _S40) * (1.0 / 16777216.0)


@_jit
def _normal_edge(s, hz, iz):  # pragma: no cover - compiled
    """The ziggurat's rare cases (about 1 draw in 100): a wedge, or the base's tail beyond ``R``."""
    while True:
        x = hz * _WN[iz]
        if iz == 0:  # the tail, by Marsaglia's method
            while True:
                s, u1 = _uniform(s)
                s, u2 = _uniform(s)
                x = -math.log(1.0 - u1) / _R
                y = -math.log(1.0 - u2)
                if y + y >= x * x:
                    break
            return s, (_R + x if hz > 0 else -_R - x)
        s, u = _uniform(s)
        if _FN[iz] + u * (_FN[iz - 1] - _FN[iz]) < math.exp(-0.5 * x * x):
            return s, x
        s, hz, iz = _layer(s)
        if abs(hz) < _KN[iz]:
            return s, hz * _WN[iz]


@_jit(inline="always")
def _layer(s):  # pragma: no cover - compiled
    """The next state, a signed 32-bit value (the upper bits) and a ziggurat layer (the lowest 7 bits)."""
    s = s + _GOLDEN
    z = _mix(s)
    return s, np.int64(z >> _S32) - 2147483648, np.int64(z & _LOW7)


@_jit(inline="always")
def _normal(s):  # pragma: no cover - compiled
    """The next state and a standard normal number (inside a layer's rectangle but for about 1 draw in 100)."""
    s, hz, iz = _layer(s)
    if abs(hz) < _KN[iz]:
        return s, hz * _WN[iz]
    return _normal_edge(s, hz, iz)


@_jit
def _geometric_wait(s, p):  # pragma: no cover - compiled
    """The next state and the pulses until a chain with switching probability ``p`` per pulse switches
    (``geometric_wait``'s law: >= 1, :data:`NEVER` if it cannot)."""
    if p >= 1.0:
        return s, 1
    if p <= 0.0:
        return s, NEVER
    s, u = _uniform(s)
    k = math.ceil(math.log(1.0 - u) / math.log1p(-p))
    return s, int(min(max(k, 1.0), float(NEVER)))


@_jit
def normals_for_test(seed, n):  # pragma: no cover - compiled
    """``n`` normal numbers of the stream ``seed`` (the tests check their law)."""
    out = np.empty(n)
    s = _U(seed)
    for i in range(n):
        s, out[i] = _normal(s)
    return out


@_jit
def waits_for_test(seed, p, n):  # pragma: no cover - compiled
    """``n`` waiting times of switching probability ``p`` (the tests check their law)."""
    out = np.empty(n, np.int64)
    s = _U(seed)
    for i in range(n):
        s, out[i] = _geometric_wait(s, p)
    return out


# ---------------------------------------------------------------- the loop
@_jit
def _pulse_block(signed, start, half, seed, lo_a, lo_b, pulses, wait, high, x, xr, xi, w, params, bits, halves,
                 c2c_of, scales, law, law_rows, pink, states, extra, white, coef, table, horizon, rtn, p_up,
                 p_down, amp_row, r0_row, pairs, own, cells, wc, log2e, r0c):  # pragma: no cover - compiled
    """Pulse the pairs of one block (``signed``: their signed counts; pair ``i`` is cells ``start + i`` and
    ``start + i + half``): returns how many were pulsed and their pulses in all, the pulsed pairs listed in
    ``pairs`` (indices in the array) with their pulses in ``own``; each pulsed cell in ``cells``, its new ``w``
    times ``log2e`` in ``wc`` (the rest of ``wc``, up to a whole number of ``_PAD``, zero) and R0 in ``r0c``.

    A cell's parameters (``law_rows``, the RTN amplitude, R0) are its own plus its scaled C2C deviation
    (``bits``: the deviations' float16 bits, ``halves`` each pattern's value). Scalars, not small arrays,
    hold the per-cell values: a value stored and read back, or an array passed to a helper (numba counts
    its references), cost a large share of the loop."""
    # the pulsed pairs, by one scan without branches (a pulsed pair is about as likely as not): those pulsed
    # on their first cell, then those pulsed on their second (listed in ``cells`` first). The loop then goes
    # through one half of the array, then the other: 13 streams of cache lines at a time instead of 26,
    # which the processor keeps on the way (a pulsed cell took half the time in a loop moving the state)
    a = 0
    b = 0
    for i in range(signed.shape[0]):
        n = signed[i]
        pairs[a] = start + i
        cells[b] = start + i
        a += n > 0
        b += n < 0
    for k in range(b):
        pairs[a + k] = cells[k]
    m = a + b
    nrows = law_rows.shape[0]
    ra, rb, rc = law_rows[0], law_rows[1], law_rows[2]
    rd = law_rows[3] if nrows > 3 else rc
    da, db, dc, dd = c2c_of[ra], c2c_of[rb], c2c_of[rc], c2c_of[rd]
    any_c2c = da >= 0 or db >= 0 or dc >= 0 or dd >= 0
    d_amp, d_r0 = c2c_of[amp_row], c2c_of[r0_row]
    s_rtn = p_up + p_down
    pi_high = p_up / s_rtn if s_rtn > 0 else 0.0
    s = _mix(_U(seed))
    total = 0
    # (unsigned indices: numba checks a signed index for a negative value, to count from the end; some 30
    # accesses a cell made that 5-10 % of the loop's time)
    ua, ub, uc, ud, uamp, ur0 = _U(ra), _U(rb), _U(rc), _U(rd), _U(amp_row), _U(r0_row)
    for j in range(m):
        # (every other cell: a cache line holds about three pulsed cells of a half; asking for it at each
        # took more instructions than it saved, 22.1 against 24.1 ms a call on one thread)
        if (j & 1) == 0 and j + AHEAD < m:
            ahead = pairs[j + AHEAD] + (half if j + AHEAD >= a else 0)
            prefetch(pulses, ahead)
            prefetch(wait, ahead)
            prefetch(high, ahead)
            prefetch(x, ahead)
            prefetch(xr, ahead)
            prefetch(xi, ahead)
            prefetch(w, ahead)
            for r in range(params.shape[0]):
                prefetch_row(params, r, ahead)
        cell = pairs[j]
        n = signed[_U(cell - start)]
        if j >= a:
            n = -n
            cell += half
        own[j] = n
        total += n
        cells[j] = cell
        cu = _U(cell)
        t = pulses[cu] + n
        pulses[cu] = t
        hi = False
        if rtn:
            hi = high[cu]
            left = wait[cu] - n
            if left <= 0:  # the chain switched -left pulses before the end: the 2x2 law over those
                can_leave = p_down > 0 if hi else p_up > 0
                if can_leave:
                    p_high = pi_high + (1.0 - s_rtn) ** (-left) * ((0.0 if hi else 1.0) - pi_high)
                    s, u = _uniform(s)
                    hi = u < p_high
                s, left = _geometric_wait(s, p_down if hi else p_up)
                high[cu] = hi
            wait[cu] = left
        tf = float(t)
        va, vb, vc, vd = params[ua, cu], params[ub, cu], params[uc, cu], params[ud, cu]
        if any_c2c:
            if da >= 0:
                va = va + scales[da] * halves[bits[da, cu]]
            if db >= 0:
                vb = vb + scales[db] * halves[bits[db, cu]]
            if dc >= 0:
                vc = vc + scales[dc] * halves[bits[dc, cu]]
            if dd >= 0:
                vd = vd + scales[dd] * halves[bits[dd, cu]]
        # drift law (torch_law's formulas)
        if law == 0:
            before = tf if tf < vb else vb
            wn = vd + va * before + vc * (tf - before)
        elif law == 1:
            wn = vc + va * tf ** vb
        else:
            wn = vc + va * math.log1p(tf / vb)
        if pink:
            if states:
                # the stand-in's n-step transition: its innovation has rank min(n, 3) (see draw_classes)
                nn = n if n < horizon else horizon
                nu = _U(nn)
                s, z0 = _normal(s)
                x0 = x[cu] * coef[0, nu] + coef[1, nu] * z0
                r_, i_ = xr[cu], xi[cu]
                re = r_ * coef[3, nu] - i_ * coef[4, nu] + coef[5, nu] * z0
                im = i_ * coef[3, nu] + r_ * coef[4, nu] + coef[6, nu] * z0
                if n >= lo_a:
                    s, z1 = _normal(s)
                    re += coef[7, nu] * z1
                    im += coef[8, nu] * z1
                    if n >= lo_b:
                        s, z2 = _normal(s)
                        im += coef[2, nu] * z2
                x[cu] = x0
                xr[cu] = re
                xi[cu] = im
                core = re + x0
                if extra:
                    s, zw = _normal(s)
                    core += white * zw
            else:
                s, z0 = _normal(s)
                core = z0 * white
            tt = t if t < horizon else horizon
            tu = _U(tt)
            wn = wn + table[0, tu] + table[1, tu] * core
        if hi:
            s, u1 = _uniform24(s)
            s, u2 = _uniform24(s)
            amp = params[uamp, cu]
            if d_amp >= 0:
                amp = amp + scales[d_amp] * halves[bits[d_amp, cu]]
            wn = wn + u1 * u2 * amp
        w[cu] = wn
        wc[j] = w[cu] * log2e  # (torch.mul(w, LOG2E)'s numbers: one rounding in the cells' type)
        r0 = params[ur0, cu]
        if d_r0 >= 0:
            r0 = r0 + scales[d_r0] * halves[bits[d_r0, cu]]
        r0c[j] = r0
    for j in range(m, min(-(-m // _PAD) * _PAD, wc.shape[0])):
        wc[j] = 0.0
    return m, total


@_jit
def scatter_reads(out, cells, e, r0c, m):  # pragma: no cover - compiled
    """``out[cells[j]] = e[j] * r0c[j]`` for the first ``m`` cells (torch.mul's numbers: one rounding)."""
    for j in range(m):
        out[cells[j]] = e[j] * r0c[j]


@_jit
def read_signs(out, pairs, m, signs, half):  # pragma: no cover - compiled
    """Read the first ``m`` ``pairs`` by sign_readout (+1 where ``out[p] >= out[p + half]``, else -1) into
    ``signs``; returns how many changed."""
    flips = 0
    for j in range(m):
        p = pairs[j]
        now = 1.0 if out[p] >= out[p + half] else -1.0
        flips += now != signs[p]
        signs[p] = now
    return flips


@_jit
def counts_block(flat, before, scale, most, n):  # pragma: no cover - compiled
    """``n = clip(round((flat - before) / scale), -most, most)`` (round half to even, as torch.round) in one pass,
    in the arrays' type as the torch passes compute it; returns whether every update is finite (else the counts
    are not used) and the smallest and largest count. Without branches, so that the loop runs on vectors."""
    bad = False
    lo = np.int32(most)
    hi = np.int32(-most)
    for i in range(flat.shape[0]):
        d = (flat[i] - before[i]) / scale
        bad |= not d - d == 0  # (NaN or infinite: d - d is NaN)
        d = np.rint(d)
        d = d if d > -most else -most
        d = d if d < most else most
        k = np.int32(d)
        n[i] = k
        lo = min(lo, k)  # (on integers: a reduction the compiler keeps on vectors)
        hi = max(hi, k)
    return not bad, lo, hi


@_jit
def read_block(r_bl, r_blb, kept, flat):  # pragma: no cover - compiled
    """Read each pair by sign_readout (+1 where ``R_BL >= R_BLb``, else -1) into ``kept`` and ``flat``; returns
    how many weights changed."""
    flips = 0
    for i in range(kept.shape[0]):
        now = 1.0 if r_bl[i] >= r_blb[i] else -1.0
        flips += now != kept[i]
        kept[i] = now
        flat[i] = now
    return flips


#: The value of every float16 bit pattern (numba has no float16 type): the C2C deviations are stored as float16.
_HALVES = np.arange(1 << 16, dtype=np.uint16).view(np.float16)

@functools.cache
def _halves(dtype: np.dtype) -> np.ndarray:
    """:data:`_HALVES` in ``dtype`` (made once per type: 65,536 values, not per call)."""
    return _HALVES.astype(dtype)


_CHECKED: list = []  # (the outcome of the one check per process: [True] or [False])


def _compiles() -> bool:
    """Whether the loop compiles and runs here: tried once per process on a few cells, before any array's state
    is touched (numba keeps the compiled code on disk, so later processes load it). A failure warns once, and
    the class path pulses instead."""
    if not _CHECKED:
        with _LOCK:
            if not _CHECKED:
                try:
                    _try_loops()
                    _CHECKED.append(True)
                except Exception as err:  # (a numba / LLVM that cannot build them)
                    warnings.warn(f"the compiled pulse loops (numba) failed here ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); pulse_pairs goes on by torch "
                                  "operations, with the same law.", RuntimeWarning, stacklevel=4)
                    _CHECKED.append(False)
    return _CHECKED[0]


def _try_loops() -> None:
    """The loop once, on 4 pairs (float32 cells, int32 counts)."""
    f32, i64 = np.float32, np.int64
    z = [np.zeros(8, f32) for _ in range(4)]
    _pulse_block(np.array([1, -2, 0, 3], np.int32), 0, 4, 7, 2, 3, np.zeros(8, np.int32), np.full(8, 2, np.int32),
                 np.zeros(8, np.bool_), *z, np.ones((6, 8), f32), np.zeros((0, 8), np.uint16), _HALVES.astype(f32),
                 np.full(6, -1, i64), np.zeros(1, f32), 0, np.arange(4, dtype=i64), True, True, True, f32(0.1),
                 np.zeros((10, 5), f32), np.zeros((2, 5), f32), 4, True, 0.1, 0.2, 5, 4, np.zeros(4, i64),
                 np.zeros(4, np.int32), np.zeros(4, i64), np.zeros(4, f32), f32(LOG2E), np.zeros(4, f32))
    scatter_reads(np.zeros(8, f32), np.arange(4, dtype=i64), np.ones(4, f32), np.ones(4, f32), 4)
    read_signs(np.zeros(8, f32), np.arange(4, dtype=i64), 4, np.zeros(4, f32), 4)
    counts_block(np.ones(4, f32), np.zeros(4, f32), f32(0.5), f32(14), np.zeros(4, np.int32))
    read_block(np.ones(4, f32), np.zeros(4, f32), np.zeros(4, f32), np.zeros(4, f32))


def count_writes(*tensors: torch.Tensor) -> None:
    """Count one write to each tensor in torch's version counters: the loops write through numpy views, which
    the counters do not see, and kept reads and weights are checked by them (as a torch write would count)."""
    for t in tensors:
        increment_version(t)


def usable(arr) -> bool:
    """Whether the fused loop can pulse ``arr``: numba is installed and builds it, the array is on a CPU and
    its drift law has a loop here."""
    return AVAILABLE and arr.device.type == "cpu" and arr.model.law in LAW_IDS and _compiles()


def fused_call(arr, c: dict, call: dict, blocks: int) -> None:
    """What every block of the fused path reads from ``call`` (numpy views of the buffers, the switches), and
    the seeds of the ``blocks`` blocks' streams for this call (block b's from the array's block generator b),
    drawn here on the calling thread: one torch call each took 37 us on a worker thread, 2 us here."""
    call["seeds"] = [int(torch.randint(0, 1 << 62, (1,), generator=arr._block_gens[b])) for b in range(blocks)]
    law, names = LAW_IDS[arr.model.law]
    c2c_of = np.full(len(arr.param_names), -1, np.int64)
    for j, i in enumerate(arr._c2c_rows):
        c2c_of[i] = j
    dtype = arr.w.numpy().dtype
    call["fused"] = {
        "law": law, "law_rows": np.array([arr.param_names.index(p) for p in names], np.int64),
        "c2c_of": c2c_of, "scales": np.array(c["c2c_scale"] or [0.0], dtype=dtype),
        "pink": bool(arr.pink), "states": bool(c["states"]), "extra": bool(c["states"] and c["white"] > 0),
        "white": float(c["white"]), "coef": c["coef"].numpy(), "table": c["table"].numpy(),
        "params": arr.cell_params.numpy(), "bits": arr.c2c_dev.numpy().view(np.uint16),
        "halves": _halves(dtype), "log2e": dtype.type(LOG2E), "pulses": arr.pulses.numpy(),
        "wait": arr.rtn_wait.numpy(), "high": arr.rtn_high.numpy(), "x": arr.pink_x.numpy(), "xr": arr.pink_xi[0].numpy(),
        "xi": arr.pink_xi[1].numpy(), "w": arr.w.numpy(),
    }


def fused_block(arr, b: int, v: dict, call: dict, note) -> None:
    """Pulse the pairs of block ``b`` by :func:`_pulse_block`, then read the pulsed cells (the torch call of
    the class path) into ``call["out"]``; ``note`` keeps the pulsed pairs for ``record``."""
    s, e = v["range"]
    half = arr.num_devices // 2
    out, prev = call["out"], call["prev"]
    if out is not prev:
        out[s:e].copy_(prev[s:e])
        out[half + s:half + e].copy_(prev[half + s:half + e])
    f, c = call["fused"], arr._constants()
    seed = call["seeds"][b]
    size = e - s
    pairs, own = np.empty(size, np.int64), np.empty(size, np.int32)
    cells = np.empty(size, np.int64)
    padded = torch.empty(-(-size // _PAD) * _PAD, dtype=arr.dtype)
    r0c = np.empty(size, f["w"].dtype)
    lo_a, lo_b = call["classes"]
    m, total = _pulse_block(call["signed"][s:e].numpy(), s, half, seed, lo_a, lo_b, f["pulses"], f["wait"],
                            f["high"], f["x"], f["xr"], f["xi"], f["w"], f["params"], f["bits"], f["halves"],
                            f["c2c_of"], f["scales"], f["law"], f["law_rows"], f["pink"], f["states"], f["extra"],
                            f["white"], f["coef"], f["table"], c["horizon"], bool(arr.rtn), c["p_up"], c["p_down"],
                            c["amp_row"], c["r0_row"], pairs, own, cells, padded.numpy(), f["log2e"], r0c)
    if m == 0:
        return note(call, b, 0, torch.zeros(0, dtype=torch.int64), None)
    # R = r0 2**(w log2 e) by the class path's torch exp2 (on whole vector steps: every cell in the SIMD kernel)
    padded[:-(-m // _PAD) * _PAD].exp2_()
    scatter_reads(out.numpy(), cells, padded.numpy(), r0c, m)
    if call.get("signs") is not None:  # (the pairs' weights read here, while their reads are in cache)
        call["flips"][b] = read_signs(out.numpy(), pairs, m, call["signs"], half)
    note(call, b, 0, torch.from_numpy(pairs[:m]), torch.from_numpy(own[:m]), total)
