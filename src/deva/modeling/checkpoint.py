"""Reading propagation checkpoints: finding the file, sniffing its format, checking shapes.

Recognised checkpoint formats (sniffed, then loaded strictly with ``weights_only=True``):
- the published DEVA propagation file (``DEVA-propagation.pth``): a plain state dict;
- our Lightning checkpoints (``*.ckpt``): ``state_dict`` with the network under ``model.``
  and the architecture under ``hyper_parameters["model_config"]``;
- our exported files (``{"model_config": ..., "state_dict": ...}``, see
  :func:`deva.modeling.weights.save_weights`);
- plain state dicts, optionally with a DDP ``module.`` prefix.

A URL is downloaded once into the cache; the bare published file name then finds the cached
copy (offline, the error names where to get it).
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from deva.modeling.config import PropagationConfig

log = logging.getLogger(__name__)

PUBLISHED_URLS = {
    "DEVA-propagation.pth": "https://github.com/hkchengrex/Tracking-Anything-with-DEVA/releases/download/v1.0/DEVA-propagation.pth",
}
LIGHTNING_PREFIX = "model."


class WeightsMismatchError(ValueError):
    """A checkpoint's parameters do not match the model's (names or shapes)."""


def default_cache_dir() -> Path:
    """Where downloads go: ``$DEVA_CACHE`` or ``~/.cache/deva``."""
    return Path(os.environ.get("DEVA_CACHE", Path.home() / ".cache" / "deva"))


def is_url(path_or_url: str | Path) -> bool:
    return str(path_or_url).startswith(("http://", "https://"))


def download(
    url: str,
    dest_dir: str | Path | None = None,
    *,
    filename: str | None = None,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` into ``dest_dir`` (default: the cache) and return the local path.

    An existing complete file is reused. A partial ``.part`` file is resumed with an HTTP
    Range request when the server supports it, otherwise restarted.
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else default_cache_dir() / "checkpoints"
    dest = dest_dir / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    if dest.is_file():
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    offset = partial.stat().st_size if (resume and partial.is_file()) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the partial file is already complete
            partial.rename(dest)
            return dest
        raise ConnectionError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(
            f"cannot download {url}: {reason}; if this machine is offline, fetch the file "
            "elsewhere and pass its local path instead"
        ) from None
    with response:
        appending = offset > 0 and response.status == 206
        if offset and not appending:
            log.info("server ignored the range request; restarting %s", url)
        length = response.headers.get("Content-Length")
        total = (int(length) + (offset if appending else 0)) if length else None

        with (
            open(partial, "ab" if appending else "wb") as out,
            tqdm(
                total=total,
                initial=offset if appending else 0,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and partial.stat().st_size != total:
        raise ConnectionError(
            f"download of {url} ended early ({partial.stat().st_size} of {total} bytes); "
            "run again to resume"
        )
    partial.rename(dest)
    return dest


def resolve_path(path_or_url: str | Path) -> Path:
    """A local path for a local file, a URL (downloaded) or a published file name (cached)."""
    if is_url(path_or_url):
        return download(str(path_or_url))
    path = Path(path_or_url)
    if path.is_file():
        return path
    if path.name in PUBLISHED_URLS and not path.parent.parts:
        cached = default_cache_dir() / "checkpoints" / path.name
        if cached.is_file():
            return cached
    hint = f" (published at {PUBLISHED_URLS[path.name]})" if path.name in PUBLISHED_URLS else ""
    raise FileNotFoundError(f"weights file not found: {path}{hint}")


def read_checkpoint(
    path_or_url: str | Path, *, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], PropagationConfig | None]:
    """Load a checkpoint of any supported format as (network state dict, config or None)."""
    path = resolve_path(path_or_url)
    obj = load_file(path, map_location=map_location, what="weights from")
    return split_checkpoint(obj, source=str(path))


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint (empty, truncated, not PyTorch, not tensors)."""


def load_file(
    path: str | Path, *, map_location: str | torch.device = "cpu", what: str = "checkpoint"
) -> Any:
    """``torch.load`` of a checkpoint file with tensors and plain data only
    (``weights_only``); :class:`CheckpointError` saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what.split()[0]} file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read {what} {path}: the file is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt / non-weight files
        raise CheckpointError(f"cannot read {what} {path}: {_why(path, error)}") from None


def _why(path: Path, error: Exception) -> str:
    """What a failed ``torch.load`` says about the file, in one line of our own."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    text = str(error)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        return "not a PyTorch checkpoint file"
    if head[:2] == b"PK" and ("central directory" in text or "zip archive" in text):
        return "truncated or damaged (an incomplete download or copy?)"
    if "Weights only load failed" in text or "weights_only" in text:
        return "it holds objects other than tensors and plain data (not a weights file)"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"{type(error).__name__}: {first}"


def split_checkpoint(
    obj: Any, *, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], PropagationConfig | None]:
    """Sniff a loaded checkpoint object; return the network state dict and its config."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    config_dict = None
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        hparams = obj.get("hyper_parameters") or {}
        config_dict = obj.get("model_config") or hparams.get("model_config")
        state = dict(obj["state_dict"])
        if any(k.startswith(LIGHTNING_PREFIX) for k in state):
            state = {
                k[len(LIGHTNING_PREFIX) :]: v
                for k, v in state.items()
                if k.startswith(LIGHTNING_PREFIX)
            }
    else:
        state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: entries {bad[:3]} are not tensors; not a weights file")
    config = PropagationConfig.from_dict(dict(config_dict)) if config_dict else None
    return state, config


def infer_config(state: Mapping[str, torch.Tensor]) -> PropagationConfig:
    """Derive the architecture from tensor shapes (strict loading then checks every tensor)."""

    def shape(key: str) -> torch.Size:
        if key not in state:
            raise WeightsMismatchError(
                f"not a DEVA propagation state dict: {key!r} is missing "
                f"(first keys: {list(state)[:3]})"
            )
        return state[key].shape

    if "pixel_encoder.features.0.0.weight" in state:  # the mobile preset's MobileNetV2
        pixel_trunk, pixel_width = "mobilenetv2", shape("pixel_encoder.features.0.0.weight")[0]
    else:
        pixel_trunk = "resnet50" if "pixel_encoder.res2.0.conv3.weight" in state else "resnet18"
        pixel_width = shape("pixel_encoder.conv1.weight")[0]
    return PropagationConfig(
        pixel_trunk=pixel_trunk,
        pixel_trunk_width=pixel_width,
        mask_trunk="resnet50" if "mask_encoder.layer1.0.conv3.weight" in state else "resnet18",
        mask_trunk_width=shape("mask_encoder.conv1.weight")[0],
        pixel_dim=shape("pixel_encoder.proj1.weight")[0],
        key_dim=shape("key_proj.key_proj.weight")[0],
        value_dim=shape("mask_encoder.fuser.block2.conv2.weight")[0],
        sensory_dim=shape("mask_encoder.sensory_update.transform.weight")[0] // 3,
        decoder_dim=shape("mask_decoder.pred.weight")[1],
    )


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`WeightsMismatchError` naming the first offending keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            problems.append(f"{len(items)} {label} (first: {', '.join(items[:3])})")
    if problems:
        raise WeightsMismatchError("weights do not match the model: " + "; ".join(problems))
