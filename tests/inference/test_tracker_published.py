"""DecoupledTracker follows the published implementation (issue 10), rule by rule.

Merging details (painting, ties, deletion of pixels, votes) are tested on hand-made masks in
``test_merging.py``; here the tracker's schedule, order of operations, resizing and wiring
are tested end to end with a tiny random network.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deva.config import builder, compose
from deva.config.schema import EvaluateConfig, TrackConfig, parse
from deva.data.synthetic import SyntheticVideoConfig, frame_name, generate_video
from deva.inference import tracker as tracker_module
from deva.inference.preprocess import (
    preprocess_frame,
    preprocess_mask,
    resize_mask,
    resize_segmentation,
    restore_probabilities,
)
from deva.inference.propagator import Propagator
from deva.inference.tracker import DecoupledTracker, TrackedFrame
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.propagation import aggregate_probabilities
from deva.types import Segment, Segmentation
from tests.helpers import ListSegmenter

H, W, T = 96, 128, 12


@pytest.fixture(scope="module")
def video():
    config = SyntheticVideoConfig(
        num_frames=T, height=H, width=W, num_objects=3, num_stuff_regions=2
    )
    return generate_video(config, seed=0)


def _frames(video, count: int = T) -> list[tuple[str, np.ndarray]]:
    return [(frame_name(i), video.frames[i]) for i in range(count)]


def _config(mode: TrackingMode | str, **kwargs) -> TrackerConfig:
    kwargs.setdefault("shorter_side", -1)
    return TrackerConfig(mode=mode, **kwargs)


def _boxes(*boxes: tuple[int, int, int, int], empty_ids: tuple[int, ...] = ()) -> Segmentation:
    """Boxes with ids 10, 20, ... (category k for the k-th); ``empty_ids``: listed, no pixel."""
    mask = torch.zeros(H, W, dtype=torch.long)
    segments = [Segment(id=i, category_id=99, score=0.5) for i in empty_ids]
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        mask[y0:y1, x0:x1] = 10 * k
        segments.append(Segment(id=10 * k, category_id=k, score=0.9, isthing=True))
    return Segmentation(mask=mask, segments=segments)


def _empty() -> Segmentation:
    return Segmentation(mask=torch.zeros(H, W, dtype=torch.long))


def _merge_frames(tracker: DecoupledTracker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the index of every frame the tracker merges at."""
    merged: list[int] = []
    original = tracker._incorporate

    def spy(frame, consensus):
        merged.append(frame.index)
        return original(frame, consensus)

    monkeypatch.setattr(tracker, "_incorporate", spy)
    return merged


def _check_order(results: list[TrackedFrame], count: int) -> None:
    assert [r.index for r in results] == list(range(count))
    for r in results:
        assert {s.id for s in r.segments} == set(torch.unique(r.mask).tolist()) - {0}


# ---- rule 1: deletion at the (L+1)-th miss; counters change only on merge frames ----------


def test_counters_change_only_on_merge_frames(model, video) -> None:
    dets = [_boxes((20, 60, 30, 90))] + [_empty()] * (T - 1)
    config = _config("online", detect_every=3, max_missed=10)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    missed = []
    for name, frame in _frames(video, 10):
        tracker.step(name, frame)
        missed.append(tracker.registry[1].missed)
    assert missed == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def test_max_missed_zero_deletes_at_the_first_miss(model, video) -> None:
    dets = [_boxes((20, 60, 30, 90))] + [_empty()] * (T - 1)
    tracker = DecoupledTracker(
        model, ListSegmenter(dets), _config("online", detect_every=2, max_missed=0)
    )
    results = list(tracker.stream(_frames(video, 4)))
    assert [r.removed_ids for r in results] == [[], [], [1], []]
    assert results[1].mask.any()
    assert not results[2].mask.any() and results[2].segments == []


# ---- rule 2: order on a merge frame; deleted objects leave memory and output --------------


