"""Synthetic video generator: determinism, promised properties, on-disk layout, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deva.data.synthetic import (
    SyntheticVideo,
    SyntheticVideoConfig,
    generate_video,
    write_synthetic_dataset,
)
from deva.io.detections import read_frame_segmentation
from deva.io.frames import read_frame
from deva.io.masks import read_index_png
from deva.io.outputs import OutputError
from tests.helpers import load_tool

SMALL = SyntheticVideoConfig(num_frames=12, height=64, width=96)


@pytest.fixture(scope="module")
def default_videos() -> list[SyntheticVideo]:
    return [generate_video(SyntheticVideoConfig(), seed) for seed in range(3)]


def _assert_same(a: SyntheticVideo, b: SyntheticVideo) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.stuff, b.stuff)
    assert a.objects == b.objects
    assert len(a.detections) == len(b.detections)
    for da, db in zip(a.detections, b.detections):
        assert da.segments == db.segments
        assert (da.mask == db.mask).all()


def test_shapes_and_dtypes() -> None:
    video = generate_video(SMALL, 0)
    assert video.frames.shape == (12, 64, 96, 3) and video.frames.dtype == np.uint8
    assert video.masks.shape == (12, 64, 96) and video.masks.dtype == np.uint8
    assert video.stuff.shape == (12, 64, 96)
    assert video.visible_area.shape == (12, SMALL.num_objects)
    assert len(video.detections) == 12
    assert video.detections[0].mask.shape == (64, 96)


def test_same_seed_same_video() -> None:
    _assert_same(generate_video(SMALL, 7), generate_video(SMALL, 7))
    _assert_same(generate_video(SMALL, [3, 1]), generate_video(SMALL, [3, 1]))


def test_different_seed_different_video() -> None:
    a, b = generate_video(SMALL, 0), generate_video(SMALL, 1)
    assert not np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.masks, b.masks)


def test_detection_settings_do_not_change_the_scene() -> None:
    noisy = SyntheticVideoConfig(num_frames=12, height=64, width=96, det_miss_rate=0.5)
    a, b = generate_video(SMALL, 4), generate_video(noisy, 4)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_objects_enter_leave_and_reappear(default_videos: list[SyntheticVideo]) -> None:
    for video in default_videos:
        vis = video.visible  # (T, K)
        entered = [k for k in range(vis.shape[1]) if not vis[0, k] and vis[1:, k].any()]
        left = [k for k in range(vis.shape[1]) if not vis[-1, k] and vis[:-1, k].any()]
        reappeared = []
        for k in range(vis.shape[1]):
            frames = np.flatnonzero(vis[:, k])
            if len(frames) and not vis[frames[0] : frames[-1] + 1, k].all():
                reappeared.append(k)
        assert entered, "no object enters the view"
        assert left, "no object leaves the view"
        assert reappeared, "no object disappears and reappears"


def test_occlusion_happens(default_videos: list[SyntheticVideo]) -> None:
    for video in default_videos:
        partly = (video.visible_area > 0) & (video.visible_area < video.unoccluded_area)
        assert partly.any(), "no object is ever partly occluded"


def test_annotations_match_visibility(default_videos: list[SyntheticVideo]) -> None:
    for video in default_videos:
        ids = [obj.id for obj in video.objects]
        assert ids == list(range(1, len(ids) + 1))
        assert set(np.unique(video.masks).tolist()) <= {0, *ids}
        for k in ids:
            present = (video.masks == k).any(axis=(1, 2))
            np.testing.assert_array_equal(present, video.visible[:, k - 1])
            areas = (video.masks == k).sum(axis=(1, 2))
            np.testing.assert_array_equal(areas, video.visible_area[:, k - 1])
        assert (video.visible_area <= video.unoccluded_area).all()


def test_detections_are_valid_segmentations(default_videos: list[SyntheticVideo]) -> None:
    config = SyntheticVideoConfig()
    for video in default_videos:
        for det in video.detections:
            listed = [s.id for s in det.segments]
            assert len(listed) == len(set(listed))
            present = set(det.mask.unique().tolist()) - {0}
            assert present == set(listed)
            for seg in det.segments:
                assert 0 <= seg.score <= 1
                if seg.isthing:
                    assert 1 <= seg.category_id <= config.num_thing_categories
                else:
                    assert seg.category_id in config.stuff_category_ids


def test_detections_have_things_and_stuff(default_videos: list[SyntheticVideo]) -> None:
    for video in default_videos:
        kinds = {seg.isthing for det in video.detections for seg in det.segments}
        assert kinds == {True, False}
        assert all(any(not s.isthing for s in det.segments) for det in video.detections)


def _best_ids(video: SyntheticVideo, k: int) -> list[int | None]:
    """Per frame, the detection id that covers most of object k's pixels."""
    out = []
    for t, det in enumerate(video.detections):
        inside = det.mask.numpy()[video.masks[t] == k]
        inside = inside[inside > 0]
        out.append(int(np.bincount(inside).argmax()) if inside.size else None)
    return out


