"""The errors ufl reports to its users: one base class, one line each, no traceback.

``ufl.cli.main`` catches :class:`UflError`, prints ``ufl VERB: error: MESSAGE`` on stderr and exits with the
error's ``exit_code``. Every message names the value or file at fault and what to do about it.
"""
from __future__ import annotations


class UflError(Exception):
    """An error ufl explains in one line: the bad value or file, where it came from, and what to do."""

    #: The process exit code ``ufl`` returns for this kind of error.
    exit_code = 2


class ConfigError(UflError, ValueError):
    """A config value is invalid. The message names the field, the bad value and what is allowed."""


class DataError(UflError, ValueError):
    """Input data (a dataset file, DATA/, an image) is missing, corrupt or inconsistent; names the file."""


class RejectionError(DataError):
    """Nothing usable remains, or more than ``max_reject_fraction`` of the inputs were rejected."""


class TrainingDiverged(UflError):
    """The loss became NaN or infinite; the message names the step and the checkpoint that was kept."""


class StorageError(UflError, OSError):
    """Writing an output failed (disk full, permission denied, I/O error); names the path and the fix."""

    exit_code = 1
