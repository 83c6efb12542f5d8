"""Turn the option groups shared by the command-line tools into library objects.

The tools' configs (``configs/evaluate.yaml``, ``configs/track.yaml``) share the keys read
here; library code receives the resulting dataclasses, never the config itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deva.config import ConfigError
from deva.inference import options as inference
from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.tracker_config import TrackerConfig, TrackingMode


def autocast_dtype(name: str | None, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``amp=name`` on ``device`` (one-line ConfigError).

    ``bf16`` works on CUDA and on CPUs with native bfloat16 (AVX-512-BF16 / AMX; checked via
    oneDNN); ``fp16`` on the CPU and ``bf16`` on a CPU without it are one-line errors.
    """
    try:
        return inference.autocast_dtype(name, device)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def inference_options(cfg: Any) -> InferenceOptions:
    """The runtime keys (device, amp, winograd, compile, chunk_size) → :class:`InferenceOptions`."""
    device = inference.pick_device(cfg.device)
    return InferenceOptions(
        device=str(cfg.device),
        autocast=autocast_dtype(cfg.amp, device),
        winograd=cfg.get("winograd"),
        compile=bool(cfg.get("compile", False)),
        chunk_size=int(cfg.chunk_size),
    )


def memory_config(cfg: Any) -> MemoryConfig:
    """``memory.*`` keys → :class:`MemoryConfig`."""
    return MemoryConfig(**cfg.memory)


def tracker_config(cfg: Any) -> TrackerConfig:
    """The tracker keys (mode, detect_every, clip_size, ...) → :class:`TrackerConfig`.

    ``benchmark=vipseg`` (panoptic input) matches things and stuff separately; every other
    input (generic detections, BURST, segmenters) is matched in one group.
    """
    return TrackerConfig(
        mode=TrackingMode.parse(cfg.mode),
        detect_every=cfg.detect_every,
        clip_size=cfg.clip_size,
        max_missed=cfg.max_missed,
        max_objects=cfg.max_objects,
        shorter_side=cfg.size,
        mem_every=cfg.mem_every,
        memory=memory_config(cfg),
        panoptic=cfg.get("benchmark") == "vipseg",
        incremental=bool(cfg.get("incremental", False)),
    )


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
