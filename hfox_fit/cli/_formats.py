"""``hfox-fit formats``: list the readers of raw measurement files, built-in and plug-in."""

from __future__ import annotations

from ._common import add_command


def register(subparsers) -> None:
    add_command(
        subparsers,
        "formats",
        run_formats,
        help="list the readers of raw measurement files",
        description="List the readers of raw files: name, file suffixes, origin (built-in or plug-in) and description.",
    )


def run_formats(args) -> int:
    from ..parsers import list_formats

    rows = []
    for parser in list_formats():
        rows.append(
            (
                str(parser.name),
                " ".join(getattr(parser, "suffixes", ()) or ()) or "-",
                _origin(parser),
                str(getattr(parser, "description", "") or ""),
            )
        )
    header = ("name", "suffixes", "origin", "description")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
    for r in [header] + rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    return 0


def _origin(parser) -> str:
    origin = getattr(parser, "origin", None)
    if origin:
        return str(origin)
    cls = parser if isinstance(parser, type) else type(parser)
    module = cls.__module__ or ""
    if module == "hfox_fit" or module.startswith("hfox_fit."):
        return "built-in"
    return f"plug-in ({module.split('.')[0]})"
