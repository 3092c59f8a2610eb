"""The campaign store: one HDF5 file holding a measurement campaign and its fit.

Layout (format ``hfox_fit.campaign``, version :data:`FORMAT_VERSION`)::

    /                          attrs: format, format_version, hfox_fit_version,
                                      created_at, modified_at (UTC ISO), units (JSON)
    /measurements/<wafer>/<die>/   attrs: wafer, die, n_cells, n_cycles, n_pulses,
                                          n_trains, n_reads, n_failed, attrs (JSON; the die's
                                          position on the wafer as its x, y)
        devices      str   [cells]                   cell ids, sorted (UTF-8)
        cycles       int64 [cycles]                  cycle numbers, sorted
        resistance   float64 [cells, cycles, pulses]  Ohm; NaN = failed or not taken
        present      bool  [cells, cycles, pulses]   True where a read (maybe failed) exists
        v_read, v_pulse, pulse_width  float64 [cells, cycles]   V, V, s (attr ``unit``)
        source       int32 [cells, cycles]           index in /sources of the file of each
                                                     train (-1: no train)
    /sources                   str [files]: one JSON record per ingested file (path,
                               sha256, size, ingested_at, hfox_fit_version, format,
                               rows_read / rows_stored / rows_rejected, rejected,
                               notes, metadata, dies)
    /fit/                      attrs: fitted_at, history (JSON list of fit times)
        summary, model         str: JSON
        cells/                 one dataset per column (strings as UTF-8)
        arrays/<name>          free-form arrays of the fit

Group names are the ids with ``%`` and ``/`` (and a leading ``.``) percent-encoded;
the true ids are in the attributes. The per-read arrays are chunked (about 1 MiB)
and compressed with LZF + shuffle, which keeps ingest far faster than parsing.

Every change (ingest, fit) writes a new file beside the store and moves it in
place with :func:`os.replace`: a failed or interrupted change leaves the store
byte for byte as it was. Groups a change does not touch are copied with
``h5py``'s ``copy`` (raw chunks, no decompression).

One idea per module:

- :mod:`._campaign`: :class:`CampaignStore`, the public object, and reading the store;
- :mod:`._file`: opening a store (format check) and the atomic rewrite;
- :mod:`._ingest`: adding read files (provenance, SHA-256, merging, clashes);
- :mod:`._fit`: saving and loading the fit (:class:`StoredFit`);
- :mod:`._dies`: the HDF5 group of one die, and :class:`StoredDie` (a die read where it is called);
- :mod:`._positions`: die positions on the wafer (a ``wafer,die,x,y`` CSV) into the dies' ``attrs``;
- :mod:`._h5`: generic HDF5 helpers (names, attributes, JSON, frames, arrays).

The split of a table into dies is :func:`hfox_fit.schema.table_to_dies`
(``split_dies`` here is the same function, under its former name).
"""

from ..schema import table_to_dies as split_dies
from ._campaign import CampaignStore
from ._dies import StoredDie
from ._file import FORMAT, FORMAT_VERSION
from ._fit import StoredFit
from ._h5 import COMPRESSION  # noqa: F401  (module constant of the former hfox_fit.store)
from ._ingest import MAX_REJECTED, IngestSummary  # noqa: F401  (MAX_REJECTED: as above)
from ._positions import DiePositions, read_die_positions

__all__ = ["CampaignStore", "IngestSummary", "StoredFit", "FORMAT", "FORMAT_VERSION", "split_dies", "DiePositions",
           "read_die_positions", "StoredDie"]
