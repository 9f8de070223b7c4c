"""Exceptions convlens raises for bad input.

Every message names what was wrong (the key, the value, the file) and what is allowed, so the
CLI can print it as is, without a traceback.
"""

from __future__ import annotations


class ConvlensError(Exception):
    """Base class: an error the user can fix from the message alone."""


class ConfigError(ConvlensError, ValueError):
    """A config key is unknown, has the wrong type or is out of range."""


class DataError(ConvlensError):
    """A data set is missing, unreadable or malformed."""


class RunError(ConvlensError):
    """A run folder is missing, incomplete or inconsistent."""


class DamagedFileError(RunError, ValueError):
    """A file a command reads is not what it should be: not JSON, cut short, not text. A
    ``ValueError`` too, so readers that tolerate a bad file (the report) still do."""


class DiskFullError(ConvlensError, OSError):
    """A write found no space left on the device. Also an ``OSError``, so code that tolerates a
    failed write (a figure) still does; the message names the file and the space it needs."""

    def __str__(self) -> str:  # OSError would format its own way
        return str(self.args[0]) if self.args else ""


class LayerError(ConvlensError, KeyError):
    """A layer name or filter index does not exist in the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
