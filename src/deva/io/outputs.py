"""Output folders a tool owns: every file it writes is recorded before it is written.

An :class:`OutputFolder` keeps a manifest — ``manifest.txt``, one path per line (relative to
the folder), appended *before* each new file is created, so that even a killed run leaves a
complete record — and ``run.json`` (the tool, its settings, its state and, once the run ends
in any way, the full file list). So:

- a non-empty folder is refused unless ``overwrite=true`` or ``resume=true``;
- ``overwrite=true`` deletes exactly the files the previous run recorded (and the temporary
  files of interrupted writes) and refuses — one line, nothing deleted — when the folder
  holds anything else;
- an input that lies inside the output folder is refused (overwriting could delete it).

Files are written atomically by the writers of :mod:`deva.io` (:mod:`deva.io.atomic`);
``run.json`` and the summaries written here too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deva.io import atomic

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.txt"


class OutputError(ValueError):
    """An output folder that may not be written (in use, or holding files of someone else)."""


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


class OutputFolder:
    """A folder that one run of a tool writes (see the module docstring).

    Args:
        root: the folder (created when missing).
        tool: the tool's name, recorded in ``run.json``.
        overwrite: replace the files of the previous run of a deva tool there.
        resume: continue the previous run (its files are kept and stay owned).
        inputs: paths the run reads; refused when inside ``root``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        tool: str,
        overwrite: bool = False,
        resume: bool = False,
        inputs: Iterable[str | Path | None] = (),
    ) -> None:
        self.root = Path(root)
        self.tool = tool
        check_folder(self.root, overwrite=overwrite, resume=resume, inputs=inputs)
        self._files: set[str] = set()
        self.previous = read_run(self.root)
        if resume:
            self._files = set(_recorded(self.root))
        elif _entries(self.root):
            self._clear()
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- owning files --------------------------------------------------------------------
    def path(self, relative: str | Path) -> Path:
        """The path of ``relative`` inside the folder, recorded as this run's (before it is
        written). Writers then write it atomically."""
        key = Path(relative).as_posix()
        if key not in self._files:
            self._files.add(key)
            with open(self.root / MANIFEST_FILE, "a", encoding="utf-8") as manifest:
                manifest.write(key + "\n")
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @classmethod
    def of(
        cls, target: str | Path | OutputFolder, *, tool: str, overwrite: bool = False
    ) -> OutputFolder:
        """``target`` itself when it is an output folder, else a new one there."""
        if isinstance(target, OutputFolder):
            return target
        return cls(target, tool=tool, overwrite=overwrite)

    def discard(self, relatives: Iterable[str | Path]) -> None:
        """Delete files this run recorded and forget them (records that only served the run
        itself); folders left empty go too."""
        gone = {Path(r).as_posix() for r in relatives}
        self._files = (self._files | set(_recorded(self.root))) - gone
        atomic.write_text(
            self.root / MANIFEST_FILE, "".join(f"{key}\n" for key in sorted(self._files))
        )
        for key in sorted(gone):
            path = self.root / key
            path.unlink(missing_ok=True)
            if path.parent != self.root and path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()

    def refresh(self) -> None:
        """Add the files other processes writing into the same folder recorded."""
        self._files |= set(_recorded(self.root))

    @property
    def files(self) -> list[str]:
        """The files recorded so far (relative paths, sorted)."""
        return sorted(self._files)

    def owns(self, relative: str | Path) -> bool:
        return Path(relative).as_posix() in self._files

    def write_json(self, relative: str | Path, data: Any, *, indent: int | None = 1) -> Path:
        """Record and write a JSON file atomically."""
        return atomic.write_text(self.path(relative), json.dumps(data, indent=indent))

    def write_run(self, run: Mapping[str, Any], *, final: bool = False) -> None:
        """``run.json`` (atomically) with the tool's name; ``final`` adds the file list."""
        data = {"tool": self.tool, **dict(run)}
        if final:
            data["files"] = self.files
        atomic.write_text(self.root / RUN_FILE, json.dumps(data, indent=1))

    # ---- overwriting -----------------------------------------------------------------------
    def _clear(self) -> None:
        """Delete the previous run's files (:func:`check_folder` found nothing else)."""
        found = [p for p in self.root.rglob("*") if p.is_file() or p.is_symlink()]
        for path in found:
            path.unlink()
        for folder in sorted((p for p in self.root.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        logger.info("overwrite=true: removed %d earlier files in %s", len(found), self.root)


def check_folder(
    root: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> None:
    """The checks of :class:`OutputFolder`, without touching anything: call before slow work
    (loading models) so that a bad output fails first. OutputError with one line."""
    root = Path(root)
    if overwrite and resume:
        raise OutputError("resume=true and overwrite=true contradict each other; pick one")
    if root.exists() and not root.is_dir():
        raise OutputError(f"output {root} exists and is not a folder")
    for path in inputs:
        if path is not None and inside(path, root):
            raise OutputError(
                f"input {path} lies inside the output folder {root}; "
                "write the results somewhere else"
            )
    if resume or not _entries(root):
        return
    if not overwrite:
        raise OutputError(
            f"output folder {root} is not empty; pass overwrite=true to replace the files of "
            "the run there"
        )
    foreign = foreign_files(root)
    if foreign:
        raise OutputError(
            f"overwrite=true: {root} holds {len(foreign)} file(s) no deva run wrote there "
            f"(e.g. {foreign[0].relative_to(root)}); nothing was deleted, choose another output"
        )


def foreign_files(root: str | Path) -> list[Path]:
    """The files in ``root`` that no deva run recorded (nor its records, nor temporaries)."""
    root = Path(root)
    owned = set(_recorded(root)) | {RUN_FILE, MANIFEST_FILE}
    return [
        p
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink())
        and p.relative_to(root).as_posix() not in owned
        and not atomic.is_temporary(p)
    ]


def read_run(output: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of an output folder, or None (missing or unreadable)."""
    path = Path(output) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _recorded(root: Path) -> list[str]:
    """The files a previous run recorded: its manifest, else the list in its ``run.json``."""
    manifest = root / MANIFEST_FILE
    if manifest.is_file():
        return [line for line in manifest.read_text(encoding="utf-8").splitlines() if line]
    run = read_run(root)
    return list(run.get("files", [])) if run else []


def _entries(root: Path) -> list[str]:
    return os.listdir(root) if root.is_dir() else []
