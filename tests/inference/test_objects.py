"""Object registry: fresh ids, channel indices, votes and scores."""

from __future__ import annotations

import pytest

from deva.inference.objects import ObjectRegistry, TrackedObject


def test_ids_are_never_reused_even_after_deletion() -> None:
    registry = ObjectRegistry()
    first = [registry.create().id for _ in range(3)]
    assert first == [1, 2, 3]
    registry.remove([3])
    registry.remove([1, 2])
    assert len(registry) == 0
    assert registry.create().id == 4
    assert registry.next_id == 5


def test_remove_compacts_indices_and_returns_removed_ones() -> None:
    registry = ObjectRegistry(first_id=10)
    ids = [registry.create().id for _ in range(5)]
    assert ids == [10, 11, 12, 13, 14]
    assert registry.indices_of([12, 10]) == [2, 0]
    assert registry.remove([13, 11, 13]) == [1, 3]
    assert registry.ids == [10, 12, 14]
    assert [registry.index_of(i) for i in registry.ids] == [0, 1, 2]
    assert registry.id_at(2) == 14
    assert 11 not in registry and 12 in registry
    new = registry.create().id
    assert registry.index_of(new) == 3


def test_errors_name_the_problem() -> None:
    registry = ObjectRegistry()
    registry.create()
    with pytest.raises(KeyError, match="unknown object ids"):
        registry.remove([1, 7])
    assert registry.ids == [1]  # nothing removed on error
    with pytest.raises(KeyError, match="not live"):
        registry.index_of(7)
    with pytest.raises(IndexError):
        registry.id_at(1)
    with pytest.raises(ValueError):
        ObjectRegistry(first_id=0)


def test_category_vote_score_mean_and_segment() -> None:
    obj = TrackedObject(id=3, isthing=True)
    assert obj.category_id is None and obj.score is None
    obj.add_detection(5, 0.9)
    obj.add_detection(2, None)
    assert obj.category_id == 2  # tie: the smallest category id wins, not the first voted
    obj.add_detections([(5, 0.3), (None, 0.3)])
    assert obj.category_id == 5
    assert obj.score == pytest.approx(0.5)
    seg = obj.to_segment()
    assert (seg.id, seg.category_id, seg.isthing) == (3, 5, True)
    assert seg.score == pytest.approx(0.5)


def test_miss_counter_and_association() -> None:
    registry = ObjectRegistry()
    obj = registry.create(category_id=0, score=1.0, isthing=False)
    assert obj.category_id == 0  # category 0 is a real class
    assert registry.mark_missed(obj.id) == 1
    assert registry.mark_missed(obj.id) == 2
    registry.mark_associated(obj.id, 4, 0.0)
    assert registry[obj.id].missed == 0
    assert registry[obj.id].score == pytest.approx(0.5)
    assert [o.id for o in registry] == [obj.id]


def test_create_and_associate_with_several_detections() -> None:
    registry = ObjectRegistry()
    obj = registry.create(category_id=9, score=0.1, detections=[(4, 0.2), (7, 0.4), (7, None)])
    assert obj.category_id == 7  # the given list replaces category_id / score
    assert obj.score == pytest.approx(0.3)
    obj.missed = 2
    registry.mark_associated(obj.id, detections=[(4, 0.6), (4, None)])
    assert obj.category_id == 4 and obj.missed == 0
    assert obj.score == pytest.approx(0.4)
    obj.missed = 2
    registry.reset_missed(obj.id)
    assert obj.missed == 0 and obj.category_id == 4
