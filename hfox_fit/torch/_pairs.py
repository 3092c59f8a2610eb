"""Pulsing one cell of each pair: :meth:`WeakResetArray.pulse_pairs <hfox_fit.torch.WeakResetArray.pulse_pairs>`.

:class:`~hfox_fit.torch.CellBackedWeights` keeps each weight in cells ``i`` (BL)
and ``i + half`` (BLb) and pulses one of them per step, by the sign of the
update. Through :meth:`~hfox_fit.torch.WeakResetArray.pulse` the cells that get
0 pulses (half of them at least) still cost a full update each, or a gather and
scatter by index. Two paths here, with the same law:

* ``"classes"`` (the default, :func:`_class_block`): the pairs given pulses are
  listed by one stable sort of a small key, grouped by how many normal draws their
  count needs (the stand-in's n-step innovation has rank ``min(n, 3)``: a cell given
  one pulse needs 2 draws, two pulses 3, more 4; see
  :func:`~hfox_fit.torch._update.draw_classes`); each pulsed cell is gathered by
  index, updated by :func:`~hfox_fit.torch._update.update_by_class` and scattered
  back. Idle pairs cost the key and the sort only; a block where few pairs are pulsed
  (:data:`LIST_SHARE`) lists them by one scan and sorts their keys alone, in the same order.
  On a CPU where numba is installed the same law runs as one compiled loop per block
  (:mod:`hfox_fit.torch._fused`, :data:`FUSED`), with its own random numbers.
* ``"select"`` (:func:`_pair_block`, the reference, and the path of a compiled
  array): each pair's pulsed cell is picked out by a select (bitwise, on the sign),
  every pair is updated by the closed-form block update of ``pulse`` (a pair given
  0 pulses by 0 pulses, which leaves it as it was) and written back by a select.

The two give different numbers to a cell, with the same law
(``tests/export/test_torch_pairs.py`` compares them over many cells). The pairs run
in blocks of :data:`PAIR_BLOCK` times the array's block size on the worker threads,
block ``b`` drawing from the array's block generator ``b``, so the numbers do not depend on the threads.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from . import _fused
from ._counts import MAX_COUNT, pulse_counts
from ._threads import _run_blocks, block_threads
from ._update import _STATE, NEVER, _update_cells, draw_classes, update_by_class

__all__ = ["fused_pairs", "pulse_pairs", "pulse_pairs_reading"]


#: A block of pairs holds this many times the array's block size in pairs (twice its cells): each block costs
#: about 0.6 ms of fixed work on a CPU (some 150 torch calls), so fewer, larger blocks cost less (one thread,
#: 2.4 million pairs, 44 % pulsed: 78 ms a call against 90 ms with blocks of the array's size). Block ``b`` of
#: pairs still draws from the array's block generator ``b`` (there are at least as many).
PAIR_BLOCK = 2


def _pair_views(arr) -> list:
    """Per block of pairs: its range of pairs and views of the BL and BLb cells' state (cached)."""
    c = arr._constants()
    if "pairs" not in c:
        half, block = arr.num_devices // 2, PAIR_BLOCK * arr._block_size
        bufs = {"pulses": arr.pulses, "wait": arr.rtn_wait, "high": arr.rtn_high, "x": arr.pink_x,
                "xr": arr.pink_xi[0], "xi": arr.pink_xi[1], "w": arr.w}

        def side(s, e):
            v = {k: buf[s:e] for k, buf in bufs.items()}
            v["params"] = tuple(arr.cell_params[:, s:e].unbind(0))
            v["c2c"] = tuple(arr.c2c_dev[:, s:e].unbind(0))
            return v

        c["pairs"] = [{"range": (s, min(s + block, half)), "bl": side(s, min(s + block, half)),
                       "blb": side(half + s, half + min(s + block, half))} for s in range(0, half, block)]
    return c["pairs"]


