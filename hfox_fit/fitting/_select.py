"""Choosing the drift law: total AIC and BIC of each law over the trains every law fitted."""

from __future__ import annotations

import numpy as np

from ..exceptions import FitError

__all__ = ["score_laws", "choose_law"]


def score_laws(per_law: dict) -> dict:
    """Total AIC and BIC per law over the unflagged trains that every law fitted."""
    names = list(per_law)
    good = None
    for name in names:
        df = per_law[name]
        g = (df["flag"] == "ok").to_numpy() & np.isfinite(df["aic"].to_numpy())
        good = g if good is None else good & g
    scores = {}
    for name in names:
        df = per_law[name]
        scores[name] = {
            "aic": float(df["aic"].to_numpy()[good].sum()),
            "bic": float(df["bic"].to_numpy()[good].sum()),
            "n_trains": int(good.sum()),
        }
    return scores


def choose_law(scores: dict) -> str:
    """The law with the lowest total AIC (ties: the lower BIC)."""
    if not scores:
        raise FitError("no law was scored.")
    return min(scores, key=lambda k: (scores[k]["aic"], scores[k]["bic"]))
