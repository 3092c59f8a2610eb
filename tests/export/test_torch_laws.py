"""The torch drift formulas are the numpy laws: one for every law of DRIFT_LAWS, equal on the same inputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import FitError, preset_model  # noqa: E402
from hfox_fit.laws import DRIFT_LAWS  # noqa: E402
from hfox_fit.torch import TORCH_LAWS, WeakResetArray  # noqa: E402

RTOL = 1e-12
T_MAX = 2000.0
N_RANDOM = 60


def _time_scales(law) -> list:
    """The law's parameters counted in pulses (a break, a time constant): ``t`` must cross them."""
    units = getattr(law, "units", None) or {}
    return [k for k in law.params if units.get(k) == "pulse"]


def _parameters(law, rng) -> dict:
    """Per-cell values of every parameter, spread over the law's bounds: (cells,) float64 each.

    The first cells hold the bounds' corners (all low, all high, alternating); the
    others are uniform within the bounds, or log-uniform where the bounds span
    more than two decades of one sign. Half the random cells put the time scales
    (``units == "pulse"``) within 0..T_MAX, so that ``t`` crosses them.
    """
    cols = {}
    for j, k in enumerate(law.params):
        lo, hi = (float(x) for x in law.bounds[k])
        corners = [lo, hi, lo if j % 2 else hi, hi if j % 2 else lo]
        if lo > 0 and hi / lo > 100:
            rand = np.exp(rng.uniform(np.log(lo), np.log(hi), N_RANDOM))
        else:
            rand = rng.uniform(lo, hi, N_RANDOM)
        if k in _time_scales(law):
            inside = rng.uniform(lo, min(hi, T_MAX), N_RANDOM // 2)
            inside[: N_RANDOM // 4] = np.round(inside[: N_RANDOM // 4])  # whole pulses: t hits them exactly
            rand[: N_RANDOM // 2] = inside
        cols[k] = np.concatenate([corners, rand])
    return cols


def _pulses(law, params: dict) -> np.ndarray:
    """t over 0..T_MAX: every whole pulse, and each time scale within the range, with its neighbours."""
    t = [np.arange(0.0, T_MAX + 1.0)]
    for k in _time_scales(law):
        v = params[k][(params[k] >= 0) & (params[k] <= T_MAX)]
        t += [v, np.nextafter(v, -np.inf), np.nextafter(v, np.inf)]
    t = np.unique(np.concatenate(t))
    return t[(t >= 0) & (t <= T_MAX)]


def _numpy(law, t, params: dict) -> np.ndarray:
    return np.asarray(law.func(t, **{k: params[k] for k in law.params}), float)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    # The formulas add the same terms in another order: they agree to the rounding of the largest
    # term, which a sum that cancels (two_slope near w = 0) does not show. So atol is RTOL of the
    # largest |w| of the cell's row, and rtol is RTOL.
    assert got.shape == want.shape
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    scale = np.max(np.abs(np.where(np.isfinite(want), want, 0.0)), axis=-1, keepdims=True)
    err = np.abs(got - want)
    bound = RTOL * np.abs(want) + RTOL * scale
    bad = np.isfinite(want) & ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0.0)), err.shape)
        raise AssertionError(f"{int(bad.sum())} values differ beyond rtol {RTOL}; the worst: torch "
                             f"{got[i]!r}, numpy {want[i]!r} (allowed difference {bound[i]:.3g})")


def test_every_registered_law_has_a_torch_formula_and_no_other():
    from hfox_fit.torch import _laws

    assert set(TORCH_LAWS) == set(DRIFT_LAWS), (
        f"laws without a torch formula: {sorted(set(DRIFT_LAWS) - set(TORCH_LAWS))}; "
        f"torch formulas of no registered law: {sorted(set(TORCH_LAWS) - set(DRIFT_LAWS))}"
    )
    assert set(_laws._FORMULAS) == set(DRIFT_LAWS), sorted(set(_laws._FORMULAS) ^ set(DRIFT_LAWS))


