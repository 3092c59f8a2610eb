"""PyTorch export of hfox_fit (the only part of the package that imports torch).

* :func:`export_checkpoint` / :func:`load_checkpoint`: a :class:`~hfox_fit.model.DeviceModel`
  as a plain checkpoint that opens with ``torch.load(path, weights_only=True)``.
* :class:`WeakResetArray`: a fast simulated cell array (``nn.Module``): ``pulse(n)``
  costs the same for any ``n``; ``set_()``; ``resistance`` / ``conductance``;
  D2D, C2C, pink noise and RTN can be switched off one by one.
* :class:`CellBackedWeights`: hold the weights of any ``nn.Module`` in simulated
  cell pairs (BL, BLb), updated by pulses after each optimizer step.
* The paper's training study: :class:`BinarizedMLP`, :func:`train_network` (any module, one
  condition of :data:`CONDITIONS`, per-epoch metrics), :func:`run_ablation` (every condition
  and seed, the files of ``hfox-fit train-demo``), :func:`load_dataset` (digits or IDX).
* :data:`TORCH_LAWS`: the torch formulas of the drift laws of :data:`hfox_fit.laws.DRIFT_LAWS`;
  :data:`CPU_BLOCK`, :func:`block_threads`: the block size and thread count of the CPU update.

Training through the cells (a binarized network, any optimizer)::

    import torch
    from hfox_fit.torch import CellBackedWeights

    net = MyBinarizedNet()                   # its layers use sign(weight) in forward
    cells = CellBackedWeights(net, "model.pt", scale=0.01, max_pulses=14, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()                           # the optimizer proposes an update ...
        stats = cells.step()                 # ... it becomes pulses; weights read back
"""

from ._array import WeakResetArray
from ._bnn import BinarizedMLP, binarize
from ._checkpoint import FORMAT, FORMAT_VERSION, export_checkpoint, load_checkpoint
from ._data import load_dataset, make_loader, read_idx
from ._laws import TORCH_LAWS
from ._pink import PinkMarkov, pink_markov
from ._study import run_ablation, summarize_ablation
from ._threads import CPU_BLOCK, block_threads
from ._training import CONDITIONS, headroom_pulses, train_network
from ._weights import CellBackedWeights, sign_readout

__all__ = [
    "BinarizedMLP",
    "CONDITIONS",
    "CPU_BLOCK",
    "CellBackedWeights",
    "FORMAT",
    "FORMAT_VERSION",
    "PinkMarkov",
    "TORCH_LAWS",
    "WeakResetArray",
    "binarize",
    "block_threads",
    "export_checkpoint",
    "headroom_pulses",
    "load_checkpoint",
    "load_dataset",
    "make_loader",
    "pink_markov",
    "read_idx",
    "run_ablation",
    "sign_readout",
    "summarize_ablation",
    "train_network",
]
