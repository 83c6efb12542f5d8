"""Merging propagation and consensus (eq. 9-10), miss counters and deletion."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from deva.inference.merging import associate, merge_with_consensus
from deva.inference.objects import ObjectRegistry
from deva.inference.segmentation import Segment, Segmentation

H, W = 40, 40


def boxes(*items: tuple) -> Segmentation:
    """Segmentation from (id, y0, y1, x0, x1, extra Segment kwargs) boxes, painted in order."""
    mask = torch.zeros((H, W), dtype=torch.long)
    segments = []
    for segment_id, y0, y1, x0, x1, *rest in items:
        mask[y0:y1, x0:x1] = segment_id
        segments.append(Segment(id=segment_id, **(rest[0] if rest else {})))
    return Segmentation(mask=mask, segments=segments)


def box_mask(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros((H, W), dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def empty() -> Segmentation:
    return Segmentation(mask=torch.zeros((H, W), dtype=torch.long))


def start(registry: ObjectRegistry, *items: tuple) -> Segmentation:
    """First frame: every consensus segment becomes an object; returns the merged output."""
    return merge_with_consensus(None, boxes(*items), registry).segmentation


def test_first_frame_creates_objects_with_fresh_ids() -> None:
    registry = ObjectRegistry()
    result = merge_with_consensus(
        None,
        boxes(
            (7, 0, 10, 0, 10, {"category_id": 2, "score": 0.8, "isthing": True}),
            (9, 20, 30, 20, 30),
        ),
        registry,
    )
    assert result.added_ids == [1, 2]
    assert result.removed_ids == []
    assert registry.ids == [1, 2]
    seg = result.segmentation
    assert torch.equal(seg.mask == 1, box_mask(0, 10, 0, 10))
    assert torch.equal(seg.mask == 2, box_mask(20, 30, 20, 30))
    assert (seg.segments[0].category_id, seg.segments[0].score) == (2, 0.8)
    assert seg.segments[0].isthing is True


def test_associated_pair_becomes_union_with_propagated_id() -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 20, 0, 20))
    consensus = boxes((5, 2, 22, 0, 20))
    result = merge_with_consensus(propagated, consensus, registry)
    assert result.associations == {1: 5}
    assert result.added_ids == []
    assert torch.equal(result.segmentation.mask == 1, box_mask(0, 22, 0, 20))
    assert [s.id for s in result.segmentation.segments] == [1]


def test_unassociated_segments_pass_through_and_new_ones_get_fresh_ids() -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 10, 0, 10), (2, 30, 40, 30, 40))
    registry.remove([2])  # id 2 is gone for good
    propagated = boxes((1, 0, 10, 0, 10))
    consensus = boxes((1, 0, 3, 0, 3), (2, 20, 28, 20, 28))  # too small to associate; new
    result = merge_with_consensus(propagated, consensus, registry)
    assert result.associations == {}
    assert result.added_ids == [3, 4]
    seg = result.segmentation
    # The small new segment sits on top of the propagated one it lies in.
    assert torch.equal(seg.mask == 3, box_mask(0, 3, 0, 3))
    assert torch.equal(seg.mask == 1, box_mask(0, 10, 0, 10) & ~box_mask(0, 3, 0, 3))
    assert torch.equal(seg.mask == 4, box_mask(20, 28, 20, 28))
    assert registry[1].missed == 1 and registry[3].missed == 0


def test_overlaps_are_resolved_smaller_on_top() -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 20, 0, 20), (2, 20, 26, 0, 20))
    # Consensus of object 1 reaches into object 2 (smaller): object 2 keeps its pixels.
    result = merge_with_consensus(propagated, boxes((1, 0, 24, 0, 20)), registry)
    assert result.associations == {1: 1}
    seg = result.segmentation
    assert torch.equal(seg.mask == 2, box_mask(20, 26, 0, 20))
    assert torch.equal(seg.mask == 1, box_mask(0, 20, 0, 20))
    # A union larger than a new consensus segment lies below it.
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 30, 0, 30))
    result = merge_with_consensus(
        propagated, boxes((1, 0, 30, 0, 25), (2, 0, 30, 25, 35)), registry
    )
    assert result.associations == {1: 1} and result.added_ids == [2]
    assert torch.equal(result.segmentation.mask == 2, box_mask(0, 30, 25, 35))
    assert torch.equal(result.segmentation.mask == 1, box_mask(0, 30, 0, 25))


def test_things_stuff_and_unknown_are_matched_separately() -> None:
    registry = ObjectRegistry()
    propagated = start(
        registry, (1, 0, 20, 0, 20, {"isthing": True}), (2, 20, 40, 0, 20, {"isthing": None})
    )
    consensus = boxes((1, 0, 20, 0, 24, {"isthing": False}), (2, 20, 40, 0, 20))
    result = merge_with_consensus(propagated, consensus, registry)
    assert result.associations == {2: 2}
    assert result.added_ids == [3]
    assert registry[3].isthing is False
    # IoU 400 / 480 would associate, but thing and stuff do not: the larger stuff lies below.
    assert torch.equal(result.segmentation.mask == 3, box_mask(0, 20, 20, 24))
    pairs = associate(np.full((2, 2), 0.9), [True, None], [False, False])
    assert pairs == []
    assert associate(np.full((2, 2), 0.9), [True, None], [None, True]) == [(0, 1), (1, 0)]


def test_deletion_after_exactly_max_missed_misses() -> None:
    for max_missed in (1, 3, 5):
        registry = ObjectRegistry()
        propagated = start(registry, (1, 0, 10, 0, 10))
        for k in range(1, max_missed + 1):
            result = merge_with_consensus(propagated, empty(), registry, max_missed=max_missed)
            assert registry[1].missed == k
            assert result.removed_ids == ([1] if k == max_missed else [])
        # The deleted object still passes through in the frame where it is reported.
        assert [s.id for s in result.segmentation.segments] == [1]
        assert registry.remove(result.removed_ids) == [0]


def test_counter_resets_on_association() -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 10, 0, 10))
    for _ in range(4):
        assert merge_with_consensus(propagated, empty(), registry).removed_ids == []
    merge_with_consensus(propagated, boxes((1, 0, 10, 0, 10)), registry)
    assert registry[1].missed == 0
    for _ in range(4):
        assert merge_with_consensus(propagated, empty(), registry).removed_ids == []
    assert merge_with_consensus(propagated, empty(), registry).removed_ids == [1]


def test_objects_lost_by_propagation_count_as_missed() -> None:
    registry = ObjectRegistry()
    start(registry, (1, 0, 10, 0, 10), (2, 20, 30, 20, 30))
    propagated = boxes((2, 20, 30, 20, 30))  # object 1 vanished from R_t
    for _ in range(4):
        merge_with_consensus(propagated, boxes((1, 20, 30, 20, 30)), registry)
    result = merge_with_consensus(propagated, boxes((1, 20, 30, 20, 30)), registry)
    assert result.removed_ids == [1]
    assert registry[2].missed == 0


def test_max_objects_caps_new_objects_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 10, 0, 10))
    consensus = boxes((1, 0, 10, 0, 10), (2, 20, 25, 0, 5), (3, 20, 25, 10, 15), (4, 30, 35, 0, 5))
    with caplog.at_level(logging.WARNING, logger="deva.inference.merging"):
        result = merge_with_consensus(propagated, consensus, registry, max_objects=3)
    assert "max_objects=3" in caplog.text
    assert result.added_ids == [2, 3]
    assert len(registry) == 3
    assert not bool((result.segmentation.mask[30:35, 0:5] != 0).any())
    with caplog.at_level(logging.WARNING, logger="deva.inference.merging"):
        again = merge_with_consensus(result.segmentation, consensus, registry, max_objects=3)
    assert again.added_ids == []


def test_votes_and_scores_accumulate_over_merged_detections() -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 10, 0, 10, {"category_id": 3, "score": 0.9}))
    for category, score in ((5, 0.6), (5, 0.3)):
        consensus = boxes((1, 0, 10, 0, 10, {"category_id": category, "score": score}))
        result = merge_with_consensus(propagated, consensus, registry)
    segment = result.segmentation.segments[0]
    assert segment.category_id == 5
    assert segment.score == pytest.approx(0.6)


def test_unknown_propagated_ids_are_rejected() -> None:
    registry = ObjectRegistry()
    with pytest.raises(ValueError, match="not live objects"):
        merge_with_consensus(boxes((4, 0, 5, 0, 5)), empty(), registry)
