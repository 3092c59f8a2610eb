"""WeakResetArray: faithful to DeviceModel.simulate, n pulses at once, resumable, compact, clear errors."""

import io
import os

import numpy as np
import pytest
from scipy import signal, stats

torch = pytest.importorskip("torch")

from hfox_fit import CheckpointError, ParameterLaw, preset_model  # noqa: E402
from hfox_fit.torch import WeakResetArray, export_checkpoint  # noqa: E402

N_CELLS, N_PULSES = 4000, 1000


def _trace(arr, pulses):
    """w after each of ``pulses`` single-pulse calls, shape (cells, pulses + 1)."""
    w = np.zeros((arr.num_devices, pulses + 1))
    for k in range(1, pulses + 1):
        arr.pulse(1)
        w[:, k] = arr.w.double().numpy()
    return w


def _residual_spectrum(model, w, params):
    t = np.arange(w.shape[1])
    res = w - model.mean_w(t, {k: np.asarray(v)[:, None] for k, v in params.items()})
    f, s = signal.welch(res[:, 1:], nperseg=256, axis=-1)
    return f[1:], s.mean(axis=0)[1:]


@pytest.fixture(scope="module", params=["paper", "wafer_b"])
def traces(request):
    """'Measured' (numpy reference with the 15-tap filter) and simulated traces of one model."""
    model = preset_model(request.param)
    w_ref, cyc = model.simulate(N_CELLS, N_PULSES, rng=np.random.default_rng(11))
    arr = WeakResetArray(model, N_CELLS, seed=12)
    w_sim = _trace(arr, N_PULSES)
    sim_params = {k: v.double().numpy() for k, v in arr.cell_parameters.items()}
    return model, w_ref[:, 0], {k: v[:, 0] for k, v in cyc.items()}, w_sim, sim_params


@pytest.mark.parametrize("t", [10, 100, 1000])
def test_distribution_of_w_matches_the_reference(traces, t):
    model, w_ref, _, w_sim, _ = traces
    ks = stats.ks_2samp(w_ref[:, t], w_sim[:, t]).statistic
    assert ks <= 0.05, f"KS distance {ks:.3f} at pulse {t}"


def test_residual_spectrum_matches_the_reference(traces):
    model, w_ref, ref_params, w_sim, sim_params = traces
    f, s_ref = _residual_spectrum(model, w_ref, ref_params)
    _, s_sim = _residual_spectrum(model, w_sim, sim_params)
    ratio = s_sim / s_ref
    assert ratio.max() <= 1.5 and ratio.min() >= 1 / 1.5, (ratio.min(), ratio.max())


def _stationary_spectrum(w, start=16, nperseg=128):
    """Welch spectrum of the rows of ``w`` from pulse ``start`` on (the filter's history full), cell mean."""
    f, s = signal.welch(w[:, start:], nperseg=nperseg, detrend="linear", axis=-1)
    return f[1:], s.mean(axis=0)[1:]