_BITS = {1: torch.bool, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class _Select:
    """``torch.where(cond, a, b)`` bit for bit, as ``b ^ ((a ^ b) & mask)`` on the values' bits.

    (The CPU ``torch.where`` is not vectorized: several times slower than these three bitwise operations.)
    """

    def __init__(self, cond: torch.Tensor):
        self.cond = cond
        self.masks = {1: cond}

    def _mask(self, size: int) -> torch.Tensor:
        if size not in self.masks:
            self.masks[size] = self.cond.to(_BITS[size]).neg_()  # all bits set where cond
        return self.masks[size]

    def __call__(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        size = a.element_size()
        bits = _BITS[size]
        ai, bi = (x.view(bits) for x in (a, b))
        picked = torch.bitwise_xor(ai, bi).bitwise_and_(self._mask(size))
        if out is None:
            return picked.bitwise_xor_(bi).view(a.dtype)
        return torch.bitwise_xor(picked, bi, out=out.view(bits))


def _pair_block(arr, b: int, v: dict, call: dict) -> None:
    """Pulse the pairs of block ``b``: select each pair's pulsed cell, update it, write it back."""
    s, e = v["range"]
    half = arr.num_devices // 2
    signed = call["signed"][s:e]
    pos, neg = _Select(signed > 0), _Select(signed < 0)
    bl, blb = v["bl"], v["blb"]
    keys = [k for k in _STATE if (k not in ("wait", "high") or arr.rtn) and
            (k not in ("x", "xr", "xi") or (arr.pink and arr._constants()["states"]))]
    cell = {k: pos(bl[k], blb[k]) for k in keys}
    cell["params"] = tuple(pos(p, q) for p, q in zip(bl["params"], blb["params"]))
    cell["c2c"] = tuple(pos(p, q) for p, q in zip(bl["c2c"], blb["c2c"]))
    r = torch.empty(e - s, dtype=arr.dtype, device=arr.device)
    _update_cells(arr, b, cell, call["n"][s:e], call["lows"][b], r, call)
    for k in keys:  # (a pair given 0 pulses writes nothing back)
        pos(cell[k], bl[k], out=bl[k])
        neg(cell[k], blb[k], out=blb[k])
    out, prev = call["out"], call["prev"]
    pos(r, prev[s:e], out=out[s:e])
    neg(r, prev[half + s:half + e], out=out[half + s:half + e])


#: A block of pairs where at most this share of the pairs is pulsed lists them by one scan and sorts their keys
#: alone; above it, one sort of every pair's key costs less than the scan and a sort of most pairs.
LIST_SHARE = 0.15


def _class_key(mag: torch.Tensor, classes: tuple) -> torch.Tensor:
    """Each count's draw class (int8): 0 for no pulse, then 1, 2, 3 (see :func:`_class_block`)."""
    lo_a, lo_b = classes
    if (lo_a, lo_b) == (2, 3):  # (the stand-in's usual ranks: the key is the count, up to 3)
        return torch.clamp(mag, max=3).to(torch.int8)
    key = torch.ge(mag, 1).to(torch.int8)
    if lo_a < NEVER:
        key.add_(torch.ge(mag, lo_a))
    if lo_b < NEVER:
        key.add_(torch.ge(mag, lo_b))
    return key


def _class_sizes(keys: torch.Tensor, call: dict) -> tuple:
    """How many of the sorted ``keys`` fall in each draw class (keys 1, 2, 3)."""
    k1, *ends = torch.searchsorted(keys, call["class_keys"]).tolist()  # where keys 1, 2, 3, 4 start
    return tuple(hi - lo for lo, hi in zip([k1, *ends], ends))


#: On a CPU, list the pulsed pairs by numpy (:func:`_listed_cpu`) instead of torch's sort (the same order).
NUMPY_LISTING = True
#: With :data:`NUMPY_LISTING`, list each block's pulsed pairs from the signed counts before any update
#: (:func:`_listed_signed`: one scan of the block, the rest on the pulsed pairs alone), which also gives the
#: counts' bounds; otherwise their magnitudes, keys and bounds take passes over every pair (the same order).
SIGNED_LISTING = True

#: With :data:`SIGNED_LISTING`, pulse the pairs by the compiled loop of :mod:`hfox_fit.torch._fused` where
#: numba is installed (the class path's law, with its own random numbers).
FUSED = True

_SETTINGS = ("NUMPY_LISTING", "SIGNED_LISTING", "LIST_SHARE", "PAIR_BLOCK", "FUSED")


@contextlib.contextmanager
def settings(**values):
    """The module's path settings (:data:`NUMPY_LISTING`, :data:`SIGNED_LISTING`, :data:`LIST_SHARE`,
    :data:`PAIR_BLOCK`, :data:`FUSED`) for a block,
    then back as they were: how the benchmarks time one path against another (``PAIR_BLOCK`` counts when an
    array lays out its blocks of pairs, at its first call)."""
    unknown = sorted(set(values) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"settings: unknown setting(s) {unknown}; expected some of {list(_SETTINGS)}")
    module = globals()
    before = {k: module[k] for k in values}
    module.update(values)
    try:
        yield
    finally:
        module.update(before)


def _listed_cpu(key: torch.Tensor) -> tuple:
    """The pulsed pairs of a block (``key`` > 0) class by class, each class in index order, and the class sizes.

    The order one stable sort of every pair's key gives (so the same draws go to the same cells), made on
    a CPU by numpy: a scan for key 1 (most pulsed pairs get one pulse) and one for keys 2 and 3, whose
    few entries alone are sorted. (torch's CPU ``sort`` and ``nonzero`` take 4 to 10 ns per element,
    numpy's ``flatnonzero`` about 0.6: the sort was the largest cost of a block after the gathers.)
    """
    at, sizes = _class_order(key.numpy())
    return torch.from_numpy(at.astype(np.int64, copy=False)), sizes


def _class_order(k: np.ndarray) -> tuple:
    """Positions of the keys ``k`` >= 1 class by class (each in index order), and the class sizes (numpy)."""
    ones = np.flatnonzero(k == 1)
    if ones.size == k.size:  # (often, listing the pulsed pairs alone: most get one pulse)
        return ones, (int(ones.size), 0, 0)
    rest = np.flatnonzero(k >= 2)
    twos = 0
    if rest.size:
        rest_keys = k[rest]
        rest = rest[np.argsort(rest_keys, kind="stable")]
        twos = int(np.count_nonzero(rest_keys == 2))
    return np.concatenate([ones, rest]), (int(ones.size), twos, int(rest.size) - twos)


#: A block where more than this share of the pairs is pulsed keys every pair and lists them as
#: :func:`_listed_cpu` does (fewer passes than listing the pulsed pairs first and ordering them after).
DENSE_SHARE = 0.5


def _listed_signed(signed: torch.Tensor, classes: tuple) -> tuple | None:
    """The pulsed pairs of a block from its signed counts (a CPU tensor): ``(pairs, their signed counts (int32),
    class sizes, (smallest, largest) count)`` in the order of :func:`_listed_cpu`, or None when none is pulsed.

    Where few are pulsed, one scan finds them (``np.flatnonzero``) and their counts, keys and order are made
    on those alone; where most are (:data:`DENSE_SHARE`), every pair is keyed. Either way the counts' bounds
    come with the listing, on the block's thread (main checked and keyed every pair by passes over the array).
    """
    k = signed.numpy()
    pulsed = k != 0
    count = int(np.count_nonzero(pulsed))
    if count == 0:
        return None
    if count > DENSE_SHARE * k.size:
        lo, hi = (int(v) for v in torch.aminmax(signed))
        if lo < -MAX_COUNT or hi > MAX_COUNT:  # (refused by the caller before any update)
            return None, None, None, (lo, hi)
        order, sizes = _listed_cpu(_class_key(signed.abs(), classes))
        return order, signed.index_select(0, order).to(torch.int32), sizes, (lo, hi)
    nonzero = np.flatnonzero(pulsed)  # (numpy's nonzero of a bool array is some 9x faster than of int32)
    own = k[nonzero]
    bounds = (int(own.min()), int(own.max()))
    if bounds[0] < -MAX_COUNT or bounds[1] > MAX_COUNT:
        return None, None, None, bounds
    own = own.astype(np.int32, copy=False)
    at, sizes = _class_order(_class_key(torch.from_numpy(np.abs(own)), classes).numpy())
    return torch.from_numpy(nonzero[at].astype(np.int64, copy=False)), torch.from_numpy(own[at]), sizes, bounds


def _class_block(arr, b: int, v: dict, call: dict) -> None:
    """Pulse the pairs of block ``b`` given pulses only: gathered by index, ordered by draw class, scattered back.

    The order of one stable sort of a small key (0: no pulse; 1, 2, 3: the draw classes of
    :func:`~hfox_fit.torch._update.draw_classes`) lists the pulsed pairs class by class
    (on a CPU made by numpy, :func:`_listed_cpu`);
    each pulsed cell (BL or BLb by the sign) is gathered from the array's buffers,
    updated by :func:`~hfox_fit.torch._update.update_by_class` and written back. Pairs
    given 0 pulses cost the key and the sort (no draws, no update), and a cell given
    one or two pulses draws only the normal numbers its n-step coefficients use.
    """
    s, e = v["range"]
    half = arr.num_devices // 2
    out, prev = call["out"], call["prev"]
    if out is not prev:  # (in place, the cells given no pulses already read their last read)
        out[s:e].copy_(prev[s:e])
        out[half + s:half + e].copy_(prev[half + s:half + e])
    signed = call["signed"][s:e]
    listing = call.get("listing")
    mag = call["n"][s:e] if listing is None else None
    by_numpy = listing is not None or (NUMPY_LISTING and mag.device.type == "cpu")
    if listing is not None:  # (listed before the update: _listed_signed)
        if listing[b] is None:
            return _note(call, b, s, signed.new_zeros(0, dtype=torch.int64), None)
        order, own, sizes, _ = listing[b]
        counts, neg = own.abs(), own.lt(0)
    elif by_numpy:
        order, sizes = _listed_cpu(_class_key(mag, call["classes"]))
        pulsed = order.numel()
        if pulsed == 0:
            return _note(call, b, s, order, None)
        own = signed.index_select(0, order)  # (one gather: the counts are its magnitudes)
        counts, neg = own.abs(), own.lt(0)
    elif (pulsed := int(torch.count_nonzero(mag))) == 0:
        return _note(call, b, s, mag.new_zeros(0, dtype=torch.int64), None)
    elif pulsed <= LIST_SHARE * (e - s):
        # few pulsed: list them (in order), read their signed counts once, and sort their keys alone; the stable
        # sort keeps the listed order within a class, so the order is the one a sort of every pair's key gives
        # (the same draws to the same cells)
        listed = torch.nonzero(mag).squeeze(1)
        own = signed.index_select(0, listed)
        ranked = torch.sort(_class_key(own.abs(), call["classes"]), stable=True)
        order = listed.index_select(0, ranked.indices)
        own = own.index_select(0, ranked.indices)
        counts, neg = own.abs(), own.lt(0)
    else:
        ranked = torch.sort(_class_key(mag, call["classes"]), stable=True)
        order = ranked.indices[e - s - pulsed:]  # pulsed pairs, class by class (after the idle ones, key 0)
        counts, neg = mag.index_select(0, order), signed.index_select(0, order).lt_(0)
    if not by_numpy:
        sizes = _class_sizes(ranked.values, call)
    cell = torch.add(order, neg, alpha=half).add_(s)  # BL (i) or BLb (i + half) of each pulsed pair
    bufs = call["bufs"]
    # (w is written, not read: cells given pulses read afresh)
    sub = {k: bufs[k].index_select(0, cell) if k != "w" else torch.empty_like(cell, dtype=arr.dtype)
           for k in call["keys"]}
    # Row by row (a gather along the rows of a 2-D buffer costs more); the RTN amplitude only where a
    # chain is high (update_by_class asks). scatter_ with these distinct indices is index_copy_ at a
    # third of its cost on a CPU.
    lazy = call["lazy_row"]
    sub["params"] = tuple(None if i == lazy else row.index_select(0, cell) for i, row in enumerate(arr.cell_params))
    sub["c2c"] = tuple(row.index_select(0, cell) for row in arr.c2c_dev)
    if lazy is not None:
        sub["row_at"] = lambda idx: arr.cell_params[lazy].index_select(0, cell.index_select(0, idx))
    r = torch.empty(cell.numel(), dtype=arr.dtype, device=arr.device)
    update_by_class(arr, b, sub, counts, sizes, r, call)
    for k in call["keys"]:
        bufs[k].scatter_(0, cell, sub[k])
    out.scatter_(0, cell, r)
    _note(call, b, s, order, counts)


def _note(call: dict, b: int, start: int, order: torch.Tensor, counts, total: int | None = None) -> None:
    """Keep, for ``pulse_pairs(..., record=...)``, the pairs block ``b`` (from pair ``start``) pulsed and their
    pulses (``total``: their sum where known)."""
    if call["record"] is not None:
        # their total here, on the block's thread (a sum of int32 counts in int64 converts them first: summed in
        # int32 where the block cannot pass 2**31)
        if counts is None:
            total = None
        elif total is None:
            total = counts.sum(dtype=torch.int64 if counts.numel() * call["hi"] >= 1 << 31 else torch.int32)
        else:
            total = torch.tensor(total, dtype=torch.int64)
        call["listed"][b] = (order.add_(start) if start else order, counts, total)


def pulse_pairs(arr, n, *, path: str = "classes", in_place: bool = False, record: dict | None = None
                ) -> torch.Tensor:
    """``arr.pulse_pairs(n)`` (see there): checks the counts, then updates the pairs block by block.

    ``path``: ``"classes"`` (default) updates the pulsed pairs only, by draw class
    (:func:`_class_block`); ``"select"`` picks each pair's cell by a select and updates
    every pair (:func:`_pair_block`, the reference, and the path of a compiled array).
    ``in_place`` and ``record``: see :meth:`~hfox_fit.torch.WeakResetArray.pulse_pairs` (the class path).
    """
    if path not in ("classes", "select"):
        raise ValueError(f"path must be 'classes' or 'select'; got {path!r}.")

    if arr.num_devices % 2:
        raise ValueError(f"pulse_pairs needs an even number of cells (pairs i, i + N/2); the array has "
                         f"{arr.num_devices}.")
    half = arr.num_devices // 2
    signed = n if isinstance(n, torch.Tensor) else torch.as_tensor(n)
    if signed.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64) or tuple(signed.shape) != (half,):
        raise ValueError(f"pulse_pairs takes signed integer counts of shape ({half},), one per pair; got "
                         f"{signed.dtype} of shape {tuple(signed.shape)}.")
    signed = signed.detach().to(arr.device)
    views = _pair_views(arr)
    c = arr._constants()
    if path == "classes" and _listed_path(arr):
        return _pulse_listed(arr, signed, views, c, in_place, record)

    def bounds(flat):
        out = [None] * len(views)

        def one(b):
            s, e = views[b]["range"]
            out[b] = torch.aminmax(flat[s:e])

        _blocks(c, len(views), one)
        return out

    counts, _, lo, hi, lows = pulse_counts(signed.abs(), half, arr.device, bounds)
    signed = signed.to(torch.int32)  # (counts above 2**30 were refused)
    lows = lows if lows is not None else [lo]  # (one pair)
    if _nothing_to_pulse(arr, hi, record):
        return arr.resistance
    if arr.compile:
        from . import _update

        compiled = _update._compiled_dense()
        path = "select"  # (the compiled kernel is the whole-block update's)
    else:
        compiled = None
    prev = arr.resistance
    in_place = in_place and path == "classes"
    call = {
        "n": counts.reshape(-1).to(torch.int32), "signed": signed, "scalar": None, "lows": lows, "fixed": None,
        "clamp": hi > c["horizon"], "t_clamp": arr._pulse_bound + hi > c["horizon"],
        "compiled": compiled, "out": prev if in_place else torch.empty_like(arr.w), "prev": prev,
        "record": record if path == "classes" else None, "listed": [None] * len(views),
    }
    arr._pulse_bound += hi
    call["hi"] = hi
    if path == "classes":
        call["classes"] = draw_classes(arr)
        _class_call(arr, c, call)
        block = _class_block
    else:
        block = _pair_block
    _blocks(c, len(views), lambda b: block(arr, b, views[b], call), balance=True)
    return _finish(arr, call, record)


def _pulse_listed(arr, signed, views, c, in_place: bool, record) -> torch.Tensor:
    """The class path on a CPU with the pulsed pairs listed first, block by block (:func:`_listed_signed`):
    the listing gives the counts' bounds, so no pass over every pair checks them (the same numbers)."""

    if signed.dtype in (torch.int8, torch.int16):  # (their magnitudes could wrap: -128 in int8)
        signed = signed.to(torch.int32)
    signed = signed.contiguous()
    if FUSED and _fused.usable(arr):
        return _pulse_fused(arr, signed, c, in_place, record)
    classes = draw_classes(arr)
    listing = [None] * len(views)

    def one(b):
        s, e = views[b]["range"]
        listing[b] = _listed_signed(signed[s:e], classes)

    _blocks(c, len(views), one)
    hi = _largest_count(min((got[3][0] for got in listing if got is not None), default=0),
                        max((got[3][1] for got in listing if got is not None), default=0))
    if _nothing_to_pulse(arr, hi, record):
        return arr.resistance
    prev = arr.resistance
    call = {
        "n": None, "signed": signed, "listing": listing, "scalar": None, "lows": None, "fixed": None,
        "clamp": hi > c["horizon"], "t_clamp": arr._pulse_bound + hi > c["horizon"], "compiled": None,
        "out": prev if in_place else torch.empty_like(arr.w), "prev": prev, "record": record,
        "listed": [None] * len(views), "classes": classes,
    }
    arr._pulse_bound += hi
    call["hi"] = hi
    _class_call(arr, c, call)
    _blocks(c, len(views), lambda b: _class_block(arr, b, views[b], call), balance=True)
    return _finish(arr, call, record)


def _listed_path(arr) -> bool:
    """Whether the class path lists each block's pulsed pairs from the signed counts (:func:`_pulse_listed`)."""
    return NUMPY_LISTING and SIGNED_LISTING and arr.device.type == "cpu" and not arr.compile


def fused_pairs(arr) -> bool:
    """Whether ``pulse_pairs(arr, n)`` pulses by the compiled loop (its default path on a CPU with numba, the
    settings as they are, the array not compiled by torch): the path :func:`pulse_pairs_reading` takes."""
    return _listed_path(arr) and FUSED and _fused.usable(arr)


def pulse_pairs_reading(arr, n: torch.Tensor, bounds: tuple, signs: torch.Tensor, record: dict) -> tuple:
    """``pulse_pairs(arr, n, in_place=True, record=record)`` by the compiled loop (:func:`_fused.usable` must
    hold), for int32 counts whose smallest and largest value the caller has (``bounds``: no pass over them
    finds them), each pulsed pair read by sign_readout into ``signs`` (the pairs' weights, flat, in the cells'
    type) while its reads are in cache. Returns the read and the weights that changed (0-d int64).

    The step of :class:`~hfox_fit.torch.CellBackedWeights`: its pass over the weights gives the bounds, and no
    operation runs on torch's thread pool while the loop's threads run (its threads spin some milliseconds
    after each operation, taking a core from the loop)."""
    half = arr.num_devices // 2
    if not fused_pairs(arr):
        raise ValueError("pulse_pairs_reading runs the compiled loop only: use pulse_pairs where fused_pairs(arr) "
                         "is False.")
    if n.dtype != torch.int32 or tuple(n.shape) != (half,) or not n.is_contiguous():
        raise ValueError(f"pulse_pairs_reading takes contiguous int32 counts of shape ({half},); got {n.dtype} "
                         f"of shape {tuple(n.shape)}.")
    if signs.dtype != arr.dtype or tuple(signs.shape) != (half,) or not signs.is_contiguous():
        raise ValueError(f"pulse_pairs_reading reads into contiguous {arr.dtype} signs of shape ({half},); got "
                         f"{signs.dtype} of shape {tuple(signs.shape)}.")
    call = {}
    r = _pulse_fused(arr, n, arr._constants(), True, record, hi=_largest_count(*bounds), signs=signs, done=call)
    flips = sum(call.get("flips", ()))
    return r, torch.tensor(flips, dtype=torch.int64)


def _pulse_fused(arr, signed, c, in_place: bool, record, hi: int | None = None, signs=None,
                 done: dict | None = None) -> torch.Tensor:
    """The update by the compiled loop of :mod:`hfox_fit.torch._fused`, block by block: the counts' bounds are
    checked first (one pass, unless ``hi`` is given), each block's loop lists its pulsed pairs and updates them
    (and reads them into ``signs``, see :func:`pulse_pairs_reading`; ``done`` receives the call's dict)."""
    if hi is None:
        hi = _largest_count(*(int(v) for v in torch.aminmax(signed)))
    if _nothing_to_pulse(arr, hi, record):
        return arr.resistance
    prev = arr.resistance
    # blocks of the array's block size in pairs (half the class path's): the loop has no per-call cost to
    # share out, and more, smaller blocks keep both threads busy to the end (one thread took 5 of 9 blocks).
    # Block b draws its seed from the array's block generator b (there are at least as many).
    half, size = arr.num_devices // 2, arr._block_size
    ranges = [{"range": (s, min(s + size, half))} for s in range(0, half, size)]
    call = {"signed": signed, "out": prev if in_place else torch.empty_like(arr.w), "prev": prev,
            "record": record, "listed": [None] * len(ranges), "classes": draw_classes(arr),
            "signs": None if signs is None else signs.numpy(), "flips": [0] * len(ranges)}
    if done is not None:
        done.update(call)
        call = done
    arr._pulse_bound += hi
    call["hi"] = hi
    _fused.fused_call(arr, c, call, len(ranges))
    # (not balanced: its threads share the memory's bandwidth and get about the same done on one core as one
    # thread does, 27.4 against 26.9 ms a call with the other core busy, so sending calls to one thread after a
    # call that got little CPU time gains little and lost 20 % here, where 2 calls in 3 went to one thread)
    _blocks(c, len(ranges), lambda b: _fused.fused_block(arr, b, ranges[b], call, _note))
    _fused.count_writes(call["out"], arr.w, arr.pulses, arr.rtn_wait, arr.rtn_high, arr.pink_x, arr.pink_xi,
                        *(() if signs is None else (signs,)))
    return _finish(arr, call, record)


def _largest_count(lo: int, hi: int) -> int:
    """The largest pulse count of signed counts from ``lo`` to ``hi``; counts above :data:`MAX_COUNT` refused."""
    if lo < -MAX_COUNT or hi > MAX_COUNT:
        raise ValueError(f"pulse counts above {MAX_COUNT} are not supported; got {max(-lo, hi)}.")
    return max(-lo, hi)


def _nothing_to_pulse(arr, hi: int, record) -> bool:
    """Whether no pair gets a pulse (``record`` then says so); refuses pulses that would take a cell past
    the pulses a cell may count since its last SET."""
    from ._array import _MAX_PULSES  # (the array module imports this one on use)

    if record is not None:
        record.clear()
    if hi == 0:
        if record is not None:
            record.update(pairs=(), pulses=torch.zeros((), dtype=torch.int64, device=arr.device))
        return True
    if arr._pulse_bound + hi > _MAX_PULSES:
        raise ValueError(f"these pulses would take a cell past {_MAX_PULSES} pulses since its last SET "
                         f"(up to {arr._pulse_bound} so far, {hi} more); SET the cells (set_()) first.")
    return False


def _class_call(arr, c: dict, call: dict) -> None:
    """What every block of the class path reads from ``call``: the state's keys and buffers, the lazy row."""
    call["class_keys"] = torch.arange(1, 5, dtype=torch.int8, device=arr.device)
    call["keys"] = [k for k in _STATE if (k not in ("wait", "high") or arr.rtn) and
                    (k not in ("x", "xr", "xi") or (arr.pink and c["states"]))]
    amp_row = c["amp_row"]
    call["lazy_row"] = amp_row if arr.rtn and amp_row not in arr._c2c_rows else None
    call["bufs"] = {"pulses": arr.pulses, "wait": arr.rtn_wait, "high": arr.rtn_high, "x": arr.pink_x,
                    "xr": arr.pink_xi[0], "xi": arr.pink_xi[1], "w": arr.w}


def _finish(arr, call: dict, record) -> torch.Tensor:
    """Keep the new read; fill ``record`` with the pairs the blocks listed and their pulses."""
    arr._keep_read(call["out"])
    if call["record"] is not None:
        listed = call["listed"]
        record["pairs"] = tuple(p for p, _, _ in listed)
        record["pulses"] = sum((total.to(torch.int64) for _, _, total in listed if total is not None),
                               torch.zeros((), dtype=torch.int64, device=arr.device))
    return call["out"]


def _blocks(c: dict, count: int, fn, balance: bool = False) -> None:
    if c["threaded"]:
        _run_blocks(fn, count, block_threads(), balance)
    else:
        for b in range(count):
            fn(b)
