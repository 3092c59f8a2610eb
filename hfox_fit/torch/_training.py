"""Training a network with its weights in simulated cells, under one condition of the ablation.

:func:`train_network` takes any ``nn.Module``, two data loaders, a condition and a
seed, and returns one row of metrics per epoch. The conditions are those of the
paper's study: ``software`` (float hidden weights, no device), ``device`` (the full
fitted model) and ``no_d2d``, ``no_c2c``, ``no_pink``, ``no_rtn`` (one part of the
same model switched off). Under a device condition the module's weights (every
parameter of 2 or more dimensions) live in :class:`~hfox_fit.torch.CellBackedWeights`:
each optimizer step becomes weak RESET pulses, pairs that saturate are re-SET, and
every SET and pulse is counted per cell.
"""

from __future__ import annotations

import math
import os
import time

import torch
from torch import nn

from ..exceptions import HfoxError
from ..laws import get_law
from ..model import DeviceModel
from ._checkpoint import load_checkpoint
from ._weights import CellBackedWeights

__all__ = ["CONDITIONS", "train_network", "cell_weights", "headroom_pulses", "check_conditions"]

#: condition name -> WeakResetArray switches (None: software, no device)
CONDITIONS = {
    "software": None,
    "device": {},
    "no_d2d": {"d2d": False},
    "no_c2c": {"c2c": False},
    "no_pink": {"pink": False},
    "no_rtn": {"rtn": False},
}


def check_conditions(names) -> list:
    """The condition names, checked; a clear error names an unknown one and lists the known."""
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in names if n not in CONDITIONS]
    if not names:
        raise HfoxError(f"no condition given: expected a comma-separated list of some of {', '.join(CONDITIONS)}.")
    if unknown:
        raise HfoxError(f"unknown condition(s) {unknown}: expected a comma-separated list of "
                        f"{', '.join(CONDITIONS)}.")
    return list(dict.fromkeys(names))


def headroom_pulses(model: DeviceModel, pulses_without_break: int = 1000) -> int:
    """Pulses since SET after which a cell has little headroom left: the median break.

    For a law with a break, the median of its break law (past it the slope is the
    small ``m2``); for a law without one, ``pulses_without_break``.
    """
    law = get_law(model.law)
    if law.has_break:
        return max(int(round(model.d2d[law.theta].median())), 1)
    return int(pulses_without_break)


