"""``hfox-fit compare``: which D2D medians differ beyond their uncertainty, between two fits or two wafers."""

from __future__ import annotations

import json
from pathlib import Path

from ..exceptions import HfoxError
from ._common import add_command


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "compare",
        run_compare,
        help="compare the D2D medians of two fitted stores, or of two wafers of one",
        description=(
            "Print, per D2D parameter, median_a, median_b, their ratio b/a with a 90 % interval (delta method "
            "on the log medians, from each median's 90 % interval), the test's p-value, whether the interval "
            "excludes 1 (each parameter alone) and whether the parameter differs under Holm's step-down rule over "
            "all the parameters compared (family-wise 10 %; this column decides). "
            "`compare A.h5 B.h5` compares the two fits' pooled laws; `compare STORE.h5 --wafers W03 W07` two "
            "wafers of one fit; `compare A.h5 B.h5 --wafers W03 W07` wafer W03 of A with W07 of B."
        ),
    )
    p.add_argument("stores", metavar="STORE.h5", nargs="+", help="one or two campaign stores holding a fit")
    p.add_argument("--wafers", nargs=2, metavar=("WAFER_A", "WAFER_B"), default=None,
                   help="the two wafers to compare (of the one store, or one of each store)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the comparison as JSON")


def run_compare(args) -> int:
    from .._atomic import atomic_path
    from .._json import json_safe
    from ..fitting.wafers import compare_summaries, wafer_d2d

    stores = list(args.stores)
    if len(stores) > 2:
        raise HfoxError(f"give one or two stores, not {len(stores)}.")
    if len(stores) == 1 and args.wafers is None:
        raise HfoxError("with one store, name the two wafers to compare: --wafers W03 W07 "
                        "(or give a second store).")
    summaries = [_summary(s) for s in stores]
    if len(summaries) == 1:
        summaries = summaries * 2
        labels = [f"{stores[0]}:{w}" for w in args.wafers]
    else:
        labels = [f"{s}:{w}" for s, w in zip(stores, args.wafers)] if args.wafers else stores
    wafer_a, wafer_b = args.wafers or (None, None)
    names = stores * 2 if len(stores) == 1 else stores
    for summary, store, wafer in zip(summaries, names, (wafer_a, wafer_b)):
        try:
            wafer_d2d(summary, wafer)
        except HfoxError as err:
            raise HfoxError(f"{store}: {err}") from None
    result = compare_summaries(summaries[0], summaries[1], wafer_a, wafer_b)
    result = {"a": labels[0], "b": labels[1], **result}
    print(format_comparison(result))
    if args.json:
        out = Path(args.json)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


def _summary(store) -> dict:
    from ..fitting import CampaignResult

    if not Path(store).is_file():
        raise HfoxError(f"no store {str(store)!r}; give a campaign store holding a fit (`hfox-fit fit`).")
    return CampaignResult.load(store).summary()  # StoreError (one line) when it holds no fit


def format_comparison(result: dict) -> str:
    """The table ``hfox-fit compare`` prints: one line per parameter, the differing ones marked."""
    lines = [f"a: {result['a']}", f"b: {result['b']}",
             f"{'parameter':10s} {'median_a':>12s} {'median_b':>12s} {'b/a':>8s}  {'90 % interval':20s} "
             f"{'p':>8s}  {'alone':11s} differs (Holm)"]
    differ, alone = [], []
    for name, e in result["parameters"].items():
        ma, mb = (f"{v:.4g}" if v is not None else "n/a" for v in (e["median_a"], e["median_b"]))
        if e.get("scale") == "linear":
            ci = e.get("difference_ci90")
            ratio = f"{e['difference']:+.3g}" if e.get("difference") is not None else "n/a"
        else:
            ratio = f"{e['ratio']:.4g}" if e["ratio"] is not None else "n/a"
            ci = e.get("ratio_ci90")
        ci_s = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "none"
        verdict = {True: "YES", False: "no", None: "no interval"}
        sig, holm = verdict[e["significant"]], verdict[e.get("significant_holm")]
        p = f"{e['p_value']:.2g}" if e.get("p_value") is not None else "n/a"
        if e.get("significant_holm"):
            differ.append(name)
        elif e["significant"]:
            alone.append(name)
        lines.append(f"{name:10s} {ma:>12s} {mb:>12s} {ratio:>8s}  {ci_s:20s} {p:>8s}  {sig:11s} {holm}")
    m = (result.get("multiplicity") or {}).get("n_tested", len(result["parameters"]))
    alpha = (result.get("multiplicity") or {}).get("family_alpha", 0.10)
    lines.append("differ beyond their uncertainty (Holm over the parameters): "
                 + (", ".join(differ) if differ else "none")
                 + (f"; differ only when taken alone: {', '.join(alone)}" if alone else ""))
    lines.append(f"(alone: each parameter at 90 %, so of {len(result['parameters'])} that do not differ one in ten is "
                 f"flagged by chance on average; Holm: step-down over the {m} parameters tested, the chance of "
                 f"flagging any that does not differ at most {alpha:g}. Holm's column decides.)")
    return "\n".join(lines)
