"""pulse_pairs' compiled loops (numba, :mod:`hfox_fit.torch._fused`) give the torch class path's numbers.

The loops draw what the class path draws, from the same generators in the same order, so the integer
state (pulse counts, telegraph chains and waits) is equal and the floats differ by rounding only.
"""

import dataclasses
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import DeviceModel, ParameterLaw, preset_model  # noqa: E402
from hfox_fit.torch import WeakResetArray, _fused, _pairs  # noqa: E402

needs_numba = pytest.mark.skipif(not _fused.AVAILABLE, reason="numba is not installed (the train extra)")

HALF = 40_000
INTEGER_STATE = ("pulses", "rtn_wait", "rtn_high")


def _counts(seed: int, steps: int = 8) -> list:
    """Signed counts: idle pairs, mostly 1-3 pulses, some up to 14, shares of pulsed pairs from 2 % to 90 %."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for share in (0.4, 0.02, 0.9, 0.4, 0.2, 0.6, 0.4, 0.05)[:steps]:
        u = torch.rand(HALF, generator=g)
        n = torch.where(u < 0.6, 1, torch.where(u < 0.8, 2, torch.where(u < 0.9, 3, 9)))
        n = torch.where(torch.rand(HALF, generator=g) < 0.05, torch.randint(1, 15, (HALF,), generator=g), n)
        n = n * (torch.rand(HALF, generator=g) < share) * torch.where(torch.rand(HALF, generator=g) < 0.5, 1, -1)
        out.append(n.to(torch.int32))
    return out


def _pulse(model, fused: bool, counts, dtype=torch.float32, **switches):
    arr = WeakResetArray(model, 2 * HALF, seed=3, dtype=dtype, **switches)
    reads, records = [], []
    with _pairs.settings(FUSED=fused):
        for k, n in enumerate(counts):
            record = {}
            reads.append(arr.pulse_pairs(n, in_place=bool(k % 2), record=record).clone())
            pairs = torch.cat(record["pairs"]) if record["pairs"] else torch.zeros(0, dtype=torch.int64)
            records.append((torch.sort(pairs).values, int(record["pulses"])))
            if k == 3:
                arr.set_(torch.arange(2 * HALF) % 7 == 0)  # (a SET between pulses: the C2C draws, fresh chains)
    return arr, reads, records


def _assert_same_numbers(a, b, reads_a, reads_b, rtol):
    for name in INTEGER_STATE:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("pink_x", "pink_xi", "w"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=rtol, atol=rtol * 1e-2, msg=name)
    for ra, rb in zip(reads_a, reads_b):
        torch.testing.assert_close(ra, rb, rtol=rtol, atol=0.0)


def _c2c_model():
    paper = preset_model("paper")
    c2c = {"c1": ParameterLaw("norm", {"loc": 0.0, "scale": 0.01}, (-0.05, 0.05)),
           "r0": ParameterLaw("norm", {"loc": 0.0, "scale": 80.0}, (-300.0, 300.0)),
           "rtn_amplitude": ParameterLaw("norm", {"loc": 0.0, "scale": 0.02}, (-0.05, 0.05))}
    return dataclasses.replace(paper, c2c=c2c)


def _power_model():
    base = preset_model("paper").d2d
    d2d = {"a": ParameterLaw("lognorm", {"s": 0.3, "scale": 0.02}, (0.005, 0.1)),
           "b": ParameterLaw("norm", {"loc": 0.6, "scale": 0.05}, (0.4, 0.8)),
           "c1": base["c1"], "r0": base["r0"], "rtn_amplitude": base["rtn_amplitude"]}
    return DeviceModel(law="power", d2d=d2d)


def _log_model():
    base = preset_model("paper").d2d
    d2d = {"a": ParameterLaw("lognorm", {"s": 0.3, "scale": 0.05}, (0.01, 0.2)),
           "tau": ParameterLaw("lognorm", {"s": 0.5, "scale": 30.0}, (1.0, 500.0)),
           "c1": base["c1"], "r0": base["r0"], "rtn_amplitude": base["rtn_amplitude"]}
    return DeviceModel(law="log", d2d=d2d)


@needs_numba
@pytest.mark.parametrize("model, switches", [
    (preset_model("paper"), {}), (preset_model("wafer_b"), {}), (preset_model("paper"), {"rtn": False}),
    (preset_model("wafer_b"), {"pink": False}), (preset_model("paper"), {"d2d": False}),
    (_c2c_model(), {}), (_power_model(), {}), (_log_model(), {}),
], ids=["paper", "wafer_b", "no_rtn", "no_pink", "no_d2d", "c2c", "power_law", "log_law"])
def test_fused_loops_give_the_class_paths_numbers(model, switches):
    counts = _counts(5)
    a, reads_a, rec_a = _pulse(model, True, counts, **switches)
    b, reads_b, rec_b = _pulse(model, False, counts, **switches)
    assert _fused.usable(a)
    _assert_same_numbers(a, b, reads_a, reads_b, rtol=1e-5)
    for (pa, na), (pb, nb) in zip(rec_a, rec_b):  # the same pairs listed (in another order), the same pulses
        assert torch.equal(pa, pb) and na == nb


@needs_numba
def test_fused_loops_in_double_precision():
    counts = _counts(6, steps=4)
    a, reads_a, _ = _pulse(preset_model("wafer_b"), True, counts, dtype=torch.float64)
    b, reads_b, _ = _pulse(preset_model("wafer_b"), False, counts, dtype=torch.float64)
    _assert_same_numbers(a, b, reads_a, reads_b, rtol=1e-12)


@needs_numba
def test_fused_loops_leave_idle_pairs_and_partners_untouched():
    arr = WeakResetArray(preset_model("paper"), 2 * HALF, seed=1)
    arr.pulse_pairs(_counts(2)[0])
    before = {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}
    read = arr.resistance.clone()
    n = _counts(3)[1]  # (2 % of the pairs pulsed)
    after = arr.pulse_pairs(n)
    pulsed = torch.cat([n > 0, n < 0])  # BL cells of pairs given +n, BLb cells of pairs given -n
    assert torch.equal(after[~pulsed], read[~pulsed])
    assert not torch.equal(after[pulsed], read[pulsed])
    for k in ("pulses", "pink_x", "w"):
        assert torch.equal(arr.state_dict()[k][~pulsed], before[k][~pulsed]), k
    assert torch.equal(arr.pulses[pulsed] - before["pulses"][pulsed], torch.cat([n[n > 0], -n[n < 0]]))


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
    counts = _counts(8, steps=3)
    monkeypatch.setattr(_fused, "AVAILABLE", False)
    a, reads_a, _ = _pulse(preset_model("paper"), True, counts)
    b, reads_b, _ = _pulse(preset_model("paper"), False, counts)
    assert not _fused.usable(a)
    for ra, rb in zip(reads_a, reads_b):
        assert torch.equal(ra, rb)
    assert torch.equal(a.w, b.w)


@needs_numba
def test_loops_that_fail_to_build_warn_once_and_the_class_path_pulses(monkeypatch):
    monkeypatch.setattr(_fused, "_CHECKED", [])

    def broken():
        raise RuntimeError("LLVM ERROR: no such intrinsic\nmore detail")

    monkeypatch.setattr(_fused, "_try_loops", broken)
    counts = _counts(9, steps=2)
    with pytest.warns(RuntimeWarning, match="compiled pulse loops.*LLVM ERROR: no such intrinsic.*same law"):
        a, reads_a, _ = _pulse(preset_model("paper"), True, counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (once per process)
        _fused.usable(a)
    b, reads_b, _ = _pulse(preset_model("paper"), False, counts)
    assert all(torch.equal(ra, rb) for ra, rb in zip(reads_a, reads_b))


@needs_numba
def test_half_precision_deviations_are_read_exactly():
    values = np.array([0.0, -0.0, 1e-7, 6.1e-5, -2.5, 65504.0, 0.333], np.float16)
    assert np.array_equal(_fused._HALVES[values.view(np.uint16)], values)
