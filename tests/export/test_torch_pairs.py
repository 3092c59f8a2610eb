"""pulse_pairs' default path (pulsed pairs only, fewer draws for 1-2 pulses) has the law of the select path."""

import math

import pytest

torch = pytest.importorskip("torch")

from hfox_fit import preset_model  # noqa: E402
from hfox_fit.torch import WeakResetArray, _pairs, _update  # noqa: E402

HALF = 60_000
STEPS = 10


def _counts(seed: int) -> list:
    """Signed counts per step: a third of the pairs idle, the rest mostly 1-3 pulses, some up to 14."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        u = torch.rand(HALF, generator=g)
        n = torch.where(u < 0.35, 0, torch.where(u < 0.6, 1, torch.where(u < 0.8, 2, torch.where(u < 0.9, 3, 9))))
        n = torch.where(torch.rand(HALF, generator=g) < 0.05, torch.randint(1, 15, (HALF,), generator=g), n)
        sign = torch.where(torch.rand(HALF, generator=g) < 0.5, 1, -1)
        out.append((n * sign).to(torch.int32))
    return out


def _run(model_name: str, path: str, seed: int, counts: list, **switches) -> WeakResetArray:
    arr = WeakResetArray(preset_model(model_name), 2 * HALF, seed=seed, d2d=False, **switches)
    for n in counts:
        r = _pairs.pulse_pairs(arr, n, path=path)
        assert torch.equal(r, arr.resistance)
    return arr


def _drift(arr: WeakResetArray) -> torch.Tensor:
    return arr._law(arr.pulses.double(), {k: v.double() for k, v in arr.cell_parameters.items()})


def _largest_gap(a: WeakResetArray, b: WeakResetArray) -> tuple[float, str]:
    """The largest standardised difference of the means and variances of the two arrays' states."""
    moved = a.pulses > 0
    worst, where = 0.0, ""
    for name, va, vb in (("w", a.w, b.w), ("pink_x", a.pink_x, b.pink_x),
                         ("pink_xi re", a.pink_xi[0], b.pink_xi[0]), ("pink_xi im", a.pink_xi[1], b.pink_xi[1]),
                         ("rtn_high", a.rtn_high.double(), b.rtn_high.double())):
        xa, xb = va[moved].double(), vb[moved].double()
        if name == "w":  # the noise: w less the cell's drift at its pulse count (the same counts in both)
            xa, xb = xa - _drift(a)[moved], xb - _drift(b)[moved]
        k = xa.numel()
        ma, mb, sa, sb = xa.mean(), xb.mean(), xa.var(), xb.var()
        if float(sa + sb) == 0:
            continue
        gap_mean = abs(float(ma - mb)) / math.sqrt(float(sa + sb) / k)
        # a sample variance's standard error is sqrt((m4 - var**2) / k) whatever the law
        m4a, m4b = (xa - ma).pow(4).mean(), (xb - mb).pow(4).mean()
        gap_var = abs(float(sa - sb)) / math.sqrt(float(m4a - sa**2 + m4b - sb**2) / k)
        gaps = ((gap_mean, "mean"),) if name == "rtn_high" else ((gap_mean, "mean"), (gap_var, "variance"))
        for gap, what in gaps:  # (a 0/1 state's variance follows from its mean)
            if gap > worst:
                worst, where = gap, f"{name} {what}"
    return worst, where


@pytest.mark.parametrize("model_name, switches", [("paper", {}), ("wafer_b", {}), ("paper", {"rtn": False}),
                                                  ("wafer_b", {"pink": False})])
def test_class_path_has_the_law_of_the_select_path(model_name, switches):
    counts = _counts(5)
    fast = _run(model_name, "classes", 1, counts, **switches)
    ref = _run(model_name, "select", 2, counts, **switches)
    assert torch.equal(fast.pulses, ref.pulses)  # the same cells got the same pulses
    gap, where = _largest_gap(fast, ref)
    assert gap < 5.0, (gap, where)


