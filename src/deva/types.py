"""Value types every layer exchanges: segments, segmentations, the image segmenter contract.

This module imports nothing of the package, so that readers (``deva.io``), image models
(``deva.segmenters``), the tracker (``deva.inference``) and the tools all stand on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

# One image detection's metadata: (category id, score); either may be None.
Detection = tuple[int | None, float | None]


@dataclass
class Segment:
    """One segment of a segmentation: its id in the mask plus optional metadata.

    ``detections`` lists the (category, score) of every image detection the segment stands
    for: a consensus segment carries its selected proposal and all of its supporters, so that
    the tracker can vote over all of them (§3.2.1). Empty (the default) means the segment is
    one detection, described by its own ``category_id`` and ``score``. It takes no part in
    equality and is not shown in the repr.
    """

    id: int
    category_id: int | None = None
    score: float | None = None
    isthing: bool | None = None
    label: str | None = None  # a name: prompt phrase or the image model's class name
    detections: tuple[Detection, ...] = field(default=(), compare=False, repr=False)

    def merged_detections(self) -> tuple[Detection, ...]:
        """The detections this segment stands for (itself when ``detections`` is empty)."""
        return self.detections or ((self.category_id, self.score),)


@dataclass
class Segmentation:
    """An (H, W) integer id mask (0 = background) and the segments it contains.

    Segments never overlap; every non-zero id in ``mask`` has one entry in ``segments``. A
    segment may cover no pixel at all (e.g. a small detection lost when resized).
    """

    mask: torch.Tensor
    segments: list[Segment] = field(default_factory=list)

    def segment(self, segment_id: int) -> Segment:
        """The segment with id ``segment_id``; KeyError if it is not present."""
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(f"segment id {segment_id} not in this segmentation")


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
