"""pulse_pairs' compiled loop (numba, :mod:`hfox_fit.torch._fused`) has the law of the torch paths.

The loop draws its own random numbers (a splitmix64 stream per block and call, seeded from the array's
block generator; normal numbers by a ziggurat), so its numbers are not the class path's: the tests
compare the laws of the states after the same counts (as ``test_torch_pairs`` compares the class path
with the select path) and the laws of its draws; its determinism (threads, resume) is tested with the class
path's in ``test_torch_pairs``.
"""

import dataclasses
import warnings

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from test_torch_array import _law_model, _log_model  # noqa: E402
from test_torch_pairs import HALF, _counts, _largest_gap  # noqa: E402

from hfox_fit import ParameterLaw, preset_model  # noqa: E402
from hfox_fit.torch import WeakResetArray, _fused, _pairs  # noqa: E402

needs_numba = pytest.mark.skipif(not _fused.AVAILABLE, reason="numba is not installed (the train extra)")


def _run(model, fused: bool, seed: int, counts, path="classes", **switches) -> WeakResetArray:
    arr = WeakResetArray(model, 2 * HALF, seed=seed, **switches)
    with _pairs.settings(FUSED=fused):
        for n in counts:
            r = _pairs.pulse_pairs(arr, n, path=path)
            assert torch.equal(r, arr.resistance)
    return arr


def _c2c_model():
    paper = preset_model("paper")
    c2c = {"c1": ParameterLaw("norm", {"loc": 0.0, "scale": 0.01}, (-0.05, 0.05)),
           "r0": ParameterLaw("norm", {"loc": 0.0, "scale": 80.0}, (-300.0, 300.0)),
           "rtn_amplitude": ParameterLaw("norm", {"loc": 0.0, "scale": 0.02}, (-0.05, 0.05))}
    return dataclasses.replace(paper, c2c=c2c)


def _power_model():
    return _law_model("power", a=ParameterLaw("lognorm", {"s": 0.3, "scale": 0.02}, (0.005, 0.1)),
                      b=ParameterLaw("norm", {"loc": 0.6, "scale": 0.05}, (0.4, 0.8)))


@needs_numba
@pytest.mark.parametrize("model, switches", [
    (preset_model("paper"), {"d2d": False}), (preset_model("wafer_b"), {"d2d": False}),
    (preset_model("paper"), {"d2d": False, "rtn": False}), (preset_model("wafer_b"), {"d2d": False, "pink": False}),
    (preset_model("paper"), {}), (_c2c_model(), {"d2d": False}), (_power_model(), {"d2d": False}),
    (_log_model(), {"d2d": False}),
], ids=["paper", "wafer_b", "no_rtn", "no_pink", "paper_d2d", "c2c", "power_law", "log_law"])
def test_fused_loop_has_the_law_of_the_select_path(model, switches):
    counts = _counts(5)
    fast = _run(model, True, 1, counts, **switches)
    assert _fused.usable(fast)
    ref = _run(model, False, 2, counts, path="select", **switches)
    assert torch.equal(fast.pulses, ref.pulses)  # the same cells got the same pulses
    gap, where = _largest_gap(fast, ref)
    assert gap < 5.0, (gap, where)


@needs_numba
def test_the_comparison_catches_a_loop_without_its_telegraph_or_pink_term():
    counts = _counts(5)
    ref = _run(preset_model("paper"), False, 2, counts, path="select", d2d=False)
    for off in ({"rtn": False}, {"pink": False}):
        wrong = _run(preset_model("paper"), True, 1, counts, d2d=False, **off)
        assert _largest_gap(wrong, ref)[0] > 5.0, off