def test_class_path_keeps_idle_pairs_and_partners_untouched():
    model = preset_model("wafer_b")  # C2C rows too
    arr = WeakResetArray(model, 2 * HALF, seed=3)
    arr.pulse_pairs(_counts(1)[0])
    n = _counts(2)[1]
    before = {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}
    r_before = arr.resistance.clone()
    r = arr.pulse_pairs(n)
    counts = torch.cat([n.clamp(min=0), (-n).clamp(min=0)])
    assert torch.equal(arr.pulses - before["pulses"], counts)
    still = counts == 0
    for k in ("w", "pink_x", "rtn_high", "rtn_wait", "cell_params"):
        assert torch.equal(getattr(arr, k)[..., still], before[k][..., still]), k
    assert torch.equal(r[still], r_before[still])
    assert not torch.equal(r[~still], r_before[~still])


def test_draw_classes_are_read_from_the_coefficients():
    """One pulse moves the stand-in's states along one direction (L11 = L21 = L22 = 0), two along two."""
    arr = WeakResetArray(preset_model("paper"), 10, seed=0)
    a, b = _update.draw_classes(arr)
    assert (a, b) == (2, 3)
    coef = arr.pink_coef
    assert float(coef[7:9, 1].abs().sum()) == 0 and float(coef[2, 1:3].abs().sum()) == 0
    assert float(coef[7:9, 2].abs().min()) > 0 and float(coef[2, 3]) > 0
    assert _update.draw_classes(WeakResetArray(preset_model("paper"), 10, seed=0, pink=False))[0] == _update.NEVER


def test_the_comparison_catches_a_wrong_law(monkeypatch):
    """Skipping a draw the coefficients use (the second state draw of 2-pulse cells) is caught by the same test."""
    counts = _counts(5)
    ref = _run("paper", "select", 2, counts)
    monkeypatch.setattr(_pairs, "FUSED", False)  # (the torch class path's draws; the fused loops': test_torch_fused)
    monkeypatch.setattr(_pairs, "draw_classes", lambda arr: (3, 3))  # as if L11, L21 were 0 for n = 2
    wrong = _run("paper", "classes", 1, counts)
    gap, where = _largest_gap(wrong, ref)
    assert gap > 5.0, (gap, where)


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "compiled"])
def test_class_path_resumes_exactly_and_does_not_depend_on_threads(monkeypatch, fused):
    from hfox_fit.torch import _fused, _threads

    if fused and not _fused.AVAILABLE:
        pytest.skip("numba is not installed (the train extra)")
    monkeypatch.setattr(_pairs, "FUSED", fused)  # (the torch class path, or the compiled loop of test_torch_fused)
    monkeypatch.setattr(_threads, "CPU_BLOCK", 16_000)
    monkeypatch.setattr(_threads._BALANCE, "MIN_CORES", 0.0)
    monkeypatch.setattr(_threads._BALANCE, "serial_left", 0)
    counts = _counts(7)[:4]
    threads = torch.get_num_threads()
    reads = []
    try:
        for k in (1, 2):
            torch.set_num_threads(k)
            arr = WeakResetArray(preset_model("wafer_b"), 2 * HALF, seed=4)
            reads.append([arr.pulse_pairs(n).clone() for n in counts])
    finally:
        torch.set_num_threads(threads)
        assert len(_pairs._pair_views(arr)) >= 2  # (blocks of pairs on both threads)
    for a, b in zip(*reads):
        assert torch.equal(a, b)
    other = WeakResetArray(preset_model("wafer_b"), 2 * HALF, seed=5)
    assert not torch.equal(other.pulse_pairs(counts[0]), reads[0][0])  # (another seed, other numbers)
    # resumed from a state_dict half way, the same reads
    a = WeakResetArray(preset_model("wafer_b"), 2 * HALF, seed=4)
    for n in counts[:2]:
        a.pulse_pairs(n)
    b = WeakResetArray(preset_model("wafer_b"), 2 * HALF, seed=9)
    b.load_state_dict(a.state_dict())
    for n in counts[2:]:
        assert torch.equal(a.pulse_pairs(n), b.pulse_pairs(n))


