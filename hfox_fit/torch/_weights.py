r"""CellBackedWeights: hold the weights of a network in pairs of simulated cells.

The scheme of the paper's binarized networks: each weight is held by two
cells, on the bit line (BL) and its complement (BLb), and reads

.. math:: W = \operatorname{sign}(R_{BL} - R_{BLb})

After every optimizer step the update each weight received becomes a signed
number of weak RESET pulses,

.. math:: n = \operatorname{clip}(\operatorname{round}(\Delta W / \text{scale}), -n_{max}, n_{max})

applied to BL when positive and to BLb when negative (RESET only raises R),
and the weights are read back from the cells. Any optimizer works: only the
change it made to the weights is used.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..model import DeviceModel
from . import _fused, _pairs
from ._array import WeakResetArray
from ._threads import _run_blocks, block_threads

__all__ = ["CellBackedWeights", "sign_readout"]


def _versions(*tensors):
    """Version counters of ``tensors`` (in-place changes bump them); None where they keep none."""
    try:
        return tuple(t._version for t in tensors)
    except RuntimeError:  # inference tensors
        return None


def sign_readout(r_bl: torch.Tensor, r_blb: torch.Tensor) -> torch.Tensor:
    """Binary weight of a cell pair: +1 where ``R_BL >= R_BLb``, else -1 (ties read +1)."""
    # (a comparison written as 1.0 / 0.0, then 2 b - 1 in place: torch.where with scalar branches, or a
    # bool tensor converted to floats, cost several times more)
    out = torch.empty(r_bl.shape, dtype=r_bl.dtype, device=r_bl.device)
    return torch.ge(r_bl, r_blb, out=out).mul_(2).sub_(1)


class CellBackedWeights(nn.Module):
    """Keep the weights of a module in simulated cell pairs, updated by pulses.

    Parameters
    ----------
    params : nn.Module or iterable of torch.Tensor
        The weights to back. For a module, every parameter with two or more
        dimensions (the weights of linear and convolution layers; biases and
        batch-norm parameters stay ordinary floats).
    model : DeviceModel or path-like
        The device model, or the path of a checkpoint (:func:`~hfox_fit.torch.export_checkpoint`).
    scale : float
        Weight change worth one pulse: ``n = round(delta / scale)``.
    max_pulses : int, default=14
        Largest number of pulses per weight and step (the paper's 14).
    seed : int, optional
        Seed of the cells' generator.
    device : str or torch.device, optional
        Where the cells live; the weights' device by default.
    dtype : torch.dtype, default=torch.float32
        Precision of the cell simulation.
    init : {"cells", "program"}, default="cells"
        ``"cells"``: the weights take the values the freshly SET cells read
        (random, set by D2D variability). ``"program"``: pulse each pair until
        it reads the sign the weight has now (up to ``max_program_steps`` steps
        of ``max_pulses``).
    readout : callable, optional
        ``readout(r_bl, r_blb) -> weights``; :func:`sign_readout` by default (with which a
        step that pulses few pairs reads those alone: see :meth:`step`; another readout
        reads every pair at each step).
    max_program_steps : int, default=1000
    **switches
        ``d2d``, ``c2c``, ``pink``, ``rtn`` (the ablation) and ``compile`` of :class:`WeakResetArray`.

    Attributes
    ----------
    cells : WeakResetArray
        ``2 * numel`` cells: the BL cells of all weights, then the BLb cells.
    numel : int
        Number of weights backed.
    set_count : torch.Tensor
        SET operations each cell received since it was built (int64, BL cells then BLb).
    pulse_count : torch.Tensor
        Weak RESET pulses each cell received (int64): endurance is what these two measure.
        (Counted by the cells since their last SET, plus what they had at each SET before.)
    pulses_since_set : torch.Tensor
        Pulses each cell received since its last SET (int64; the cells' own count, read each time).
    sign_lost : int
        Re-SET pairs (:meth:`reset_saturated`) that did not read their weight's sign again: the
        pulsed cell could not climb past its partner within the programming steps (a lower R0
        and a shallower slope than its partner's).

    Examples
    --------
    >>> import torch
    >>> from hfox_fit import preset_model
    >>> net = torch.nn.Linear(8, 2)
    >>> cells = CellBackedWeights(net, preset_model("paper"), scale=0.01, seed=0)
    >>> opt = torch.optim.Adam(net.parameters(), lr=0.05)
    >>> loss = net(torch.randn(4, 8)).pow(2).sum()
    >>> loss.backward(); opt.step()
    >>> stats = cells.step()              # updates -> pulses -> weights read back
    >>> bool(torch.equal(net.weight, cells.readout_weights()[0]))
    True
    """

    #: A step where at most this share of the pairs got pulses reads those pairs alone (gathered); above it, a
    #: pass over every pair costs less than the gathers.
    READ_PULSED_SHARE = 0.15
    #: Weights per block of the passes of :meth:`step` over every weight on a CPU (None: the cells' block size).
    WEIGHT_BLOCK = None

    def __init__(self, params, model, *, scale: float, max_pulses: int = 14, seed=None, device=None,
                 dtype=torch.float32, init: str = "cells", readout: Callable | None = None,
                 max_program_steps: int = 1000, **switches):
        super().__init__()
        if isinstance(params, nn.Module):
            tensors = [p for p in params.parameters() if p.dim() >= 2]
            if not tensors:
                raise ValueError("the module has no parameter with 2 or more dimensions to hold in cells; "
                                 "pass the tensors to back explicitly.")
        elif isinstance(params, torch.Tensor):
            tensors = [params]
        elif isinstance(params, Iterable):
            tensors = list(params)
            bad = [type(p).__name__ for p in tensors if not isinstance(p, torch.Tensor)]
            if bad:
                raise TypeError(f"params must be tensors; got {bad[:3]}.")
            if not tensors:
                raise ValueError("params is empty: nothing to hold in cells.")
        else:
            raise TypeError(f"params must be an nn.Module or an iterable of tensors; got {type(params).__name__}.")
        devices = {p.device for p in tensors}
        if len(devices) > 1:
            raise ValueError(f"the weights live on several devices {sorted(map(str, devices))}; "
                             "move them to one device first.")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale (weight change per pulse) must be a positive number; got {scale!r}.")
        if isinstance(max_pulses, bool) or not isinstance(max_pulses, int) or max_pulses < 1:
            raise ValueError(f"max_pulses must be a positive int; got {max_pulses!r}.")
        if init not in ("cells", "program"):
            raise ValueError(f"init must be 'cells' or 'program'; got {init!r}.")
        self._params = tensors
        self.shapes = [tuple(p.shape) for p in tensors]
        self.numel = sum(p.numel() for p in tensors)
        self.scale = float(scale)
        self.max_pulses = int(max_pulses)
        self.readout = readout or sign_readout
        device = devices.pop() if device is None else device
        if isinstance(model, (str, os.PathLike)):
            self.cells = WeakResetArray.from_checkpoint(model, 2 * self.numel, seed=seed, device=device,
                                                        dtype=dtype, **switches)
        elif isinstance(model, DeviceModel):
            self.cells = WeakResetArray(model, 2 * self.numel, seed=seed, device=device, dtype=dtype, **switches)
        else:
            raise TypeError(f"model must be a DeviceModel or a checkpoint path; got {type(model).__name__}.")
        self.set_count = torch.zeros(2 * self.numel, dtype=torch.int64, device=self.cells.device)
        self.sign_lost = 0
        # pulses before each cell's last SET: pulse_count adds the cells' own count since (no work per step)
        self._pulses_before_set = torch.zeros(2 * self.numel, dtype=torch.int64, device=self.cells.device)
        self._readout = None  # (resistances, their version, weights read from them): see _read_flat
        self._steps_buf = None  # the update in pulses (see _update_in_pulses)
        self._blocks_kept = None  # (the parameters' addresses, their blocks): see _weight_blocks
        if init == "program":
            self.program(max_steps=max_program_steps)
        self.sync()

    # ------------------------------------------------------------------ reading
    @property
    def params(self) -> list:
        """The tensors held in cells (not registered: they stay the module's)."""
        return list(self._params)

    @property
    def bl_resistance(self) -> torch.Tensor:
        """Resistance of the BL cells (Ohm), flat over all weights (a copy: :meth:`step` updates the read in place)."""
        return self.cells.resistance[: self.numel].clone()

    @property
    def blb_resistance(self) -> torch.Tensor:
        """Resistance of the BLb cells (Ohm), flat over all weights (a copy, as :attr:`bl_resistance`)."""
        return self.cells.resistance[self.numel:].clone()

    @property
    def pulse_count(self) -> torch.Tensor:
        """Weak RESET pulses each cell received since it was built (int64, BL cells then BLb)."""
        return self._pulses_before_set + self.cells.pulses

    @property
    def pulses_since_set(self) -> torch.Tensor:
        """Pulses each cell received since its last SET (int64, BL cells then BLb)."""
        return self.cells.pulses.to(torch.int64)

    def _read_flat(self) -> torch.Tensor:
        """The weights the cells read, flat; kept while the cells' last read and the result are unchanged
        (a training step then reads the cells once, after its pulses)."""
        r = self.cells.resistance
        kept = self._readout
        if kept is not None and kept[0] is r and kept[1] == _versions(r, kept[2]) and kept[1] is not None:
            return kept[2]
        flat = self.readout(r[: self.numel], r[self.numel:])
        self._readout = (r, _versions(r, flat), flat)
        return flat

    def _split(self, flat: torch.Tensor) -> list:
        out, i = [], 0
        for p, shape in zip(self._params, self.shapes):
            k = p.numel()
            out.append(flat[i:i + k].reshape(shape).to(p.dtype))
            i += k
        return out

    def readout_weights(self) -> list:
        """The weights the cells hold, one tensor per backed parameter (copies: :meth:`step` updates the
        weights it keeps in place)."""
        return [w.clone() for w in self._split(self._read_flat())]

    @torch.no_grad()
    def sync(self) -> None:
        """Write the weights the cells hold into the backed tensors (no pulses)."""
        for p, value in zip(self._params, self._split(self._read_flat())):
            p.copy_(value.to(p.device))

    # ------------------------------------------------------------------ writing
    def _flat_params(self) -> torch.Tensor:
        dev, dtype = self.cells.device, self.cells.dtype
        return torch.cat([p.detach().reshape(-1).to(device=dev, dtype=dtype) for p in self._params])

    def _steps_buffer(self, like: torch.Tensor) -> torch.Tensor:
        """The buffer of the update in pulses, kept from step to step (a fresh tensor of this size costs its
        pages' first touch each step)."""
        buf = self._steps_buf
        if buf is None or buf.device != like.device or buf.dtype != like.dtype:
            buf = self._steps_buf = torch.empty_like(like)
        return buf

    def _update_in_pulses(self, before: torch.Tensor) -> torch.Tensor:
        """``(weights - before) / scale``, flat, written into :meth:`_steps_buffer`."""
        buf = self._steps_buffer(before)
        i = 0
        for p in self._params:
            k = p.numel()
            torch.sub(p.detach().reshape(-1).to(device=before.device, dtype=before.dtype), before[i:i + k],
                      out=buf[i:i + k])
            i += k
        return buf.div_(self.scale)

    def _weight_blocks(self) -> list | None:
        """The weights in blocks for the passes of :meth:`step` over all of them: ``(flat view of a parameter,
        start, end, flat offset)`` each, or None where the passes go over whole tensors (see :meth:`step`).

        Blocks where the cells run on several worker threads (on one thread, whole-tensor passes wait at no
        barrier and cost fewer operations)."""
        arr = self.cells
        c = arr._constants()
        if not c["threaded"] or block_threads() < 2 or any(
                p.device != arr.device or p.dtype != arr.dtype or not p.is_contiguous() for p in self._params):
            return None
        key = tuple(p.data_ptr() for p in self._params)
        if self._blocks_kept is None or self._blocks_kept[0] != key:
            size, blocks, offset = self.WEIGHT_BLOCK or arr._block_size, [], 0
            for p in self._params:
                flat, k = p.detach().view(-1), p.numel()
                blocks += [(flat, s, min(s + size, k), offset + s) for s in range(0, k, size)]
                offset += k
            self._blocks_kept = (key, blocks)
        return self._blocks_kept[1]

    def _counts_by_block(self, before: torch.Tensor, blocks: list) -> tuple:
        """The update in pulses, ``clip(round((weights - before) / scale))`` as int32, block by block on the
        worker threads: the same numbers as whole-tensor passes, each block's passes in cache, and no
        operation waits at torch's thread-pool barrier (milliseconds each on a busy machine). Returns the counts
        and, from the compiled pass, their smallest and largest value (else None)."""
        n = torch.empty(self.numel, dtype=torch.int32, device=before.device)  # (fresh: the step returns it)
        finite = [True] * len(blocks)
        scale, most = self.scale, self.max_pulses
        compiled = self._compiled_passes()
        if compiled:  # (one compiled pass per block: the same numbers)
            scale32, most32 = (self.cells.w.numpy().dtype.type(v) for v in (scale, most))
            lows, highs = [0] * len(blocks), [0] * len(blocks)

            def one(b):
                flat, s, e, o = blocks[b]
                finite[b], lows[b], highs[b] = _fused.counts_block(flat[s:e].numpy(), before[o:o + e - s].numpy(),
                                                                   scale32, most32, n[o:o + e - s].numpy())
        else:
            buf = self._steps_buffer(before)

            def one(b):
                flat, s, e, o = blocks[b]
                d = torch.sub(flat[s:e], before[o:o + e - s], out=buf[o:o + e - s]).div_(scale)
                lo, hi = torch.aminmax(d)  # (a NaN makes both NaN)
                finite[b] = math.isfinite(lo.item()) and math.isfinite(hi.item())
                if finite[b]:
                    n[o:o + e - s].copy_(d.round_().clamp_(-most, most))

        _run_blocks(one, len(blocks), block_threads())
        if not all(finite):
            raise ValueError("the optimizer left NaN or infinite weights; no pulses were applied.")
        return n, ((int(min(lows)), int(max(highs))) if compiled else None)

    def _compiled_passes(self) -> bool:
        """Whether the passes over every weight run as compiled loops (:mod:`hfox_fit.torch._fused`, where the
        cells' pulses do): the same numbers as the torch passes, in one pass each."""
        return _pairs.FUSED and _fused.usable(self.cells)

    def _read_by_block(self, r: torch.Tensor, kept: torch.Tensor, blocks: list) -> torch.Tensor:
        """Read every pair by :func:`sign_readout` into ``kept`` (the weights read before) and the parameters,
        block by block on the worker threads; returns the weights whose value changed (0-d int64)."""
        flips = [None] * len(blocks)
        half = self.numel
        compiled = self._compiled_passes()
        if compiled:
            def one(b):
                flat, s, e, o = blocks[b]
                flips[b] = torch.tensor(_fused.read_block(r[o:o + e - s].numpy(), r[half + o:half + o + e - s].numpy(),
                                                          kept[o:o + e - s].numpy(), flat[s:e].numpy()))
        else:
            def one(b):
                flat, s, e, o = blocks[b]
                now = sign_readout(r[o:o + e - s], r[half + o:half + o + e - s])
                was = kept[o:o + e - s]
                flips[b] = torch.count_nonzero(torch.ne(now, was))
                was.copy_(now)
                flat[s:e].copy_(now)

        _run_blocks(one, len(blocks), block_threads())
        if compiled:  # (the torch passes' copies count as writes; the compiled loop's must too)
            _fused.count_writes(kept, *self._params)
        return torch.stack(flips).sum()

    def _read_listed(self, r: torch.Tensor, kept: torch.Tensor, listed: tuple, threaded: bool) -> torch.Tensor:
        """Read the pairs ``listed`` (one tensor of distinct pairs per block of :meth:`WeakResetArray.pulse_pairs`)
        by :func:`sign_readout` into ``kept``, a block per worker thread where ``threaded`` (else one after the
        other); returns the weights that changed."""
        flips = [torch.zeros((), dtype=torch.int64, device=r.device) for _ in listed]
        half = self.numel

        def one(b):
            pairs = listed[b]
            if pairs.numel():
                now = sign_readout(r.index_select(0, pairs), r.index_select(0, pairs + half))
                flips[b] = torch.count_nonzero(torch.ne(now, kept.index_select(0, pairs)))
                kept.scatter_(0, pairs, now)  # (distinct pairs: index_copy_ at a third of its cost)

        if threaded:
            _run_blocks(one, len(listed), block_threads())
        else:
            for b in range(len(listed)):
                one(b)
        return torch.stack(flips).sum() if flips else torch.zeros((), dtype=torch.int64, device=r.device)

    def _write_params(self, after: torch.Tensor, blocks: list | None) -> None:
        """Copy the weights read (flat) into the parameters (block by block where ``blocks``)."""
        if blocks is None:
            for p, value in zip(self._params, self._split(after)):
                p.copy_(value.to(p.device))
            return

        def one(b):
            flat, s, e, o = blocks[b]
            flat[s:e].copy_(after[o:o + e - s])

        _run_blocks(one, len(blocks), block_threads())

    @torch.no_grad()
    def step(self) -> dict:
        """Turn the change the optimizer made to the weights into pulses, then read the weights back.

        Call it right after ``optimizer.step()``.

        With :func:`sign_readout`, where at most :attr:`READ_PULSED_SHARE` of the pairs get
        pulses, only those pairs are read back, into the weights kept from the step before (the
        others read as they did); the pulses go into the cells' last read in place. Either way
        the numbers are those of a read of every pair. On a CPU with several threads, the passes
        over every weight (the update into pulses, a read of every pair, the copy into the
        parameters) run block by block on the cells' worker threads, with the same numbers; where
        numba is installed, the compiled loop reads each block's pulsed pairs right after pulsing
        them (:func:`hfox_fit.torch._pairs.pulse_pairs_reading`), whatever their share.

        Returns
        -------
        dict
            ``"pulses"``: total pulses applied (0-d tensor); ``"flips"``:
            weights whose value changed (0-d tensor); ``"counts"``: the signed
            pulse count of every weight (flat tensor, + on BL, - on BLb).

        Raises
        ------
        ValueError
            When an update is NaN or infinite.
        """
        before = self._read_flat()
        read_before = self._readout[0]  # the cells' read the weights came from
        blocks = self._weight_blocks()
        if blocks is not None:
            n, bounds = self._counts_by_block(before, blocks)
            if bounds is not None and self.readout is sign_readout and _pairs.fused_pairs(self.cells):
                # the compiled loop pulses and reads the pulsed pairs into the kept weights
                record = {}
                r, flips = self.cells._pulse_pairs_reading(n, bounds, before, record)
                self._readout = (r, _versions(r, before), before)
                self._write_params(before, blocks)
                return {"pulses": record["pulses"], "flips": flips, "counts": n}
        else:
            steps = self._update_in_pulses(before)
            if not all(map(torch.isfinite, torch.aminmax(steps))):  # (a NaN makes both NaN)
                raise ValueError("the optimizer left NaN or infinite weights; no pulses were applied.")
            n = steps.round_().clamp_(-self.max_pulses, self.max_pulses).to(torch.int32)
        record = {}
        r = self._pulse_pairs(n, in_place=True, record=record)
        listed = record.get("pairs")
        pulses = record["pulses"] if listed is not None else None
        if (listed is not None and r is read_before and self.readout is sign_readout
                and sum(p.numel() for p in listed) <= self.READ_PULSED_SHARE * self.numel):
            # only the pulsed pairs can read another sign: read them alone, into the kept weights
            flips = self._read_listed(r, before, listed, threaded=blocks is not None)
            self._readout = (r, _versions(r, before), before)
            self._write_params(before, blocks)
        elif blocks is not None and self.readout is sign_readout:
            # every pair read, into the kept weights and the parameters, block by block
            flips = self._read_by_block(r, before, blocks)
            self._readout = (r, _versions(r, before), before)
        else:  # (another readout, or a path that does not list the pairs: read every pair)
            after = self._read_flat()
            flips = torch.count_nonzero(torch.ne(after, before))
            self._write_params(after, blocks)
        if pulses is None:
            pulses = n.abs().sum()
        return {"pulses": pulses, "flips": flips, "counts": n}

    @torch.no_grad()
    def set_(self, mask=None) -> None:
        """SET both cells of the weights in ``mask`` (bool, flat over all weights; all when None)."""
        if mask is not None:
            mask = torch.as_tensor(mask, device=self.cells.device)
            if mask.dtype != torch.bool or tuple(mask.shape) != (self.numel,):
                raise ValueError(f"mask must be a bool tensor of shape ({self.numel},); "
                                 f"got {mask.dtype} of shape {tuple(mask.shape)}.")
            mask = torch.cat([mask, mask])
        since = self.cells.pulses
        self._pulses_before_set += since if mask is None else torch.where(mask, since, 0)
        self.cells.set_(mask)
        self.set_count += 1 if mask is None else mask.to(torch.int64)
        self.sync()

    def _pulse_pairs(self, n: torch.Tensor, **options) -> torch.Tensor:
        """Signed pulse count per weight: + pulses BL, - pulses BLb; counted per cell. ``options``: those of
        :meth:`WeakResetArray.pulse_pairs`."""
        return self.cells.pulse_pairs(n, **options)  # (the cells count them: see pulse_count)

    def _program_to(self, target: torch.Tensor, max_steps: int) -> int:
        """Pulse the pairs whose readout sign differs from ``target`` (±1, flat); return those still wrong."""
        for i in range(max_steps + 1):
            now = torch.where(self._read_flat() >= 0, 1.0, -1.0)
            bad = now != target
            wrong = int(bad.sum())
            if wrong == 0 or i == max_steps:
                break
            self._pulse_pairs(torch.where(bad, target * self.max_pulses, 0.0).to(torch.int32))
        return wrong

    def saturated(self, headroom: int) -> torch.Tensor:
        """Pairs whose two cells have both taken ``headroom`` pulses or more since their SET (bool, flat).

        RESET only raises R, and past its break a cell climbs at its small second slope:
        a pair whose cells are both that far along has little room left to move its
        weight either way. The controller counts the pulses it applied, so this is what
        the hardware can see.
        """
        t = self.cells.pulses
        return torch.minimum(t[: self.numel], t[self.numel:]) >= int(headroom)

    def _any_saturated(self, headroom: int, blocks: list) -> bool:
        """Whether any pair is :meth:`saturated`, block by block on the worker threads (no operation waits at
        torch's thread-pool barrier)."""
        t, half = self.cells.pulses, self.numel
        found = [False] * len(blocks)

        def one(b):
            _, s, e, o = blocks[b]
            found[b] = bool(torch.minimum(t[o:o + e - s], t[half + o:half + o + e - s]).ge_(headroom).any())

        _run_blocks(one, len(blocks), block_threads())
        return any(found)

    @torch.no_grad()
    def reset_saturated(self, headroom: int, max_steps: int = 20) -> int:
        """Re-SET the saturated pairs (:meth:`saturated`) as the hardware would, keeping their weights' signs.

        ``headroom`` is in pulses since SET (:func:`hfox_fit.torch.headroom_pulses` of the model).

        Both cells of each such pair are SET (back near R0), then the cell of the
        weight's sign is pulsed until the pair reads that sign again (at most
        ``max_steps`` rounds of ``max_pulses``). The SETs and pulses are counted in
        :attr:`set_count` and :attr:`pulse_count`; the pairs left reading the other sign
        in :attr:`sign_lost`.

        Returns
        -------
        int
            Pairs re-SET.
        """
        if self.cells._pulse_bound < int(headroom):  # (a bound on every cell's pulses since SET: none can be)
            return 0
        blocks = self._weight_blocks()
        if blocks is not None and not self._any_saturated(int(headroom), blocks):  # (most steps: none is)
            return 0
        mask = self.saturated(headroom)
        k = int(torch.count_nonzero(mask))
        if k == 0:
            return 0
        target = torch.where(self._read_flat() >= 0, 1.0, -1.0)
        self.set_(mask)  # counts the SETs, restarts the pulses since SET
        # only the re-SET pairs are programmed: the others already read their target
        self.sign_lost += self._program_to(target, max_steps)
        self.sync()
        return k

    @torch.no_grad()
    def program(self, max_steps: int = 1000) -> int:
        """Pulse each pair until its readout has the sign its weight has now.

        Returns
        -------
        int
            Weights still of the wrong sign after ``max_steps`` (a warning says so).
        """
        target = torch.where(self._flat_params() >= 0, 1.0, -1.0)
        wrong = self._program_to(target, max_steps)
        if wrong:
            warnings.warn(f"{wrong} of {self.numel} weights still read the wrong sign after {max_steps} "
                          "programming steps.", RuntimeWarning, stacklevel=2)
        return wrong

    def extra_repr(self) -> str:
        return f"numel={self.numel}, scale={self.scale}, max_pulses={self.max_pulses}"
