"""VOS training datasets: layouts, clip sampling, the gap curriculum, object selection."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from deva.data.sample import IMAGENET_MEAN, IMAGENET_STD, denormalise_frames
from deva.data.video import (
    ClipSampler,
    VOSVideoDataset,
    build_video_mix,
    max_skip_at,
    sample_frame_indices,
)
from deva.data.video_folders import davis_records, load_subset, youtube_records
from deva.io.masks import write_index_png

COLOURS = np.array(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], np.uint8
)


def video_masks(num_frames: int, height: int, width: int, num_objects: int) -> np.ndarray:
    """Square objects (labels 1..K) drifting right by 2 px per frame."""
    masks = np.zeros((num_frames, height, width), np.uint8)
    side = min(height, width) // 4
    for t in range(num_frames):
        for k in range(num_objects):
            y = 4 + (k // 2) * (side + 6)
            x = 4 + (k % 2) * (side + 8) + 2 * t
            masks[t, y : y + side, x : x + side] = k + 1
    return masks


def write_video(image_dir: Path, mask_dir: Path, masks: np.ndarray, *, mask_every: int = 1) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for t, mask in enumerate(masks):
        Image.fromarray(COLOURS[mask]).save(image_dir / f"{t:05d}.jpg", quality=95)
        if t % mask_every == 0:
            write_index_png(mask_dir / f"{t:05d}.png", mask)


def make_davis(root: Path, *, frames: int = 10, objects: int = 4) -> Path:
    for name, count in (("bear", frames), ("car", frames), ("val_seq", frames)):
        masks = video_masks(count, 60, 80, objects)
        write_video(
            root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name, masks
        )
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("bear\ncar\n")
    return root


def make_youtube(
    root: Path, *, videos: int = 2, frames: int = 21, names: list[str] | None = None
) -> Path:
    for i in range(videos):
        masks = video_masks(frames, 60, 80, 2)
        name = names[i] if names else f"vid{i}"
        write_video(root / "JPEGImages" / name, root / "Annotations" / name, masks, mask_every=5)
    return root


def sampler(**kwargs) -> ClipSampler:
    options = dict(num_frames=4, crop_size=48, min_object_pixels=4, augment=True)
    options.update(kwargs)
    return ClipSampler(**options)


# -- curriculum and frame sampling ------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "expected"),
    [(0.0, 5), (0.05, 5), (0.0999, 5), (0.1, 10), (0.29, 10), (0.3, 15), (0.5, 15),
     (0.7999, 15), (0.8, 5), (1.0, 5), (1.2, 5), (-0.1, 5)],
)  # fmt: skip
def test_max_skip_schedule(progress: float, expected: int) -> None:
    assert max_skip_at(progress) == expected


def test_max_skip_schedule_rejects_nan_and_bad_tables() -> None:
    with pytest.raises(ValueError):
        max_skip_at(float("nan"))
    with pytest.raises(ValueError):
        max_skip_at(0.5, values=(1, 2), boundaries=(0.1, 0.2))
    assert max_skip_at(0.5, values=(1, 2), boundaries=(0.4,)) == 2


@pytest.mark.parametrize("length", [8, 9, 20, 200])
@pytest.mark.parametrize("max_gap", [1, 3, 15])
def test_frame_indices_respect_the_maximum_gap(length: int, max_gap: int) -> None:
    rng = np.random.default_rng(length * 100 + max_gap)
    seen_gaps = set()
    for _ in range(200):
        indices = sample_frame_indices(length, 8, max_gap, rng, reverse_p=0.5)
        assert len(indices) == 8
        assert all(0 <= i < length for i in indices)
        gaps = np.abs(np.diff(indices))
        assert gaps.min() >= 1 and gaps.max() <= max_gap
        seen_gaps.update(gaps.tolist())
    if length >= 8 * max_gap:
        assert max(seen_gaps) == max_gap  # large gaps are actually used


def test_short_videos_repeat_frames() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = sample_frame_indices(3, 8, 5, rng)
        assert len(indices) == 8 and set(indices) <= {0, 1, 2}
        assert indices == sorted(indices)
    assert sample_frame_indices(1, 4, 5, rng) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4, 5, rng)


# -- folder layouts ---------------------------------------------------------------------------


def test_davis_reads_only_the_train_split(tmp_path: Path) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS"))
    assert [r.name for r in records] == ["bear", "car"]
    assert len(records[0]) == 10 and records[0].frame_names[0] == "00000"


def test_youtube_pairs_frames_by_name(tmp_path: Path) -> None:
    records = youtube_records(make_youtube(tmp_path / "ytvos"))
    assert [r.name for r in records] == ["vid0", "vid1"]
    assert records[0].frame_names == ("00000", "00005", "00010", "00015", "00020")
    assert all(Path(p).stem == n for p, n in zip(records[0].images, records[0].frame_names))


def test_missing_folders_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        davis_records(tmp_path / "nowhere")
    assert "nowhere" in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "yt" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Annotations"):
        youtube_records(tmp_path / "yt")


# -- samples ----------------------------------------------------------------------------------


def test_clip_samples_follow_the_contract(tmp_path: Path) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS"))
    dataset = VOSVideoDataset(records, sampler(max_skip=2))
    counts = set()
    for _ in range(12):
        sample = dataset[0]
        frames, masks, k = sample["frames"], sample["masks"], sample["num_objects"]
        assert frames.shape == (4, 3, 48, 48) and frames.dtype == torch.float32
        assert masks.shape == (4, 48, 48) and masks.dtype == torch.int64
        assert 1 <= k <= 3
        # labels are 1..K, all present in the first frame
        assert set(masks[0].unique().tolist()) - {0} == set(range(1, k + 1))
        assert int(masks.max()) <= k
        assert sample["info"]["name"] == "bear"
        ids = sample["info"]["frame_ids"]
        assert len(ids) == 4 and np.abs(np.diff(ids)).max() <= 2
        counts.add(k)
    assert 3 in counts  # four objects in the video: at most three are kept


def test_selected_objects_match_their_pixels(tmp_path: Path) -> None:
    """Relabelled masks still sit on the colour of one original object (alignment)."""
    records = davis_records(make_davis(tmp_path / "DAVIS", objects=2))
    dataset = VOSVideoDataset(records, sampler(augment=False), fixed_seed=0)
    sample = dataset[1]
    rgb = (denormalise_frames(sample["frames"]).clamp(0, 1) * 255).round().numpy()
    rgb = rgb.transpose(0, 2, 3, 1)
    for k in range(1, sample["num_objects"] + 1):
        pixels = rgb[sample["masks"].numpy() == k]
        dominant = np.bincount(pixels.argmax(axis=1), minlength=3)
        assert dominant.max() > 0.95 * len(pixels)


def test_normalisation_uses_imagenet_statistics(tmp_path: Path) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS"))
    sample = VOSVideoDataset(records, sampler(augment=False), fixed_seed=0)[0]
    background = sample["frames"][0, :, -1, -1]  # bottom-right corner is black
    expected = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(background, expected, atol=0.05, rtol=0)


def test_small_objects_are_never_selected(tmp_path: Path) -> None:
    masks = video_masks(6, 60, 80, 1)
    masks[:, 50:52, 70:72] = 2  # a 4-pixel object
    write_video(tmp_path / "img" / "v", tmp_path / "ann" / "v", masks)
    records = youtube_records_from(tmp_path)
    dataset = VOSVideoDataset(records, sampler(augment=False, min_object_pixels=20))
    assert all(dataset[0]["num_objects"] == 1 for _ in range(5))


def youtube_records_from(root: Path):
    from deva.data.video_folders import scan_vos_folder

    return scan_vos_folder(root / "img", root / "ann", dataset="test")


def test_videos_without_usable_objects_fall_back_to_others(tmp_path: Path) -> None:
    write_video(
        tmp_path / "img" / "a_empty", tmp_path / "ann" / "a_empty", np.zeros((5, 40, 40), np.uint8)
    )
    write_video(tmp_path / "img" / "b_full", tmp_path / "ann" / "b_full", video_masks(5, 40, 40, 1))
    dataset = VOSVideoDataset(youtube_records_from(tmp_path), sampler(augment=False))
    assert dataset[0]["info"]["name"] == "b_full"


def test_short_videos_are_sampled_with_repetition(tmp_path: Path, caplog) -> None:
    write_video(tmp_path / "img" / "v", tmp_path / "ann" / "v", video_masks(2, 40, 40, 1))
    with caplog.at_level(logging.WARNING, logger="deva.data.video"):
        dataset = VOSVideoDataset(youtube_records_from(tmp_path), sampler(num_frames=8))
    assert "fewer than 8" in caplog.text
    sample = dataset[0]
    assert sample["frames"].shape[0] == 8 and set(sample["info"]["frame_ids"]) <= {0, 1}


def test_set_max_skip_changes_the_gaps(tmp_path: Path) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS", frames=40))
    dataset = VOSVideoDataset(records, sampler(max_skip=1))
    gaps = [np.abs(np.diff(dataset[0]["info"]["frame_ids"])) for _ in range(10)]
    assert all((g == 1).all() for g in gaps)
    dataset.set_max_skip(10)
    gaps = np.concatenate([np.abs(np.diff(dataset[0]["info"]["frame_ids"])) for _ in range(20)])
    assert gaps.max() > 1 and gaps.max() <= 10
    assert dataset.sampler.max_skip == 10


def test_video_mix_repeats_and_collates(tmp_path: Path) -> None:
    listed = load_subset("ytvos", "published")[:3]
    roots = {
        "davis": make_davis(tmp_path / "DAVIS"),
        # three videos of the published YouTube-VOS list and one that is not in it
        "ytvos": make_youtube(tmp_path / "yt", videos=4, names=[*listed, "0000000000"]),
        "ovis": make_youtube(tmp_path / "ovis", videos=1),
    }
    mix = build_video_mix(roots, num_frames=3, crop_size=32, min_object_pixels=4)
    assert len(mix) == 5 * 2 + 1 * 3 + 3 * 1
    assert sorted(r.name for r in mix.parts["ytvos"].records) == sorted(listed)
    mix.set_max_skip(15)
    assert mix.parts["davis"].sampler.max_gap() == 15
    assert mix.parts["ytvos"].sampler.max_gap() == 3  # YouTube-VOS: every 5th frame annotated
    batch = next(iter(DataLoader(mix, batch_size=4, shuffle=True)))
    assert batch["frames"].shape == (4, 3, 3, 32, 32)
    assert batch["masks"].shape == (4, 3, 32, 32)
    assert batch["num_objects"].shape == (4,)
    assert len(batch["info"]["name"]) == 4 and len(batch["info"]["frame_ids"]) == 3


def test_fixed_seed_reproduces_samples(tmp_path: Path) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS"))
    a = VOSVideoDataset(records, sampler(), fixed_seed=3)[1]
    b = VOSVideoDataset(records, sampler(), fixed_seed=3)[1]
    torch.testing.assert_close(a["frames"], b["frames"])
    assert torch.equal(a["masks"], b["masks"]) and a["info"] == b["info"]


class _SkipProbe(torch.utils.data.Dataset):
    """Reports the maximum skip its sampler sees inside a DataLoader worker."""

    def __init__(self) -> None:
        self.sampler = sampler(augment=False)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> int:
        return self.sampler.max_skip


def test_set_max_skip_reaches_running_workers() -> None:
    probe = _SkipProbe()
    loader = DataLoader(probe, batch_size=None, num_workers=1, persistent_workers=True)
    assert list(loader) == [5, 5, 5]
    probe.sampler.set_max_skip(12)  # the worker process keeps its copy of the dataset
    assert list(loader) == [12, 12, 12]


def test_skip_divisor_per_dataset_for_mixed_sources() -> None:
    mixed = sampler(max_skip=15, skip_divisor={"davis": 1, "ytvos": 5, "ovis": 5})
    assert (mixed.max_gap("davis"), mixed.max_gap("ytvos"), mixed.max_gap("other")) == (15, 3, 15)
    mixed.set_max_skip(5)
    assert mixed.max_gap("ytvos") == 1
    with pytest.raises(ValueError):
        sampler(skip_divisor=0)
    with pytest.raises(ValueError):
        mixed.set_max_skip(0)
