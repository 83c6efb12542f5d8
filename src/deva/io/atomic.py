"""Files written whole or not at all: to a temporary name beside the target, then renamed.

A kill or a full disk while writing leaves the previous file (or none) under the target name,
never a torn one; the temporary file is removed when writing fails. Temporary names are
``.<name>.tmp-<pid><suffix>`` (the suffix kept, so that image writers pick the format).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

TEMPORARY_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """Where :func:`atomic_path` writes ``path`` first."""
    return path.with_name(f".{path.stem}{TEMPORARY_MARK}{os.getpid()}{path.suffix}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file left by an interrupted :func:`atomic_path`."""
    return path.name.startswith(".") and TEMPORARY_MARK in path.name


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``path.write_bytes(data)``, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)
