"""DecoupledTracker: modes, streaming order and latency, identity, deletion, edge cases."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from deva.data.synthetic import SyntheticVideoConfig, frame_name, generate_video
from deva.inference.tracker import DecoupledTracker, TrackedFrame, key_frame_candidates
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.types import Segment, Segmentation
from tests.helpers import ListSegmenter

H, W, T = 96, 128, 12


@pytest.fixture(scope="module")
def video():
    config = SyntheticVideoConfig(
        num_frames=T, height=H, width=W, num_objects=3, num_stuff_regions=2
    )
    return generate_video(config, seed=0)


def _frames(video, count: int | None = None) -> list[tuple[str, np.ndarray]]:
    count = video.num_frames if count is None else count
    return [(frame_name(i), video.frames[i]) for i in range(count)]


def _config(mode: TrackingMode, **kwargs) -> TrackerConfig:
    return TrackerConfig(mode=mode, shorter_side=-1, **kwargs)


def _box_segmentation(*boxes: tuple[int, int, int, int], score: float = 0.9) -> Segmentation:
    mask = torch.zeros(H, W, dtype=torch.long)
    segments = []
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        mask[y0:y1, x0:x1] = 10 * k
        segments.append(Segment(id=10 * k, category_id=k, score=score, isthing=True))
    return Segmentation(mask=mask, segments=segments)


def _empty() -> Segmentation:
    return Segmentation(mask=torch.zeros(H, W, dtype=torch.long))


def _check_results(results: list[TrackedFrame], count: int = T) -> None:
    assert [r.index for r in results] == list(range(count))
    assert [r.name for r in results] == [frame_name(i) for i in range(count)]
    for r in results:
        assert r.mask.shape == (H, W)
        assert r.mask.dtype == torch.int64
        assert {s.id for s in r.segments} == set(torch.unique(r.mask).tolist()) - {0}


@pytest.mark.parametrize("mode", list(TrackingMode))
def test_every_frame_once_in_order_with_valid_ids(model, video, mode: TrackingMode) -> None:
    # Offline builds a single consensus; with random weights the alignment of a 3-frame clip
    # may agree on nothing, so use the key frame's segmentation itself there.
    clip = 1 if mode is TrackingMode.OFFLINE else 3
    tracker = DecoupledTracker(
        model, ListSegmenter(video.detections), _config(mode, clip_size=clip)
    )
    results = list(tracker.stream(_frames(video)))
    _check_results(results)
    created = tracker.registry.next_id - 1
    assert created >= 1
    removed: set[int] = set()
    first_seen: dict[int, int] = {}
    for r in results:
        ids = {s.id for s in r.segments}
        assert not ids & removed, "a deleted object came back"
        assert all(1 <= i <= created for i in ids)
        for i in ids:
            first_seen.setdefault(i, r.index)
        removed |= set(r.removed_ids)
    # fresh ids are handed out in order of appearance, never reused
    order = [first_seen[i] for i in sorted(first_seen)]
    assert order == sorted(order)
    # metadata: the vote of the merged detections (a category of the synthetic video)
    categories = {s.category_id for r in results for s in r.segments}
    assert categories <= {s.category_id for d in video.detections for s in d.segments}


def test_registry_and_memory_stay_in_sync(model, video) -> None:
    tracker = DecoupledTracker(
        model, ListSegmenter(video.detections), _config(TrackingMode.ONLINE, detect_every=2)
    )
    for name, frame in _frames(video):
        tracker.step(name, frame)
        assert tracker.propagator.object_ids == tracker.registry.ids


def test_objects_only_appear_on_detection_frames(model, video) -> None:
    tracker = DecoupledTracker(
        model, ListSegmenter(video.detections), _config(TrackingMode.ONLINE, detect_every=4)
    )
    results = list(tracker.stream(_frames(video)))
    seen: set[int] = set()
    for r in results:
        ids = {s.id for s in r.segments}
        if r.index % 4:
            assert ids <= seen, "propagation created an object"
        seen |= ids


def test_semi_online_with_clip_size_one_is_online(model, video) -> None:
    online = DecoupledTracker(model, ListSegmenter(video.detections), _config(TrackingMode.ONLINE))
    semi = DecoupledTracker(
        model, ListSegmenter(video.detections), _config(TrackingMode.SEMI_ONLINE, clip_size=1)
    )
    for a, b in zip(online.stream(_frames(video)), semi.stream(_frames(video)), strict=True):
        assert a.index == b.index
        assert torch.equal(a.mask, b.mask)
        assert a.segments == b.segments


def test_semi_online_outputs_are_delayed_and_flushed(model, video) -> None:
    segmenter = ListSegmenter(video.detections)
    config = _config(TrackingMode.SEMI_ONLINE, clip_size=3, detect_every=5)
    tracker = DecoupledTracker(model, segmenter, config)
    ready = [[r.index for r in tracker.step(n, f)] for n, f in _frames(video, 7)]
    assert ready == [[], [], [0, 1, 2], [3], [4], [], []]
    # the clip 5..7 does not fit in the 7 frames: 5 and 6 are only propagated
    assert [r.index for r in tracker.finish()] == [5, 6]
    assert segmenter.calls == ["00000", "00001", "00002"]
    with pytest.raises(RuntimeError, match="reset"):
        tracker.step(*_frames(video, 1)[0])


def test_online_detects_every_n_frames(model, video) -> None:
    segmenter = ListSegmenter(video.detections)
    tracker = DecoupledTracker(model, segmenter, _config(TrackingMode.ONLINE, detect_every=5))
    ready = [len(tracker.step(n, f)) for n, f in _frames(video)]
    assert ready == [1] * T  # no latency
    assert segmenter.calls == ["00000", "00005", "00010"]


def test_deletion_when_misses_exceed_max_missed(model, video) -> None:
    dets = [_box_segmentation((20, 60, 30, 90))] + [_empty()] * (T - 1)
    config = _config(TrackingMode.ONLINE, detect_every=2, max_missed=3)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    results = list(tracker.stream(_frames(video)))
    removal = [r.index for r in results if r.removed_ids]
    # misses at frames 2, 4, 6, 8: deleted at the fourth (L + 1 = 4), as published
    assert removal == [8]
    assert results[8].removed_ids == [1]
    assert tracker.registry.ids == []
    assert tracker.propagator.object_ids == []
    # the deletion frame itself no longer shows the object
    assert results[7].mask.any()
    assert all(not r.mask.any() and r.segments == [] for r in results[8:])


def test_empty_detections_everywhere(model, video) -> None:
    for mode in TrackingMode:
        tracker = DecoupledTracker(model, ListSegmenter([_empty()] * T), _config(mode))
        results = list(tracker.stream(_frames(video)))
        _check_results(results)
        assert all(not r.mask.any() and r.segments == [] for r in results)
        assert tracker.registry.next_id == 1


@pytest.mark.parametrize("mode", [TrackingMode.SEMI_ONLINE, TrackingMode.OFFLINE])
def test_video_shorter_than_the_clip(model, video, mode: TrackingMode) -> None:
    tracker = DecoupledTracker(model, ListSegmenter(video.detections), _config(mode, clip_size=5))
    segmenter = tracker.segmenter
    ready = [r for n, f in _frames(video, 2) for r in tracker.step(n, f)]
    assert ready == []
    results = tracker.finish()
    _check_results(results, 2)
    assert sorted(set(segmenter.calls)) == ["00000", "00001"]


def test_single_frame_and_empty_stream(model, video) -> None:
    for mode in TrackingMode:
        tracker = DecoupledTracker(model, ListSegmenter(video.detections), _config(mode))
        _check_results(list(tracker.stream(_frames(video, 1))), 1)
        assert list(tracker.stream([])) == []


def test_offline_picks_the_best_scoring_key_frame(model, video) -> None:
    dets = [_box_segmentation((10 + i, 50 + i, 20, 70), score=0.5) for i in range(T)]
    dets[7] = _box_segmentation((17, 57, 20, 70), score=0.95)
    segmenter = ListSegmenter(dets)
    tracker = DecoupledTracker(model, segmenter, _config(TrackingMode.OFFLINE, clip_size=2))
    results = list(tracker.stream(_frames(video)))
    _check_results(results)
    assert tracker.key_frame == 7
    candidates = key_frame_candidates(T, 10)
    assert 7 in candidates and len(candidates) == 10
    # detections only at the candidates and the clip after the key frame; none later
    assert sorted(set(segmenter.calls)) == sorted({frame_name(i) for i in [*candidates, 8]})


def test_offline_key_frame_holds_the_consensus(model, video) -> None:
    dets = [_empty() for _ in range(T)]
    dets[4] = _box_segmentation((20, 60, 30, 90))
    config = _config(TrackingMode.OFFLINE, clip_size=1)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    results = list(tracker.stream(_frames(video)))
    _check_results(results)
    assert tracker.key_frame == 4
    assert [s.id for s in results[4].segments] == [1]
    assert results[4].segments[0].category_id == 1
    assert torch.equal(results[4].mask, dets[4].mask.clamp(max=1))
    assert tracker.registry.ids == [1]


def test_max_objects_cap_warns(model, video, caplog) -> None:
    dets = [
        _box_segmentation((0, 20, 0, 30), (30, 50, 0, 30), (60, 90, 0, 30), (0, 30, 60, 120))
    ] * T
    config = _config(TrackingMode.ONLINE, max_objects=2)
    tracker = DecoupledTracker(model, ListSegmenter(dets), config)
    with caplog.at_level(logging.WARNING):
        results = list(tracker.stream(_frames(video)))
    assert "max_objects" in caplog.text
    # 0 live objects + 4 detections > 2 on every merge: all detections are discarded
    assert all(r.segments == [] for r in results)
    assert tracker.registry.next_id == 1


def test_detection_frames_become_memory_frames(model, video) -> None:
    config = _config(TrackingMode.ONLINE, detect_every=3, mem_every=100)
    tracker = DecoupledTracker(model, ListSegmenter(video.detections), config)
    sizes = []
    for name, frame in _frames(video, 7):
        tracker.step(name, frame)
        sizes.append(tracker.propagator.memory.stats().working_elements)
    grew = [i for i in range(1, 7) if sizes[i] > sizes[i - 1]]
    assert grew == [3, 6]


def test_frame_size_change_is_an_error(model, video) -> None:
    tracker = DecoupledTracker(model, ListSegmenter(video.detections), _config(TrackingMode.ONLINE))
    tracker.step("00000", video.frames[0])
    with pytest.raises(ValueError, match="earlier frames"):
        tracker.step("00001", video.frames[1][:64])


def test_config_validation() -> None:
    assert TrackerConfig(mode="semi-online").mode is TrackingMode.SEMI_ONLINE
    assert TrackerConfig(mode="online", clip_size=3).clip_length == 1
    with pytest.raises(ValueError, match="mode"):
        TrackerConfig(mode="sometimes")
    with pytest.raises(ValueError, match="clip_size"):
        TrackerConfig(clip_size=0)
    assert TrackerConfig(max_missed=0).max_missed == 0  # delete at the first miss
    with pytest.raises(ValueError, match="max_missed"):
        TrackerConfig(max_missed=-1)
    assert not TrackerConfig().incremental and not TrackerConfig().panoptic


def test_consensus_has_nothing_in_the_padding(model) -> None:
    """Frames whose sides are not multiples of 16 are padded; the network also predicts in
    that border, but the projected proposals are cropped to the image before the vote (as
    detections are), so the consensus written to memory has background there."""
    h, w = 90, 120  # padded to 96 × 128
    clip_video = generate_video(SyntheticVideoConfig(num_frames=3, height=h, width=w), seed=1)
    mask = torch.zeros(h, w, dtype=torch.long)
    mask[30:, 40:] = 7  # touches the bottom and right edges
    seg = Segmentation(mask=mask, segments=[Segment(id=7, category_id=1, score=0.9)])
    tracker = DecoupledTracker(model, ListSegmenter([seg] * 3), _config(TrackingMode.SEMI_ONLINE))
    clip = [tracker._prepare(t, frame_name(t), f) for t, f in enumerate(clip_video.frames)]
    segs = [tracker._detect(frame) for frame in clip]
    p = clip[0].geometry.padding
    assert (p.top + p.bottom, p.left + p.right) == (6, 8)

    def border(ids: torch.Tensor) -> torch.Tensor:
        inside = torch.zeros_like(ids, dtype=torch.bool)
        inside[p.top : ids.shape[0] - p.bottom, p.left : ids.shape[1] - p.right] = True
        return ids[~inside]

    projected = tracker.propagator.align(
        [(f.features, s) for f, s in zip(clip[1:], segs[1:])], clip[0].features
    )
    assert any(border(s.mask).any() for s in projected)  # the network predicts there
    assert not border(segs[0].mask).any()
    consensus = tracker._consensus(clip, segs)
    assert consensus.mask.shape == segs[0].mask.shape
    assert not border(consensus.mask).any()
    assert len(consensus.segments) == 1  # ids are renumbered by the vote
    assert (consensus.mask == consensus.segments[0].id).any()
