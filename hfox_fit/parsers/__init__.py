"""Readers of raw weak-RESET measurement files (one small plug-in per format).

Public API (contract used by the store, the CLI and ``synth``)::

    read_measurements(path, format=None, *, wafer=None, die=None, v_read=None,
                      on_bad_lines="error") -> ReadResult
    write_measurements(table, path, format, **options) -> list[pathlib.Path]
    list_formats() -> list[Parser]

``ReadResult`` holds the validated table and the accounting of the read:
``rows_read == len(table) + rows_rejected``.
"""