def test_reset_saturated_skips_the_scan_while_no_cell_can_be_saturated(monkeypatch):
    from hfox_fit.torch import CellBackedWeights

    net = torch.nn.Linear(50, 20)
    cells = CellBackedWeights(net, preset_model("paper"), scale=0.01, seed=0)
    cells._pulse_pairs(torch.full((cells.numel,), 3, dtype=torch.int32))
    scans = []
    real = cells.saturated
    monkeypatch.setattr(cells, "saturated", lambda headroom: scans.append(headroom) or real(headroom))
    assert cells.reset_saturated(4) == 0 and scans == []  # 3 pulses at most since SET: nothing to scan
    cells._pulse_pairs(torch.full((cells.numel,), -3, dtype=torch.int32))
    assert cells.reset_saturated(4) == 0 and scans == [4]  # (the bound, 6, allows it: scanned, none)
    assert cells.reset_saturated(3) == cells.numel and scans == [4, 3]  # both cells at 3: all re-SET


@pytest.mark.parametrize("model_name", ["paper", "wafer_b"])
def test_listing_the_few_pulsed_pairs_gives_the_order_of_one_sort(monkeypatch, model_name):
    """Blocks with few pulsed pairs list them and sort their keys alone: the same cells get the same draws as
    through one sort of every pair's key (the state and reads equal bit for bit), at every share."""
    g = torch.Generator().manual_seed(11)
    counts = []
    for share in (0.01, 0.05, 0.12, 0.3, 0.9):  # both sides of LIST_SHARE
        n = torch.randint(1, 15, (HALF,), generator=g) * (torch.rand(HALF, generator=g) < share)
        counts.append((n * torch.where(torch.rand(HALF, generator=g) < 0.5, 1, -1)).to(torch.int32))
    monkeypatch.setattr(_pairs, "FUSED", False)  # (the torch class path's listings)
    listed = []
    real_nonzero = torch.nonzero
    monkeypatch.setattr(torch, "nonzero", lambda x, *a, **k: listed.append(x.dtype) or real_nonzero(x, *a, **k))
    runs = []
    sorts = []
    real_sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda x, *a, **k: sorts.append(x.numel()) or real_sort(x, *a, **k))
    # every block listed / every block sorted whole (the path before) / listed by numpy (the CPU default)
    for share, by_numpy in ((1.0, False), (0.0, False), (0.0, True)):
        monkeypatch.setattr(_pairs, "LIST_SHARE", share)
        monkeypatch.setattr(_pairs, "NUMPY_LISTING", by_numpy)
        listed.clear()
        sorts.clear()
        arr = WeakResetArray(preset_model(model_name), 2 * HALF, seed=6)
        reads = [arr.pulse_pairs(n).clone() for n in counts]
        runs.append((reads, {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}))
        # the pulsed pairs listed by a torch scan of their counts, or by numpy (no torch sort)
        assert (torch.int32 in listed) == (share == 1.0 and not by_numpy)
        assert (not sorts) == by_numpy
    reads_a, state_a = runs[0]
    for reads_b, state_b in runs[1:]:
        for a, b in zip(reads_a, reads_b):
            assert torch.equal(a, b)
        assert state_a.keys() == state_b.keys()
        for k in state_a:
            assert torch.equal(state_a[k], state_b[k]), k


def test_numpy_listing_matches_a_stable_sort_of_the_keys():
    """The CPU listing gives the order of one stable sort of every pair's key (pulsed pairs only) and the class
    sizes, for keys with and without classes 2 and 3, none pulsed, all pulsed."""
    g = torch.Generator().manual_seed(3)
    cases = [torch.randint(0, 4, (1000,), generator=g, dtype=torch.int8),
             torch.randint(0, 2, (1000,), generator=g, dtype=torch.int8),
             torch.zeros(7, dtype=torch.int8), torch.full((9,), 3, dtype=torch.int8),
             torch.tensor([2, 0, 1, 3, 2, 1, 0, 3], dtype=torch.int8)]
    for key in cases:
        order, sizes = _pairs._listed_cpu(key)
        ranked = torch.sort(key, stable=True)
        idle = int((key == 0).sum())
        assert torch.equal(order, ranked.indices[idle:])
        assert sizes == tuple(int((key == k).sum()) for k in (1, 2, 3))


