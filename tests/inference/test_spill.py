"""SpillList: arrays come back equal from RAM and from disk; its folder is deleted. Offline
tracking that spills every frame gives the same results as one that keeps them in RAM."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from deva.data.synthetic import SyntheticVideoConfig, frame_name, generate_video
from deva.inference.spill import SpillList, compact_ids
from deva.inference.tracker import DecoupledTracker
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from tests.helpers import ListSegmenter


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (7, 9, 3), dtype=np.uint8),  # an RGB frame: PNG
        rng.integers(0, 65536, (5, 4), dtype=np.uint16),  # an id map: PNG
        rng.integers(0, 200, (6, 6), dtype=np.uint8),
        rng.integers(-5, 2**40, (3, 3), dtype=np.int64),  # anything else: .npy
        rng.standard_normal((2, 3)).astype(np.float32),
        np.zeros((0, 4), dtype=np.uint8),
    ]


@pytest.mark.parametrize("budget_mib", [0.0, 1.0])
def test_arrays_come_back_equal(tmp_path: Path, budget_mib: float) -> None:
    store = SpillList(budget_mib=budget_mib, directory=tmp_path)
    arrays = _arrays()
    for a in arrays:
        store.append(a)
    assert len(store) == len(arrays)
    # over budget, every array with bytes goes to disk
    assert store.spilled == (len(arrays) - 1 if budget_mib == 0 else 0)
    for a, back in zip(arrays, [store[i] for i in range(len(store))], strict=True):
        assert back.dtype == a.dtype and back.shape == a.shape
        assert np.array_equal(back, a)
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_budget_keeps_the_first_arrays_in_ram_and_gc_deletes_the_folder(tmp_path: Path) -> None:
    store = SpillList(budget_mib=3 * 300 / 2**20, directory=tmp_path)  # three 300-byte arrays
    for i in range(5):
        store.append(np.full((10, 10, 3), i, dtype=np.uint8))
    assert store.spilled == 2
    (folder,) = tmp_path.iterdir()
    assert len(list(folder.iterdir())) == 2
    assert int(store[4][0, 0, 0]) == 4
    del store
    gc.collect()
    assert not folder.exists()


def test_compact_ids_keeps_values() -> None:
    for top, dtype in [(255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.int64)]:
        ids = np.array([[0, top]], dtype=np.int64)
        small = compact_ids(ids)
        assert small.dtype == dtype
        assert np.array_equal(small.astype(np.int64), ids)
    assert compact_ids(np.array([[-1, 3]])).dtype == np.int64


def test_offline_spilling_everything_equals_keeping_it_in_ram(model, tmp_path: Path) -> None:
    video = generate_video(
        SyntheticVideoConfig(num_frames=9, height=48, width=64, num_objects=2), seed=4
    )
    frames = [(frame_name(i), video.frames[i]) for i in range(video.num_frames)]
    config = TrackerConfig(mode=TrackingMode.OFFLINE, clip_size=1, shorter_side=-1)
    runs = {}
    for budget in (256.0, 0.0):
        tracker = DecoupledTracker(
            model, ListSegmenter(video.detections), config, buffer_mib=budget, spill_dir=tmp_path
        )
        results = []
        for r in tracker.stream(frames):
            if budget == 0:  # while the results stream out, the frames are on disk
                assert len(list(tmp_path.glob("deva-spill-*/*"))) >= video.num_frames
            results.append(r)
        runs[budget] = results
        assert tracker.key_frame is not None and tracker.key_frame > 0  # backward pass used
        assert list(tmp_path.iterdir()) == []  # the spill folders are gone
    kept, spilled = runs[256.0], runs[0.0]
    assert [r.name for r in spilled] == [r.name for r in kept]
    for a, b in zip(kept, spilled, strict=True):
        assert torch.equal(a.mask, b.mask) and a.segments == b.segments
        assert np.array_equal(a.image, b.image)
    assert any(r.mask.any() for r in kept)


def test_an_abandoned_offline_stream_deletes_its_folder(model, tmp_path: Path) -> None:
    video = generate_video(SyntheticVideoConfig(num_frames=4, height=32, width=32), seed=1)
    frames = [(frame_name(i), video.frames[i]) for i in range(video.num_frames)]
    config = TrackerConfig(mode=TrackingMode.OFFLINE, clip_size=1, shorter_side=-1)
    tracker = DecoupledTracker(
        model, ListSegmenter(video.detections), config, buffer_mib=0, spill_dir=tmp_path
    )
    stream = tracker.stream(frames)
    next(stream)
    assert list(tmp_path.iterdir())
    stream.close()
    assert list(tmp_path.iterdir()) == []
