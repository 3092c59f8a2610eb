"""The real CrossSim RESET ramps (one ~400 Ohm cell, 40 ramps of ~150 pulses)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from fit_helpers import fit_quietly

from hfox_fit import DieData


def read_ramps(path, v_read=0.1):
    """reset.csv (read currents in A at 0.1 V, one ragged column per ramp) -> one DieData, a cycle per ramp."""
    current = pd.read_csv(path).to_numpy(float).T  # (ramps, pulses)
    with np.errstate(divide="ignore"):
        r = v_read / current
    r = r[None]  # one cell
    n_cycles = r.shape[1]
    return DieData("crosssim", "D1", np.array(["cell"]), np.arange(n_cycles), r, np.isfinite(r),
                   np.full((1, n_cycles), v_read), np.full((1, n_cycles), np.nan), np.full((1, n_cycles), np.nan))


def test_crosssim_reset_ramps(crosssim_reset):
    die = read_ramps(crosssim_reset)
    assert die.n_cycles == 40
    fit = fit_quietly([die], law="auto", bootstrap=50)
    cells = fit.cells
    assert (cells["success"] & (cells["flag"] == "ok")).sum() >= 38
    s = fit.summary()
    json.dumps(s, allow_nan=False)
    scores = s["drift"]["scores"]
    assert s["drift"]["law"] == min(scores, key=lambda k: scores[k]["aic"])
    # the ramps curve upward: the chosen law says so (m2 > m1, or a power law with b > 1)
    law = s["drift"]["law"]
    ok = cells[cells["flag"] == "ok"]
    if law == "two_slope":
        brk = ok["t_star"].notna()
        assert brk.mean() > 0.5 and (ok.loc[brk, "m2"] > ok.loc[brk, "m1"]).mean() > 0.9
    elif law == "power":
        assert (ok["b"] > 1).mean() > 0.9
    # R0 is the read after SET (~400 Ohm), with a read-noise uncertainty
    assert ok["r0"].between(380, 420).all() and (ok["r0_stderr"] > 0).all()
    assert s["pink"]["std"] > 0 and s["trains"]["total"] == 40
