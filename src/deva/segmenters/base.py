"""The image segmenter interface the tracker calls on detection frames."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from deva.inference.segmentation import Segmentation
from deva.io.frames import resize_mask


@runtime_checkable
class ImageSegmenter(Protocol):
    """Anything that segments one RGB frame into non-overlapping segments.

    Called with an (H, W, 3) uint8 RGB array; returns a ``Segmentation`` at (H, W). The
    keyword ``frame_name`` (e.g. ``"00005"`` or ``"00005.jpg"``) identifies the frame for
    segmenters that look results up (precomputed detections); models may ignore it.
    """

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """Segment ``image`` (H, W, 3 uint8 RGB)."""
        ...


def check_image(image: np.ndarray) -> tuple[int, int]:
    """Validate an RGB uint8 (H, W, 3) frame and return its (H, W)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an RGB frame of shape (H, W, 3), got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB frame, got dtype {image.dtype}")
    return int(image.shape[0]), int(image.shape[1])


def empty_segmentation(height: int, width: int) -> Segmentation:
    """A segmentation of (H, W) without segments."""
    return Segmentation(mask=torch.zeros((height, width), dtype=torch.long), segments=[])


def resize_segmentation(seg: Segmentation, height: int, width: int) -> Segmentation:
    """Nearest-neighbour resize of an id mask to (H, W), keeping every listed segment.

    Pixel-centre sampling (torch's ``nearest-exact``, as PIL's NEAREST; see
    :func:`deva.io.frames.resize_mask`), so ids of any size survive exactly. A segment that
    loses all its pixels stays in ``segments``: the tracker treats it as a detection without
    pixels (no minimum area, as the published implementation).
    """
    mask = torch.as_tensor(seg.mask).long()
    if tuple(mask.shape) == (height, width):
        return seg
    return Segmentation(mask=resize_mask(mask, (height, width)), segments=list(seg.segments))
