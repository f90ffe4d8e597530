"""The errors ufl reports to its users: one base class, one line each, no traceback.

``ufl.cli.main`` catches :class:`UflError`, prints ``ufl VERB: error: MESSAGE`` on stderr and exits with the
error's ``exit_code``. Every message names the value or file at fault and what to do about it.
"""
from __future__ import annotations

import errno
import re
from typing import Optional, Tuple


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


#: errno -> (what happened, what to do) for failures to write outputs.
STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free space there"),
    errno.EDQUOT: ("disk quota exceeded", "free space there"),
    errno.EFBIG: ("file too large", "free space or raise the file-size limit"),
    errno.EACCES: ("permission denied", "make it writable"),
    errno.EPERM: ("operation not permitted", "make it writable"),
    errno.EROFS: ("read-only file system", "use a writable file system"),
    errno.EIO: ("input/output error", "check the disk"),
}
#: The same failures as TensorFlow and Beam word them (they wrap the OSError in exceptions of their own).
_STORAGE_TEXTS = {STORAGE_ERRNOS[number][0]: number for number in STORAGE_ERRNOS}


def storage_failure(error: BaseException) -> Optional[Tuple[str, str, Optional[str]]]:
    """``(what happened, what to do, file or None)`` when ``error`` or its cause is a failed write.

    Recognizes an ``OSError`` with one of ``STORAGE_ERRNOS`` anywhere in the exception chain, and the same
    failures wrapped by TensorFlow (``ResourceExhaustedError: /path...; No space left on device``) or Beam
    (``RuntimeError: OSError: [Errno 28] No space left on device [while running 'WriteShards']``).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return (*STORAGE_ERRNOS[error.errno], error.filename)
        text = str(error)
        found = sorted((text.lower().find(phrase), phrase) for phrase in _STORAGE_TEXTS if phrase in text.lower())
        if found:
            phrase = found[0][1]
            # TensorFlow writes "/path/of/the/file; No space left on device"
            path = re.search(r"(/[^\s;:'\"\[\]]+)[;:] " + re.escape(phrase), text, re.IGNORECASE)
            return (*STORAGE_ERRNOS[_STORAGE_TEXTS[phrase]], path.group(1) if path else None)
        error = error.__cause__ or error.__context__
    return None


def first_line(error: BaseException, *, with_type: bool = False) -> str:
    """The first line of ``error``'s message (its type's name when it has none), for one-line reports;
    ``with_type`` prefixes ``TypeName: ``."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if with_type:
        return f"{type(error).__name__}: {line or '(no message)'}"
    return line or type(error).__name__
