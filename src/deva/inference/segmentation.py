"""The segmentation contract shared by image segmenters, consensus, merging and writers."""

from __future__ import annotations

from dataclasses import dataclass, field

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
