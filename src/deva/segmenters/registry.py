"""Segmenters by name, for command lines and the web demo.

``build_segmenter("sam", options, ...)`` turns a name plus a mapping of options (the
``segmenter.*`` keys of ``deva/configs/track.yaml``) into a loaded :class:`ImageSegmenter`.
Model-backed segmenters import ``transformers`` only when built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from deva.segmenters.grounded_sam import GroundedSamSegmenter
from deva.segmenters.panoptic import (
    DEFAULT_MASK2FORMER,
    DEFAULT_ONEFORMER,
    Mask2FormerSegmenter,
    OneFormerSegmenter,
)
from deva.segmenters.precomputed import PrecomputedSegmenter
from deva.segmenters.sam import SamAutomaticSegmenter
from deva.types import ImageSegmenter

SEGMENTERS = ("sam", "grounded_sam", "mask2former", "oneformer", "precomputed")
PROMPTED = ("grounded_sam",)


class UnknownSegmenterError(ValueError):
    """A segmenter name that is not in :data:`SEGMENTERS`."""


def check_segmenter_name(name: str) -> str:
    """``name`` if it is a known segmenter, else an error listing the available ones."""
    if name not in SEGMENTERS:
        raise UnknownSegmenterError(
            f"segmenter {name!r} is not available; choose one of: {', '.join(SEGMENTERS)}"
        )
    return name


def _options(options: Mapping[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in dict(options).items() if k not in drop and v is not None}


def build_segmenter(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    prompt: str | None = None,
    detections: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    local_files_only: bool | None = None,
) -> ImageSegmenter:
    """Build segmenter ``name`` with ``options`` (model id / folder in ``model``, thresholds).

    ``prompt`` is required by ``grounded_sam``; ``detections`` (a folder) by ``precomputed``.
    """
    check_segmenter_name(name)
    options = dict(options or {})
    options.pop("name", None)
    loaders: dict[str, Callable[[], ImageSegmenter]] = {}

    def sam() -> ImageSegmenter:

        return SamAutomaticSegmenter.from_pretrained(
            options.get("model") or "facebook/sam-vit-base",
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            **_options(options, ("model",)),
        )

    def grounded_sam() -> ImageSegmenter:

        if not prompt:
            raise ValueError('segmenter=grounded_sam needs a text prompt: prompt="person. dog."')
        return GroundedSamSegmenter.from_pretrained(
            options.get("model") or "IDEA-Research/grounding-dino-tiny",
            options.get("sam_model") or "facebook/sam-vit-base",
            prompt=prompt,
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            **_options(options, ("model", "sam_model")),
        )

    def mask2former() -> ImageSegmenter:

        return Mask2FormerSegmenter.from_pretrained(
            options.get("model") or DEFAULT_MASK2FORMER,
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            **_options(options, ("model",)),
        )

    def oneformer() -> ImageSegmenter:

        return OneFormerSegmenter.from_pretrained(
            options.get("model") or DEFAULT_ONEFORMER,
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            **_options(options, ("model",)),
        )

    def precomputed() -> ImageSegmenter:

        folder = detections or options.get("detections")
        if not folder:
            raise ValueError("detections=DIR is required with segmenter=precomputed")
        return PrecomputedSegmenter(folder, missing=options.get("missing", "empty"))

    loaders.update(
        sam=sam,
        grounded_sam=grounded_sam,
        mask2former=mask2former,
        oneformer=oneformer,
        precomputed=precomputed,
    )
    return loaders[name]()


def category_names(segmenter: Any) -> dict[int, str]:
    """Category id → name of a segmenter (empty when it has no names)."""
    names = getattr(segmenter, "category_names", None)
    return {int(k): str(v) for k, v in dict(names or {}).items()}
