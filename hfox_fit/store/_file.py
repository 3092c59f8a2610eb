"""The store file as a whole: opening it (is it a campaign store we can read?), and changing it atomically.

Every change (ingest, fit) writes a new file beside the store and moves it in
place (:func:`hfox_fit._atomic.atomic_path`): a failed or interrupted change
leaves the store byte for byte as it was.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path

import h5py

from .._atomic import atomic_path, refuse_read_only
from .._version import __version__
from ..exceptions import StoreError
from ..schema import COLUMNS, UNITS
from ._h5 import dumps, now

#: Value of the root attribute ``format`` of a campaign store.
FORMAT = "hfox_fit.campaign"
#: Layout version written by this hfox_fit; stores of a higher version are refused.
FORMAT_VERSION = 1


def open_store(p: Path, *, create_hint: bool = True) -> h5py.File:
    """Open the store ``p`` read-only, checking that it is a campaign store we can read."""
    if not p.exists():
        hint = f" Create it with `hfox-fit ingest RAW_FILES... --store {p}`." if create_hint else ""
        raise StoreError(f"campaign store {str(p)!r} does not exist.{hint}")
    if p.is_dir():
        raise StoreError(f"{str(p)!r} is a directory, not a campaign store file (.h5). Pass the store file.")
    try:
        is_hdf5 = h5py.is_hdf5(p)
    except OSError as err:
        raise StoreError(f"cannot read {str(p)!r}: {err}. Check the path and its permissions.") from err
    if not is_hdf5:
        raise StoreError(
            f"{str(p)!r} is not an HDF5 file, so not a campaign store. Pass the .h5 file "
            "written by `hfox-fit ingest`; raw measurement files go to `hfox-fit ingest`."
        )
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise StoreError(
            f"cannot open the campaign store {str(p)!r} ({err}); the file may be damaged or "
            "still being written. Restore it from a backup or ingest the raw files again."
        ) from err
    try:
        _check_format(f, p)
    except BaseException:
        f.close()
        raise
    return f


def _check_format(f: h5py.File, p: Path) -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise StoreError(
            f"{str(p)!r} is an HDF5 file but not a hfox_fit campaign store (its root "
            f"attribute 'format' is {fmt!r}, expected {FORMAT!r}). If it is a raw HDF5 dump, "
            f"ingest it: `hfox-fit ingest {p} --store campaign.h5`."
        )
    version = int(f.attrs.get("format_version", -1))
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{str(p)!r} has store format_version {version}; this hfox_fit "
            f"({__version__}) reads versions 1-{FORMAT_VERSION}. Upgrade hfox_fit."
        )
    if version < 1:
        raise StoreError(
            f"{str(p)!r} has an invalid store format_version ({version}); the file is "
            "damaged. Ingest the raw files again into a new store."
        )


_READ_ONLY = {"error": StoreError, "what": "the campaign store",
              "needs": "writing to a store (ingest, fit, calibrate) rewrites it"}


def check_writable(p: Path) -> None:
    """Refuse (StoreError) a read-only store file before any work: every change rewrites it."""
    refuse_read_only(p, **_READ_ONLY)


@contextmanager
def rewrite(p: Path):
    """Yield ``(old, new)`` h5py files; on success move ``new`` over the store ``p``.

    ``old`` is the current store opened read-only (None when there is none).
    Any exception, KeyboardInterrupt included, removes the new file and
    leaves the store untouched; so does a change of the store by another
    process meanwhile (:class:`StoreError`). A read-only store is refused
    (:func:`check_writable`), never replaced.
    """
    old_stat = None
    if p.exists():
        open_store(p).close()  # refuse non-stores before writing anything
        check_writable(p)
        old_stat = os.stat(p)
    elif not p.parent.is_dir():
        raise StoreError(
            f"cannot create the campaign store {str(p)!r}: folder {str(p.parent)!r} does not "
            "exist. Create it first or pass another --store path."
        )
    with ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_path(p, **_READ_ONLY))
        except OSError as err:
            raise StoreError(f"cannot write beside the campaign store {str(p)!r}: {err}.") from err
        old = open_store(p) if old_stat is not None else None
        try:
            with h5py.File(tmp, "w") as new:
                yield old, new
        finally:
            if old is not None:
                old.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if old_stat is not None:
            cur = os.stat(p)
            if (cur.st_ino, cur.st_size, cur.st_mtime_ns) != (
                old_stat.st_ino, old_stat.st_size, old_stat.st_mtime_ns
            ):
                raise StoreError(
                    f"the campaign store {str(p)!r} was changed by another process while this "
                    "change was prepared; nothing was written. Run the command again."
                )
    # atomic_path has moved the new file in place; make the rename durable.
    try:
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def init_root(old, new) -> None:
    """Set the root attributes of the new file (``created_at`` and unknown ones kept from ``old``)."""
    t = now()
    if old is not None:
        for k, v in old.attrs.items():
            new.attrs[k] = v
    else:
        new.attrs["format"] = FORMAT
        new.attrs["created_at"] = t
    new.attrs["format_version"] = FORMAT_VERSION
    new.attrs["hfox_fit_version"] = __version__
    new.attrs["modified_at"] = t
    new.attrs["units"] = dumps(UNITS)
    new.attrs["columns"] = dumps(list(COLUMNS))
