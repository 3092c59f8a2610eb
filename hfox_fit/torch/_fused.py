"""The class path of :func:`~hfox_fit.torch._pairs.pulse_pairs` with the cells' arithmetic in compiled loops (numba).

The class path (:func:`~hfox_fit.torch._pairs._class_block`) gathers every field of
the pulsed cells by index (some 15 tensors), updates them by whole-tensor passes
and scatters them back: on a CPU two thirds of its time went to those gathers,
scatters and passes. Here loops compiled by numba (the GIL released, so the blocks still
run on the array's worker threads) list a block's pulsed pairs (:func:`_list_block`),
add their pulses (:func:`_advance_cells`) and update each pulsed cell in one pass
in index order, reading and writing the array's buffers in place (:func:`_update_listed`). The random numbers are drawn as the class path draws them, from the same
block generators, in the same order and the same amounts (the RTN switches, the
normal draws of each draw class, the telegraph's uniforms), and the read is computed
by the same torch call: the numbers differ from the class path's only by rounding
(a product and a sum may be fused differently), which
``tests/export/test_torch_fused.py`` checks.

Used by :func:`~hfox_fit.torch._pairs.pulse_pairs` on a CPU where numba is installed
(the ``train`` extra) and :data:`~hfox_fit.torch._pairs.FUSED` is on; without numba
the class path runs as before.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

try:  # (optional: the ``train`` extra)
    import numba
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None

from ._update import _PAD, LOG2E, rtn_switch

__all__ = ["AVAILABLE", "LAW_IDS", "fused_block", "listed", "usable"]

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


@_jit
def _list_block(signed, lo_a, lo_b):  # pragma: no cover - compiled
    """The pulsed pairs of a block in index order: ``(pairs, signed counts (int32), class sizes, smallest
    count, largest count)``; a count ``n`` is of draw class 0 below ``lo_a``, 1 below ``lo_b``, else 2
    (:func:`~hfox_fit.torch._update.draw_classes`)."""
    m = signed.shape[0]
    pairs = np.empty(m, np.int64)
    own = np.empty(m, np.int32)
    sizes = np.zeros(4, np.int64)  # (slot 3: the pairs given no pulse)
    lo = 0
    hi = 0
    k = 0
    for i in range(m):  # (without branches: a pulsed pair is as likely as not, a branch would be mispredicted)
        n = signed[i]
        lo = min(lo, n)
        hi = max(hi, n)
        a = abs(n)
        pairs[k] = i
        own[k] = n
        pulsed = n != 0
        k += pulsed
        sizes[3 - pulsed * (3 - (a >= lo_a) - (a >= lo_b))] += 1
    return pairs[:k], own[:k], sizes[:3], lo, hi


@_jit
def _advance_cells(order, own, start, half, pulses, wait, high, rtn, lo_a, lo_b):  # pragma: no cover - compiled
    """Each listed pair's pulsed cell (BL or BLb by the sign), its count and its new pulse count; adds the
    pulses and takes them off the telegraph chain's wait. Returns ``(cells, counts, t, switching, highs)``:
    ``switching`` the positions whose wait ran out, ``highs`` per draw class the cells whose chain is high
    and does not switch."""
    m = order.shape[0]
    cells = np.empty(m, np.int64)
    counts = np.empty(m, np.int32)
    t = np.empty(m, np.int64)
    switching = np.empty(m, np.int64)
    highs = np.zeros(3, np.int64)
    k = 0
    for j in range(m):
        if j + AHEAD < m:
            ahead = start + order[j + AHEAD] + (half if own[j + AHEAD] < 0 else 0)
            prefetch(pulses, ahead)
            prefetch(wait, ahead)
            prefetch(high, ahead)
        n = own[j]
        cell = start + order[j]
        if n < 0:
            n = -n
            cell += half
        cells[j] = cell
        counts[j] = n
        pulses[cell] += n
        t[j] = pulses[cell]
        if rtn:
            wait[cell] -= n
            if wait[cell] <= 0:
                switching[k] = j
                k += 1
            elif high[cell]:
                highs[0 if n < lo_a else (1 if n < lo_b else 2)] += 1
    return cells, counts, t, switching[:k], highs


# (No helper function reads a parameter: numba counts the references of the arrays passed to a call, some
# 60 ns a cell; the loop reads the rows itself.)


@_jit
def _update_listed(cells, counts, t, sizes, per, states, extra, law, law_rows, zall, coef, table, horizon,
                   params, bits, halves, c2c_of, scales, white, x, xr, xi, w, high, rtn, first_high, u, amp_row,
                   r0_row, wc, r0c, lo_a, lo_b):  # pragma: no cover - compiled
    """Pulse the listed cells in one pass, in index order: the drift law at the new pulse count, the pink
    term (as :func:`~hfox_fit.torch._update._dense`) and the telegraph term ``U1 U2 A`` where a chain is
    high; writes ``w`` and the pink states, and each cell's ``w`` and R0 into ``wc``, ``r0c``.

    The draws go where the class path puts them: a cell of draw class ``k`` and rank ``i`` in it takes
    row ``r`` of its normal numbers at ``zall[start_k + r * sizes[k] + i]``, and the ``q``-th high chain
    in class order (``first_high[k]`` + its rank among the class's high chains) takes ``u[:, q]``."""
    m = cells.shape[0]
    vals = np.empty(law_rows.shape[0], wc.dtype)  # the law's parameters of one cell (C2C added)
    base = np.zeros(3, np.int64)
    for k in range(1, 3):
        base[k] = base[k - 1] + per[k - 1] * sizes[k - 1]
    rank = np.zeros(3, np.int64)
    high_rank = first_high.copy()
    d_amp = c2c_of[amp_row]
    d_r0 = c2c_of[r0_row]
    for j in range(m):
        if j + AHEAD < m:
            ahead = cells[j + AHEAD]
            prefetch(x, ahead)
            prefetch(xr, ahead)
            prefetch(xi, ahead)
            prefetch(w, ahead)
            prefetch(high, ahead)
            for r in range(params.shape[0]):
                prefetch_row(params, r, ahead)
        cell = cells[j]
        n = counts[j]
        k = 0 if n < lo_a else (1 if n < lo_b else 2)
        i = rank[k]
        rank[k] = i + 1
        size = sizes[k]
        at = base[k] + i
        wc[j] = t[j]  # (the count in the array's float type, as t.to(dtype))
        tf = wc[j]
        for q in range(law_rows.shape[0]):
            r = law_rows[q]
            v = params[r, cell]
            d = c2c_of[r]
            if d >= 0:  # (the deviation's float16 bits, and each pattern's value)
                v = v + scales[d] * halves[bits[d, cell]]
            vals[q] = v
        # drift law (torch_law's formulas)
        if law == 0:
            before = tf if tf < vals[1] else vals[1]
            wn = vals[3] + vals[0] * before
            wn = wn + vals[2] * (tf - before)
        elif law == 1:
            wn = vals[2] + vals[0] * tf ** vals[1]
        else:
            wn = vals[2] + vals[0] * np.log1p(tf / vals[1])
        if per[k] > 0:
            tt = t[j] if t[j] < horizon else horizon
            if states:
                nn = n if n < horizon else horizon
                z0 = zall[at]
                x0 = x[cell] * coef[0, nn]
                x0 = x0 + coef[1, nn] * z0
                x[cell] = x0
                r_ = xr[cell]
                i_ = xi[cell]
                re = r_ * coef[3, nn]
                re = re - i_ * coef[4, nn]
                re = re + coef[5, nn] * z0
                im = i_ * coef[3, nn]
                im = im + r_ * coef[4, nn]
                im = im + coef[6, nn] * z0
                if k > 0:
                    z1 = zall[at + size]
                    re = re + coef[7, nn] * z1
                    im = im + coef[8, nn] * z1
                if k > 1:
                    im = im + coef[2, nn] * zall[at + 2 * size]
                xr[cell] = re
                xi[cell] = im
                core = re + x0
                if extra:
                    core = core + white * zall[at + (k + 1) * size]
            else:
                core = zall[at] * white
            wn = wn + table[0, tt]
            wn = wn + table[1, tt] * core
        if rtn and high[cell]:
            q = high_rank[k]
            high_rank[k] = q + 1
            amp = params[amp_row, cell]
            if d_amp >= 0:
                amp = amp + scales[d_amp] * halves[bits[d_amp, cell]]
            wn = wn + (u[0, q] * u[1, q]) * amp
        wc[j] = wn
        w[cell] = wn
        r0 = params[r0_row, cell]
        if d_r0 >= 0:
            r0 = r0 + scales[d_r0] * halves[bits[d_r0, cell]]
        r0c[j] = r0


#: The value of every float16 bit pattern (numba has no float16 type): the C2C deviations are stored as float16.
_HALVES = np.arange(1 << 16, dtype=np.uint16).view(np.float16)


def listed(signed: torch.Tensor, classes: tuple):
    """The pulsed pairs of a block from its signed counts (a CPU tensor), in index order: ``(pairs, their
    signed counts, class sizes, (smallest, largest) count)`` as numpy arrays, or None when none is pulsed."""
    pairs, own, sizes, lo, hi = _list_block(signed.numpy(), *classes)
    return None if pairs.size == 0 else (pairs, own, sizes, (int(lo), int(hi)))


_CHECKED: list = []  # (the outcome of the one check per process: [True] or [False])


def _compiles() -> bool:
    """Whether the loops compile and run here: tried once per process on a few cells, before any array's state
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
    """Every loop once, on 4 pairs (float32 cells, int32 counts)."""
    f32, i64 = np.float32, np.int64
    order, own, sizes, _, _ = _list_block(np.array([1, -2, 0, 3], np.int32), 2, 3)
    pulses, wait, high = np.zeros(8, np.int32), np.full(8, 2, np.int32), np.zeros(8, np.bool_)
    cells, counts, t, _, _ = _advance_cells(order, own, 0, 4, pulses, wait, high, True, 2, 3)
    state = [np.zeros(8, f32) for _ in range(4)]
    m = cells.size
    _update_listed(cells, counts, t, sizes, np.array([2, 3, 4], i64), True, True, 0, np.arange(4, dtype=i64),
                   np.zeros(64, f32), np.zeros((10, 5), f32), np.zeros((2, 5), f32), 4, np.ones((6, 8), f32),
                   np.zeros((0, 8), np.uint16), _HALVES.astype(f32), np.full(6, -1, i64), np.zeros(1, f32),
                   f32(0.1), *state, high, True, np.zeros(3, i64), np.zeros((2, 1), f32), 5, 4,
                   np.zeros(m, f32), np.zeros(m, f32), 2, 3)


def usable(arr) -> bool:
    """Whether the fused loops can pulse ``arr``: numba is installed and builds them, the array is on a CPU
    and its drift law has a loop here."""
    return AVAILABLE and arr.device.type == "cpu" and arr.model.law in LAW_IDS and _compiles()


def _fused_call(arr, c: dict, call: dict) -> None:
    """What every block of the fused path reads from ``call`` (numpy views of the buffers, the draw plan)."""
    law, names = LAW_IDS[arr.model.law]
    c2c_of = np.full(len(arr.param_names), -1, np.int64)
    for j, i in enumerate(arr._c2c_rows):
        c2c_of[i] = j
    dtype = arr.w.numpy().dtype
    states, white, pink = c["states"], c["white"], arr.pink
    extra = bool(states and white > 0)
    per = [0, 0, 0] if not pink else ([1, 1, 1] if not states else [k + extra for k in (1, 2, 3)])  # (update_by_class's)
    call["fused"] = {
        "law": law, "law_rows": np.array([arr.param_names.index(p) for p in names], np.int64),
        "c2c_of": c2c_of, "scales": np.array(c["c2c_scale"] or [0.0], dtype=dtype),
        "per": np.array(per, np.int64), "states": bool(states), "extra": extra,
        "white": dtype.type(white), "coef": c["coef"].numpy(), "table": c["table"].numpy(),
        "params": arr.cell_params.numpy(), "bits": arr.c2c_dev.numpy().view(np.uint16),
        "halves": _HALVES.astype(dtype),
        "pulses": arr.pulses.numpy(), "wait": arr.rtn_wait.numpy(), "high": arr.rtn_high.numpy(),
        "x": arr.pink_x.numpy(), "xr": arr.pink_xi[0].numpy(), "xi": arr.pink_xi[1].numpy(),
        "w": arr.w.numpy(), "dtype": dtype,
    }


def fused_block(arr, b: int, v: dict, call: dict, note) -> None:
    """Pulse the listed pairs of block ``b`` (``call["listing"][b]``, from :func:`list_block`): the class
    path's update and draws, in one pass over the pulsed cells in index order."""
    s, e = v["range"]
    half = arr.num_devices // 2
    out, prev = call["out"], call["prev"]
    if out is not prev:
        out[s:e].copy_(prev[s:e])
        out[half + s:half + e].copy_(prev[half + s:half + e])
    listing = call["listing"][b]
    if listing is None:
        return note(call, b, s, torch.zeros(0, dtype=torch.int64), None)
    order, own, sizes, _ = listing
    f, c = call["fused"], arr._constants()
    g, rtn = arr._block_gens[b], bool(arr.rtn)
    lo_a, lo_b = call["classes"]
    cells, counts, t, switching, highs = _advance_cells(order, own, s, half, f["pulses"], f["wait"], f["high"], rtn,
                                                        lo_a, lo_b)
    if switching.size:  # (few cells: the class path's draws, in its order, on their gathered state)
        n = counts[switching]
        classes = np.where(n < lo_a, 0, np.where(n < lo_b, 1, 2))
        in_order = np.argsort(classes, kind="stable")
        at = torch.from_numpy(cells[switching[in_order]])
        hi, wt = arr.rtn_high.index_select(0, at), arr.rtn_wait.index_select(0, at)
        rtn_switch(torch.arange(at.numel()), hi, wt, g, c["p_up"], c["p_down"])
        arr.rtn_high.index_copy_(0, at, hi)
        arr.rtn_wait.index_copy_(0, at, wt)
        highs += np.bincount(classes[in_order][hi.numpy()], minlength=3)
    m = cells.size
    total = int(f["per"] @ sizes)
    zall = torch.randn(total, generator=g, dtype=arr.dtype) if total else torch.zeros(1, dtype=arr.dtype)
    nh = int(highs.sum())
    u = torch.rand(2, nh, generator=g, dtype=arr.dtype) if nh else torch.zeros(2, 1, dtype=arr.dtype)
    first_high = np.concatenate([[0], np.cumsum(highs)[:2]]).astype(np.int64)
    padded = torch.zeros(-(-m // _PAD) * _PAD, dtype=arr.dtype)
    r0c = torch.empty(m, dtype=arr.dtype)
    _update_listed(cells, counts, t, sizes, f["per"], f["states"], f["extra"], f["law"], f["law_rows"], zall.numpy(),
                   f["coef"], f["table"], c["horizon"], f["params"], f["bits"], f["halves"], f["c2c_of"],
                   f["scales"], f["white"], f["x"], f["xr"], f["xi"], f["w"], f["high"], rtn, first_high,
                   u.numpy(), c["amp_row"], c["r0_row"], padded[:m].numpy(), r0c.numpy(), lo_a, lo_b)
    # R = r0 2**(w log2 e) by the class path's torch call (the padded buffer: every cell in the SIMD kernel)
    padded.mul_(LOG2E).exp2_()
    out.scatter_(0, torch.from_numpy(cells), torch.mul(padded[:m], r0c))
    note(call, b, s, torch.from_numpy(order), torch.from_numpy(counts))
