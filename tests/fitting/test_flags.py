"""Broken-cell flags: stuck, abrupt, open, failed."""

from __future__ import annotations

import numpy as np
import pytest
from fit_helpers import truth_for

from hfox_fit.fitting import FlagOptions, detect_flags


@pytest.mark.parametrize("which", ["paper", "wafer_b"])
def test_recall_and_precision_of_broken_cells(which, paper_wafer, paper_fit, wafer_b, wafer_b_fit):
    wafer, fit = (paper_wafer, paper_fit) if which == "paper" else (wafer_b, wafer_b_fit)
    cells = fit.cells_
    truth = truth_for(wafer, cells)
    assert len(cells) == len(wafer.truth)  # flagged cells are kept
    for kind in ("stuck", "abrupt", "open"):
        true_pos = ((cells["flag"] == kind) & (truth["flag"] == kind)).sum()
        found, real = (cells["flag"] == kind).sum(), (truth["flag"] == kind).sum()
        assert real > 0
        assert true_pos / real >= 0.95, (kind, true_pos, real)
        assert true_pos / found >= 0.95, (kind, true_pos, found)
    broken = truth["flag"] != "ok"
    flagged = cells["flag"] != "ok"
    assert (broken & flagged).sum() / broken.sum() >= 0.95
    assert (broken & flagged).sum() / flagged.sum() >= 0.95
    # every flag comes with its reason, and flagged cells stay out of the populations
    assert (cells.loc[flagged, "flag_reason"].str.len() > 10).all()
    assert (cells.loc[~flagged, "flag_reason"] == "").all()


def test_summary_counts_the_flags(paper_fit):
    s = paper_fit.summary_["devices"]
    cells = paper_fit.cells_
    for kind in ("stuck", "abrupt", "open", "failed"):
        assert s["flagged"][kind] == (cells["flag"] == kind).sum()
    assert s["total"] == len(cells)
    assert s["fitted"] == (cells["flag"] == "ok").sum()


def test_abrupt_cut_and_reasons():
    rng = np.random.default_rng(0)
    n, p = 6, 200
    lny = np.log(7000) + np.cumsum(rng.normal(1e-3, 0.005, (n, p)), axis=1)
    lny[:, 0] = np.log(7000)
    lny[1, 80:] = np.log(2e5)  # abrupt RESET at pulse 80
    lny[2] = np.log(5e6) + rng.normal(0, 0.05, p)  # never formed
    lny[3] = np.log(7000) + rng.normal(0, 5e-4, p)  # stuck
    lny[4, 5:] = np.nan  # too few reads
    lny[5, 100] = lny[5, 100] + 1.5  # a single glitch is not an abrupt RESET
    valid = np.isfinite(lny)
    flag, reason, cut, _ = detect_flags(lny, valid, FlagOptions())
    assert list(flag) == ["ok", "abrupt", "open", "stuck", "failed", "ok"]
    assert cut[1] == 80 and "pulse 80" in reason[1]
    assert "never formed" in reason[2] and "stuck" in reason[3] and "valid read" in reason[4]
    assert cut[0] == p and cut[5] == p


def test_abrupt_jump_across_a_failed_read():
    rng = np.random.default_rng(1)
    lny = np.log(7000) + np.cumsum(rng.normal(1e-3, 0.005, (3, 120)), axis=1)
    lny[:, 0] = np.log(7000)
    lny[0, 50] = np.nan
    lny[0, 51:] = np.log(1e5)
    flag, _, cut, _ = detect_flags(lny, np.isfinite(lny))
    assert flag[0] == "abrupt" and cut[0] == 51
