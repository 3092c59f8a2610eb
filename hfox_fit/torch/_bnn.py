"""A binarized fully connected network (binary weights and activations, straight-through estimator).

The network of the paper's study (784-3000-10 with batch norm on MNIST), with its
sizes a parameter: every hidden layer is ``sign(W) x`` → batch norm → ``sign``, the
output layer ``sign(W) x`` → batch norm. Gradients pass through both signs as
through a hard tanh (the straight-through estimator). The float weights ``W`` are
the hidden weights of a software BNN, or, held in :class:`~hfox_fit.torch.CellBackedWeights`,
the ±1 that cell pairs read: either way the forward pass sees only their sign.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BinarizedMLP", "binarize"]


class _SignSTE(torch.autograd.Function):
    """sign(x) forward (0 reads +1); gradient 1 where |x| <= 1, else 0 (hard tanh)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        # 1.0 / 0.0 written by the comparison, then 2 b - 1 (torch.where with scalars is several times slower)
        return torch.ge(x, 0, out=torch.empty_like(x)).mul_(2).sub_(1)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return x.abs().le_(1).to(grad.dtype).mul_(grad)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """±1 with a straight-through gradient (see :class:`BinarizedMLP`)."""
    return _SignSTE.apply(x)


class _BinaryLinear(nn.Linear):
    def forward(self, x):
        return nn.functional.linear(x, binarize(self.weight), None)


class BinarizedMLP(nn.Module):
    """Binarized multilayer perceptron: ``sizes[0]`` inputs, hidden layers, ``sizes[-1]`` classes.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, e.g. ``(784, 3000, 10)`` (the paper) or ``(64, 256, 10)`` (8×8 digits).
    binary_input : bool, default=False
        Binarize the input too (the first layer sees real pixels by default, as in the paper).

    Examples
    --------
    >>> net = BinarizedMLP((64, 32, 10))
    >>> net(torch.rand(5, 64)).shape
    torch.Size([5, 10])
    """

    def __init__(self, sizes=(784, 3000, 10), *, binary_input: bool = False):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must name at least an input and an output width, all >= 1; got {sizes}.")
        self.sizes = tuple(sizes)
        self.binary_input = bool(binary_input)
        self.linears = nn.ModuleList(_BinaryLinear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in sizes[1:])
        for lin in self.linears:  # hidden weights start small so the first updates can flip them
            nn.init.uniform_(lin.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if self.binary_input:
            x = binarize(x)
        last = len(self.linears) - 1
        for i, (lin, norm) in enumerate(zip(self.linears, self.norms)):
            x = norm(lin(x))
            if i < last:
                x = binarize(x)
        return x

    @torch.no_grad()
    def clip_weights(self, bound: float = 1.0) -> None:
        """Keep the hidden weights in ``[-bound, bound]`` (software BNN: beyond it the STE gives no gradient)."""
        for lin in self.linears:
            lin.weight.clamp_(-bound, bound)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, binary_input={self.binary_input}"