def test_blocks_of_pairs_are_larger_than_the_arrays_and_draw_from_its_generators(monkeypatch):
    """Blocks of pairs hold PAIR_BLOCK times the array's block size (fewer blocks: less fixed work per call), and
    each draws from one of the array's block generators."""
    from hfox_fit.torch import _threads

    monkeypatch.setattr(_threads, "CPU_BLOCK", 16_000)
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=1)
    views = _pairs._pair_views(arr)
    sizes = [e - s for s, e in (v["range"] for v in views)]
    assert _pairs.PAIR_BLOCK >= 2
    assert sizes[:-1] == [_pairs.PAIR_BLOCK * arr._block_size] * (len(sizes) - 1) and 0 < sizes[-1] <= sizes[0]
    assert sum(sizes) == HALF and len(views) <= len(arr._block_gens)


def test_in_place_pulses_give_the_same_reads_and_record_lists_the_pulsed_pairs():
    """``in_place`` writes the reads into the last read (same tensor, same values as a new one); ``record`` lists
    the pairs given pulses and their total, and is empty on the select path."""
    counts = _counts(11)[:3] + [torch.zeros(HALF, dtype=torch.int32)]
    a = WeakResetArray(preset_model("wafer_b"), 2 * HALF, seed=5)
    b = WeakResetArray(preset_model("wafer_b"), 2 * HALF, seed=5)
    for i, n in enumerate(counts):
        last_a, last = a.resistance, b.resistance
        record = {}
        ra, rb = a.pulse_pairs(n), b.pulse_pairs(n, in_place=True, record=record)
        assert rb is last and rb is b.resistance and ra is a.resistance
        assert (ra is last_a) == (i == len(counts) - 1)  # (a new tensor unless nothing was pulsed)
        assert torch.equal(ra, rb)
        pairs = torch.cat(record["pairs"]) if record["pairs"] else torch.zeros(0, dtype=torch.int64)
        assert torch.equal(pairs.sort().values, torch.nonzero(n).squeeze(1))
        assert record["pulses"].dtype == torch.int64 and int(record["pulses"]) == int(n.abs().sum())
    for k, v in a.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b.state_dict()[k]), k
    record = {"stale": 1}
    _pairs.pulse_pairs(a, counts[0], path="select", record=record)
    assert record == {}