@needs_numba
def test_the_telegraph_term_is_u1_u2_times_the_cells_amplitude():
    """Without pink noise, a cell whose chain is high reads its drift plus ``U1 U2 A``: (w - drift) / A has the
    law of a product of two uniforms (CDF x - x ln x); a low chain reads its drift alone. A chain set low is
    high after 420 pulses (in steps of 14) with probability pi (1 - (1 - p_up - p_down)**420)."""
    from test_torch_pairs import _drift

    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=3, pink=False)
    n = torch.where(torch.arange(HALF) % 2 == 0, 14, -14).to(torch.int32)
    for _ in range(30):
        arr.pulse_pairs(n)
    pulsed = arr.pulses > 0
    high = arr.rtn_high & pulsed
    amp = arr.cell_parameters["rtn_amplitude"].double()
    ratio = ((arr.w.double() - _drift(arr)) / amp)[high].numpy()
    p_up, p_down = (float(v) for v in arr.rtn_rates)
    share, k = int(high.sum()) / int(pulsed.sum()), int(pulsed.sum())
    want = p_up / (p_up + p_down) * (1 - (1 - p_up - p_down) ** 420)
    assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / k), (share, want)
    assert stats.kstest(ratio, lambda x: np.where(x <= 0, 0.0, np.minimum(1.0, x - x * np.log(np.maximum(x, 1e-300))))
                        ).pvalue > 1e-3
    assert abs(ratio.mean() - 0.25) < 4 * np.sqrt(7 / 144 / ratio.size)  # (E[U1 U2] = 1/4, var 1/9 - 1/16)
    low = pulsed & ~arr.rtn_high
    torch.testing.assert_close(arr.w.double()[low], _drift(arr)[low], rtol=0, atol=1e-6)


@needs_numba
def test_fused_loop_runs_in_double_precision_with_the_same_law():
    counts = _counts(6)
    fast = _run(preset_model("wafer_b"), True, 1, counts, d2d=False, dtype=torch.float64)
    ref = _run(preset_model("wafer_b"), False, 2, counts, path="select", d2d=False, dtype=torch.float64)
    assert fast.w.dtype == torch.float64 and torch.equal(fast.pulses, ref.pulses)
    assert _largest_gap(fast, ref)[0] < 5.0


@needs_numba
def test_the_loops_normal_numbers_are_standard_normal():
    z = _fused.normals_for_test(12345, 400_000)
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.var() - 1) < 4 * np.sqrt(2 / z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # the tails (beyond the ziggurat's base, 3.44) and the wedges, by their counts
    for edge in (1.0, 2.5, 3.44, 4.0):
        want = 2 * stats.norm.sf(edge) * z.size
        assert abs(np.count_nonzero(np.abs(z) > edge) - want) < 5 * np.sqrt(want) + 2, edge
    assert not np.array_equal(z[:100], _fused.normals_for_test(12346, 100))


@needs_numba
@pytest.mark.parametrize("p", [0.3, 8e-4, 2e-3])
def test_the_loops_waiting_times_are_geometric(p):
    k = _fused.waits_for_test(7, p, 200_000)
    assert k.min() >= 1
    assert abs(k.mean() - 1 / p) < 4 * np.sqrt((1 - p) / p**2 / k.size)
    points = np.unique(np.quantile(k, np.linspace(0.01, 0.99, 25)).astype(np.int64))
    ecdf = np.searchsorted(np.sort(k), points, side="right") / k.size  # (at the jumps of the discrete law)
    assert np.max(np.abs(ecdf - stats.geom(p).cdf(points))) < 0.005
    assert np.all(_fused.waits_for_test(7, 1.0, 10) == 1)
    assert np.all(_fused.waits_for_test(7, 0.0, 10) == _fused.NEVER)


@needs_numba
def test_fused_loops_leave_idle_pairs_and_partners_untouched():
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=1)
    arr.pulse_pairs(_counts(2)[0])
    before = {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}
    read = arr.resistance.clone()
    n = _counts(3)[1] * (torch.rand(HALF, generator=torch.Generator().manual_seed(0)) < 0.02)  # (2 % pulsed)
    after = arr.pulse_pairs(n)
    pulsed = torch.cat([n > 0, n < 0])  # BL cells of pairs given +n, BLb cells of pairs given -n
    assert torch.equal(after[~pulsed], read[~pulsed])
    assert not torch.equal(after[pulsed], read[pulsed])
    for k in ("pulses", "pink_x", "w"):
        assert torch.equal(arr.state_dict()[k][~pulsed], before[k][~pulsed]), k
    assert torch.equal(arr.pulses[pulsed] - before["pulses"][pulsed], torch.cat([n[n > 0], -n[n < 0]]))
    record = {}
    arr.pulse_pairs(n, record=record)  # (the record lists the pulsed pairs and their pulses)
    assert torch.equal(torch.sort(torch.cat(record["pairs"])).values, torch.nonzero(n).squeeze(1))
    assert int(record["pulses"]) == int(n.abs().sum())


