"""The update of one block of cells by ``n`` pulses, in closed form: drift, pink term and telegraph chains.

* :func:`_dense`: the drift law at the new pulse count plus the pink stand-in's
  exact ``n``-step transition (plain tensor code, eager or through
  ``torch.compile``: :func:`_compiled_dense`);
* :func:`geometric_wait` and :func:`rtn_switch`: each telegraph chain keeps its
  waiting time to the next switch (geometric, drawn at each switch); a chain
  that switches within the ``n`` pulses ends them in the closed-form law of the
  2x2 matrix power, so only the few cells that switch cost anything;
* :func:`pulse_block`: one block of a :class:`~hfox_fit.torch.WeakResetArray`
  through both, every draw from the block's own generator, then read. A block
  where at most :data:`SPARSE_SHARE` of the cells get pulses updates only those
  (gathered by index, scattered back): a cell given 0 pulses keeps its state and
  read either way, so only which draws go to which cell changes.
"""

from __future__ import annotations

import math
import warnings

import torch

from . import _threads

__all__ = ["LOG2E", "NEVER", "geometric_wait", "pulse_block", "rtn_switch"]

#: Waiting time of a state the chain never leaves.
NEVER = 1 << 30
#: log2(e): ``R = r0 exp(w)`` is computed as ``r0 2**(w log2 e)``.
LOG2E = 1.0 / math.log(2.0)


