"""Every public error and warning of hfox_fit.

Messages say where the problem is, what was expected, what was found and
what to do. The CLI prints them without a traceback (``HfoxError`` and its
subclasses are user errors; anything else is a bug).
"""


class HfoxError(Exception):
    """Base class of the errors hfox_fit reports to users."""


class ParseError(HfoxError, ValueError):
    """A raw file could not be read: names the file, the line or HDF5 path."""

    def __init__(self, message, *, path=None, line=None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.reason = message


class FormatError(HfoxError, ValueError):
    """No reader (or several) recognises a file, or an unknown format name."""


class SchemaError(HfoxError, ValueError):
    """A table does not follow the measurement table of ``hfox_fit.schema``."""


class StoreError(HfoxError, ValueError):
    """The campaign store is missing, damaged, or lacks what was asked for."""


class FitError(HfoxError, ValueError):
    """A fit cannot run on this input (no usable cells, unknown law, ...)."""


class NotFittedError(HfoxError, ValueError, AttributeError):
    """A fitter was used before ``fit`` was called."""


class CheckpointError(HfoxError, ValueError):
    """A model checkpoint is damaged, of an unknown format, or too new."""


class ReportError(HfoxError, ValueError):
    """The report cannot be written: bad output path, no fit, unusable inputs."""


class HfoxWarning(UserWarning):
    """Base class of hfox_fit's warnings."""


class FitConvergenceWarning(HfoxWarning):
    """A cell's fit did not converge; the cell is flagged and the others go on."""


class IngestWarning(HfoxWarning):
    """Something in a raw file was taken from a default or skipped on request."""
