"""The segmentation contract shared by image segmenters, consensus, merging and writers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Segment:
    """One segment of a segmentation: its id in the mask plus optional metadata."""

    id: int
    category_id: int | None = None
    score: float | None = None
    isthing: bool | None = None


@dataclass
class Segmentation:
    """An (H, W) integer id mask (0 = background) and the segments it contains.

    Segments never overlap; every non-zero id in ``mask`` has one entry in ``segments``.
    """

    mask: torch.Tensor
    segments: list[Segment] = field(default_factory=list)

    def segment(self, segment_id: int) -> Segment:
        """The segment with id ``segment_id``; KeyError if it is not present."""
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(f"segment id {segment_id} not in this segmentation")