def _dense(law, names, t, rows, x, xr, xi, coef, z, white, off, gain, pink_on, states):
    """Drift plus pink term of one block after its pulses; updates the pink states in place.

    Plain tensor code, run as it is or through ``torch.compile``. ``t`` (B,) pulses
    since SET (already advanced, as floats); ``rows`` the block's parameters; ``x``
    (B,) the pink stand-in's real state, ``xr`` and ``xi`` (B,) the real and
    imaginary parts of its complex state;
    ``coef`` the n-step coefficients ``lambda**n, L00, L22, Re p**n, Im p**n,
    L10, L20, L11, L21`` (each (B,) or (1,)); ``z`` (rows, B) normal draws, or a tuple of
    rows where rows 1 and 2 may be None (counts whose L11, L21 / L22 are exactly 0);
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
        # (z[1], z[2] are None for counts whose L11, L21 / L22 are exactly 0: see update_by_class)
        re.addcmul_(l10, z[0])
        if z[1] is not None:
            re.addcmul_(l11, z[1])
        xi.mul_(pc).addcmul_(xr, ps).addcmul_(l20, z[0])
        if z[1] is not None:
            xi.addcmul_(l21, z[1])
        if z[2] is not None:
            xi.addcmul_(l22, z[2])
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
        # dynamic=None: a second size (a short last block, the cells of a sparse update) compiles once more,
        # with sizes symbolic, instead of once per size
        _COMPILED = torch.compile(_dense, fullgraph=True, dynamic=None)
    return _COMPILED



def geometric_wait(high: torch.Tensor, p_up: float, p_down: float, g: torch.Generator) -> torch.Tensor:
    """Pulses until the next switch of chains now in state ``high`` (>= 1; :data:`NEVER` if they cannot leave).

    ``P(wait = k) = (1 - p)**(k - 1) p`` with ``p`` the state's switching
    probability (``p_up`` from low, ``p_down`` from high), drawn from ``g`` by
    ``Tensor.geometric_`` (a serial kernel: no thread pool, no MKL VML call, whose
    thread team costs milliseconds on a busy machine).
    """
    any_high = bool(high.any())
    needed = (not bool(high.all()) if any_high else True, any_high)  # low chains, high chains
    waits = []
    for p, need in zip((p_up, p_down), needed):
        w = torch.empty(high.shape if need else (0,), dtype=torch.float64, device=high.device)
        if need and 0.0 < p < 1.0:
            w.geometric_(p, generator=g)
        else:
            w.fill_(1.0 if p >= 1.0 else float(NEVER))
        waits.append(w)
    if not needed[0]:
        wait = waits[1]
    elif not needed[1]:
        wait = waits[0]
    else:
        wait = torch.where(high, waits[1], waits[0])
    return wait.clamp_(max=NEVER).to(torch.int32)


def rtn_switch(idx: torch.Tensor, high: torch.Tensor, wait: torch.Tensor, g: torch.Generator,
               p_up: float, p_down: float) -> None:
    """Chains ``idx`` (of the block ``high``, ``wait``) whose waiting time ran out within this call's pulses.

    A chain switches at the end of its waiting time, spends the pulses left in the
    closed-form n-step law of the 2x2 matrix, and draws a new waiting time from the
    state it ends in (the chain is memoryless). Draws come from ``g``.
    """
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
    wait.index_copy_(0, idx, geometric_wait(final, p_up, p_down, g))


#: A block whose share of cells given pulses is at most this is updated on those cells only (gathered by
#: index, scattered back); above it, the whole block (cells given 0 pulses keep their state either way).
SPARSE_SHARE = 0.4
#: The per-cell state that the update changes (keys of a block's views).
_STATE = ("pulses", "wait", "high", "x", "xr", "xi", "w")


def pulse_block(arr, b: int, v: dict, call: dict) -> None:
    """``arr.pulse()`` for block ``b`` (views ``v``): every draw from the block's own generator.

    ``arr`` is the :class:`~hfox_fit.torch.WeakResetArray`, ``v`` its block's entry of
    ``arr._constants()['views']``, ``call`` what :meth:`~hfox_fit.torch.WeakResetArray.pulse`
    worked out for the whole call (counts, their bounds, the output tensor, the last read).

    Cells given 0 pulses keep their state and read, so a block where few cells get
    pulses updates only those (the others cost a scan): the draws then go to them
    alone, which changes which numbers a cell receives but not their law, and
    depends on the counts only (not on threads or timing).
    """
    s, e = v["range"]
    out = call["out"][s:e]
    if call["scalar"] is not None:
        _update_cells(arr, b, v, call["scalar"], call["scalar"], out, call)
        return
    nb32 = call["n"][s:e]
    if nb32.dtype != torch.int32:  # counts are <= 2**30 (checked)
        nb32 = nb32.to(torch.int32)
    block_lo = call["lows"][b]
    if block_lo == 0 and int(torch.count_nonzero(nb32)) <= SPARSE_SHARE * (e - s):
        out.copy_(call["prev"][s:e])  # the last read of the cells given 0 pulses
        idx = torch.nonzero(nb32).squeeze(1)
        if idx.numel() == 0:
            return
        keys = [k for k in _STATE if (k not in ("wait", "high") or arr.rtn) and
                (k not in ("x", "xr", "xi") or (arr.pink and arr._constants()["states"]))]
        sub = {k: v[k].index_select(0, idx) for k in keys}
        sub["params"] = tuple(p.index_select(0, idx) for p in v["params"])
        sub["c2c"] = tuple(p.index_select(0, idx) for p in v["c2c"])
        r = torch.empty(idx.numel(), dtype=out.dtype, device=out.device)
        _update_cells(arr, b, sub, nb32.index_select(0, idx), 1, r, call)
        for k in keys:
            v[k].index_copy_(0, idx, sub[k])
        out.index_copy_(0, idx, r)
        return
    _update_cells(arr, b, v, nb32, block_lo, out, call)


def _advance(arr, v, nb32, g, c):
    """Add ``nb32`` pulses to the cells' counts and switch the telegraph chains whose waiting time
    runs out within them; returns the counts."""
    t = v["pulses"]
    t.add_(nb32)
    if arr.rtn:
        wait = v["wait"]
        wait.sub_(nb32)
        idx = torch.nonzero(wait <= 0).squeeze(1)
        if idx.numel():
            rtn_switch(idx, v["high"], wait, g, c["p_up"], c["p_down"])
    return t


def _pink_mean_gain(c, t, call):
    """The pink stand-in's mean and gain after ``t`` pulses (columns of its table, ``t`` clamped to its memory)."""
    if not call["t_clamp"]:
        return c["table"].index_select(1, t).unbind(0)
    return c["table"].index_select(1, t.clamp(max=c["horizon"])).unbind(0)