@needs_numba
def test_a_read_in_place_by_the_loops_counts_as_a_write():
    """The loops write through numpy views: the tensors written must still show a new version, since the kept
    read (and CellBackedWeights' kept weights) are checked by torch's version counters."""
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=1)
    read = arr.resistance
    tensors = (read, arr.w, arr.pulses, arr.rtn_wait, arr.pink_x)
    versions = [t._version for t in tensors]
    assert arr.pulse_pairs(_counts(1)[0], in_place=True) is read
    assert all(t._version > v for t, v in zip(tensors, versions))


@needs_numba
def test_fused_loops_refuse_huge_counts_before_any_update():
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=4)
    before = arr.state_dict()["w"].clone()
    for huge in (2**31 + 5, -(2**40)):
        n = (torch.rand(HALF) < 0.4).to(torch.int64)
        n[7] = huge
        with pytest.raises(ValueError, match="pulse counts above"):
            arr.pulse_pairs(n)
    assert torch.equal(arr.w, before) and int(arr.pulses.sum()) == 0


def test_without_numba_the_class_path_pulses(monkeypatch):
    counts = _counts(8)[:3]
    monkeypatch.setattr(_fused, "AVAILABLE", False)
    a = _run(preset_model("paper"), True, 1, counts)
    b = _run(preset_model("paper"), False, 1, counts)
    assert not _fused.usable(a)
    assert torch.equal(a.resistance, b.resistance) and torch.equal(a.w, b.w)


@needs_numba
def test_loops_that_fail_to_build_warn_once_and_the_class_path_pulses(monkeypatch):
    monkeypatch.setattr(_fused, "_CHECKED", [])

    def broken():
        raise RuntimeError("LLVM ERROR: no such intrinsic\nmore detail")

    monkeypatch.setattr(_fused, "_try_loops", broken)
    counts = _counts(9)[:2]
    with pytest.warns(RuntimeWarning, match="compiled pulse loops.*LLVM ERROR: no such intrinsic.*same law"):
        a = _run(preset_model("paper"), True, 1, counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (once per process)
        assert not _fused.usable(a)
    b = _run(preset_model("paper"), False, 1, counts)
    assert torch.equal(a.resistance, b.resistance)


@needs_numba
def test_half_precision_deviations_are_read_exactly():
    values = np.array([0.0, -0.0, 1e-7, 6.1e-5, -2.5, 65504.0, 0.333], np.float16)
    assert np.array_equal(_fused._HALVES[values.view(np.uint16)], values)


@needs_numba
def test_the_loops_calls_keep_their_threads_and_the_class_paths_are_balanced(monkeypatch):
    """The compiled loop's threads get about as much done on one core as one thread does, so its calls are
    not sent to one thread after a call that got little CPU time (the class path's are)."""
    balanced = []

    def run_blocks(fn, count, workers, balance=False):
        balanced.append(balance)
        for b in range(count):
            fn(b)

    monkeypatch.setattr(_pairs, "_run_blocks", run_blocks)
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=0)
    monkeypatch.setitem(arr._constants(), "threaded", True)
    counts = _counts(1)[0]
    for fused in (True, False):
        balanced.clear()
        with _pairs.settings(FUSED=fused):
            _pairs.pulse_pairs(arr, counts)
        assert balanced and balanced[-1] is not fused


