"""``hfox-fit info``: what a campaign store holds (dies, cells, reads, conditions, sources, fit).

Everything shown comes from :meth:`hfox_fit.store.CampaignStore.inventory`, which reads the
store's attributes and small datasets only, never the per-read arrays.
"""

from __future__ import annotations

import json

from ._common import add_command, add_store

#: Names listed in full up to this many; past it, the first and last few with a count between.
MAX_LISTED = 12
#: Sources listed one per line up to this many; past it, the first and last few.
MAX_SOURCES = 10


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "info",
        run_info,
        help="show what a campaign store holds",
        description=(
            "Show what a campaign store holds: file, format version and size; wafers and dies; cells, "
            "cell-cycles, reads (failed ones too) and pulses per train; the conditions measured; the "
            "ingested files; and the fit, if any (when, which law, cells fitted and flagged, D2D medians "
            "with their 90 % intervals). Reads only the store's metadata, so it is quick on a large store."
        ),
    )
    add_store(p, "campaign store")
    p.add_argument("--json", action="store_true", help="print the same as one JSON object")


def run_info(args) -> int:
    from ..store import CampaignStore

    info = store_info(CampaignStore(args.store))  # StoreError when missing or damaged
    if args.json:
        print(json.dumps(info, indent=2, allow_nan=False))
    else:
        print(format_info(info, args.store))
    return 0


def store_info(store) -> dict:
    """The store's inventory with its totals added (``wafers``, ``totals``): what ``info --json`` prints."""
    from .._json import json_safe

    inv = store.inventory()
    dies = inv["dies"]
    wafers: dict[str, list[str]] = {}
    for d in dies:
        wafers.setdefault(d["wafer"], []).append(d["die"])
    totals = {k: sum(d[k] for d in dies) for k in ("cells", "trains", "reads", "failed_reads")}
    totals.update(
        wafers=len(wafers),
        dies=len(dies),
        pulses_per_train=sorted({d["pulses"] for d in dies}),
        sources=len(inv["sources"]),
        rows_stored=sum(int(s.get("rows_stored", 0)) for s in inv["sources"]),
        rows_rejected=sum(int(s.get("rows_rejected", 0)) for s in inv["sources"]),
    )
    return json_safe({**inv, "wafers": wafers, "totals": totals})


# ------------------------------------------------------------------ text
def format_info(info: dict, store: str) -> str:
    """The text ``hfox-fit info`` prints for ``store_info(...)``."""
    t = info["totals"]
    lines = [
        f"store       {info['path']}",
        f"format      version {info['format_version']}, {_size(info['size_bytes'])}, "
        f"written by hfox_fit {info.get('hfox_fit_version') or '?'}",
        f"created     {info.get('created_at') or '?'}, last changed {info.get('modified_at') or '?'}",
    ]
    if not info["dies"]:
        lines.append("measurements none yet (add some with `hfox-fit ingest RAW... --store STORE.h5`)")
    else:
        lines.append(f"wafers      {t['wafers']}: {_names(list(info['wafers']))}")
        lines.append(f"dies        {t['dies']}")
        by_wafer = list(info["wafers"].items())
        for wafer, dies in by_wafer[:MAX_LISTED]:
            lines.append(f"  {wafer}: {len(dies)} die(s): {_names(dies)}")
        if len(by_wafer) > MAX_LISTED:
            lines.append(f"  ... {len(by_wafer) - MAX_LISTED} more wafer(s) (see --json)")
        cycles = t["trains"] / t["cells"] if t["cells"] else 0.0
        lines.append(f"cells       {t['cells']:,} ({t['trains']:,} cell-cycles, {cycles:.3g} cycle(s) per cell on average)")
        pct = 100.0 * t["failed_reads"] / t["reads"] if t["reads"] else 0.0
        lines.append(f"reads       {t['reads']:,} ({t['failed_reads']:,} failed or NaN, {pct:.2g} %)")
        per_train = t["reads"] / t["trains"] if t["trains"] else 0.0
        pulses = t["pulses_per_train"]
        span = str(pulses[0]) if len(pulses) == 1 else f"{pulses[0]} to {pulses[-1]} (by die)"
        lines.append(f"pulses      {span} per train at most, {per_train:.4g} reads per train on average")
        lines.append("conditions")
        from ..schema import UNITS

        for col, rows in info["conditions"].items():
            unit = UNITS.get(col, "")
            shown = [
                ("not given" if r["value"] is None else f"{r['value']:.4g} {unit}".rstrip())
                + f" ({r['cells']:,} cells)"
                for r in rows
            ]
            more = ""
            if len(shown) > MAX_LISTED:
                more = f", ... {len(shown) - MAX_LISTED} more value(s)"
                shown = shown[:MAX_LISTED]
            lines.append(f"  {col:12s}{', '.join(shown) or 'none'}{more}")
    lines += _sources(info["sources"], t)
    lines += _fit(info["fit"], store)
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _names(names: list) -> str:
    if len(names) <= MAX_LISTED:
        return " ".join(names)
    k = MAX_LISTED // 2
    return " ".join(names[:k]) + f" ... ({len(names) - 2 * k} more) ... " + " ".join(names[-k:])


def _sources(sources: list, t: dict) -> list[str]:
    lines = [f"sources     {t['sources']} file(s): {t['rows_stored']:,} rows stored, {t['rows_rejected']:,} rejected"]
    shown = list(sources)
    if len(shown) > MAX_SOURCES:
        k = MAX_SOURCES // 2
        shown = shown[:k] + [None] + shown[-k:]
    for s in shown:
        if s is None:
            lines.append(f"  ... {len(sources) - 2 * (MAX_SOURCES // 2)} more file(s) (see --json) ...")
            continue
        fmt = f" [{s['format']}]" if s.get("format") else ""
        lines.append(
            f"  {s.get('path', '?')}{fmt}  sha256 {str(s.get('sha256', ''))[:12]}  "
            f"{int(s.get('rows_stored', 0)):,} stored, {int(s.get('rows_rejected', 0)):,} rejected, "
            f"ingested {s.get('ingested_at', '?')}"
        )
    return lines


def _fit(fit, store: str) -> list[str]:
    if fit is None:
        return [f"fit         none (run `hfox-fit fit {store}`)"]
    n = len(fit.get("history") or [])
    lines = [f"fit         fitted {fit.get('fitted_at') or '?'} by hfox_fit {fit.get('hfox_fit_version') or '?'}"
             + (f" ({n} fits so far; this one replaced the earlier)" if n > 1 else "")]
    try:
        lines += ["  " + line for line in _describe(fit["summary"], store).splitlines()]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        lines.append(f"  the saved fit summary cannot be shown ({err!r}); fit again with `hfox-fit fit {store}`.")
    return lines


def _describe(summary: dict, store: str) -> str:
    """What ``hfox-fit fit`` printed for this fit (its summary alone: no per-cell table is read)."""
    from ..fitting._result import describe_summary

    return describe_summary(summary, store)
