"""How a :class:`~hfox_fit.torch.WeakResetArray`'s random state is seeded, saved and carried.

The array draws its cells' parameters and SET states from its own
``torch.Generator``, and the update of each block from a generator of the block,
seeded from the array's (:meth:`ResumableState._seed_blocks`), so the results do
not depend on the threads the blocks run on. :class:`ResumableState` (a base of
the array) puts all these generators in ``state_dict()`` as extra state, so
``load_state_dict`` resumes a run draw for draw on the same kind of device (and
in distribution, with a warning, elsewhere); it also drops the cached views of
the buffers on loads, pickling and moves, and reseeds the generators on a move
to another device. :func:`resolve_device` checks the device an array is placed on.
"""

from __future__ import annotations

import hashlib
import warnings

import torch

from ._threads import _block_size

__all__ = ["ResumableState", "resolve_device"]

_STATE_VERSION = 3
_GOLDEN = 0x9E3779B97F4A7C15  # odd: b * _GOLDEN differs mod 2**32 for every block


def _block_seeds(base: int, count: int) -> list:
    """Seeds of ``count`` block generators from one 63-bit ``base``: all distinct in their low 32 bits
    (the CPU generator keeps only those), consecutive blocks far apart."""
    return [(base + b * _GOLDEN) & ((1 << 63) - 1) for b in range(count)]


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


class ResumableState:
    """The generators and state handling of :class:`~hfox_fit.torch.WeakResetArray` (a base class of it).

    Works on the array's ``_generator``, ``_block_gens``, ``_block_size``,
    ``num_devices``, the switches ``pink``, ``rtn``, ``d2d``, ``c2c``, the buffers
    ``pulses`` and ``w``, ``_const_cache`` and ``_pulse_bound``.
    """

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

    def _numpy_seed(self) -> int:
        """A seed for numpy (the cells' parameters, C2C draws), drawn from the array's generator."""
        g = self._generator
        return int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())

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
        state["_last_read"] = None
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._const_cache = None
        self._last_read = None
        self._pulse_bound = int(self.pulses.max()) if self.num_devices else 0

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._const_cache = None
        self._last_read = None
        dev = self.w.device
        if self._generator.device != dev:
            seed = self._numpy_seed()
            self._generator = torch.Generator(device=dev)
            self._generator.manual_seed(seed)
            self._block_size = _block_size(dev, self.num_devices)
            self._seed_blocks()
        return self