def test_a_step_reads_only_the_pulsed_pairs_with_the_numbers_of_a_full_read():
    """CellBackedWeights.step with few pairs pulsed reads them alone into the weights it keeps (no new read of
    every pair); the counts, flips, pulses, weights and cells are those of a step that reads every pair."""
    from hfox_fit.torch import BinarizedMLP, CellBackedWeights, sign_readout

    def train(readout):
        torch.manual_seed(0)
        net = BinarizedMLP((40, 300, 10))
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        cells = CellBackedWeights(net, preset_model("wafer_b"), scale=0.0025, seed=2, readout=readout)
        x, y = torch.rand(64, 40), torch.randint(0, 10, (64,))
        stats, kept = [], []
        for i in range(12):
            for group in opt.param_groups:  # large updates first (most pairs pulsed), then small ones (few)
                group["lr"] = 0.01 if i < 6 else 0.0016
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            flat = cells._read_flat()
            s = cells.step()
            kept.append(cells._read_flat() is flat)
            cells.reset_saturated(6)
            stats.append((s["counts"], int(s["pulses"]), int(s["flips"])))
        return net, cells, stats, kept

    fast = train(None)
    full = train(lambda r_bl, r_blb: sign_readout(r_bl, r_blb))  # not the default: every pair read
    shares = [float(torch.count_nonzero(c)) / fast[1].numel for c, _, _ in fast[2]]
    few = [s <= CellBackedWeights.READ_PULSED_SHARE for s in shares]
    assert any(few) and not all(few), shares  # (both ways of reading are exercised)
    assert [k and f for k, f in zip(fast[3], few)] == few  # the weights kept, updated in place, when few pulsed
    assert not any(full[3])
    for (ca, pa, fa), (cb, pb, fb) in zip(fast[2], full[2]):
        assert torch.equal(ca, cb) and pa == pb == int(ca.abs().sum()) and fa == fb
    for p, q in zip(fast[0].parameters(), full[0].parameters()):
        assert torch.equal(p, q)
    assert torch.equal(fast[1].cells.resistance, full[1].cells.resistance)
    assert torch.equal(fast[1].set_count, full[1].set_count) and int(fast[1].set_count.sum()) > 0
    held = fast[1].readout_weights()  # copies: a later step leaves them as they were
    copy = [w.clone() for w in held]
    bl = fast[1].bl_resistance
    bl_copy = bl.clone()
    fast[1]._pulse_pairs(torch.full((fast[1].numel,), 2, dtype=torch.int32), in_place=True)
    assert all(torch.equal(a, b) for a, b in zip(held, copy)) and torch.equal(bl, bl_copy)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_listing_from_the_signed_counts_gives_the_numbers_of_keying_every_pair(dtype):
    """Listing each block's pulsed pairs from the signed counts before the update (the CPU default) gives the
    reads, state and record of keying every pair first (main's path), for every integer type of the counts."""
    g = torch.Generator().manual_seed(5)
    few = [n * (torch.rand(HALF, generator=g) < share) for n, share in zip(_counts(22)[:3], (0.02, 0.1, 0.4))]
    counts = [n.clamp(-100, 100).to(dtype) for n in _counts(21)[:3] + few] + [torch.zeros(HALF, dtype=dtype)]
    runs = []
    for signed in (True, False):
        with _pairs.settings(SIGNED_LISTING=signed, FUSED=False):  # (the fused loops: test_torch_fused)
            arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=4)
            records = []
            for n in counts:
                record = {}
                arr.pulse_pairs(n, in_place=True, record=record)
                pairs = torch.cat(record["pairs"]) if record["pairs"] else torch.zeros(0, dtype=torch.int64)
                records.append((pairs, int(record["pulses"])))
            runs.append((arr, records))
    (a, rec_a), (b, rec_b) = runs
    for (pa, na), (pb, nb) in zip(rec_a, rec_b):
        assert torch.equal(pa, pb) and na == nb
    assert torch.equal(a.resistance, b.resistance)
    for k, v in a.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b.state_dict()[k]), k


def test_listing_from_the_signed_counts_matches_the_keyed_order_and_refuses_huge_counts():
    g = torch.Generator().manual_seed(8)
    classes = (2, 3)
    sparse = torch.randint(-5, 6, (1000,), generator=g, dtype=torch.int32) * (torch.rand(1000, generator=g) < 0.2)
    for n in (torch.randint(-5, 6, (1000,), generator=g, dtype=torch.int32), sparse.to(torch.int32),
              torch.zeros(5, dtype=torch.int32), torch.tensor([-1, 2, 0, -3, 9, 1, 0, -2], dtype=torch.int32),
              torch.tensor([0, 0, 0, 1, 0, 0, 0, 0, -1, 0], dtype=torch.int32)):
        got = _pairs._listed_signed(n, classes)
        if not bool(n.any()):
            assert got is None
            continue
        order, own, sizes, bounds = got
        want, want_sizes = _pairs._listed_cpu(_pairs._class_key(n.abs(), classes))
        assert torch.equal(order, want) and sizes == want_sizes
        assert torch.equal(own, n.index_select(0, want)) and own.dtype == torch.int32
        dense = int(torch.count_nonzero(n)) > _pairs.DENSE_SHARE * n.numel()
        nz = n if dense else n[n != 0]  # (the bounds of the block, or of its pulsed pairs)
        assert bounds == (int(nz.min()), int(nz.max()))
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=4)
    before = arr.state_dict()["w"].clone()
    for huge, share in ((2**31 + 5, 0.01), (-(2**40), 0.01), (2**31 + 5, 0.9), (-(2**40), 0.9)):
        n = (torch.rand(HALF, generator=g) < share).to(torch.int64)  # (few pulsed, most pulsed)
        n[7] = huge
        with pytest.raises(ValueError, match="pulse counts above"):
            arr.pulse_pairs(n)
    assert torch.equal(arr.w, before)  # refused before any update


