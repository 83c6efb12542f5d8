"""What every command line shares: one-line errors and their exit codes.

A user error — a bad option, a missing or unreadable file, an unwritable output, a full disk,
weights or checkpoints that are corrupt or of another architecture — ends a tool with one
line on stderr and exit status 2; Ctrl+C with one line and status 130. Nothing else is
printed: no traceback. The messages of the library's errors are written to be read alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from deva.config import ConfigError
from deva.errors import one_line
from deva.modeling.checkpoint import WeightsMismatchError

log = logging.getLogger(__name__)

#: Exit status of a user error (bad option, unusable input or output) and of an interruption.
USER_ERROR, INTERRUPTED = 2, 130

#: The exceptions that are user errors; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ImportError,
    WeightsMismatchError,
    OSError,
)


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is when a record comes (tests and
    notebooks swap them): warnings and errors to stderr, the rest to stdout unless
    ``info_to_stderr`` (tools whose stdout is data)."""

    def __init__(self, *, warnings: bool, info_to_stderr: bool = False) -> None:
        self._stderr = warnings or info_to_stderr
        super().__init__()
        if warnings:
            self.setLevel(logging.WARNING)
        else:
            self.addFilter(lambda record: record.levelno < logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr if self._stderr else sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:
        pass


@contextlib.contextmanager
def console_logging(level: int = logging.INFO, *, info_to_stderr: bool = False) -> Iterator[None]:
    """Inside the block, log records of ``level`` and above reach the console: information on
    stdout, warnings on stderr (where a user error is one line from :func:`run_tool`). The
    handlers and the root level are as before afterwards, so tools called one after another
    in one process do not stack handlers."""
    root = logging.getLogger()
    handlers = [
        _ConsoleHandler(warnings=False, info_to_stderr=info_to_stderr),
        _ConsoleHandler(warnings=True),
    ]
    before = root.level
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(before)


def run_tool(
    prefix: str,
    body: Callable[[], object],
    *,
    interrupted: Callable[[], str] | None = None,
    silent: Callable[[], bool] | None = None,
) -> int:
    """Run a tool's ``body``: 0 when it returns, 2 with ``<prefix> <one line>`` on stderr for a
    user error, 130 on Ctrl+C with the interruption's own message (e.g. where to resume), else
    the ``interrupted()`` line (default ``interrupted``). Nothing is printed while
    ``silent()`` is true (the DDP processes other than rank 0: one line, not one per rank).
    Log records reach the console meanwhile (:func:`console_logging`)."""
    try:
        with console_logging():
            body()
    except KeyboardInterrupt as error:
        if not (silent is not None and silent()):
            message = str(error) or (interrupted() if interrupted is not None else "interrupted")
            print(f"{prefix} {message}", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as error:
        log.debug("user error", exc_info=True)
        if not (silent is not None and silent()):
            print(f"{prefix} {one_line(error)}", file=sys.stderr)
        return USER_ERROR
    return 0


def output_folder(output: str | None, overwrite: bool) -> Path:
    """The output folder; refuses a non-empty one unless ``overwrite`` (never loses files)."""
    if output is None:
        raise ConfigError("output=DIR is required")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {out} is not empty; pass overwrite=true to write into it")
    return out
