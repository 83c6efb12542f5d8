"""What every command line shares: the output folder check and one-line error messages."""

from __future__ import annotations

from pathlib import Path

from deva.config import ConfigError


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


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