@pytest.mark.parametrize("alpha, d", [(0.025, 0.5), (0.035, 0.5), (0.0251, 0.4982), (0.025, 0.45), (0.025, 0.52)])
def test_pink_stand_in_spectrum_is_within_1_5_of_the_filter(alpha, d):
    """The stand-in's exact stationary spectrum against the 15-tap filter's, at every frequency."""
    from hfox_fit.model import PinkNoise
    from hfox_fit.torch._pink import exact_variance, filter_spectrum, pink_markov

    pm = pink_markov(alpha, d, 15)
    f = (np.arange(8192) + 0.5) / 16384
    ratio = pm.spectrum(f) / filter_spectrum(f, alpha, d, 15)
    assert 1 / 1.45 < ratio.min() and ratio.max() < 1.45, (ratio.min(), ratio.max())
    assert np.exp(pm.max_log_ratio) == pytest.approx(max(ratio.max(), 1 / ratio.min()), rel=1e-3)
    t = np.arange(3 * pm.horizon)
    np.testing.assert_allclose(pm.variance(t), exact_variance(t, alpha, d, 15), rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(pm.offset[np.minimum(t, pm.horizon)], PinkNoise(alpha, d, 15).offset(t), rtol=1e-12)


def test_pink_stand_in_alone_tracks_the_filter():
    """Pink noise only (no D2D, no RTN), simulated: spectrum within 1.5 of the filter's, mean and variance."""
    model = preset_model("paper")
    n, pulses = 3000, 1000
    w_ref, cyc = model.simulate(n, pulses, rng=np.random.default_rng(3), d2d=False, rtn=False)
    w_ref = w_ref[:, 0]
    arr = WeakResetArray(model, n, seed=4, d2d=False, rtn=False)
    w_sim = _trace(arr, pulses)
    # no D2D: the drift of every cell is the same line, removed by the linear detrend of each segment
    f, s_ref = _stationary_spectrum(w_ref)
    _, s_sim = _stationary_spectrum(w_sim)
    ratio = s_sim / s_ref
    assert 1 / 1.5 < ratio.min() and ratio.max() < 1.5, (ratio.min(), ratio.max())
    for t in (1, 2, 3, 10, 50, 300, 1000):
        a, b = w_sim[:, t], w_ref[:, t]
        se = np.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * se, t
        assert a.std() == pytest.approx(b.std(), rel=4 / np.sqrt(n)), t


@pytest.mark.parametrize("switches", [{}, {"d2d": False}, {"d2d": False, "pink": False},
                                      {"d2d": False, "rtn": False}])
def test_one_call_with_n_equals_n_calls_with_one(switches):
    model = preset_model("paper")
    n, pulses = 20000, 50
    once = WeakResetArray(model, n, seed=1, **switches)
    once.pulse(pulses)
    steps = WeakResetArray(model, n, seed=2, **switches)
    for _ in range(pulses):
        steps.pulse(1)
    assert torch.equal(once.pulses, steps.pulses)
    res = stats.ks_2samp(once.w.numpy(), steps.w.numpy())
    assert res.pvalue > 1e-3, res


def test_block_boundaries_do_not_matter(monkeypatch):
    """The CPU update runs block by block: small blocks and one block give the same law (and exact resumes)."""
    from hfox_fit.torch import _threads

    model = preset_model("wafer_b")  # C2C rows too
    n_cells = 20000
    counts = torch.arange(n_cells) % 15
    one = WeakResetArray(model, n_cells, seed=1)
    for _ in range(20):
        one.pulse(counts)
    monkeypatch.setattr(_threads, "CPU_BLOCK", 1008)  # 20 blocks, the last one short
    many = WeakResetArray(model, n_cells, seed=2)
    assert len(many._constants()["views"]) == 20
    for _ in range(20):
        many.pulse(counts)
    assert torch.equal(one.pulses, many.pulses)
    for k in range(0, 15, 7):  # cells with the same count history
        sel = counts == k
        res = stats.ks_2samp(one.w[sel].numpy(), many.w[sel].numpy())
        assert res.pvalue > 1e-3, (k, res)
    state = many.state_dict()
    again = WeakResetArray(model, n_cells, seed=3)
    again.load_state_dict(state)
    torch.testing.assert_close(again.pulse(counts), many.pulse(counts), rtol=0, atol=0)
    # a state from an update in other blocks: goes on in distribution, and says so
    monkeypatch.setattr(_threads, "CPU_BLOCK", 131008)
    other = WeakResetArray(model, n_cells, seed=4)
    with pytest.warns(RuntimeWarning, match="20 block.*in 1.*continues in distribution"):
        other.load_state_dict(many.state_dict())
    assert torch.equal(other.pulses, many.pulses) and torch.isfinite(other.pulse(counts)).all()


def _threads_now() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("release, blocks", [(True, 4), (True, 3), (False, 4)])
def test_the_blocks_hand_back_torchs_openmp_threads_first(monkeypatch, release, blocks):
    """Before a call of RELEASE_BLOCKS blocks or more runs on several worker threads, the OpenMP threads of
    torch's pool on the calling thread are handed back (after each parallel operation they spin for
    milliseconds, taking a core from the blocks); the next parallel operation starts them again. Switched
    off, or for a shorter call, they stay."""
    import time

    from hfox_fit.torch import _threads

    if _threads._openmp_pause() is None or not os.path.isdir("/proc/self/task"):
        pytest.skip("no OpenMP 5.0 runtime of torch found here (Linux, libgomp or libiomp5)")
    monkeypatch.setattr(_threads, "RELEASE_OPENMP", release)
    monkeypatch.setattr(_threads._BALANCE, "serial_left", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # (one OpenMP thread beside this one)
    try:
        _threads._run_blocks(lambda b: time.sleep(0.02), 2, 2)  # the worker threads exist before the count
        time.sleep(0.2)  # (and a replaced pool's threads have ended)
        x = torch.zeros(1 << 22)
        x.add_(1)  # a parallel operation: torch's pool holds its thread
        with_pool = _threads_now()
        _threads._run_blocks(lambda b: None, blocks, 2)
        released = release and blocks >= _threads.RELEASE_BLOCKS
        deadline = time.monotonic() + 10
        while released and _threads_now() >= with_pool and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (_threads_now() < with_pool) == released
        x.add_(1)
        assert torch.equal(x, torch.full_like(x, 2.0))
    finally:
        torch.set_num_threads(threads)


def test_a_forked_child_does_not_pause_openmp(monkeypatch):
    """A forked child has the OpenMP runtime's count of its parent's threads but not the threads: a pause there
    would wait for them forever, so the child never pauses."""
    from hfox_fit.torch import _threads

    for name in ("_POOL", "_POOL_SIZE", "_POOL_SERIAL", "_POOL_LOCK"):  # (given back after the test)
        monkeypatch.setattr(_threads, name, getattr(_threads, name))
    monkeypatch.setattr(_threads, "_PAUSE", [object()])
    _threads._drop_pool()  # (what the child runs after a fork)
    assert _threads._openmp_pause() is None and _threads._POOL is None


@pytest.mark.parametrize("block", [4096, 32752])
def test_thread_count_does_not_change_results(monkeypatch, block):
    """Every block draws from its own generator: one thread or several, the same numbers."""
    from hfox_fit.torch import _threads

    monkeypatch.setattr(_threads, "CPU_BLOCK", block)
    monkeypatch.setattr(_threads._BALANCE, "MIN_CORES", 0.0)  # never fall back to one thread here
    monkeypatch.setattr(_threads._BALANCE, "serial_left", 0)
    model = preset_model("wafer_b")
    n_cells = 70_000  # several blocks, above torch's parallel grain: the worker threads run them
    counts = torch.arange(n_cells) % 15
    threads = torch.get_num_threads()
    runs = []
    try:
        for k in (1, 2, 3):
            torch.set_num_threads(k)
            arr = WeakResetArray(model, n_cells, seed=21)
            assert arr._constants()["threaded"] and len(arr._constants()["views"]) == -(-n_cells // block)
            reads = [arr.pulse(counts), arr.pulse(5), arr.pulse(counts.flip(0))]
            arr.set_(torch.arange(n_cells) % 3 == 0)
            reads.append(arr.pulse(counts))
            reads.append(arr.pulse(counts * (torch.arange(n_cells) % 4 == 0)))  # few cells: the sparse update
            reads.append(arr.pulse_pairs((counts[: n_cells // 2] - 7).to(torch.int32)))
            runs.append((reads, {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}))
    finally:
        torch.set_num_threads(threads)
    (ref_reads, ref_state), *others = runs
    for reads, state in others:
        for a, b in zip(reads, ref_reads):
            assert torch.equal(a, b)
        for k in ref_state:
            assert torch.equal(state[k], ref_state[k]), k


def test_worker_threads_run_torch_serially():
    """Torch operations in the worker threads are single-threaded; the caller's thread count is untouched."""
    from hfox_fit.torch import _threads

    threads = torch.get_num_threads()
    seen = []
    _threads._run_blocks(lambda b: seen.append(torch.get_num_threads()), 4, 2)
    assert torch.get_num_threads() == threads
    if _threads._serial_workers():
        assert seen == [1, 1, 1, 1]


def test_rtn_n_steps_is_exact():
    """With RTN alone, the share of high cells after n pulses follows the 2x2 matrix power."""
    model = preset_model("paper")
    arr = WeakResetArray(model, 200_000, seed=5, d2d=False, pink=False)
    arr.pulse(torch.full((200_000,), 300))
    from hfox_fit.laws import rtn_transition_power

    p_high, _ = rtn_transition_power(model.rtn.p_up, model.rtn.p_down, 300)
    assert float(arr.rtn_high.float().mean()) == pytest.approx(float(p_high), abs=4 * np.sqrt(p_high / 200_000))


def test_cost_does_not_depend_on_n_and_mixed_counts_work():
    model = preset_model("paper")
    arr = WeakResetArray(model, 1000, seed=0)
    n = torch.arange(1000) % 15
    arr.pulse(n)
    arr.pulse(torch.full((1000,), 10**6))  # a million pulses: one call, no loop
    assert torch.equal(arr.pulses, (n + 10**6).to(torch.int32))
    assert torch.isfinite(arr.w).all()


def test_without_noise_w_is_the_drift_law_of_the_median_cell():
    model = preset_model("paper")
    arr = WeakResetArray(model, 10, seed=0, d2d=False, pink=False, rtn=False)
    med = {k: model.d2d[k].median() for k in model.parameter_names}
    for t in (1, 40, 500, 1500):
        r = arr.pulse(torch.full((10,), t) - arr.pulses)
        expected = model.mean_w(t, med)
        np.testing.assert_allclose(arr.w.double().numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.double().numpy(), med["r0"] * np.exp(expected), rtol=1e-5)


def test_zero_pulses_keep_state_and_read():
    arr = WeakResetArray(preset_model("paper"), 100, seed=0)
    arr.pulse(30)
    before = {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}
    n = torch.zeros(100, dtype=torch.int64)
    n[:50] = 3
    r = arr.pulse(n)
    for k in ("w", "pulses", "pink_x", "rtn_high", "rtn_wait"):
        assert torch.equal(getattr(arr, k)[50:], before[k][50:]), k
    assert torch.equal(arr.pink_xi[:, 50:], before["pink_xi"][:, 50:])
    assert not torch.equal(arr.w[:50], before["w"][:50])
    assert torch.equal(arr.pulse(0), r)  # an int 0 changes nothing
    torch.testing.assert_close(arr.conductance, 1.0 / arr.resistance)


def test_seed_reproduces_and_state_dict_resumes_exactly():
    model = preset_model("wafer_b")  # copula + C2C
    n = torch.arange(500) % 15
    a = WeakResetArray(model, 500, seed=7)
    b = WeakResetArray(model, 500, seed=7)
    for _ in range(3):
        torch.testing.assert_close(a.pulse(n), b.pulse(n), rtol=0, atol=0)
    a.set_(torch.arange(500) < 100)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = WeakResetArray(model, 500, seed=99)  # another seed: everything comes from the state
    c.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(3):
        torch.testing.assert_close(c.pulse(n), a.pulse(n), rtol=0, atol=0)
    c.set_()
    a.set_()
    torch.testing.assert_close(c.r0, a.r0, rtol=0, atol=0)  # the C2C draws too
    d = WeakResetArray(model, 500, seed=8)
    assert not torch.equal(d.pulse(n), a.pulse(n))


def test_set_restores_the_post_set_state_with_c2c_draws():
    model = preset_model("wafer_b")
    arr = WeakResetArray(model, 2000, seed=0)
    arr.pulse(200)
    r0_before = arr.r0.clone()
    mask = torch.arange(2000) < 1000
    arr.set_(mask)
    assert (arr.w[mask] == 0).all() and (arr.pulses[mask] == 0).all()
    assert (arr.pink_state[:, mask] == 0).all() and not arr.rtn_high[mask].any()
    assert (arr.pink_x[mask] == 0).all() and (arr.pink_xi[:, mask] == 0).all()
    assert (arr.rtn_wait[mask] >= 1).all()
    torch.testing.assert_close(arr.resistance[mask], arr.r0[mask])
    assert (arr.w[~mask] != 0).all() and torch.equal(arr.r0[~mask], r0_before[~mask])
    # new C2C draws: r0 moves by the difference of two C2C draws (sqrt(2) * 60 Ohm), within the D2D bounds
    moved = (arr.r0[mask] - r0_before[mask]).double()
    assert 70 < float(moved.std()) < 100
    lo, hi = model.d2d["r0"].bounds
    assert float(arr.r0.min()) >= lo - 1 and float(arr.r0.max()) <= hi + 1
    # the copula: m1 and t* anti-correlated
    p = arr.cell_parameters
    rho = stats.spearmanr(p["m1"].numpy(), p["t_star"].numpy()).statistic
    assert rho < -0.4


def test_paper_model_has_no_c2c_draws():
    arr = WeakResetArray(preset_model("paper"), 100, seed=0)
    r0 = arr.r0.clone()
    arr.set_()
    assert torch.equal(arr.r0, r0)


@pytest.mark.parametrize("preset", ["paper", "wafer_b", "all_c2c"])
def test_at_most_64_bytes_per_cell(preset):
    if preset == "all_c2c":
        model = preset_model("wafer_b")
        for k in model.parameter_names:
            model.c2c[k] = ParameterLaw("norm", {"loc": 0.0, "scale": 1e-3}, None)
    else:
        model = preset_model(preset)
    arr = WeakResetArray(model, 100_000, seed=0)
    nbytes = sum(b.numel() * b.element_size() for b in arr.buffers())
    assert nbytes / arr.num_devices == pytest.approx(arr.bytes_per_cell())
    assert arr.bytes_per_cell() <= 64
    # paper: 6 parameters (24 B), pulses (4), pink states (12), RTN state and wait (5), w (4) = 49 B
    assert arr.bytes_per_cell() < {"paper": 49.5, "wafer_b": 53.5, "all_c2c": 61.5}[preset]


def test_dtype_float64_and_module_moves():
    arr = WeakResetArray(preset_model("paper"), 100, seed=0, dtype=torch.float64)
    assert arr.pulse(5).dtype == torch.float64
    arr = arr.to(torch.float32)
    assert arr.pulse(5).dtype == torch.float32
    arr.to("cpu")
    arr.pulse(1)


def test_from_checkpoint(tmp_path):
    path = export_checkpoint(preset_model("wafer_b"), tmp_path / "model.pt",
                             provenance={"cells_used": 10, "store_sha256": "0" * 64})
    arr = WeakResetArray.from_checkpoint(path, 300, seed=3, pink=False)
    assert arr.provenance["cells_used"] == 10 and not arr.pink
    ref = WeakResetArray(preset_model("wafer_b"), 300, seed=3, pink=False)
    torch.testing.assert_close(arr.pulse(20), ref.pulse(20), rtol=0, atol=0)


def test_bad_checkpoint_and_device(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        WeakResetArray.from_checkpoint(path, 10)
    good = export_checkpoint(preset_model("paper"), tmp_path / "good.pt", provenance={})
    with pytest.raises(ValueError, match="cannot place the cell array on device 'nodevice'"):
        WeakResetArray.from_checkpoint(good, 10, device="nodevice")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cannot place the cell array on device 'cuda'"):
            WeakResetArray.from_checkpoint(good, 10, device="cuda")


@pytest.mark.parametrize("counts, message", [
    (-1, "must be >= 0; got -1"),
    (2.5, "whole numbers; got 2.5"),
    (torch.tensor([1, -2, 3]), "must be >= 0; cell 1 got -2"),
    (torch.tensor([1.0, 2.5, 3.0]), "whole numbers; cell 1 got 2.5"),
    (torch.tensor([1.0, float("nan"), 3.0]), "whole numbers; cell 1 got nan"),
    (torch.ones(4, dtype=torch.int64), r"shape \(4,\) do not match the array of 3 cells"),
    (torch.ones(3, 1, dtype=torch.int64), r"shape \(3, 1\) do not match"),
    (torch.ones(3, dtype=torch.complex64), "must be integers"),
])
def test_bad_pulse_counts(counts, message):
    arr = WeakResetArray(preset_model("paper"), 3, seed=0)
    with pytest.raises(ValueError, match=message):
        arr.pulse(counts)
    assert (arr.pulses == 0).all()  # nothing was applied


def test_bad_construction():
    model = preset_model("paper")
    with pytest.raises(ValueError, match="num_devices must be a positive int"):
        WeakResetArray(model, 0)
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        WeakResetArray(model, 10, dtype=torch.float16)
    with pytest.raises(TypeError, match="needs a DeviceModel"):
        WeakResetArray(model.to_dict(), 10)
    arr = WeakResetArray(model, 10, seed=0)
    with pytest.raises(ValueError, match=r"mask of shape \(5,\) does not match the array of 10 cells"):
        arr.set_(torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        arr.set_(torch.ones(10))
    with pytest.raises(ValueError, match="either seed or generator"):
        WeakResetArray(model, 10, seed=1, generator=torch.Generator())


def test_caller_generator_is_used():
    model = preset_model("paper")
    a = WeakResetArray(model, 50, generator=torch.Generator().manual_seed(4))
    b = WeakResetArray(model, 50, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a.pulse(3), b.pulse(3), rtol=0, atol=0)


def _law_model(law: str, **laws):
    """A model of drift law ``law`` with the D2D ``laws`` of its own parameters, and the paper's c1, R0 and RTN
    amplitude laws."""
    from hfox_fit import DeviceModel

    base = preset_model("paper").d2d
    return DeviceModel(law=law, d2d={**laws, "c1": base["c1"], "r0": base["r0"],
                                     "rtn_amplitude": base["rtn_amplitude"]})


def _log_model():
    return _law_model("log", a=ParameterLaw("lognorm", {"s": 0.3, "scale": 0.05}, (0.01, 0.2)),
                      tau=ParameterLaw("lognorm", {"s": 0.5, "scale": 30.0}, (1.0, 500.0)))


def test_other_laws_simulate(monkeypatch):
    model = _log_model()
    arr = WeakResetArray(model, 2000, seed=0, pink=False, rtn=False)
    arr.pulse(100)
    p = {k: v.double().numpy() for k, v in arr.cell_parameters.items()}
    np.testing.assert_allclose(arr.w.double().numpy(), model.mean_w(100, p), rtol=1e-5, atol=1e-6)
    from hfox_fit import FitError
    from hfox_fit.torch import TORCH_LAWS

    monkeypatch.delitem(TORCH_LAWS, "log")
    with pytest.raises(FitError, match="no torch version of drift law 'log'"):
        WeakResetArray(model, 10)


def test_state_from_another_device_kind_warns_and_goes_on():
    model = preset_model("paper")
    a = WeakResetArray(model, 50, seed=0)
    state = a.state_dict()
    extra = dict(state["_extra_state"])
    extra["rng_device"] = "cuda"
    extra["rng_state"] = torch.zeros(16, dtype=torch.uint8)
    b = WeakResetArray(model, 50, seed=1)
    gen = b.generator
    with pytest.warns(RuntimeWarning, match="continues in distribution but not draw for draw"):
        b.load_state_dict({**state, "_extra_state": extra})
    assert torch.equal(b.cell_params, a.cell_params)
    b.to("cpu")
    assert b.generator is gen  # same device: the generator is kept
    assert torch.isfinite(b.pulse(3)).all()


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    from hfox_fit.torch import _update

    def broken():
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(_update, "_compiled_dense", broken)
    model = preset_model("paper")
    a = WeakResetArray(model, 200, seed=0, compile=True)
    b = WeakResetArray(model, 200, seed=0)
    with pytest.warns(RuntimeWarning, match="torch.compile of the pulse update failed.*no C\\+\\+ compiler"):
        ra = a.pulse(7)
    assert not a.compile
    torch.testing.assert_close(ra, b.pulse(7), rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_update_matches_eager():
    model = preset_model("wafer_b")
    a = WeakResetArray(model, 5000, seed=0, compile=True)
    b = WeakResetArray(model, 5000, seed=0)
    n = torch.arange(5000) % 15
    for counts in (n, 3, n):
        torch.testing.assert_close(a.pulse(counts), b.pulse(counts), rtol=1e-5, atol=0)
    assert a.compile  # it did compile
    assert torch.equal(a.rtn_high, b.rtn_high) and torch.equal(a.pulses, b.pulses)


def test_coefficient_tables_follow_the_closed_form():
    """The n-step coefficients read from the tables are the stand-in's closed form; n > T reads row T."""
    arr = WeakResetArray(preset_model("paper"), 10, seed=0, dtype=torch.float64)
    pm = arr.pink_markov
    n = np.array([0, 1, 2, 3, 14, 100, pm.horizon, pm.horizon + 1, 10**6])
    a, pn, chol = pm.transition(n)
    idx = torch.as_tensor(np.minimum(n, pm.horizon))
    coef = arr.pink_coef.index_select(1, idx).numpy()
    expected = [a, chol[:, 0, 0], chol[:, 2, 2], pn.real, pn.imag, chol[:, 1, 0], chol[:, 2, 0], chol[:, 1, 1],
                chol[:, 2, 1], np.minimum(n, 1)]
    for row, want in zip(coef, expected):
        np.testing.assert_allclose(row, want, rtol=1e-12, atol=1e-300)
    # L L^T is the n-step covariance, and the far rows are the stationary ones
    q = pm.covariance(n)
    np.testing.assert_allclose(chol @ np.swapaxes(chol, 1, 2), q, rtol=1e-9, atol=1e-14)
    assert abs(pm.real_pole) ** pm.horizon < 1e-8 and abs(pm.pair_pole) ** pm.horizon < 1e-8


def _fast_rtn_model(p_up=0.05, p_down=0.1):
    from hfox_fit import TelegraphNoise

    model = preset_model("paper")
    model.rtn = TelegraphNoise(p_up=p_up, p_down=p_down)
    return model


def test_fast_rtn_many_switches_per_call_is_exact():
    """Chains that switch several times within one call end in the law of the 2x2 matrix power."""
    from hfox_fit.laws import rtn_transition_power

    model = _fast_rtn_model()
    n_cells = 100_000
    arr = WeakResetArray(model, n_cells, seed=3, d2d=False, pink=False)
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(n_cells, dtype=torch.int64)
    for _ in range(4):
        n = torch.randint(0, 40, (n_cells,), generator=g)
        arr.pulse(n)
        total += n
    p_high = rtn_transition_power(0.05, 0.1, total.numpy())[0]
    frac, expected = float(arr.rtn_high.double().mean()), float(p_high.mean())
    assert frac == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / n_cells))
    # the same in distribution as one pulse at a time (read values included)
    steps = WeakResetArray(model, 20_000, seed=4, d2d=False, pink=False)
    for _ in range(30):
        steps.pulse(1)
    once = WeakResetArray(model, 20_000, seed=5, d2d=False, pink=False)
    once.pulse(30)
    assert stats.ks_2samp(once.w.numpy(), steps.w.numpy()).pvalue > 1e-3
    assert abs(float(once.rtn_high.double().mean()) - float(steps.rtn_high.double().mean())) < 0.02


@pytest.mark.parametrize("p_up, p_down", [(0.0, 0.1), (0.2, 0.0)])
def test_rtn_chains_that_cannot_leave_a_state(p_up, p_down):
    arr = WeakResetArray(_fast_rtn_model(p_up, p_down), 5000, seed=0, d2d=False, pink=False)
    for n in (7, 100, 10**6):
        arr.pulse(n)
    if p_up == 0:
        assert not arr.rtn_high.any()  # never leaves low
    else:
        assert arr.rtn_high.all()  # high is absorbing after 10**6 pulses


def _state(arr):
    return {k: v.clone() for k, v in arr.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("switches", [{}, {"pink": False}, {"rtn": False}])
def test_pulse_pairs_pulses_one_cell_of_each_pair_with_the_law_of_pulse(switches):
    """pulse_pairs(n): + pulses cell i, - pulses cell i + N/2; the partner and the 0 pairs keep state and read."""
    model = preset_model("wafer_b")  # C2C rows too
    half = 20000
    g = torch.Generator().manual_seed(3)
    pairs = WeakResetArray(model, 2 * half, seed=1, d2d=False, **switches)
    plain = WeakResetArray(model, 2 * half, seed=2, d2d=False, **switches)
    for step in range(12):
        n = torch.randint(-6, 7, (half,), generator=g, dtype=torch.int32)
        counts = torch.cat([n.clamp(min=0), (-n).clamp(min=0)])
        before, r_before = _state(pairs), pairs.resistance.clone()
        r = pairs.pulse_pairs(n)
        plain.pulse(counts)
        assert torch.equal(pairs.pulses - before["pulses"], counts)
        still = counts == 0
        for k in ("w", "pulses", "pink_x", "rtn_high", "rtn_wait"):
            assert torch.equal(getattr(pairs, k)[still], before[k][still]), (step, k)
        assert torch.equal(pairs.pink_xi[:, still], before["pink_xi"][:, still])
        assert torch.equal(r[still], r_before[still])
        assert torch.equal(r, pairs.resistance)
    assert torch.equal(pairs.pulses, plain.pulses)
    moved = pairs.pulses > 0
    res = stats.ks_2samp(pairs.w[moved].numpy(), plain.w[moved].numpy())
    assert res.pvalue > 1e-3, res


def test_pulse_pairs_resumes_exactly_and_refuses_bad_counts():
    model = preset_model("paper")
    n = (torch.arange(500) % 9 - 4).to(torch.int32)
    a = WeakResetArray(model, 1000, seed=7)
    a.pulse_pairs(n)
    b = WeakResetArray(model, 1000, seed=8)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        assert torch.equal(a.pulse_pairs(n), b.pulse_pairs(n))
    with pytest.raises(ValueError, match=r"signed integer counts of shape \(500,\)"):
        a.pulse_pairs(torch.zeros(1000, dtype=torch.int32))
    with pytest.raises(ValueError, match="signed integer"):
        a.pulse_pairs(torch.zeros(500))
    with pytest.raises(ValueError, match="even number of cells"):
        WeakResetArray(model, 7, seed=0).pulse_pairs(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="above"):
        a.pulse_pairs(torch.full((500,), -(2**31) + 1, dtype=torch.int64))
    assert torch.equal(a.pulse_pairs(torch.zeros(500, dtype=torch.int32)), a.resistance)  # nothing moves


def test_sparse_update_has_the_law_of_the_whole_block_update(monkeypatch):
    """Few cells given pulses: only they are updated (gathered by index); same law, others untouched."""
    from hfox_fit.torch import _update

    model = preset_model("wafer_b")
    n_cells = 40000
    few = (torch.arange(n_cells) % 5 == 0) * (torch.arange(n_cells) % 13 + 1)  # 20 % of the cells
    runs = {}
    for share, seed in ((1.0, 1), (0.0, 2)):  # always sparse, never sparse
        monkeypatch.setattr(_update, "SPARSE_SHARE", share)
        arr = WeakResetArray(model, n_cells, seed=seed, d2d=False)
        for _ in range(10):
            before = _state(arr)
            r_before = arr.resistance.clone()
            r = arr.pulse(few)
            for k in ("w", "pulses", "pink_x", "rtn_wait"):
                assert torch.equal(getattr(arr, k)[few == 0], before[k][few == 0]), k
            assert torch.equal(r[few == 0], r_before[few == 0])
        runs[share] = arr
    assert torch.equal(runs[1.0].pulses, runs[0.0].pulses)
    sel = few > 0
    res = stats.ks_2samp(runs[1.0].w[sel].numpy(), runs[0.0].w[sel].numpy())
    assert res.pvalue > 1e-3, res


def test_the_kept_read_follows_every_change():
    """resistance is kept between reads, and recomputed after any change to the state or the kept tensor."""
    arr = WeakResetArray(preset_model("paper"), 300, seed=0)
    r = arr.pulse(5)
    assert arr.resistance is r
    fresh = torch.mul(arr.w, 1.0 / np.log(2.0)).exp2_().mul_(arr.r0)
    torch.testing.assert_close(r, fresh, rtol=1e-6, atol=0)
    with torch.no_grad():
        arr.w.add_(0.5)
    torch.testing.assert_close(arr.resistance, r * np.exp(0.5), rtol=1e-5, atol=0)
    r2 = arr.resistance
    r2.mul_(2.0)  # the caller changes the tensor it was given: it is not kept any more
    torch.testing.assert_close(arr.resistance, r * np.exp(0.5), rtol=1e-5, atol=0)
    arr.set_()
    torch.testing.assert_close(arr.resistance, arr.r0, rtol=0, atol=0)
