"""The image segmenters by name, for command lines and the web demo.

:func:`build_segmenter` builds one from its name and options (the ``segmenter.*`` keys of the
tools' configs); model-backed segmenters import ``transformers`` only when built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from deva.segmenters.grounded_sam import GroundedSamSegmenter
from deva.segmenters.owlv2_sam import DEFAULT_OWLV2, Owlv2SamSegmenter
from deva.segmenters.panoptic import (
    DEFAULT_MASK2FORMER,
    DEFAULT_ONEFORMER,
    Mask2FormerSegmenter,
    OneFormerSegmenter,
)
from deva.segmenters.precomputed import PrecomputedSegmenter
from deva.segmenters.sam import DEFAULT_SAM, SamAutomaticSegmenter
from deva.segmenters.sam3 import DEFAULT_SAM3, Sam3Segmenter
from deva.types import ImageSegmenter

SEGMENTERS = (
    "sam",
    "grounded_sam",
    "owlv2_sam",
    "sam3",
    "mask2former",
    "oneformer",
    "precomputed",
)
PROMPTED = ("grounded_sam", "owlv2_sam", "sam3")


class UnknownSegmenterError(ValueError):
    """A segmenter name that is not in :data:`SEGMENTERS`."""


def check_segmenter_name(name: str) -> str:
    """``name`` if it is a known segmenter, else an error listing the available ones."""
    if name not in SEGMENTERS:
        raise UnknownSegmenterError(
            f"segmenter {name!r} is not available; choose one of: {', '.join(SEGMENTERS)}"
        )
    return name


def build_segmenter(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    prompt: str | None = None,
    detections: str | Path | None = None,
    device: torch.device | str | None = None,
    amp: str | None = None,
    local_files_only: bool | None = None,
) -> ImageSegmenter:
    """The image segmenter ``name`` with ``options`` (``model``: hub id or folder, thresholds;
    None values keep the model's defaults).

    ``prompt`` is required by the prompted segmenters; ``detections`` (a folder) by
    ``precomputed``. ``amp`` (bf16 / fp16) applies to image models on a GPU only. Unknown
    options are one-line errors before any model is loaded.
    """
    options = {k: v for k, v in dict(options or {}).items() if v is not None and k != "name"}
    check_segmenter_name(name)
    if name == "precomputed":
        folder = detections or options.pop("detections", None)
        if not folder:
            raise ValueError("detections=DIR is required with segmenter=precomputed")
        _check_options(name, options, PrecomputedSegmenter)
        return PrecomputedSegmenter(folder, **options)
    if name in PROMPTED and not prompt:
        raise ValueError(f'segmenter={name} needs a text prompt, e.g. prompt="person. dog."')
    on_gpu = device is not None and torch.device(device).type != "cpu"
    common = {
        "device": device,
        "dtype": amp if on_gpu and amp not in (None, "none") else None,
        "local_files_only": local_files_only,
    }
    load, sources, signatures = _LOADERS[name]
    positional = [options.pop(key, default) for key, default in sources]
    _check_options(name, options, *signatures, models=tuple(key for key, _ in sources))
    extra = {"prompt": prompt} if name in PROMPTED else {}
    return load(*positional, **common, **extra, **options)


# name -> (loader, (option, default) of its model sources, functions whose keywords it takes)
_LOADERS: dict[str, tuple[Callable[..., ImageSegmenter], tuple[tuple[str, str], ...], tuple]] = {
    "sam": (
        SamAutomaticSegmenter.from_pretrained,
        (("model", "facebook/sam-vit-base"),),
        (SamAutomaticSegmenter.from_pretrained, SamAutomaticSegmenter),
    ),
    "grounded_sam": (
        GroundedSamSegmenter.from_pretrained,
        (("model", "IDEA-Research/grounding-dino-tiny"), ("sam_model", "facebook/sam-vit-base")),
        (GroundedSamSegmenter.from_pretrained, GroundedSamSegmenter),
    ),
    "owlv2_sam": (
        Owlv2SamSegmenter.from_pretrained,
        (("model", DEFAULT_OWLV2), ("sam_model", DEFAULT_SAM)),
        (Owlv2SamSegmenter.from_pretrained, Owlv2SamSegmenter),
    ),
    "sam3": (
        Sam3Segmenter.from_pretrained,
        (("model", DEFAULT_SAM3),),
        (Sam3Segmenter.from_pretrained, Sam3Segmenter),
    ),
    "mask2former": (
        Mask2FormerSegmenter.from_pretrained,
        (("model", DEFAULT_MASK2FORMER),),
        (Mask2FormerSegmenter.from_pretrained, Mask2FormerSegmenter),
    ),
    "oneformer": (
        OneFormerSegmenter.from_pretrained,
        (("model", DEFAULT_ONEFORMER),),
        (OneFormerSegmenter.from_pretrained, OneFormerSegmenter),
    ),
}


def _check_options(
    name: str, options: Mapping[str, Any], *sources: Callable | type, models: tuple[str, ...] = ()
) -> None:
    """ValueError naming the first option no keyword of ``sources`` takes (a class stands for
    the ``__init__`` of every class it derives from, which ``**options`` reach); ``models``
    are the options naming the model files (already taken)."""
    functions: list[Callable] = []
    for source in sources:
        if isinstance(source, type):
            functions += [c.__init__ for c in source.__mro__ if "__init__" in vars(c)]
        else:
            functions.append(source)
    known: set[str] = set()
    for function in functions:
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is parameter.KEYWORD_ONLY:
                known.add(parameter.name)
    known -= {"device", "dtype", "local_files_only", "prompt"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"segmenter.{unknown[0]}: not an option of segmenter {name} "
            f"(options: {', '.join(sorted(known | set(models)))})"
        )
