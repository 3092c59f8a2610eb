"""Which median a group's law stands for: its own, or its cells' where the law misses them.

Shared by the wafers' and the conditions' D2D sections (:mod:`~hfox_fit.fitting.wafers`,
:mod:`~hfox_fit.fitting.conditions`): groups of a few hundred cells, each law in one family
chosen for all the groups, so a family that fits the bulk of one group only roughly may hand it
a median its cells do not have.
"""

from __future__ import annotations

from .._json import finite_or_none as _num

__all__ = ["law_misses_sample", "use_sample_medians"]


def _ok_ci(ci) -> bool:
    return ci is not None and len(ci) == 2 and all(_num(c) is not None for c in ci) and ci[1] > ci[0]


def law_misses_sample(d: dict) -> str | None:
    """Why the law's median cannot stand for its group (it lies outside its sample median's 90 % interval)."""
    med, ci = _num(d.get("median")), d.get("sample_median_ci90")
    if med is None or not _ok_ci(ci) or _num(d.get("sample_median")) is None:
        return None
    if ci[0] <= med <= ci[1]:
        return None
    return (f"the {d.get('family')} law's median {med:.4g} lies outside the sample median's 90 % interval "
            f"[{ci[0]:.4g}, {ci[1]:.4g}] (KS {d.get('ks') if d.get('ks') is None else round(d['ks'], 3)})")


def use_sample_medians(groups: list, params, name_of) -> list:
    """Where one group's law misses its cells' median, every group's median of that parameter is its cells'.

    ``groups``: entries with ``d2d`` (parameter -> section) and ``notes``; ``name_of(group)`` names a
    group in the notes. Each moved section keeps the law's median as ``law_median`` (and
    ``law_median_ci90``) and says ``median_from: "sample"``, so that the medians compared across the
    groups are of one kind. A parameter where some group has no sample interval is left as it is.
    Returns the parameters moved.
    """
    moved = []
    for p in params:
        entries = [g for g in groups if g["d2d"].get(p)]
        missed = {id(g): why for g in entries if (why := law_misses_sample(g["d2d"][p]))}
        if not missed or not all(_ok_ci(g["d2d"][p].get("sample_median_ci90")) for g in entries):
            continue
        names = ", ".join(name_of(g) for g in entries if id(g) in missed)
        for g in entries:
            d = g["d2d"][p]
            d.update(law_median=d["median"], law_median_ci90=d.get("median_ci90"), median=d["sample_median"],
                     median_ci90=d["sample_median_ci90"], median_from="sample")
            g["notes"].append(f"{p}: {missed[id(g)]}; median and median_ci90 are the sample's" if id(g) in missed
                              else f"{p}: median and median_ci90 are the sample's, as at {names} where the law "
                              "misses its cells' median")
        moved.append(p)
    return moved
