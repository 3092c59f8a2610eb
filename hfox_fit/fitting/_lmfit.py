"""lmfit for single trains: the drift laws as lmfit Models, re-fits, the fallback for failed vectorised fits, checks."""

from __future__ import annotations

import warnings

import lmfit
import numpy as np

from ..laws import DRIFT_LAWS, get_law
from ._util import _join

__all__ = ["DRIFT_MODELS"]


def _make_model(name: str) -> lmfit.Model:
    law = get_law(name)
    model = lmfit.Model(law.func, independent_vars=["t"], name=name)
    for p, (lo, hi) in law.bounds.items():
        model.set_param_hint(p, min=lo, max=hi)
    return model


#: Every registered drift law as an lmfit Model (parameter hints = the law's physical bounds).
DRIFT_MODELS = {name: _make_model(name) for name in DRIFT_LAWS}


def _lmfit_refit(name, t, w_row, mask_row, start: dict):
    """lmfit fit of one train (reads ``mask_row``) from ``start`` (NaN values: defaults)."""
    model = DRIFT_MODELS[name]
    law = get_law(name)
    start = {k: (float(v) if np.isfinite(v) else law.start[k]) for k, v in start.items()}
    if law.has_break and not (t[mask_row].min() < start[law.theta] < t[mask_row].max()):
        # the break of the start among the reads
        start[law.theta] = float(np.median(t[mask_row]))
    params = model.make_params(**start)
    for k, v in start.items():
        p = params[k]
        if not (p.min < v < p.max):
            p.value = float(np.clip(v, p.min + 1e-12, p.max - 1e-12))
    return model.fit(w_row[mask_row], params, t=t[mask_row], method="leastsq")


def _lmfit_fallback(name, table, flag_before, t, Yc, W, kappa):
    """Re-fit with lmfit the trains whose vectorised fit failed; keep lmfit's result if it converged."""
    law = get_law(name)
    rows = np.nonzero((table["flag"].to_numpy() == "failed") & (flag_before == "ok"))[0]
    for i in rows:
        m = W[i] > 0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = _lmfit_refit(name, t, Yc[i], m, {p: table[p].iat[i] for p in law.params})
        except Exception:  # noqa: BLE001 - the train stays flagged 'failed'
            continue
        vals = [r.params[p].value for p in law.params]
        if not (r.success and np.all(np.isfinite(vals))):
            continue
        for p in law.params:
            table.loc[table.index[i], p] = r.params[p].value
            se = r.params[p].stderr
            k_i = kappa[i] if np.ndim(kappa) else kappa
            table.loc[table.index[i], p + "_stderr"] = se * np.sqrt(k_i) if se is not None else np.nan
        table.loc[table.index[i], ["flag", "flag_reason", "success"]] = ["ok", "", True]
        table.loc[table.index[i], "note"] = _join(table["note"].iat[i], "fitted by lmfit (the vectorised fit "
                                                                        "did not converge)")


def _verify(name, table, t, Yc, W, k):
    """Re-fit ``k`` unflagged rows with lmfit from the vectorised optimum; relative SSE change."""
    law = get_law(name)
    rows = np.nonzero((table["flag"] == "ok").to_numpy())[0]
    if k <= 0 or rows.size == 0:
        return {}
    pick = rows[np.linspace(0, rows.size - 1, min(k, rows.size)).astype(int)]
    out = {}
    for i in pick:
        start = {p: table[p].iat[i] for p in law.params}
        if not all(np.isfinite(v) for v in start.values()):
            continue
        m = W[i] > 0
        try:
            r = _lmfit_refit(name, t, Yc[i], m, start)
        except Exception:  # noqa: BLE001 - verification is advisory
            continue
        ours = float(np.sum((Yc[i][m] - law.func(t[m], **start)) ** 2))
        out[f"{table['device'].iat[i]}/{table['cycle'].iat[i]}"] = (r.chisqr - ours) / max(ours, 1e-300)
    return out
