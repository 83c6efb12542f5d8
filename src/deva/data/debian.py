"""Debian binary packages (``.deb``) fetched with ``apt-get download`` and read in Python.

A ``.deb`` is an ``ar`` archive holding ``control.tar.*`` (the package's name, version, ...)
and ``data.tar.*`` (its files); both tar members are read with :mod:`tarfile` (gzip, xz,
bzip2 or none), so no ``dpkg`` is needed to read a package that was copied from elsewhere.
"""

from __future__ import annotations

import io
import logging
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

AR_MAGIC = b"!<arch>\n"


@dataclass(frozen=True)
class DebPackage:
    """One package file: its path and the fields of its control file."""

    path: Path
    name: str
    version: str


def download_package(name: str, folder: str | Path) -> Path:
    """``apt-get download NAME`` into ``folder``; the ``.deb`` written (one line when it fails)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob("*.deb"))
    try:
        result = subprocess.run(
            ["apt-get", "download", name], cwd=folder, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise OSError(
            f"apt-get is not available to download {name}; pass debs.{name}=FILE.deb"
        ) from None
    found = sorted(set(folder.glob("*.deb")) - before)
    if result.returncode != 0 or not found:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no package file"]
        raise OSError(f"apt-get download {name} failed ({last[0]}); pass debs.{name}=FILE.deb")
    return found[0]


def _ar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb") as handle:
        if handle.read(8) != AR_MAGIC:
            raise ValueError(f"{path} is not a Debian package (no ar archive header)")
        while True:
            header = handle.read(60)
            if len(header) < 60:
                return
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise ValueError(f"{path}: damaged ar member header") from None
            data = handle.read(size)
            if len(data) < size:
                raise ValueError(f"{path}: truncated ar member {name}")
            if size % 2:
                handle.read(1)
            yield name, data


def _tar_member(path: Path, prefix: str) -> tarfile.TarFile:
    for name, data in _ar_members(path):
        if name.startswith(prefix):
            try:
                return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
            except tarfile.TarError as error:
                raise ValueError(f"{path}: cannot read {name} ({error})") from None
    raise ValueError(f"{path} has no {prefix}* member")


def read_package(path: str | Path) -> DebPackage:
    """The package at ``path`` with the name and version from its control file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"package file not found: {path}")
    with _tar_member(path, "control.tar") as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith("control")), None)
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            raise ValueError(f"{path}: no control file")
        text = handle.read().decode("utf-8", "replace")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields[key.strip()] = value.strip()
    if "Package" not in fields:
        raise ValueError(f"{path}: the control file names no Package")
    return DebPackage(path, fields["Package"], fields.get("Version", "unknown"))


def package_files(package: DebPackage) -> Iterator[tuple[str, bytes]]:
    """``(path, bytes)`` of every regular file the package installs (paths without ``./``)."""
    with _tar_member(package.path, "data.tar") as archive:
        for member in archive:
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                yield member.name.removeprefix("./"), handle.read()


def fetch_packages(
    names: Sequence[str],
    debs: Mapping[str, str],
    folder: str | Path,
    announce: Callable[[str], None] = logger.info,
) -> list[DebPackage]:
    """The packages ``names``: the ``.deb`` given in ``debs`` (offline), the others fetched
    with ``apt-get download`` into ``folder``; a file of another package is an error."""
    found = []
    for name in names:
        if name in debs:
            path = Path(debs[name])
        else:
            announce(f"downloading {name} with apt-get …")
            path = download_package(name, folder)
        package = read_package(path)
        if package.name != name:
            raise ValueError(f"{path} is package {package.name}, not {name}")
        found.append(package)
    return found