def _train_cells(blockwise: bool, steps: int = 10):
    from hfox_fit.torch import BinarizedMLP, CellBackedWeights

    torch.manual_seed(0)
    net = BinarizedMLP((64, 300, 10))  # 22,200 weights: cells on the worker threads
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    cells = CellBackedWeights(net, preset_model("wafer_b"), scale=0.0025, seed=3)
    cells.WEIGHT_BLOCK = 700  # many blocks, each parameter's last one short
    if not blockwise:
        cells._weight_blocks = lambda: None
    x, y = torch.rand(64, 64), torch.randint(0, 10, (64,))
    stats, resets = [], []
    for i in range(steps):
        for group in opt.param_groups:  # large updates first (most pairs pulsed), then small ones (few)
            group["lr"] = 0.01 if i < steps // 2 else 0.0016
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        s = cells.step()
        resets.append(cells.reset_saturated(8))
        stats.append((s["counts"], int(s["pulses"]), int(s["flips"])))
    return net, cells, stats, resets


def test_the_steps_passes_by_block_give_the_numbers_of_whole_tensor_passes():
    """CellBackedWeights.step's passes over every weight block by block on the worker threads (the update into
    pulses, the read of every pair, the copy into the parameters, the saturation test) give the counts, flips,
    pulses, weights, cells and re-SETs of whole-tensor passes, at high and low shares of pairs pulsed."""
    from hfox_fit.torch import CellBackedWeights

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # (blocks where the cells run on several threads)
    try:
        fast = _train_cells(True)
        blocks = fast[1]._weight_blocks()
    finally:
        torch.set_num_threads(threads)
    assert blocks is not None and len(blocks) > 20
    assert [e - s for _, s, e, _ in blocks].count(700) == len(blocks) - 2  # (each parameter's last block short)
    from hfox_fit.torch import _fused

    assert fast[1]._compiled_passes() == _fused.AVAILABLE  # (where numba is installed: its passes, the same numbers)
    whole = _train_cells(False)
    shares = [float(torch.count_nonzero(c)) / fast[1].numel for c, _, _ in fast[2]]
    few = [s <= CellBackedWeights.READ_PULSED_SHARE for s in shares]
    assert any(few) and not all(few), shares
    assert sum(fast[3]) > 0 and fast[3] == whole[3]  # pairs re-SET, the same
    for (ca, pa, fa), (cb, pb, fb) in zip(fast[2], whole[2]):
        assert torch.equal(ca, cb) and pa == pb == int(ca.abs().sum()) and fa == fb
    for p, q in zip(fast[0].parameters(), whole[0].parameters()):
        assert torch.equal(p, q)
    for k, v in fast[1].cells.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, whole[1].cells.state_dict()[k]), k
    assert torch.equal(fast[1].set_count, whole[1].set_count)
    assert all(torch.equal(w, p.detach()) for w, p in zip(fast[1].readout_weights(), fast[1].params))


def test_a_step_by_block_refuses_nan_updates_before_any_pulse(monkeypatch):
    from hfox_fit.torch import _weights

    monkeypatch.setattr(_weights, "block_threads", lambda: 2)
    net, cells, _, _ = _train_cells(True, steps=2)
    assert cells._weight_blocks() is not None
    state = {k: v.clone() for k, v in cells.cells.state_dict().items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        cells.params[1][3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        cells.step()
    for k, v in cells.cells.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, state[k]), k