def _as_model(model) -> DeviceModel:
    if isinstance(model, DeviceModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_checkpoint(model)[0]
    raise TypeError(f"model must be a DeviceModel or a checkpoint path; got {type(model).__name__}.")


def cell_weights(net: nn.Module, model, condition: str, *, scale: float, max_pulses: int = 14, seed: int = 0,
                 device=None) -> CellBackedWeights | None:
    """The cell pairs that hold ``net``'s weights under ``condition`` (None for ``software``).

    ``device`` uses the full model; ``no_d2d``, ``no_c2c``, ``no_pink``, ``no_rtn`` switch
    that one part of the same model off (:class:`~hfox_fit.torch.WeakResetArray`'s switches).
    """
    check_conditions([condition])
    switches = CONDITIONS[condition]
    if switches is None:
        return None
    if model is None:
        raise HfoxError(f"condition {condition!r} needs the fitted model (a checkpoint path or a DeviceModel).")
    return CellBackedWeights(net, _as_model(model), scale=scale, max_pulses=max_pulses, seed=seed, device=device,
                             **switches)


def _accuracy(net, loader, device) -> tuple[float, float]:
    net.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = net(x)
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += int(y.numel())
    return correct / max(total, 1), loss / max(total, 1)


def train_network(net: nn.Module, train_loader, test_loader, *, condition: str = "device", model=None,
                  seed: int = 0, epochs: int = 10, lr: float = 0.01, scale: float | None = None,
                  max_pulses: int = 14, device=None, headroom: int | None = None, progress=None) -> list:
    """Train ``net`` under ``condition``; return one dict of metrics per epoch.

    Parameters
    ----------
    net : nn.Module or callable
        Any module (e.g. :class:`~hfox_fit.torch.BinarizedMLP`), or a function of no
        argument that builds one (called after seeding, so ``seed`` sets its initialisation
        too); it is moved to ``device``.
        Under a device condition every parameter of 2 or more dimensions is held in cell
        pairs (biases and batch norm stay floats); under ``software`` it trains as it is
        (a module with ``clip_weights()`` has its hidden weights clipped after each step).
    train_loader, test_loader : iterables of (inputs, labels)
    condition : str
        One of :data:`CONDITIONS`.
    model : DeviceModel or path of a checkpoint
        The fitted model (not needed for ``software``).
    seed : int
        Seeds torch (a network built by ``net()``), the cells and the shuffling of a loader
        that has a ``generator``: the same seed gives the same numbers on the CPU.
    epochs : int
    lr : float
        Adam's learning rate.
    scale : float, optional
        Weight change worth one pulse; ``lr / 4`` by default (Adam's steps are about ``lr``).
    max_pulses : int, default=14
        Pulses per weight and step at most (the paper's 14).
    device : str or torch.device, optional
    headroom : int, optional
        Pulses since SET after which both cells of a pair count as saturated and the pair
        is re-SET; :func:`headroom_pulses` of the model by default.
    progress : callable, optional
        Called with no argument after each epoch (a progress bar's update).

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``train_accuracy``, ``test_accuracy``, ``loss`` (mean training
        cross-entropy), ``test_loss``, ``pulses`` (weak RESET pulses applied), ``resets``
        (pairs re-SET), ``sign_lost`` (of those, the pairs left reading the other sign:
        :attr:`CellBackedWeights.sign_lost <hfox_fit.torch.CellBackedWeights.sign_lost>`), ``set_ops`` and
        ``max_cell_pulses`` (endurance so far: SETs and the most pulses any one cell received), ``wall_s``.
    """
    check_conditions([condition])  # before anything is built (cell_weights checks again for its own callers)
    torch.manual_seed(seed)
    if not isinstance(net, nn.Module):
        net = net()
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device)
    cells = cell_weights(net, model, condition, scale=scale if scale is not None else lr / 4,
                         max_pulses=max_pulses, seed=seed, device=device)
    if cells is not None and headroom is None:
        headroom = headroom_pulses(cells.cells.model)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    generator = getattr(train_loader, "generator", None)
    rows = []
    for epoch in range(1, int(epochs) + 1):
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed * 1_000_003 + epoch)
        t0 = time.perf_counter()
        net.train()
        pulses = resets = 0
        lost_before = cells.sign_lost if cells is not None else 0
        loss_sum, seen, correct = 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            out = net(x)
            loss = nn.functional.cross_entropy(out, y)
            if not math.isfinite(float(loss.detach())):
                raise HfoxError(f"training diverged under {condition!r} (seed {seed}, epoch {epoch}): the loss "
                                "is not finite; try a smaller learning rate.")
            loss.backward()
            opt.step()
            if cells is not None:
                pulses += int(cells.step()["pulses"])
                resets += cells.reset_saturated(headroom)
            elif hasattr(net, "clip_weights"):
                net.clip_weights()
            loss_sum += float(loss.detach()) * int(y.numel())
            seen += int(y.numel())
            correct += int((out.argmax(1) == y).sum())
        test_acc, test_loss = _accuracy(net, test_loader, device)
        rows.append({
            "epoch": epoch, "train_accuracy": correct / max(seen, 1), "test_accuracy": test_acc,
            "loss": loss_sum / max(seen, 1), "test_loss": test_loss, "pulses": pulses, "resets": resets,
            "sign_lost": (cells.sign_lost - lost_before) if cells is not None else 0,
            "set_ops": int(cells.set_count.sum()) if cells is not None else 0,
            "max_cell_pulses": int(cells.pulse_count.max()) if cells is not None else 0,
            "wall_s": time.perf_counter() - t0,
        })
        if progress is not None:
            progress()
    return rows
