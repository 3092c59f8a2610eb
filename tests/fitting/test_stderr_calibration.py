"""Per-cell standard errors against the truth of a synthetic wafer: ``(fitted - true) / stderr`` is about N(0, 1).

The D2D step deconvolves every cell's value with its standard error, so a stderr that is too small shows up as
spread of the population law (and too narrow intervals). Each check bounds the spread of ``z`` from both sides:
inflating every stderr cannot pass either. A few trains are misidentified (a break hidden by masked RTN reads,
a spurious break): the spread is measured on ``|z| < 6`` and the share beyond 1.645 (10 % for N(0, 1)) is
bounded too.
"""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import fit_quietly


@pytest.fixture(scope="module")
def paper_cells(paper_wafer):
    """Unflagged two-slope trains of the paper wafer, with their true parameters (``<p>_true``)."""
    fit = fit_quietly(paper_wafer.dies, law="two_slope", bootstrap=0)
    cells = fit.to_dataframe().merge(paper_wafer.truth, on=["wafer", "die", "device", "cycle"],
                                     suffixes=("", "_true"))
    return cells[cells["flag"].eq("ok")]


def _z(cells, param):
    z = ((cells[param] - cells[param + "_true"]) / cells[param + "_stderr"]).to_numpy(float)
    return z[np.isfinite(z)]


def _assert_standard_normal(z, what, tail=(0.05, 0.15), spread=(0.85, 1.15)):
    core = z[np.abs(z) < 6]
    beyond = float(np.mean(np.abs(z) > 1.645))
    assert len(z) >= 100, f"{what}: only {len(z)} trains"
    assert tail[0] <= beyond <= tail[1], f"{what}: {beyond:.1%} of |z| beyond 1.645 (N(0, 1): 10 %), n={len(z)}"
    assert spread[0] <= core.std() <= spread[1], f"{what}: sd of z {core.std():.2f} (N(0, 1): 1), n={len(core)}"


def test_c1_of_censored_trains_includes_the_r0_read_noise(paper_cells):
    # classify_breaks reports the line's c1 for trains that break after their reads: its stderr must carry
    # R0's read noise as every other c1 does (without it: sd of z 1.5, 27 % beyond 1.645)
    cens = paper_cells[paper_cells["t_star_censored"]]
    _assert_standard_normal(_z(cens, "c1"), "c1 of right-censored trains")


@pytest.mark.parametrize("param", ["m1", "c1", "t_star", "m2"])
def test_stderr_of_trains_with_a_break_is_calibrated(paper_cells, param):
    brk = paper_cells[np.isfinite(paper_cells["t_star"])]
    _assert_standard_normal(_z(brk, param), f"{param} of trains with a break")


def test_block_scores_are_the_score_of_every_block():
    # the sandwich's pieces from the prefix sums equal J^T (y - model) summed over each block
    from hfox_fit.fitting._lawfit import _fit_law

    rng = np.random.default_rng(3)
    n, T, block = 6, 320, 32
    t = np.arange(1, T + 1, dtype=float)
    y = 0.01 + 5e-4 * t - 4.7e-4 * np.clip(t - 140.0, 0, None) + 0.01 * rng.standard_normal((n, T))
    w = rng.uniform(size=(n, T)) > 0.2
    f = _fit_law("two_slope", t, float(T), np.where(w, y, 0.0), w, np.ones(n), np.full(n, float(T)), y_masked=True)
    tau = t / T
    hinge = np.clip(tau[None] - f.theta[:, None], 0, None)
    resid = np.where(w, y - (f.beta[:, :1] + f.beta[:, 1:2] * tau + f.beta[:, 2:3] * hinge), 0.0)
    jac = np.stack([np.ones_like(hinge), np.broadcast_to(tau, hinge.shape), hinge,
                    -f.beta[:, 2:3] * (tau[None] > f.theta[:, None])], -1)
    want = (jac * resid[..., None]).reshape(n, T // block, block, 4).sum(2)
    got, counts = f.profile.block_scores(f.beta, f.theta, block)
    np.testing.assert_array_equal(counts, w.reshape(n, T // block, block).sum(2))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