def test_detection_ids_not_consistent_over_time(default_videos: list[SyntheticVideo]) -> None:
    video = default_videos[0]
    changes = 0
    for k in range(1, len(video.objects) + 1):
        ids = _best_ids(video, k)
        pairs = [(a, b) for a, b in itertools.pairwise(ids) if a is not None and b is not None]
        changes += sum(a != b for a, b in pairs)
    assert changes > 10


def test_detections_are_noisy(default_videos: list[SyntheticVideo]) -> None:
    missed = spurious_or_split = 0
    for video in default_videos:
        for t, det in enumerate(video.detections):
            things = sum(1 for s in det.segments if s.isthing)
            visible = int((video.visible_area[t] >= 30).sum())
            missed += things < visible
            spurious_or_split += things > visible
    assert missed > 0 and spurious_or_split > 0


def test_degenerate_configs() -> None:
    empty = generate_video(SyntheticVideoConfig(num_frames=3, height=32, width=32, num_objects=0))
    assert not empty.masks.any() and empty.visible_area.shape == (3, 0)
    single = generate_video(SyntheticVideoConfig(num_frames=1, height=32, width=48), 0)
    assert single.frames.shape == (1, 32, 48, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_frames": 0}, {"shapes": ("square",)}, {"num_objects": 300}, {"det_miss_rate": 2.0}],
)
def test_bad_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticVideoConfig(**kwargs)


def test_written_layout(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    names = write_synthetic_dataset(root, SMALL, num_videos=2, seed=5)
    assert names == ["video_000", "video_001"]
    expected = [f"{t:05d}" for t in range(SMALL.num_frames)]
    video = generate_video(SMALL, [5, 1])
    for name in names:
        assert sorted(p.stem for p in (root / "JPEGImages" / name).glob("*.jpg")) == expected
        assert sorted(p.stem for p in (root / "Annotations" / name).glob("*.png")) == expected
        assert sorted(p.stem for p in (root / "Detections" / name).glob("*.png")) == expected
        assert sorted(p.stem for p in (root / "Detections" / name).glob("*.json")) == expected
    # The second video on disk is the in-memory video with seed [5, 1].
    for t in (0, SMALL.num_frames - 1):
        stem = f"{t:05d}"
        png = root / "Annotations" / "video_001" / f"{stem}.png"
        with Image.open(png) as image:
            assert image.mode == "P"
        np.testing.assert_array_equal(read_index_png(png), video.masks[t])
        frame = read_frame(root / "JPEGImages" / "video_001" / f"{stem}.jpg")
        error = np.abs(frame.astype(int) - video.frames[t]).mean()
        assert error < 10  # JPEG loss (chroma subsampling on noisy texture) only
        det = read_frame_segmentation(root / "Detections" / "video_001", stem)
        assert det.segments == video.detections[t].segments
        assert (det.mask == video.detections[t].mask).all()
    meta = json.loads((root / "Meta" / "video_001" / "meta.json").read_text())
    assert meta["name"] == "video_001" and meta["num_frames"] == SMALL.num_frames
    assert [o["visible"] for o in meta["objects"]] == video.visible.T.tolist()
    assert {o["isthing"] for o in meta["objects"]} == {True}
    assert meta["stuff"] and {s["isthing"] for s in meta["stuff"]} == {False}
    summary = json.loads((root / "dataset.json").read_text())
    assert summary["videos"] == names


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path, SMALL, num_videos=2)
    with pytest.raises(OutputError, match="overwrite"):
        write_synthetic_dataset(tmp_path, SMALL, num_videos=1)
    write_synthetic_dataset(tmp_path, SMALL, num_videos=1, overwrite=True)
    assert [p.name for p in (tmp_path / "JPEGImages").iterdir()] == ["video_000"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = load_tool("make_synthetic")
    out = tmp_path / "out"
    args = [f"output={out}", "num_videos=1", "num_frames=4", "height=48", "width=64", "seed=2"]
    assert cli.main(args) == 0
    assert len(list((out / "JPEGImages" / "video_000").glob("*.jpg"))) == 4
    assert cli.main(args) == 2  # not empty
    assert "overwrite=true" in capsys.readouterr().err
    assert cli.main([*args, "overwrite=true", "num_objects=2"]) == 0
    assert cli.main([*args, "no_such_key=1"]) == 2
    assert cli.main([*args, "num_frames=many"]) == 2
    assert cli.main([*args, "num_frames"]) == 2