@needs_numba
@pytest.mark.parametrize("fused", [True, False])
def test_the_read_of_every_pair_counts_its_writes_on_both_paths(fused):
    """CellBackedWeights' read of every pair writes the kept weights and the parameters; the compiled pass writes
    through numpy, so it must count those writes as the torch copies do (autograd and the kept weights check
    the version counters)."""
    from hfox_fit.torch import BinarizedMLP, CellBackedWeights

    net = BinarizedMLP((8, 6, 3))
    cells = CellBackedWeights(net, preset_model("paper"), scale=0.01, seed=0)
    blocks, offset = [], 0
    for p in cells._params:
        blocks.append((p.detach().view(-1), 0, p.numel(), offset))
        offset += p.numel()
    kept = cells._read_flat().clone()
    tensors = (kept, *cells._params)
    versions = [t._version for t in tensors]
    with _pairs.settings(FUSED=fused), torch.no_grad():
        cells._read_by_block(cells.cells.resistance, kept, blocks)
    assert all(t._version > v for t, v in zip(tensors, versions))


@needs_numba
def test_the_compiled_update_into_pulses_is_the_torch_passes_to_the_bit():
    """counts_block gives clip(round((w - before) / scale)) as the torch passes do: halves rounded to even,
    huge finite updates clipped, NaN and infinite updates flagged; and the counts' smallest and largest value."""
    g = np.random.default_rng(4)
    before = (g.random(100_000) * 0.2).astype(np.float32)
    after = before + (g.standard_normal(100_000) * 0.02).astype(np.float32)
    scale, most = np.float32(0.0025), np.float32(14)
    after[::97] = before[::97] + scale * np.float32(2.5)  # (ties: 2.5 steps round to 2)
    after[3], after[4] = 1e30, -1e30
    n = np.empty(after.size, np.int32)
    assert _fused.counts_block(after, before, scale, most, n) == (True, -14, 14)
    want = torch.sub(torch.from_numpy(after), torch.from_numpy(before)).div_(0.0025).round_().clamp_(-14, 14)
    assert np.array_equal(n, want.to(torch.int32).numpy()) and n[3] == 14 and n[4] == -14
    small = before + (g.standard_normal(100_000) * 0.006).astype(np.float32)  # (unclipped: the counts' bounds)
    ok, lo, hi = _fused.counts_block(small, before, scale, most, n)
    assert ok and (lo, hi) == (n.min(), n.max()) and -14 < lo < 0 < hi < 14
    for bad in (np.nan, np.inf, -np.inf):
        broken = after.copy()
        broken[7] = bad
        assert not _fused.counts_block(broken, before, scale, most, n)[0]


