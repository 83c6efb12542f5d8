"""Error messages in one line: what every tool prints and every run records.

Imports nothing of the package, so that the library (``run.json`` states) and the command
lines (stderr) describe an error the same way.
"""

from __future__ import annotations

import errno

_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "cannot write to a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none); disk and permission
    errors say what happened to which file, a missing key which key."""
    if isinstance(error, OSError) and error.errno in _OS_ERRORS:
        where = f" ({error.filename})" if error.filename else ""
        return f"{_OS_ERRORS[error.errno]}{where}"
    if isinstance(error, KeyError):
        return f"missing key {' '.join(str(error).split())}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