def test_merge_frame_order_and_deleted_object_in_memory_and_output(
    model, video, monkeypatch
) -> None:
    big, small = (10, 50, 10, 70), (60, 90, 90, 120)
    dets = [_boxes(big, small)] + [_empty()] * (T - 1)
    for t in (2, 4):
        dets[t] = _boxes(big)
    config = _config("online", detect_every=2, max_missed=1)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    calls: list[str] = []
    seen: dict[str, object] = {}
    propagator = tracker.propagator

    def spy(name, function, record=None):
        def wrapper(*args, **kwargs):
            calls.append(name)
            out = function(*args, **kwargs)
            if record:
                seen[name] = record(args, kwargs, out)
            return out

        return wrapper

    monkeypatch.setattr(
        propagator,
        "predict",
        spy("predict", propagator.predict, lambda a, k, out: (k.get("end", False), out)),
    )
    monkeypatch.setattr(propagator, "delete_objects", spy("delete", propagator.delete_objects))
    monkeypatch.setattr(
        propagator, "commit", spy("commit", propagator.commit, lambda a, k, out: (a, out))
    )
    monkeypatch.setattr(
        tracker_module,
        "merge_with_consensus",
        spy("merge", tracker_module.merge_with_consensus, lambda a, k, out: out),
    )
    results = []
    for name, frame in _frames(video, 5):
        calls.clear()
        results.extend(tracker.step(name, frame))
    # frame 4: small object (id 2) misses for the second time with L = 1
    assert calls == ["predict", "merge", "delete", "commit"]
    end, peek = seen["predict"]
    assert end is False  # the prediction updates the sensory memory
    assert 2 in peek.object_ids and bool((peek.index_mask() == 2).any())
    merge = seen["merge"]
    assert 2 in merge.removed_ids and results[4].removed_ids == merge.removed_ids
    assert not bool((merge.segmentation.mask == 2).any())
    (masks, objects), committed = seen["commit"]
    assert 2 not in objects and 2 not in committed.object_ids
    expected = torch.stack([merge.segmentation.mask == o for o in objects]).float()
    assert torch.equal(masks.cpu(), expected)
    # the output is the committed memory frame, without the deleted object
    assert 2 not in {s.id for s in results[4].segments}
    assert not bool((results[4].mask == 2).any())
    assert bool((results[3].mask == 2).any())
    assert tracker.registry.ids == tracker.propagator.object_ids
    assert 2 not in tracker.registry


# ---- rule 3: painting order decides the order of new objects -------------------------------


def test_new_objects_are_created_in_painting_order(model, video) -> None:
    small, large = (5, 15, 5, 15), (30, 80, 30, 110)
    dets = [_boxes(small, large)] * T
    tracker = DecoupledTracker(model, ListSegmenter(dets), _config("online"))
    first = tracker.step(*_frames(video, 1)[0])[0]
    # the larger segment is painted first and gets the first id
    assert bool((first.mask[40:70, 40:100] == 1).all())
    assert bool((first.mask[7:13, 7:13] == 2).all())
    assert [tracker.registry[i].category_id for i in tracker.registry.ids] == [2, 1]


# ---- rule 4: new objects without pixels are objects ----------------------------------------


def test_new_object_without_pixels_is_tracked(model, video) -> None:
    dets = [_boxes((20, 60, 30, 90), empty_ids=(5,))] + [_empty()] * (T - 1)
    config = _config("online", detect_every=2, max_missed=0)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    first = tracker.step(*_frames(video, 1)[0])[0]
    # painted after the box (area 0 < box): id 2; no pixel, but in registry and memory
    assert tracker.registry.ids == [1, 2]
    assert tracker.propagator.object_ids == [1, 2]
    assert tracker.registry[2].category_id == 99
    assert [s.id for s in first.segments] == [1]
    later = [r for n, f in _frames(video, 3)[1:] for r in tracker.step(n, f)]
    assert later[1].removed_ids == [1, 2]  # it takes misses like any other object
    assert tracker.registry.ids == [] == tracker.propagator.object_ids


def test_propagator_keeps_an_empty_new_object_only_when_asked(model, video) -> None:
    image, geometry = preprocess_frame(video.frames[0], -1)
    h, w = geometry.padded_size
    masks = torch.zeros(2, h, w)
    masks[0, :8, :8] = 1.0
    for keep, expected in ((False, [1]), (True, [1, 2])):
        propagator = Propagator(model)
        result = propagator.step(image, masks, [1, 2], keep_empty=keep)
        assert propagator.object_ids == expected == result.object_ids


# ---- rule 5: resizing ----------------------------------------------------------------------


def test_resizing_samples_pixel_centres() -> None:
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.integers(0, 50, size=(37, 53)))
    for size in ((60, 90), (20, 31), (37, 80)):
        rows = ((torch.arange(size[0]) + 0.5) * 37 / size[0]).long()
        cols = ((torch.arange(size[1]) + 0.5) * 53 / size[1]).long()
        expected = mask[rows][:, cols]
        assert torch.equal(resize_mask(mask, size), expected)
        plain = F.interpolate(mask[None, None].double(), size=size, mode="nearest")[0, 0]
        assert not torch.equal(plain.long(), expected)  # torch's "nearest" is off by one
    # first-frame masks in VOS go through preprocess_mask: the same sampling, then padding
    _, geometry = preprocess_frame(np.zeros((37, 53, 3), np.uint8), shorter_side=60)
    padded = preprocess_mask(mask, geometry)
    p = geometry.padding
    inner = padded[p.top : padded.shape[0] - p.bottom, p.left : padded.shape[1] - p.right]
    assert torch.equal(inner, resize_mask(mask, geometry.resized_size))
    # a detection that loses all its pixels stays listed (no minimum area)
    seg = Segmentation(mask=torch.zeros(10, 10, dtype=torch.long), segments=[Segment(id=3)])
    seg.mask[4, 4] = 3
    small = resize_segmentation(seg, 3, 3)
    assert not bool(small.mask.any()) and [s.id for s in small.segments] == [3]


