"""The generic training source (your own videos): layout, sparse annotations, gaps in folder
frames, RGB-encoded ids, per-source options, and draws of the resumable training stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deva.data.order import Draw
from deva.data.video import (
    DEFAULT_SOURCES,
    ClipSampler,
    SourceOptions,
    VOSVideoDataset,
    build_video_mix,
    compact_ids,
    sample_annotated_frames,
)
from deva.data.video_folders import generic_records, records_for
from deva.io.masks import write_id_png, write_index_png


def squares(t: int, height: int = 48, width: int = 64, ids: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """An id map with one square per id, drifting right by one pixel per frame."""
    mask = np.zeros((height, width), np.int64)
    for k, obj in enumerate(ids):
        y, x = 4 + 20 * (k // 2), 4 + 28 * (k % 2) + t
        mask[y : y + 14, x : x + 14] = obj
    return mask


def write_generic(
    root: Path,
    videos: dict[str, int],
    *,
    annotate_every: int = 3,
    rgb: tuple[str, ...] = (),
    png_frames: tuple[str, ...] = (),
) -> Path:
    """``root/JPEGImages/<video>/`` with every frame, ``root/Annotations/<video>/`` with every
    ``annotate_every``-th one (palette PNGs, or RGB-encoded ids 255 and 70000 for ``rgb``)."""
    for name, count in videos.items():
        images, masks = root / "JPEGImages" / name, root / "Annotations" / name
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for t in range(count):
            ids = (255, 70000) if name in rgb else (1, 2)
            mask = squares(t, ids=ids)
            frame = np.full((*mask.shape, 3), 30, np.uint8)
            frame[mask > 0] = 200
            suffix = "png" if name in png_frames else "jpg"
            Image.fromarray(frame).save(images / f"{t:05d}.{suffix}")
            if t % annotate_every == 0:
                if name in rgb:
                    write_id_png(masks / f"{t:05d}.png", mask)
                else:
                    write_index_png(masks / f"{t:05d}.png", mask)
    return root


def test_records_keep_only_annotated_frames_with_their_folder_positions(tmp_path: Path) -> None:
    root = write_generic(tmp_path / "mine", {"a": 10, "b": 7}, png_frames=("b",))
    records = {r.name: r for r in generic_records(root)}
    assert records["a"].frame_names == ("00000", "00003", "00006", "00009")
    assert records["a"].meta["positions"] == (0, 3, 6, 9)
    assert records["b"].meta["positions"] == (0, 3, 6)  # png frames are read too
    assert records["b"].images[0].suffix == ".png"
    # several folders: names keep their folder apart
    other = write_generic(tmp_path / "more", {"a": 4})
    names = sorted(r.name for r in records_for("generic", [str(root), str(other)]))
    assert names == ["mine/a", "mine/b", "more/a"]
    with pytest.raises(FileNotFoundError, match="generic"):
        generic_records(tmp_path / "missing")
    with pytest.raises(ValueError, match="only generic takes a list"):
        records_for("ytvos", [str(root)])


@pytest.mark.parametrize("max_gap", [1, 2, 3, 5, 8])
def test_clip_gaps_are_counted_in_folder_frames(max_gap: int) -> None:
    rng = np.random.default_rng(0)
    positions = [0, 1, 2, 5, 6, 12, 13, 14, 15, 30]
    for _ in range(200):
        chosen = sample_annotated_frames(positions, 4, max_gap, rng)
        assert chosen == sorted(chosen) and len(set(chosen)) == 4
        assert 0 <= chosen[0] and chosen[-1] < len(positions)
        for a, b in itertools.pairwise(chosen):
            gap = positions[b] - positions[a]
            # within the gap, or the next annotated frame when there is none closer
            assert gap <= max_gap or b == a + 1, (chosen, max_gap)
    # few annotated frames: repeated, in order
    short = sample_annotated_frames([0, 4], 5, 2, rng)
    assert len(short) == 5 and short == sorted(short) and set(short) <= {0, 1}
    with pytest.raises(ValueError):
        sample_annotated_frames([], 3, 2, rng)


def test_wide_gaps_are_used_when_allowed() -> None:
    rng = np.random.default_rng(1)
    positions = list(range(40))
    gaps = [
        np.diff([positions[i] for i in sample_annotated_frames(positions, 4, 10, rng)]).max()
        for _ in range(100)
    ]
    assert max(gaps) > 5 and max(gaps) <= 10


def test_rgb_encoded_ids_become_objects_even_at_255() -> None:
    first, second = squares(0, ids=(255, 70000)), squares(1, ids=(255, 70000))
    labels = compact_ids([first, second])
    assert [m.dtype for m in labels] == [np.uint8, np.uint8]
    assert sorted(np.unique(labels[0]).tolist()) == [0, 1, 2]
    # the same id has the same label in both frames
    assert labels[0][first == 70000].tolist() == labels[1][second == 70000].tolist()
    assert set(labels[0][first == 70000].tolist()) == {2}
    empty = compact_ids([np.zeros((4, 4), np.int64)] * 2)
    assert all(m.dtype == np.uint8 and not m.any() for m in empty)


def test_generic_clips_from_sparse_rgb_annotations(tmp_path: Path) -> None:
    root = write_generic(tmp_path / "mine", {"rgb": 13}, rgb=("rgb",), annotate_every=4)
    records = generic_records(root)
    sampler = ClipSampler(
        num_frames=3, crop_size=32, min_object_pixels=4, max_skip=4, augment=False, reverse_p=0
    )
    dataset = VOSVideoDataset(records, sampler, name="generic")
    sample = dataset[Draw(0, 7, seed=3)]
    assert sample["num_objects"] == 2  # 255 (pure red) is an object, not void
    frame_ids = sample["info"]["frame_ids"]
    positions = records[0].meta["positions"]
    assert all(positions[b] - positions[a] <= 4 for a, b in itertools.pairwise(frame_ids))


def test_draws_decide_the_sample(tmp_path: Path) -> None:
    root = write_generic(tmp_path / "mine", {"a": 12, "b": 12}, annotate_every=2)
    mix = build_video_mix(
        {"generic": str(root)}, num_frames=3, crop_size=32, min_object_pixels=4, max_skip=6
    )
    first, again = mix[Draw(1, 42, seed=5, max_skip=6)], mix[Draw(1, 42, seed=5, max_skip=6)]
    assert torch.equal(first["frames"], again["frames"]) and first["info"] == again["info"]
    others = [mix[Draw(1, n, seed=5, max_skip=6)]["info"]["frame_ids"] for n in range(10)]
    assert len({tuple(ids) for ids in others}) > 1
    # the draw's gap wins over the shared one: gap 1 keeps consecutive annotated frames
    tight = mix[Draw(1, 3, seed=5, max_skip=1)]["info"]["frame_ids"]
    assert np.diff(tight).tolist() in ([1, 1], [-1, -1])


def test_per_source_options(tmp_path: Path) -> None:
    root = write_generic(tmp_path / "mine", {"a": 9, "b": 9}, annotate_every=1)
    assert DEFAULT_SOURCES["ytvos"].skip_divisor == 5 and DEFAULT_SOURCES["davis"].repeats == 5
    mix = build_video_mix(
        {"generic": str(root)},
        sources={"generic": SourceOptions(repeats=3, skip_divisor=2, max_objects=1)},
        num_frames=3,
        crop_size=32,
        min_object_pixels=4,
        max_skip=10,
    )
    assert len(mix) == 3 * 2
    sampler = mix.parts["generic"].sampler
    assert sampler.max_gap() == 5 and sampler.max_objects == 1
    assert mix[Draw(0, 1, seed=0)]["num_objects"] == 1
    with pytest.raises(ValueError, match="skip_divisor"):
        SourceOptions(skip_divisor=0)
