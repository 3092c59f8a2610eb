"""Atomic file replacement: a failed write leaves the target as it was."""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from .exceptions import HfoxError


def mode_for(path: Path) -> int:
    """Mode a new version of ``path`` should get: the old file's, or what a plain open() gives."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def is_read_only(path) -> bool:
    """True when ``path`` exists and its permission bits forbid writing it.

    Decided from the mode bits rather than by trying (or by ``os.access``): root may write
    any file, yet a file someone made read-only (``chmod a-w``) must not be replaced. The
    owner (and root) go by the owner's write bit; other users by ``os.access``.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is None or euid in (0, st.st_uid):
        return not st.st_mode & stat.S_IWUSR
    return not os.access(path, os.W_OK)


def refuse_read_only(path, *, error: type[Exception] = HfoxError, what: str = "the file",
                     needs: str = "this write would replace it") -> None:
    """Raise ``error`` when ``path`` is an existing read-only file (see :func:`is_read_only`).

    The message reads ``"{what} '{path}' is read-only; {needs}. Make it writable (chmod u+w)
    or copy it."``, e.g. ``what="the campaign store"``, ``needs="writing to a store (ingest, fit, calibrate) rewrites it"``.
    """
    if is_read_only(path):
        raise error(
            f"{what} {str(path)!r} is read-only; {needs}. Make it writable (chmod u+w) or copy it."
        )


@contextmanager
def atomic_path(path, *, suffix: str = ".tmp", error: type[Exception] = HfoxError,
                what: str = "the file", needs: str = "this write would replace it"):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    An existing read-only ``path`` is never replaced: :func:`refuse_read_only` raises
    ``error`` (with ``what`` and ``needs`` in its message) before anything is written, and
    again before the replace if the file was made read-only meanwhile. mkstemp makes the
    file private (0600), so the mode is set as :func:`mode_for` says.
    """
    path = Path(path)
    refuse_read_only(path, error=error, what=what, needs=needs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        refuse_read_only(path, error=error, what=what, needs=needs)  # made read-only meanwhile
        os.chmod(tmp, mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
