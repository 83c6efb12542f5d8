"""Configuration: YAML groups in ``deva/configs/`` composed by Hydra, with ``key=value`` overrides.

Tools call :func:`compose` with their primary config name and the command-line arguments;
the result is a read-only OmegaConf ``DictConfig``. Library code never receives the whole
config: tools pass explicit arguments.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A bad override or a config that cannot be composed."""


def config_dir() -> Path:
    """``$DEVA_CONFIG_DIR`` or the ``configs/`` folder shipped inside the package."""
    env = os.environ.get("DEVA_CONFIG_DIR")
    path = Path(env) if env else Path(str(resources.files("deva") / "configs"))
    if not path.is_dir():
        raise ConfigError(f"config folder not found: {path} (set DEVA_CONFIG_DIR)")
    return path


def repository_path(relative: str | Path) -> Path:
    """``relative`` inside the source checkout this package runs from (``src/`` layout), for
    files that live in the repository only (the embedded checkpoint); after a non-editable
    install there is no checkout and ``relative`` is returned as given (working directory)."""
    here = Path(__file__).resolve()
    root = here.parents[3]
    if here.parents[2].name == "src" and (root / "pyproject.toml").is_file():
        return root / relative
    return Path(relative)


def compose(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``configs/<name>.yaml`` (see :func:`config_dir`) with its defaults list and
    ``key=value`` overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item and not item.startswith("~"):  # ~key deletes a key
            raise ConfigError(f"expected key=value, got {item!r}")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = hydra_compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        first = str(error).strip().splitlines()[0]
        unknown = re.match(r"Could not override '([^']+)'", first)
        if unknown:
            key = unknown.group(1)
            inner = str(getattr(error.__cause__, "full_key", "") or "")
            if inner.startswith(f"{key}."):  # a {...} value merged into an existing section
                entry = inner[len(key) + 1 :].split(".")[0]
                raise ConfigError(
                    f"{key}={{...}} merges into the existing {key} and cannot add {entry!r}: "
                    f"add it with '+{key}.{entry}={{...}}', or replace all of {key} with "
                    f"'~{key}' '+{key}={{...}}'"
                ) from None
            raise ConfigError(
                f"unknown options ['{key}'] (not a key of {name}.yaml; to add a new key write "
                f"+{key}=...)"
            ) from None
        raise ConfigError(f"bad configuration: {first}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def quote_paths(overrides: list[str], keys: tuple[str, ...]) -> list[str]:
    """Quote the values of path-valued ``keys`` so that characters the override grammar
    reserves (``=``, spaces, braces, as in ``ckpt=run/step=100.ckpt`` or shard patterns
    ``x-{000..099}.tar``) survive; lists (``[a, b]``) and quoted values are left alone."""
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in keys and value and value[0] not in "'\"[" and "'" not in value:
            item = f"{key}='{value}'"
        out.append(item)
    return out


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (saved next to outputs and checkpoints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