def _add_telegraph(w, high, amplitude_at, g) -> None:
    """Add the telegraph term ``U1 U2 A`` (fresh at each read) to ``w`` where a chain is ``high``;
    ``amplitude_at(idx)``: the amplitudes ``A`` of those cells."""
    idx = torch.nonzero(high).squeeze(1)
    if idx.numel():
        u = torch.rand(2, idx.numel(), generator=g, device=w.device, dtype=w.dtype)
        w.index_add_(0, idx, u[0].mul_(u[1]).mul_(amplitude_at(idx)))


def _update_cells(arr, b: int, v: dict, nb32, block_lo: int, out: torch.Tensor, call: dict) -> None:
    """Pulse the cells of ``v`` (a block's views, or the gathered cells of a block) by ``nb32``; read into ``out``.

    ``nb32``: an int (every cell) or an int32 tensor of counts; ``block_lo`` the smallest.
    """
    c = arr._constants()
    g, dtype = arr._block_gens[b], arr.dtype
    horizon = c["horizon"]
    scalar = nb32 if isinstance(nb32, int) else None
    t = _advance(arr, v, nb32, g, c)
    rows = arr._block_rows(v)
    z = off = gain = coef = table = None
    pink_on, states = arr.pink, c["states"]
    if scalar is None and (block_lo == 0 or (pink_on and states)):
        # the n-step coefficients (one gather of all the rows) and [n > 0]
        table = c["coef"].index_select(1, nb32 if not call["clamp"] else nb32.clamp(max=horizon))
    if pink_on:
        z = torch.randn(c["draws"], t.numel(), generator=g, device=t.device, dtype=dtype)
        if states:
            coef = call["fixed"] if scalar is not None else table
            coef = tuple(coef[:9].unbind(0))
        if call["t_clamp"] and t.device.type == "cpu" and int(t.min()) >= horizon:
            # every cell of the block is past the stand-in's memory: row T (a GPU skips the sync)
            off, gain = c["table"][:, horizon:].unbind(0)
        else:
            off, gain = _pink_mean_gain(c, t, call)
    args = (arr._law, arr.param_names, t.to(dtype), rows, v.get("x"), v.get("xr"), v.get("xi"), coef, z, c["white"],
            off, gain, pink_on, states)
    w_new = None
    compiled = call["compiled"] if arr.compile else None
    if compiled is not None:
        try:
            w_new = compiled(*args)
        except Exception as err:  # no C++ compiler / Triton, unsupported op, ...
            with _threads._POOL_LOCK:
                warn, arr.compile = arr.compile, False
            if warn:
                warnings.warn(
                    f"torch.compile of the pulse update failed ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}); this array goes on in eager mode.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    if w_new is None:
        w_new = _dense(*args)
    if arr.rtn:
        _add_telegraph(w_new, v["high"], lambda high: rows[c["amp_row"]].index_select(0, high), g)
    wb = v["w"]
    if block_lo == 0:  # cells given 0 pulses keep their read (weight 0 or 1: exact)
        wb.lerp_(w_new, table[9])
    else:
        wb.copy_(w_new)
    # R = r0 exp(w) = r0 2**(w log2 e) (torch.exp runs on the thread pool from 2048 elements on)
    torch.mul(wb, LOG2E, out=out).exp2_().mul_(rows[c["r0_row"]])


#: Elements per whole step of torch's vectorized CPU loops, with room (2 vectors of 16 floats with AVX-512).
_PAD = 64


def draw_classes(arr) -> tuple[int, int]:
    """``(a, b)``: the pink update of ``n`` pulses needs its second normal draw from ``n = a`` on, its third
    from ``n = b`` on (cached; huge when it draws no state noise).

    The n-step innovation of the stand-in's three states has rank ``min(n, 3)``: one
    pulse moves them along its input vector alone, so ``L11 = L21 = L22 = 0`` for
    ``n = 1`` and ``L22 = 0`` for ``n = 2``. Read from the table (exact zeros), not
    assumed; a draw multiplied by an exact 0 adds nothing, so skipping it keeps the law.
    """
    c = arr._constants()
    if "draw_classes" not in c:
        a = b = NEVER
        if arr.pink and c["states"]:
            coef = arr.pink_coef[:, 1:].cpu()  # n = 1 .. horizon

            def first_used(rows):
                used = torch.nonzero((coef[list(rows)] != 0).any(0)).squeeze(1)
                return 1 + int(used[0]) if used.numel() else NEVER

            b = first_used((2,))  # L22
            a = min(first_used((7, 8)), b)  # L11, L21 (from b on every draw is made anyway)
        c["draw_classes"] = (a, b)
    return c["draw_classes"]


def update_by_class(arr, b: int, v: dict, nb32: torch.Tensor, sizes: tuple, out: torch.Tensor, call: dict) -> None:
    """Pulse the gathered cells of ``v`` (each given >= 1 pulse) ordered by draw class; read into ``out``.

    A parameter row of ``v["params"]`` may be None where only a few cells need it (the RTN
    amplitude): ``v["row_at"](idx)`` then gathers it for cells ``idx``.
    ``sizes``: how many cells (in this order) fall in the counts ``[1, a)``, ``[a, b)`` and
    ``[b, ...)`` of :func:`draw_classes`. Each class draws only the normal numbers its
    coefficients use (2, 3 and 4 per cell for the paper's stand-in, not 4 for all), and a
    class of one count reads its n-step coefficients as one column (no gather). The law is
    that of :func:`_update_cells`; the numbers a cell receives differ.
    """
    c = arr._constants()
    g, dtype = arr._block_gens[b], arr.dtype
    horizon = c["horizon"]
    t = _advance(arr, v, nb32, g, c)
    rows = arr._block_rows(v)
    pink_on, states, white = arr.pink, c["states"], c["white"]
    off = gain = None
    if pink_on:
        off, gain = _pink_mean_gain(c, t, call)
    lo_a, lo_b = draw_classes(arr)
    # per class: first count, end count (exclusive), state draws
    classes = ((1, lo_a, 1), (lo_a, lo_b, 2), (lo_b, None, 3))
    extra = 1 if (states and white > 0) else 0  # the white draw
    if not pink_on:
        per = [0, 0, 0]
    elif not states:
        per = [1, 1, 1]  # white only
    else:
        per = [k + extra for _, _, k in classes]
    total = sum(p * s for p, s in zip(per, sizes))
    zall = torch.randn(total, generator=g, device=t.device, dtype=dtype) if total else None
    tf = t.to(dtype)
    wb = v["w"]
    start = used = 0
    for (first, end, k), size, p in zip(classes, sizes, per):
        if size == 0:
            continue
        sl = slice(start, start + size)
        start += size
        z = coef = None
        if p:
            zr = zall[used:used + p * size].view(p, size)
            used += p * size
            if states:
                z = (zr[0], zr[1] if k > 1 else None, zr[2] if k > 2 else None, zr[k] if extra else None)
                if end is not None and end - first == 1:  # one count: its column
                    coef = c["coef"][:9, min(first, horizon):min(first, horizon) + 1].unbind(0)
                else:
                    n = nb32[sl] if not call["clamp"] else nb32[sl].clamp(max=horizon)
                    coef = c["coef"][:9].index_select(1, n).unbind(0)
            else:
                z = zr
        x, xr, xi, o, gn, *rs = (None if u is None else u[sl]
                                 for u in (v.get("x"), v.get("xr"), v.get("xi"), off, gain, *rows))
        w_new = _dense(arr._law, arr.param_names, tf[sl], rs, x, xr, xi, coef, z, white, o, gn, pink_on, states)
        wb[sl].copy_(w_new)
    if arr.rtn:
        amp_row = rows[c["amp_row"]]
        _add_telegraph(wb, v["high"], v["row_at"] if amp_row is None else (lambda high: amp_row.index_select(0, high)),
                       g)
    # R = r0 2**(w log2 e), exp2 on a buffer padded to whole vector steps: the SIMD kernel then takes every
    # cell (its scalar tail rounds some values differently), as a read of the whole array does, so the reads
    # kept do not depend on where a cell falls among the gathered ones (and a resumed array reads the same)
    k = wb.numel()
    padded = torch.zeros(-(-k // _PAD) * _PAD, dtype=wb.dtype, device=wb.device)
    torch.mul(wb, LOG2E, out=padded[:k])
    torch.mul(padded.exp2_()[:k], rows[c["r0_row"]], out=out)