def test_merge_frame_output_is_the_bilinear_argmax_of_committed_masks(model, video) -> None:
    dets = [_boxes((21, 58, 33, 91), (60, 63, 10, 120))] * T
    config = _config("online", shorter_side=40)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    first = tracker.step(*_frames(video, 1)[0])[0]
    # Expected: nearest-exact to the processing size, one-hot -> soft aggregation (as written
    # to memory) -> bilinear to the original size -> arg-max. The large box gets id 1.
    _, geometry = preprocess_frame(video.frames[0], shorter_side=40)
    ids = preprocess_mask(dets[0].mask, geometry)
    one_hot = torch.stack([ids == 10, ids == 20]).float()
    prob = torch.softmax(aggregate_probabilities(one_hot, dim=0), dim=0)
    expected = restore_probabilities(prob, geometry).argmax(dim=0)
    assert torch.equal(first.mask, expected)
    # ... which is not the nearest-resized id map (thin slivers differ)
    p = geometry.padding
    inner = ids[p.top : ids.shape[0] - p.bottom, p.left : ids.shape[1] - p.right]
    nearest = resize_mask((inner == 10).long() + 2 * (inner == 20).long(), (H, W))
    assert not torch.equal(first.mask, nearest)
    # and the detection was not resized with torch's plain "nearest"
    plain = F.interpolate(dets[0].mask[None, None].double(), geometry.resized_size)[0, 0].long()
    assert not torch.equal(plain, resize_mask(dets[0].mask, geometry.resized_size))


# ---- rule 6: the clip schedule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "clip", "every", "merges", "detected"),
    [
        ("online", 1, 4, [0, 4, 8], [0, 4, 8]),
        # clips at 0 and 5 fit; the clip at 10 would need frame 12: 10, 11 are propagated
        ("semionline", 3, 5, [0, 5], [0, 1, 2, 5, 6, 7]),
        # e < n: clips after the first hold e = 2 frames (3-4, 5-6, ...), merged at their
        # first frame; the clip ending at frame 12 does not fit: 11 is only propagated
        ("semionline", 3, 2, [0, 3, 5, 7, 9], list(range(11))),
    ],
)
def test_clip_schedule(
    model, video, monkeypatch, mode: str, clip: int, every: int, merges, detected
) -> None:
    segmenter = ListSegmenter([_boxes((20, 60, 30, 90))] * T)
    config = _config(mode, clip_size=clip, detect_every=every)
    tracker = DecoupledTracker(model, segmenter, config)
    merged = _merge_frames(tracker, monkeypatch)
    results = list(tracker.stream(_frames(video)))
    _check_order(results, T)
    assert merged == merges
    assert sorted(segmenter.indices) == detected


def test_semi_online_with_short_clips_releases_frames_per_clip(model, video) -> None:
    segmenter = ListSegmenter([_empty()] * T)
    tracker = DecoupledTracker(model, segmenter, _config("semionline", clip_size=3, detect_every=2))
    ready = [[r.index for r in tracker.step(n, f)] for n, f in _frames(video, 8)]
    assert ready == [[], [], [0, 1, 2], [], [3, 4], [], [5, 6], []]
    assert [r.index for r in tracker.finish()] == [7]


def test_video_shorter_than_a_clip_is_one_clip(model, video, monkeypatch) -> None:
    # Deliberate difference: the published code writes nothing for T < n.
    segmenter = ListSegmenter([_boxes((20, 60, 30, 90))] * T)
    tracker = DecoupledTracker(model, segmenter, _config("semionline", clip_size=5))
    merged = _merge_frames(tracker, monkeypatch)
    results = list(tracker.stream(_frames(video, 3)))
    _check_order(results, 3)
    assert merged == [0]
    assert sorted(segmenter.indices) == [0, 1, 2]


# ---- rule 7: max_objects discards all detections of a merge --------------------------------