@pytest.mark.parametrize("name", sorted(DRIFT_LAWS))
def test_torch_formula_equals_numpy_law_with_per_cell_parameters(name):
    """Parameters of shape (cells, 1) broadcast against t of shape (T,), as in a fit's mean curves."""
    law = DRIFT_LAWS[name]
    assert name in TORCH_LAWS, f"drift law {name!r} has no torch formula in hfox_fit.torch._laws"
    params = _parameters(law, np.random.default_rng(sorted(DRIFT_LAWS).index(name)))
    t = _pulses(law, params)
    want = _numpy(law, t, {k: v[:, None] for k, v in params.items()})
    got = TORCH_LAWS[name](torch.tensor(t, dtype=torch.float64),
                           {k: torch.tensor(v[:, None], dtype=torch.float64) for k, v in params.items()})
    assert got.dtype == torch.float64 and tuple(got.shape) == (len(params[law.params[0]]), t.size)
    _assert_same(got.numpy(), want)


@pytest.mark.parametrize("name", sorted(DRIFT_LAWS))
def test_torch_formula_equals_numpy_law_as_the_update_calls_it(name):
    """As the block update calls it: t (B,) per cell, the rows of every parameter in a dict (r0 and
    rtn_amplitude too), float64 and float32."""
    law = DRIFT_LAWS[name]
    rng = np.random.default_rng(100 + sorted(DRIFT_LAWS).index(name))
    params = _parameters(law, rng)
    grid = _pulses(law, params)
    cells = params[law.params[0]].size
    # each cell at t = 0, at 50 points of the grid, and at its own time scales and beside them (in range)
    cols = [np.zeros(cells)] + [rng.choice(grid, cells) for _ in range(50)]
    for k in _time_scales(law):
        v = np.clip(params[k], 0.0, T_MAX)
        cols += [v, np.nextafter(v, 0.0), np.nextafter(v, np.inf)]
    t_cell = np.stack(cols, axis=1)  # (cells, K)
    t = t_cell.ravel()  # the update's (B,): B = cells * K, a value of every parameter per entry
    per_cell = {k: np.repeat(v, t_cell.shape[1]) for k, v in params.items()}
    rows = {**per_cell, "r0": np.full(t.size, 1e4), "rtn_amplitude": np.full(t.size, 0.1)}
    want = _numpy(law, t, per_cell)
    got = TORCH_LAWS[name](torch.tensor(t), {k: torch.tensor(v) for k, v in rows.items()})
    assert got.dtype == torch.float64 and tuple(got.shape) == t.shape
    _assert_same(got.numpy().reshape(t_cell.shape), want.reshape(t_cell.shape))
    got32 = TORCH_LAWS[name](torch.tensor(t, dtype=torch.float32),
                             {k: torch.tensor(v, dtype=torch.float32) for k, v in rows.items()})
    assert got32.dtype == torch.float32
    want32 = _numpy(law, t.astype(np.float32).astype(float),
                    {k: v.astype(np.float32).astype(float) for k, v in per_cell.items()})
    # float32 keeps its dtype and agrees to float32 rounding (terms up to ~2000 pulses' worth of drift)
    np.testing.assert_allclose(got32.double().numpy(), want32, rtol=1e-4, atol=1e-3)


def test_a_registered_law_without_torch_formula_is_named(monkeypatch):
    """A law added to DRIFT_LAWS but not to the torch formulas: building an array for it says which."""
    base = preset_model("paper")
    monkeypatch.setitem(DRIFT_LAWS, "new_law", DRIFT_LAWS["two_slope"])
    model = type(base)(law="new_law", d2d=base.d2d)
    with pytest.raises(FitError, match=r"no torch version of drift law 'new_law' \(it is registered in "
                                       r"hfox_fit.laws.DRIFT_LAWS but has no torch formula"):
        WeakResetArray(model, 10, seed=0)
