"""CellBackedWeights: a tiny binarized network trained with Adam through simulated cell pairs."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from hfox_fit import preset_model  # noqa: E402
from hfox_fit.torch import CellBackedWeights, export_checkpoint  # noqa: E402


class SignSTE(torch.autograd.Function):
    """sign() forward, straight-through (clipped) gradient backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1)


class BinaryLinear(nn.Linear):
    def forward(self, x):
        return nn.functional.linear(x, SignSTE.apply(self.weight), self.bias)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    y = (x @ torch.randn(16, generator=g) > 0).long()
    return x, y


def _bnn():
    torch.manual_seed(0)
    return nn.Sequential(BinaryLinear(16, 32, bias=False), nn.BatchNorm1d(32), nn.Hardtanh(),
                         BinaryLinear(32, 2, bias=False), nn.BatchNorm1d(2))


def _accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).float().mean().item()
    net.train()
    return acc


def test_bnn_trains_with_adam_through_the_cells():
    x, y = _data()
    net = _bnn()
    cells = CellBackedWeights(net, preset_model("paper"), scale=0.01, seed=0)
    assert cells.numel == 16 * 32 + 32 * 2 and cells.cells.num_devices == 2 * cells.numel
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    start = _accuracy(net, x, y)
    flips = 0
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        r_bl, r_blb = cells.bl_resistance.clone(), cells.blb_resistance.clone()
        pulses_before = cells.cells.pulses.clone()
        stats = cells.step()
        flips += int(stats["flips"])
        # the weights follow the cells: W = sign(R_BL - R_BLb)
        for p, w in zip(cells.params, cells.readout_weights()):
            assert torch.equal(p, w)
        expected = torch.where(cells.bl_resistance >= cells.blb_resistance, 1.0, -1.0)
        assert torch.equal(torch.cat([p.reshape(-1) for p in cells.params]), expected)
        # a positive count pulsed BL only, a negative one BLb only, never more than 14
        n = stats["counts"]
        added = cells.cells.pulses - pulses_before
        assert torch.equal(added[: cells.numel], n.clamp(min=0))
        assert torch.equal(added[cells.numel:], (-n).clamp(min=0))
        assert int(n.abs().max()) <= 14
        # weak RESET only raises R (drift + noise aside, cells given no pulse keep their read)
        assert torch.equal(cells.bl_resistance[n <= 0], r_bl[n <= 0])
        assert torch.equal(cells.blb_resistance[n >= 0], r_blb[n >= 0])
    assert flips > 0
    assert _accuracy(net, x, y) > max(0.8, start + 0.2)


def test_pulse_count_is_rounded_and_clipped():
    w = torch.nn.Parameter(torch.zeros(6, 1))
    cells = CellBackedWeights([w], preset_model("paper"), scale=0.1, max_pulses=5, seed=0,
                              d2d=False, pink=False, rtn=False)
    before = w.detach().clone()
    with torch.no_grad():
        w.copy_(before + torch.tensor([[0.04], [0.06], [-0.26], [2.0], [-2.0], [0.0]]))
    stats = cells.step()
    assert stats["counts"].tolist() == [0, 1, -3, 5, -5, 0]
    assert int(stats["pulses"]) == 14


def test_init_program_matches_the_module_signs():
    torch.manual_seed(1)
    lin = nn.Linear(20, 10)
    signs = torch.where(lin.weight >= 0, 1.0, -1.0)
    cells = CellBackedWeights(lin, preset_model("paper"), scale=0.01, seed=0, init="program")
    assert cells.program() == 0
    assert torch.equal(lin.weight.detach(), signs)
    assert lin.bias.shape == (10,) and not torch.all(lin.bias.abs() == 1)  # biases are not backed


def test_checkpoint_path_state_dict_and_set(tmp_path):
    path = export_checkpoint(preset_model("paper"), tmp_path / "model.pt", provenance={"cells_used": 5})
    lin = nn.Linear(4, 3)
    cells = CellBackedWeights(lin, path, scale=0.01, seed=3)
    assert cells.cells.provenance["cells_used"] == 5
    with torch.no_grad():
        lin.weight.add_(0.1)
    cells.step()
    state = cells.state_dict()
    assert "cells.w" in state and "cells._extra_state" in state
    lin2 = nn.Linear(4, 3)
    cells2 = CellBackedWeights(lin2, preset_model("paper"), scale=0.01, seed=4)
    cells2.load_state_dict(state)
    cells2.sync()
    assert torch.equal(lin2.weight, lin.weight)
    cells.set_(torch.ones(12, dtype=torch.bool))
    assert (cells.cells.pulses == 0).all()


def test_bad_input():
    model = preset_model("paper")
    with pytest.raises(ValueError, match="no parameter with 2 or more dimensions"):
        CellBackedWeights(nn.BatchNorm1d(3), model, scale=0.1)
    with pytest.raises(ValueError, match="scale .* must be a positive number"):
        CellBackedWeights(nn.Linear(2, 2), model, scale=0)
    with pytest.raises(ValueError, match="max_pulses must be a positive int"):
        CellBackedWeights(nn.Linear(2, 2), model, scale=0.1, max_pulses=0)
    with pytest.raises(ValueError, match="init must be"):
        CellBackedWeights(nn.Linear(2, 2), model, scale=0.1, init="zeros")
    lin = nn.Linear(2, 2)
    cells = CellBackedWeights(lin, model, scale=0.1)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        cells.step()
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(4,\)"):
        cells.set_(torch.ones(3, dtype=torch.bool))


def test_pulse_and_set_counts_are_exact_across_sets():
    """pulse_count adds every pulse a cell took, across SETs; pulses_since_set restarts at each SET."""
    w = torch.nn.Parameter(torch.zeros(40, 5))
    cells = CellBackedWeights([w], preset_model("paper"), scale=0.01, max_pulses=6, seed=0)
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(400, dtype=torch.int64)
    pairs = torch.arange(200) % 2 == 0
    at_set = torch.zeros(400, dtype=torch.int64)
    for step in range(6):
        with torch.no_grad():
            w.add_(torch.randn(40, 5, generator=g) * 0.05)
        n = cells.step()["counts"].to(torch.int64)
        total += torch.cat([n.clamp(min=0), (-n).clamp(min=0)])
        if step == 2:
            cells.set_(pairs)
            at_set = torch.where(torch.cat([pairs, pairs]), total, 0)
    assert int(total.sum()) > 0
    assert torch.equal(cells.pulse_count, total)
    assert torch.equal(cells.pulses_since_set, total - at_set)
    assert torch.equal(cells.set_count, torch.cat([pairs, pairs]).to(torch.int64))
