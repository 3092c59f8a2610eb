"""Validation of the pulse counts given to :meth:`WeakResetArray.pulse <hfox_fit.torch.WeakResetArray.pulse>`.

A count is a whole number from 0 to :data:`MAX_COUNT`, one for the whole array
or one per cell (an int, a float holding a whole number, or a tensor of shape
(), (1,) or (num_devices,)); anything else is refused with a message saying
which cell got what.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["MAX_COUNT", "pulse_counts"]

#: Largest pulse count of one call.
MAX_COUNT = 1 << 30


def pulse_counts(n, num_devices: int, device: torch.device,
                 block_bounds: Callable) -> tuple[torch.Tensor, int | None, int, int, list | None]:
    """Validate the pulse counts ``n`` given to an array of ``num_devices`` cells on ``device``.

    ``block_bounds(flat)`` returns ``torch.aminmax`` of each block of the update
    over the flat counts (one reduction per block: a whole-array one would go to
    torch's thread pool).

    Returns an int tensor on ``device`` (shape () or (N,)), its value if it is a
    scalar, the smallest and largest count, and the smallest count of each
    block (None for a scalar).
    """
    big = f"pulse counts above {MAX_COUNT} are not supported"
    if isinstance(n, (numbers.Integral, float)) and not isinstance(n, bool):
        if isinstance(n, float) and not n.is_integer():
            raise ValueError(f"pulse counts must be whole numbers; got {n}.")
        if n < 0:
            raise ValueError(f"pulse counts must be >= 0; got {n}.")
        if n > MAX_COUNT:
            raise ValueError(f"{big}; got {n}.")
        return torch.tensor(int(n), dtype=torch.int64, device=device), int(n), int(n), int(n), None
    t = n if isinstance(n, torch.Tensor) else torch.as_tensor(np.asarray(n))
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    if t.is_complex():
        raise ValueError(f"pulse counts must be integers; got dtype {t.dtype}.")
    if tuple(t.shape) not in ((), (1,), (num_devices,)):
        raise ValueError(
            f"pulse counts of shape {tuple(t.shape)} do not match the array of {num_devices} "
            f"cells; pass an int, or a tensor of shape (), (1,) or ({num_devices},)."
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
        if bool(hi > MAX_COUNT):
            raise ValueError(f"{big}; got {float(hi):.0f}.")
        t = t.to(torch.int64)
    elif t.dtype not in (torch.int32, torch.int64):
        t = t.to(torch.int64)
    t = t.to(device=device)
    if t.dim() == 1 and t.numel() == 1 and num_devices != 1:
        t = t.reshape(())
    flat = t.reshape(-1)
    if flat.numel() > 1:  # block by block (a whole-array reduction would go to torch's thread pool)
        bounds = block_bounds(flat)
        lows = [int(b[0]) for b in bounds]  # the smallest count of each block
        lo, hi = min(lows), max(int(b[1]) for b in bounds)
    else:
        lo = hi = int(flat[0])
        lows = None
    if lo < 0:
        i = int(torch.nonzero(flat < 0)[0])
        raise ValueError(f"pulse counts must be >= 0; cell {i} got {int(flat[i])}.")
    if hi > MAX_COUNT:
        raise ValueError(f"{big}; got {hi}.")
    return t, (hi if t.dim() == 0 else None), lo, hi, lows
