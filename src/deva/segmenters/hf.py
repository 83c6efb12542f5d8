"""Shared plumbing of the Hugging Face ``transformers`` segmenters.

Loading (hub id or a local ``save_pretrained`` folder, with an actionable error when the files
are not there), image pre-processing written here (resize + normalise + pad, no torchvision,
no image-processor classes), mask utilities (boxes, box NMS, stability) and painting
overlapping masks into one non-overlapping id map.

``transformers`` is imported lazily: importing ``deva.segmenters`` never needs it and never
downloads anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from deva.inference.preprocess import resize_segmentation
from deva.types import Segment, Segmentation

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")

M = TypeVar("M")


class ModelNotAvailableError(FileNotFoundError):
    """The weights of an image model are neither in a local folder nor downloadable."""


def require_transformers() -> Any:
    """The ``transformers`` module, or an ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "the image-model segmenters need Hugging Face transformers: "
            "pip install -c constraints.txt 'deva[models]' (or bash install.sh models)"
        ) from error
    return transformers


def _missing_files(folder: Path, needs_tokenizer: bool) -> list[str]:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:2]))
    if needs_tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or vocab.txt, tokenizer_config.json)")
    return missing


def fetch_hint(source: str, needs_tokenizer: bool = False) -> str:
    """Which files to fetch for ``source`` and where to put them."""
    files = "config.json, model.safetensors (or pytorch_model.bin), preprocessor_config.json"
    if needs_tokenizer:
        files += ", tokenizer.json / vocab.txt, tokenizer_config.json, special_tokens_map.json"
    return (
        f"fetch {files} from https://huggingface.co/{source}/tree/main into one folder and pass "
        f"that folder instead of the hub id (e.g. segmenter.model=/path/to/folder), or "
        f"pre-fill the Hugging Face cache on a machine with internet: "
        f"huggingface-cli download {source}"
    )


def load_pretrained(
    loader: Callable[..., M],
    source: str | Path,
    *,
    what: str,
    needs_tokenizer: bool = False,
    local_files_only: bool | None = None,
    **kwargs: Any,
) -> M:
    """``loader(source, ...)`` (a ``from_pretrained``) with errors that say what to fetch.

    ``source`` is a local ``save_pretrained`` folder or a hub id. A folder is always read
    locally; a hub id is taken from the cache or downloaded (unless ``local_files_only``).
    """
    folder = Path(source).expanduser()
    if folder.is_dir():
        missing = _missing_files(folder, needs_tokenizer)
        if missing:
            raise ModelNotAvailableError(
                f"{what} folder {folder} lacks {', '.join(missing)} "
                f"(expected a transformers save_pretrained layout)"
            )
        return loader(str(folder), local_files_only=True, **kwargs)
    looks_local = str(source).startswith((".", "/", "~")) or str(source).count("/") > 1
    if looks_local:
        raise ModelNotAvailableError(f"{what} folder not found: {folder}")
    options = dict(kwargs)
    if local_files_only is not None:
        options["local_files_only"] = local_files_only
    try:
        return loader(str(source), **options)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotAvailableError(
            f"cannot load {what} {source!r} (not in the local Hugging Face cache and not "
            f"downloadable: {reason}); {fetch_hint(str(source), needs_tokenizer)}"
        ) from error


def load_with_tokenizer(
    loader: Callable[..., M],
    source: str | Path,
    *,
    what: str,
    local_files_only: bool | None = None,
) -> tuple[M, Any]:
    """A text-conditioned model and its tokenizer from the same ``source`` (see
    :func:`load_pretrained`); ``what`` names the model in errors."""
    transformers = require_transformers()
    model = load_pretrained(
        loader,
        source,
        what=f"{what} model",
        needs_tokenizer=True,
        local_files_only=local_files_only,
    )
    tokenizer = load_pretrained(
        transformers.AutoTokenizer.from_pretrained,
        source,
        what=f"{what} tokenizer",
        needs_tokenizer=True,
        local_files_only=local_files_only,
    )
    return model, tokenizer


