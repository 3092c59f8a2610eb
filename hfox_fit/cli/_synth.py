"""``hfox-fit synth``: write the raw files of a simulated wafer, with its ground truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..exceptions import HfoxError
from ._common import add_command, add_output

#: Formats ``synth`` can write (each has a writer in :mod:`hfox_fit.parsers`).
WRITABLE_FORMATS = ("bench", "b1500", "ramps", "hdf5", "tidy")


def register(subparsers) -> None:
    from ..model import MODEL_PRESETS
    from ..synth import EFFECT_PRESETS, TRUTH_NAME

    p = add_command(
        subparsers,
        "synth",
        run_synth,
        help="write raw files of a simulated wafer (with its ground truth)",
        description=(
            "Simulate a wafer from a preset device model (read noise, ADC step, failed reads and "
            "broken cells included) and write its raw measurement files, with the per-cell ground "
            f"truth beside them as {TRUTH_NAME}."
        ),
    )
    add_output(p, "DIR", "folder to write (new or empty)", required=True)
    p.add_argument("--preset", choices=sorted(MODEL_PRESETS), default="paper", help="ground-truth model (default: paper)")
    p.add_argument(
        "--effects", choices=sorted(EFFECT_PRESETS), default="bench",
        help="measurement effects: bench (default), clean (none) or noisy",
    )
    p.add_argument("--stuck-noise", action="store_true",
                   help="stuck cells keep their pink noise and RTN (default: they read their R0 only)")
    p.add_argument("--devices", type=int, default=1024, metavar="N", help="cells on the wafer (default: 1024)")
    p.add_argument("--pulses", type=int, default=1000, metavar="P", help="weak RESET pulses per train (default: 1000)")
    p.add_argument("--cycles", type=int, default=1, metavar="C", help="SET / weak-RESET cycles per cell (default: 1)")
    p.add_argument("--format", choices=WRITABLE_FORMATS, default="bench", help="raw file format (default: bench)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (default: fresh entropy)")
    p.add_argument("--wafer", default="W01", metavar="W", help="wafer id (default: W01)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p.add_argument(
        "--conditions", metavar="GRID", default=None,
        help=("measure at a grid of pulse conditions, 'V1,V2,...:W1,W2,...' (amplitudes in V, widths in s; "
              "'default' for 1.15,1.25,1.35:0.5e-6,1e-6,2e-6); --devices is then the cells per condition"),
    )
    p.add_argument(
        "--condition-law", metavar="JSON", default=None,
        help=("with --conditions: the slopes, as JSON text or a .json file, e.g. "
              "'{\"m1\": {\"b_v\": 2.0, \"b_w\": 0.5}}' (ln median per V and per e-fold of width; "
              "optional \"v_ref\", \"width_ref\"; default: m1 2.0/0.5, t_star -1.5/-0.4)"),
    )
    p.add_argument("--wafers", type=int, default=None, metavar="N",
                   help="draw N wafers (W01, W02, ...) whose medians move from wafer to wafer; --devices is then "
                        "the cells per wafer")
    p.add_argument("--w2w-sd", type=float, default=None, metavar="SD",
                   help="with --wafers: sd of the log of each wafer's factor on the median of --w2w-params "
                        "(lognormal; default 0.1)")
    p.add_argument("--w2w-factors", metavar="F1,F2,...", default=None,
                   help="each wafer's factor on the median of --w2w-params, one per wafer (instead of --w2w-sd; "
                        "sets the number of wafers)")
    p.add_argument("--w2w-params", metavar="P1,P2", default=None,
                   help="parameters the wafer factors move (default: m1,t_star,r0)")


def _grid(text: str) -> tuple[list, list]:
    """``'V1,V2:W1,W2'`` -> amplitudes, widths (one clear error otherwise)."""
    from ..synth import DEFAULT_PULSE_WIDTHS, DEFAULT_V_PULSES

    if text.strip() == "default":
        return list(DEFAULT_V_PULSES), list(DEFAULT_PULSE_WIDTHS)
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        vs, ws = ([float(x) for x in part.split(",") if x.strip()] for part in parts)
    except ValueError:
        raise HfoxError(f"synth: --conditions {text!r} is not 'V1,V2,...:W1,W2,...' (e.g. "
                        "'1.15,1.25,1.35:0.5e-6,1e-6,2e-6') or 'default'.") from None
    if not vs or not ws or any(not w > 0 for w in ws):
        raise HfoxError(f"synth: --conditions {text!r}: give at least one amplitude and one width, widths > 0 s.")
    return vs, ws


def _slopes(text: str | None):
    """The ``--condition-law`` JSON (text or file) -> slopes, v_ref, width_ref."""
    import json

    if text is None:
        return None, None, None
    source = Path(text)
    raw = source.read_text(encoding="utf-8") if text.endswith(".json") and source.is_file() else text
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise HfoxError(f"synth: --condition-law is not JSON ({err}); e.g. '{{\"m1\": {{\"b_v\": 2.0}}}}'.") from None
    if not isinstance(data, dict):
        raise HfoxError("synth: --condition-law must be a JSON object of parameter -> {b_v, b_w}.")
    v_ref, width_ref = data.pop("v_ref", None), data.pop("width_ref", None)
    for name, c in data.items():
        if not isinstance(c, dict) or set(c) - {"b_v", "b_w", "scale"}:
            raise HfoxError(f"synth: --condition-law entry {name!r} must be an object with b_v and/or b_w; got {c!r}.")
    return data, v_ref, width_ref


def run_synth(args) -> int:
    from ..synth import TRUTH_NAME, effects_preset, make_condition_campaign, make_wafer, write_wafer

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise HfoxError(f"synth: {str(out)!r} is a file; -o takes a folder.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise HfoxError(
            f"synth: folder {str(out)!r} is not empty; its old files would mix with the new wafer. "
            "Pass a new folder, or --overwrite."
        )
    for name in ("devices", "pulses", "cycles"):
        if getattr(args, name) < 1:
            raise HfoxError(f"synth: --{name} must be >= 1; got {getattr(args, name)}.")
    effects = dataclasses.replace(effects_preset(args.effects), stuck_noise=args.stuck_noise)
    common = dict(devices=args.devices, pulses=args.pulses, cycles=args.cycles, seed=args.seed, wafer=args.wafer,
                  effects=effects)
    if args.conditions is not None and _wants_wafers(args):
        raise HfoxError("synth: --conditions and --wafers/--w2w-* cannot be combined; draw one or the other.")
    if args.conditions is not None:
        v_pulses, widths = _grid(args.conditions)
        slopes, v_ref, width_ref = _slopes(args.condition_law)
        wafer = make_condition_campaign(args.preset, slopes, v_pulses=v_pulses, pulse_widths=widths, v_ref=v_ref,
                                        width_ref=width_ref, **common)
    elif args.condition_law is not None:
        raise HfoxError("synth: --condition-law needs --conditions (the grid to draw the campaign over).")
    elif _wants_wafers(args):
        wafer = _wafer_campaign(args, common)
    else:
        wafer = make_wafer(args.preset, **common)
    wafer.meta["effects_preset"] = args.effects
    written = write_wafer(wafer, out, args.format)
    raw = [p for p in written if p.name != TRUTH_NAME]
    n_reads = sum(d.n_reads for d in wafer.dies)
    size = sum(p.stat().st_size for p in raw if p.is_file())
    print(
        f"wrote {len(raw)} {args.format} file(s) to {out} ({len(wafer.truth.groupby(['wafer', 'die', 'device']))} cells"
        f"{_condition_text(wafer)}{_wafers_text(wafer)}, {n_reads:,} reads, "
        f"{size / 1e6:.1f} MB); ground truth in {out / TRUTH_NAME}"
    )
    return 0


def _condition_text(wafer) -> str:
    conds = wafer.meta.get("conditions")
    return f" at {len(conds)} pulse conditions" if conds else ""


def _wants_wafers(args) -> bool:
    return any(getattr(args, k) is not None for k in ("wafers", "w2w_sd", "w2w_factors", "w2w_params"))


def _wafer_campaign(args, common: dict):
    """``--wafers N --w2w-sd SD`` or ``--w2w-factors F1,F2,...``: several wafers with a known W2W shift."""
    from ..synth import W2W_PARAMS, make_wafer_campaign

    params = W2W_PARAMS
    if args.w2w_params is not None:
        params = tuple(x.strip() for x in args.w2w_params.split(",") if x.strip())
        if not params:
            raise HfoxError(f"synth: --w2w-params {args.w2w_params!r} names no parameter; e.g. 'm1,t_star,r0'.")
    factors = None
    if args.w2w_factors is not None:
        if args.w2w_sd is not None:
            raise HfoxError("synth: give --w2w-sd (drawn factors) or --w2w-factors (given ones), not both.")
        try:
            factors = [float(x) for x in args.w2w_factors.split(",") if x.strip()]
        except ValueError:
            raise HfoxError(f"synth: --w2w-factors {args.w2w_factors!r} is not a comma-separated list of numbers "
                            "(e.g. '1,1.2,0.9').") from None
        if not factors or any(not (f > 0) for f in factors):
            raise HfoxError(f"synth: --w2w-factors {args.w2w_factors!r}: give one factor > 0 per wafer.")
        if args.wafers is not None and args.wafers != len(factors):
            raise HfoxError(f"synth: --wafers {args.wafers} but --w2w-factors gives {len(factors)} factor(s); "
                            "give one factor per wafer.")
    elif args.wafers is None or args.wafers < 1:
        raise HfoxError(f"synth: --wafers must be >= 1 with --w2w-sd/--w2w-params; got {args.wafers}.")
    sd = 0.1 if args.w2w_sd is None else args.w2w_sd
    if not sd >= 0:
        raise HfoxError(f"synth: --w2w-sd must be >= 0; got {args.w2w_sd}.")
    if args.wafer != "W01":
        raise HfoxError("synth: --wafer names one wafer; with --wafers the wafers are named W01, W02, ...")
    common = {k: v for k, v in common.items() if k != "wafer"}
    return make_wafer_campaign(args.preset, wafers=args.wafers or 0, w2w_sd=sd, factors=factors, params=params,
                               **common)


def _wafers_text(wafer) -> str:
    records = wafer.meta.get("wafers")
    return f" on {len(records)} wafers" if records else ""