@needs_numba
def test_a_step_that_reads_the_pulsed_pairs_in_the_loop_has_the_numbers_of_a_full_read(monkeypatch):
    """CellBackedWeights.step on the compiled path pulses through pulse_pairs_reading: the loop reads each pulsed
    pair into the kept weights, with the bounds of its pass over the weights (no pass over the counts). The
    counts, pulses, flips, weights and cells are those of a step that pulses by pulse_pairs and reads every
    pair (the same random numbers: the same blocks draw the same seeds)."""
    from hfox_fit.torch import BinarizedMLP, CellBackedWeights, _threads, sign_readout

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # (the weights' blocks: several threads)
    monkeypatch.setattr(_threads, "CPU_BLOCK", 4096)  # 8 blocks of pairs, 8 of weights: reads at offsets
    monkeypatch.setattr(CellBackedWeights, "WEIGHT_BLOCK", 4096)
    calls = []
    real = _pairs.pulse_pairs_reading
    monkeypatch.setattr(_pairs, "pulse_pairs_reading", lambda *a: calls.append(a[2]) or real(*a))

    def train(readout):
        torch.manual_seed(0)
        net = BinarizedMLP((64, 400, 10))  # 59,200 cells: the array runs on worker threads
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        cells = CellBackedWeights(net, preset_model("paper"), scale=0.0025, seed=3, readout=readout)
        assert len(cells._weight_blocks()) == 8 and cells.cells._constants()["threaded"]
        assert cells.cells._block_size == 4096
        g = torch.Generator().manual_seed(1)
        out, kept = [], []
        for i in range(8):
            for group in opt.param_groups:
                group["lr"] = 0.01 if i < 4 else 0.0016
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(torch.rand(32, 64, generator=g)),
                                              torch.randint(0, 10, (32,), generator=g)).backward()
            opt.step()
            flat = cells._read_flat()
            versions = flat._version
            s = cells.step()
            kept.append((cells._read_flat() is flat, flat._version > versions))
            cells.reset_saturated(6)
            out.append((s["counts"], int(s["pulses"]), int(s["flips"])))
        return net, cells, out, kept

    fast = train(None)
    assert len(calls) == 8 and _pairs.fused_pairs(fast[1].cells)
    full = train(lambda r_bl, r_blb: sign_readout(r_bl, r_blb))  # not the default: every pair read after
    assert len(calls) == 8
    assert all(k and v for k, v in fast[3])  # the kept weights updated in place, the write counted
    for (ca, pa, fa), (cb, pb, fb) in zip(fast[2], full[2]):
        assert torch.equal(ca, cb) and pa == pb == int(ca.abs().sum()) and fa == fb
    assert sum(f for _, _, f in fast[2]) > 0
    for p, q in zip(fast[0].parameters(), full[0].parameters()):
        assert torch.equal(p, q)
    assert torch.equal(fast[1].cells.resistance, full[1].cells.resistance)
    assert torch.equal(fast[1].cells.w, full[1].cells.w)
    with _pairs.settings(NUMPY_LISTING=False):  # a path setting of pulse_pairs: the step keeps to it
        again = train(None)
    assert len(calls) == 8 and sum(f for _, _, f in again[2]) > 0


@needs_numba
def test_only_the_default_path_of_pulse_pairs_reads_in_the_loop():
    """pulse_pairs_reading is the compiled loop's: an array compiled by torch, or other path settings, pulse
    by pulse_pairs (CellBackedWeights.step then reads as before)."""
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=0)
    assert _pairs.fused_pairs(arr)
    for setting in ("NUMPY_LISTING", "SIGNED_LISTING", "FUSED"):
        with _pairs.settings(**{setting: False}):
            assert not _pairs.fused_pairs(arr)
            with pytest.raises(ValueError, match="compiled loop only"):
                _pairs.pulse_pairs_reading(arr, torch.zeros(HALF, dtype=torch.int32), (0, 0),
                                           torch.ones(HALF, dtype=arr.dtype), {})
    assert not _pairs.fused_pairs(WeakResetArray(preset_model("paper"), 2 * HALF, seed=0, compile=True))


@needs_numba
def test_pulse_pairs_reading_refuses_counts_and_weights_it_cannot_take():
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=0)
    signs = torch.ones(HALF, dtype=arr.dtype)
    with pytest.raises(ValueError, match="int32 counts"):
        _pairs.pulse_pairs_reading(arr, torch.zeros(HALF, dtype=torch.int64), (0, 0), signs, {})
    with pytest.raises(ValueError, match="signs of shape"):
        _pairs.pulse_pairs_reading(arr, torch.zeros(HALF, dtype=torch.int32), (0, 0), signs[1:], {})
    record = {}
    r, flips = _pairs.pulse_pairs_reading(arr, torch.zeros(HALF, dtype=torch.int32), (0, 0), signs, record)
    assert r is arr.resistance and int(flips) == 0 and int(record["pulses"]) == 0