def preprocessor_config(source: str | Path) -> dict[str, Any]:
    """``preprocessor_config.json`` of a local folder (empty dict when absent or a hub id that
    is not cached)."""
    folder = Path(source).expanduser()
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(source), "preprocessor_config.json")
        except Exception:
            cached = None
        if not isinstance(cached, str):
            return {}
        path = Path(cached)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("ignoring unreadable %s: %s", path, error)
        return {}


@dataclass(frozen=True)
class ImageTransform:
    """Resize + normalise + pad an RGB frame into a model input.

    Attributes:
        size: resize to exactly this (height, width), ignoring the aspect ratio (SAM 3); None
            to use ``longest_edge`` / ``shortest_edge``.
        longest_edge: resize so the longer side is this (SAM); None to use ``shortest_edge``.
        shortest_edge: resize so the shorter side is this, capped by ``max_edge``.
        max_edge: cap on the longer side with ``shortest_edge``.
        pad_square: pad to ``longest_edge`` × ``longest_edge`` (bottom / right).
        divisor: pad height and width to a multiple of this (bottom / right).
        mean, std: per-channel normalisation of [0, 1] pixels.
        pad_value: colour of the padding as a [0, 1] pixel value (OWLv2: 0.5 grey); None pads
            the normalised input with 0, i.e. the mean colour.
    """

    size: tuple[int, int] | None = None
    longest_edge: int | None = None
    shortest_edge: int | None = None
    max_edge: int | None = None
    pad_square: bool = False
    divisor: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pad_value: float | None = None

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The size (H', W') the frame is resized to (before padding)."""
        if self.size is not None:
            return int(self.size[0]), int(self.size[1])
        if self.longest_edge is not None:
            scale = self.longest_edge / max(height, width)
        elif self.shortest_edge is not None:
            scale = self.shortest_edge / min(height, width)
            if self.max_edge is not None and max(height, width) * scale > self.max_edge:
                scale = self.max_edge / max(height, width)
        else:
            scale = 1.0
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(1, 3, Hp, Wp) float32 input and the resized (unpadded) size (H', W')."""
        height, width = image.shape[:2]
        new_h, new_w = self.resized_size(height, width)
        if (new_h, new_w) != (height, width):
            shrink = new_h * new_w < height * width
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        tensor = (tensor - mean) / std
        pad_h, pad_w = new_h, new_w
        if self.pad_square and self.longest_edge is not None:
            pad_h = pad_w = self.longest_edge
        if self.divisor > 1:
            pad_h = -(-pad_h // self.divisor) * self.divisor
            pad_w = -(-pad_w // self.divisor) * self.divisor
        if self.pad_value is None:
            tensor = F.pad(tensor, (0, pad_w - new_w, 0, pad_h - new_h))
        elif (pad_h, pad_w) != (new_h, new_w):
            fill = (torch.full((3, 1, 1), float(self.pad_value)) - mean) / std
            padded = fill.expand(3, pad_h, pad_w).clone()
            padded[:, :new_h, :new_w] = tensor
            tensor = padded
        return tensor.unsqueeze(0), (new_h, new_w)


def normalisation(config: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """``mean`` / ``std`` keyword arguments from a preprocessor config (ImageNet defaults)."""
    mean = tuple(float(v) for v in config.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in config.get("image_std", IMAGENET_STD))
    return {"mean": mean, "std": std}  # type: ignore[dict-item]


def pick_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The model dtype: float32 on the CPU; ``bf16`` / ``fp16`` / a torch dtype elsewhere."""
    if device.type == "cpu" or dtype in (None, "none", "fp32", "float32"):
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    table.update({"fp16": torch.float16, "float16": torch.float16})
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; expected none, bf16 or fp16")
    return table[dtype]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------------------------
# Masks


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool → (N, 4) float boxes ``[x0, y0, x1, y1]`` (exclusive ends); empty → 0."""
    if masks.numel() == 0:
        return torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    height, width = masks.shape[1:]
    r_idx = torch.arange(height, device=masks.device)
    c_idx = torch.arange(width, device=masks.device)
    big = max(height, width) + 1
    y0 = torch.where(rows, r_idx, big).amin(dim=1)
    y1 = torch.where(rows, r_idx, -1).amax(dim=1) + 1
    x0 = torch.where(cols, c_idx, big).amin(dim=1)
    x1 = torch.where(cols, c_idx, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes


def center_boxes_to_pixels(
    boxes: torch.Tensor, extent: tuple[float, float], frame_size: tuple[int, int]
) -> torch.Tensor:
    """(N, 4) normalised ``(cx, cy, w, h)`` → (N, 4) ``xyxy`` frame pixels, clamped to the frame.

    Detectors predict boxes relative to their input: ``extent`` (width, height) is the size, in
    frame pixels, of the area the unit square covers (the frame for Grounding-DINO, the padded
    square for OWLv2) and ``frame_size`` (height, width) the frame clamped to.
    """
    cx, cy, w, h = boxes.float().unbind(dim=1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    scale = torch.tensor([extent[0], extent[1], extent[0], extent[1]], dtype=torch.float32)
    corners = corners * scale.to(corners.device)
    height, width = frame_size
    corners[:, 0::2] = corners[:, 0::2].clamp(0, width)
    corners[:, 1::2] = corners[:, 1::2].clamp(0, height)
    return corners


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) ``xyxy`` boxes → (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(inter))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes by descending score.

    A box is dropped when its IoU with a higher-scoring kept box exceeds ``threshold``.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def stability_scores(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0):
    """IoU between the masks at ``threshold + offset`` and ``threshold - offset`` per mask.

    ``logits`` (N, H, W); a stable mask barely changes with the binarisation threshold.
    """
    high = (logits > threshold + offset).flatten(1).sum(dim=1).float()
    low = (logits > threshold - offset).flatten(1).sum(dim=1).float()
    return torch.where(low > 0, high / low.clamp(min=1), torch.zeros_like(low))


def paint_segments(
    masks: torch.Tensor,
    segments: Sequence[Segment],
    *,
    min_area: int = 0,
) -> Segmentation:
    """Paint possibly overlapping (N, H, W) bool masks into one id map.

    Larger masks are painted first, so smaller ones stay on top (the paper's rule); segments
    left with fewer than ``min_area`` visible pixels (or none) are dropped. ``segments[k]``
    carries the metadata of ``masks[k]``; its ``id`` is the id painted.
    """
    height, width = masks.shape[1:]
    ids = torch.zeros((height, width), dtype=torch.long)
    if masks.shape[0] == 0:
        return Segmentation(mask=ids, segments=[])
    masks = masks.cpu()
    areas = masks.flatten(1).sum(dim=1)
    for k in torch.argsort(areas, descending=True, stable=True).tolist():
        ids[masks[k]] = int(segments[k].id)
    present, counts = torch.unique(ids, return_counts=True)
    visible = dict(zip(present.tolist(), counts.tolist()))
    dropped = [s.id for s in segments if 0 < visible.get(s.id, 0) < max(min_area, 1)]
    if dropped:
        ids[torch.isin(ids, torch.tensor(dropped, dtype=torch.long))] = 0
    kept = [s for s in segments if visible.get(s.id, 0) >= max(min_area, 1)]
    return Segmentation(mask=ids, segments=kept)


def to_frame_size(seg: Segmentation, height: int, width: int) -> Segmentation:
    """Nearest resize of an id map to the frame size, dropping segments left without pixels."""
    seg = resize_segmentation(seg, height, width)
    present = set(torch.unique(seg.mask).tolist())
    return Segmentation(mask=seg.mask, segments=[s for s in seg.segments if s.id in present])


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, h, w) logits to ``size`` in float32."""
    if logits.shape[0] == 0:
        return logits.float().new_zeros((0, *size))
    out = F.interpolate(logits[:, None].float(), size=size, mode="bilinear", align_corners=False)
    return out[:, 0]
