"""Merging propagation and consensus (eq. 9-10), miss counters and deletion."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from deva.inference.merging import associate, merge_with_consensus
from deva.inference.objects import ObjectRegistry
from deva.types import Segment, Segmentation

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
    # New objects are created in painting order: the larger one first.
    assert result.added_ids == [3, 4]
    seg = result.segmentation
    # The small new segment sits on top of the propagated one it lies in.
    assert torch.equal(seg.mask == 4, box_mask(0, 3, 0, 3))
    assert torch.equal(seg.mask == 1, box_mask(0, 10, 0, 10) & ~box_mask(0, 3, 0, 3))
    assert torch.equal(seg.mask == 3, box_mask(20, 28, 20, 28))
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


def test_things_stuff_and_unknown_are_matched_separately_for_panoptic_input() -> None:
    registry = ObjectRegistry()
    propagated = start(
        registry, (1, 0, 20, 0, 20, {"isthing": True}), (2, 20, 40, 0, 20, {"isthing": None})
    )
    consensus = boxes((1, 0, 20, 0, 24, {"isthing": False}), (2, 20, 40, 0, 20))
    result = merge_with_consensus(propagated, consensus, registry, separate_things=True)
    assert result.associations == {2: 2}
    assert result.added_ids == [3]
    assert registry[3].isthing is False
    # IoU 400 / 480 would associate, but thing and stuff do not. The new stuff segment (480)
    # is painted first, the unassociated thing (400) on top of it.
    assert torch.equal(result.segmentation.mask == 3, box_mask(0, 20, 20, 24))
    pairs = associate(np.full((2, 2), 0.9), [True, None], [False, False])
    assert pairs == []
    assert associate(np.full((2, 2), 0.9), [True, None], [None, True]) == [(0, 1), (1, 0)]


def test_generic_input_matches_all_segments_in_one_group() -> None:
    registry = ObjectRegistry()
    propagated = start(
        registry, (1, 0, 20, 0, 20, {"isthing": True}), (2, 20, 40, 0, 20, {"isthing": None})
    )
    consensus = boxes((1, 0, 20, 0, 24, {"isthing": False}), (2, 20, 40, 0, 20, {"isthing": True}))
    result = merge_with_consensus(propagated, consensus, registry, separate_things=False)
    assert result.associations == {1: 1, 2: 2}
    assert result.added_ids == []
    assert torch.equal(result.segmentation.mask == 1, box_mask(0, 20, 0, 24))
    # the object keeps its own isthing
    assert registry[1].isthing is True


def test_deletion_when_misses_exceed_max_missed() -> None:
    for max_missed in (0, 1, 3, 5):
        registry = ObjectRegistry()
        propagated = start(registry, (1, 0, 10, 0, 10))
        for k in range(1, max_missed + 2):
            result = merge_with_consensus(propagated, empty(), registry, max_missed=max_missed)
            assert registry[1].missed == k
            # deleted at the (L+1)-th consecutive miss, not at the L-th
            assert result.removed_ids == ([1] if k == max_missed + 1 else [])
            if not result.removed_ids:
                assert [s.id for s in result.segmentation.segments] == [1]
        # The deleted object is not in this frame's output: no segment, no pixel.
        assert result.segmentation.segments == []
        assert not bool(result.segmentation.mask.any())
        assert registry.remove(result.removed_ids) == [0]
    with pytest.raises(ValueError, match="max_missed"):
        merge_with_consensus(None, empty(), ObjectRegistry(), max_missed=-1)


def test_deleted_object_pixels_become_background_not_the_segment_below() -> None:
    registry = ObjectRegistry()
    start(registry, (1, 0, 20, 0, 20), (2, 30, 40, 30, 40))
    # Object 1 was propagated around a hole that object 2 (small) moved into.
    propagated = boxes((1, 0, 20, 0, 20), (2, 8, 12, 8, 12))
    registry[2].missed = 1
    consensus = boxes((5, 0, 20, 0, 20))  # covers the hole; associates with object 1
    result = merge_with_consensus(propagated, consensus, registry, max_missed=1)
    assert result.associations == {1: 5}
    assert result.removed_ids == [2]
    seg = result.segmentation
    assert not bool((seg.mask[8:12, 8:12] != 0).any())  # background, not object 1
    assert torch.equal(seg.mask == 1, box_mask(0, 20, 0, 20) & ~box_mask(8, 12, 8, 12))
    assert [s.id for s in seg.segments] == [1]


def test_equal_areas_put_the_later_entry_on_top() -> None:
    # Object 1 (10x12) associates with detection A (10x10): union 120 px. Detection B (10x12,
    # 120 px) is new and overlaps the union in columns 10-11. Among equal areas the later
    # entry ends on top; entries are the detections in their order, then unassociated objects.
    for b_first in (False, True):
        registry = ObjectRegistry()
        propagated = start(registry, (1, 0, 10, 0, 12))
        a, b = (1, 0, 10, 0, 10), (2, 0, 10, 10, 22)
        consensus = boxes(*((b, a) if b_first else (a, b)))
        result = merge_with_consensus(propagated, consensus, registry)
        assert result.associations == {1: 1}
        overlap = result.segmentation.mask[0:10, 10:12]
        assert bool((overlap == (1 if b_first else 2)).all())
    # An unassociated live object comes after all detections: it wins a tie with a new one.
    registry = ObjectRegistry()
    start(registry, (1, 30, 40, 30, 40))
    propagated = boxes((1, 0, 10, 0, 10))  # 100 px, moved
    consensus = boxes((3, 0, 10, 5, 15))  # 100 px, IoU 1/3: new object 2
    result = merge_with_consensus(propagated, consensus, registry)
    assert result.added_ids == [2]
    assert bool((result.segmentation.mask[0:10, 5:10] == 1).all())


def test_new_objects_are_created_in_painting_order() -> None:
    registry = ObjectRegistry()
    consensus = boxes(
        (4, 0, 2, 0, 2, {"category_id": 4}),  # 4 px
        (5, 10, 20, 10, 20, {"category_id": 5}),  # 100 px
        (6, 30, 33, 30, 33, {"category_id": 6}),  # 9 px
        (7, 30, 33, 0, 3, {"category_id": 7}),  # 9 px, after 6 among equal areas
    )
    result = merge_with_consensus(None, consensus, registry)
    assert result.added_ids == [1, 2, 3, 4]
    assert [registry[i].category_id for i in registry.ids] == [5, 6, 7, 4]


def test_new_objects_without_pixels_are_objects() -> None:
    registry = ObjectRegistry()
    start(registry, (1, 30, 40, 0, 4), (2, 30, 40, 10, 14))
    # Objects 1 and 2 moved onto the two halves of a new detection (IoU 0.5 each: no
    # association); being smaller, they cover it entirely. A listed segment without any
    # pixel is a detection too.
    propagated = boxes((1, 0, 4, 0, 4), (2, 0, 4, 4, 8))
    consensus = Segmentation(
        mask=boxes((9, 0, 4, 0, 8)).mask, segments=[Segment(id=9), Segment(id=11)]
    )
    result = merge_with_consensus(propagated, consensus, registry)
    assert result.associations == {}
    assert result.added_ids == [3, 4]
    assert registry.ids == [1, 2, 3, 4]
    assert [s.id for s in result.segmentation.segments] == [1, 2]
    assert not bool(((result.segmentation.mask == 3) | (result.segmentation.mask == 4)).any())
    # They count like any other object: misses, deletion and the object cap.
    result = merge_with_consensus(propagated, empty(), registry, max_missed=0)
    assert result.removed_ids == [1, 2, 3, 4]


def test_counter_resets_on_association() -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 10, 0, 10))
    for _ in range(5):
        assert merge_with_consensus(propagated, empty(), registry).removed_ids == []
    merge_with_consensus(propagated, boxes((1, 0, 10, 0, 10)), registry)
    assert registry[1].missed == 0
    for _ in range(5):
        assert merge_with_consensus(propagated, empty(), registry).removed_ids == []
    assert merge_with_consensus(propagated, empty(), registry).removed_ids == [1]


def test_objects_lost_by_propagation_count_as_missed() -> None:
    registry = ObjectRegistry()
    start(registry, (1, 0, 10, 0, 10), (2, 20, 30, 20, 30))
    propagated = boxes((2, 20, 30, 20, 30))  # object 1 vanished from R_t
    for _ in range(5):
        merge_with_consensus(propagated, boxes((1, 20, 30, 20, 30)), registry)
    assert registry[1].missed == 5
    result = merge_with_consensus(propagated, boxes((1, 20, 30, 20, 30)), registry)
    assert result.removed_ids == [1]
    assert registry[2].missed == 0


def test_incremental_mode_resets_visible_unassociated_objects() -> None:
    registry = ObjectRegistry()
    start(registry, (1, 0, 10, 0, 10), (2, 20, 30, 20, 30))
    propagated = boxes((1, 0, 10, 0, 10))  # object 2 lost by the propagation
    for _ in range(3):
        result = merge_with_consensus(propagated, empty(), registry, max_missed=1, incremental=True)
    # visible but unassociated: reset, never deleted; invisible: counted and deleted
    assert registry[1].missed == 0
    assert registry[2].missed == 3
    assert 1 not in result.removed_ids
    # without incremental mode, the visible object counts misses too
    merge_with_consensus(propagated, empty(), registry, max_missed=1)
    assert registry[1].missed == 1


def test_max_objects_discards_all_detections_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = ObjectRegistry()
    propagated = start(registry, (1, 0, 10, 0, 10))
    consensus = boxes((1, 0, 10, 0, 10), (2, 20, 25, 0, 5), (3, 20, 25, 10, 15))
    with caplog.at_level(logging.WARNING, logger="deva.inference.merging"):
        result = merge_with_consensus(propagated, consensus, registry, max_objects=3)
    # 1 live + 3 detections > 3: nothing associates, nothing is created, object 1 misses
    assert "max_objects=3" in caplog.text
    assert result.added_ids == [] and result.associations == {}
    assert registry.ids == [1] and registry[1].missed == 1
    assert torch.equal(result.segmentation.mask, propagated.mask)
    # 1 live + 3 detections fit a cap of 4: the detection of object 1 resets its counter
    result = merge_with_consensus(propagated, consensus, registry, max_objects=4)
    assert result.associations == {1: 1} and result.added_ids == [2, 3]
    assert registry[1].missed == 0
    # the first frame is no exception
    fresh = ObjectRegistry()
    assert merge_with_consensus(None, consensus, fresh, max_objects=2).added_ids == []
    assert len(fresh) == 0


def test_category_is_the_vote_over_all_merged_detections() -> None:
    registry = ObjectRegistry()
    # A consensus segment carries all of its supporting proposals' detections.
    first = boxes((1, 0, 10, 0, 10))
    first.segments[0] = Segment(
        id=1, category_id=5, score=0.9, detections=((5, 0.9), (5, 0.6), (3, 0.3))
    )
    propagated = merge_with_consensus(None, first, registry).segmentation
    assert (registry[1].category_id, registry[1].score) == (5, pytest.approx(0.6))
    # One more detection of 3: a 2 : 2 tie.
    second = boxes((1, 0, 10, 0, 10))
    second.segments[0] = Segment(id=1, category_id=3, score=0.2, detections=((3, 0.2),))
    merge_with_consensus(propagated, second, registry)
    obj = registry[1]
    assert obj.category_id == 3  # 2 : 2, the smaller id wins
    assert obj.score == pytest.approx((0.9 + 0.6 + 0.3 + 0.2) / 4)
    # A plain segment (no detections list) is one detection.
    merge_with_consensus(propagated, boxes((1, 0, 10, 0, 10, {"category_id": 5})), registry)
    assert registry[1].category_id == 5
    assert registry[1].score == pytest.approx(0.5)


def test_unknown_propagated_ids_are_rejected() -> None:
    registry = ObjectRegistry()
    with pytest.raises(ValueError, match="not live objects"):
        merge_with_consensus(boxes((4, 0, 5, 0, 5)), empty(), registry)