def test_max_objects_discards_the_detections_of_a_merge(model, video) -> None:
    four = _boxes((0, 20, 0, 30), (30, 50, 0, 30), (60, 90, 0, 30), (0, 30, 60, 120))
    config = _config("online", detect_every=1, max_objects=4, max_missed=1)
    tracker = DecoupledTracker(model, ListSegmenter([four] * T), config)
    live, removed = [], []
    for name, frame in _frames(video, 4):
        (result,) = tracker.step(name, frame)
        live.append(tracker.registry.ids)
        removed.append(result.removed_ids)
    # frame 0: 0 + 4 <= 4; frames 1, 2: 4 + 4 > 4, nothing associates, all miss, deleted at
    # the second miss; frame 3: 0 + 4 <= 4 again, four new objects
    assert live == [[1, 2, 3, 4], [1, 2, 3, 4], [], [5, 6, 7, 8]]
    assert removed == [[], [], [1, 2, 3, 4], []]


# ---- rule 8: isthing groups only for panoptic input; votes over all detections ------------


@pytest.mark.parametrize("panoptic", [False, True])
def test_isthing_groups_follow_the_input_type(model, video, monkeypatch, panoptic) -> None:
    seen: list[tuple[str, bool]] = []

    def record(name, function):
        def wrapper(*args, **kwargs):
            seen.append((name, kwargs["separate_things"]))
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        tracker_module,
        "merge_with_consensus",
        record("merge", tracker_module.merge_with_consensus),
    )
    monkeypatch.setattr(
        tracker_module, "in_clip_consensus", record("consensus", tracker_module.in_clip_consensus)
    )
    config = _config("semionline", clip_size=2, panoptic=panoptic)
    tracker = DecoupledTracker(model, ListSegmenter([_boxes((20, 60, 30, 90))] * T), config)
    list(tracker.stream(_frames(video, 2)))
    assert seen == [("consensus", panoptic), ("merge", panoptic)]


def test_new_object_votes_over_every_supporting_proposal(model, video, monkeypatch) -> None:
    # Identical segmentations of one repeated frame: aligned proposals support each other.
    frame = video.frames[0]
    seg = [_boxes((20, 60, 30, 90)) for _ in range(3)]
    for k, (category, score) in enumerate([(4, 0.3), (2, 0.6), (2, 0.9)]):
        seg[k].segments[0] = Segment(id=10, category_id=category, score=score)
    consensus: list[Segmentation] = []
    original = tracker_module.in_clip_consensus

    def spy(*args, **kwargs):
        consensus.append(original(*args, **kwargs))
        return consensus[-1]

    monkeypatch.setattr(tracker_module, "in_clip_consensus", spy)
    tracker = DecoupledTracker(model, ListSegmenter(seg), _config("semionline", clip_size=3))
    results = list(tracker.stream([(frame_name(i), frame) for i in range(3)]))
    _check_order(results, 3)
    (segment,) = consensus[0].segments
    # the selected proposal and at least one supporter
    assert len(segment.detections) >= 2
    obj = tracker.registry[tracker.registry.ids[0]]
    # every one of them votes, not just the selected proposal
    assert obj.category_votes == Counter(c for c, _ in segment.detections)
    assert obj.score == pytest.approx(np.mean([s for _, s in segment.detections]))
    assert obj.category_id == 2


# ---- rule 9: incremental mode -----------------------------------------------------------------


@pytest.mark.parametrize("incremental", [False, True])
def test_incremental_mode_keeps_visible_objects(model, video, incremental: bool) -> None:
    dets = [_boxes((20, 60, 30, 90))] + [_empty()] * (T - 1)
    config = _config("online", detect_every=2, max_missed=0, incremental=incremental)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    results = list(tracker.stream(_frames(video, 6)))
    assert results[1].mask.any()  # the propagated mask is not empty
    if incremental:
        assert all(r.removed_ids == [] and r.mask.any() for r in results)
        assert tracker.registry.ids == [1] and tracker.registry[1].missed == 0
    else:
        assert results[2].removed_ids == [1]


def tracker_config(cfg) -> TrackerConfig:
    """The tracker settings a tool builds from its composed config."""
    schema = EvaluateConfig if "benchmark" in cfg else TrackConfig
    return builder.tracker_config(parse(schema, cfg))


def test_command_line_options() -> None:
    cfg = compose("evaluate", ["benchmark=vipseg", "incremental=true", "max_missed=0"])
    config = tracker_config(cfg)
    assert config.incremental and config.panoptic and config.max_missed == 0
    for name in ("evaluate", "track"):
        config = tracker_config(compose(name, []))
        assert not config.incremental and not config.panoptic
    assert not tracker_config(compose("evaluate", ["benchmark=burst"])).panoptic
