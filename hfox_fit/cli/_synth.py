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


def run_synth(args) -> int:
    from ..synth import TRUTH_NAME, effects_preset, make_wafer, write_wafer

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
    wafer = make_wafer(
        args.preset,
        devices=args.devices,
        pulses=args.pulses,
        cycles=args.cycles,
        seed=args.seed,
        wafer=args.wafer,
        effects=dataclasses.replace(effects_preset(args.effects), stuck_noise=args.stuck_noise),
    )
    wafer.meta["effects_preset"] = args.effects
    written = write_wafer(wafer, out, args.format)
    raw = [p for p in written if p.name != TRUTH_NAME]
    n_reads = sum(d.n_reads for d in wafer.dies)
    size = sum(p.stat().st_size for p in raw if p.is_file())
    print(
        f"wrote {len(raw)} {args.format} file(s) to {out} ({args.devices} cells, {n_reads:,} reads, "
        f"{size / 1e6:.1f} MB); ground truth in {out / TRUTH_NAME}"
    )
    return 0
