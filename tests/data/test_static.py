"""Static-stage pseudo-videos from image + mask folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from deva.data.sample import denormalise_frames
from deva.data.static import StaticPseudoVideoDataset, scan_image_pairs


def write_pair(folder: Path, stem: str, seed: int, size: tuple[int, int] = (90, 120)) -> None:
    """A textured image with a bright disc; the mask is 0/255 with anti-aliased grey edges."""
    rng = np.random.default_rng(seed)
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    distance = np.hypot(ys - cy, xs - cx)
    radius = 0.3 * min(height, width)
    mask = np.clip((radius + 1 - distance) * 127.5, 0, 255).astype(np.uint8)  # soft edge
    image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
    image[mask >= 128] = (230, 200, 40)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{stem}.jpg", quality=95)
    Image.fromarray(mask, mode="L").save(folder / f"{stem}.png")


def make_flat(root: Path, count: int = 3) -> Path:
    for i in range(count):
        write_pair(root, f"img_{i}", seed=i)
    return root


def make_fss(root: Path) -> Path:
    for c, cls in enumerate(("apple", "zebra")):
        for n in range(1, 3):
            write_pair(root / cls, str(n), seed=10 * c + n)
    return root


def test_layouts_are_detected(tmp_path: Path) -> None:
    flat = scan_image_pairs(make_flat(tmp_path / "DUTS"))
    assert [r.name for r in flat] == ["DUTS/img_0", "DUTS/img_1", "DUTS/img_2"]
    fss = scan_image_pairs(make_fss(tmp_path / "fss"))
    assert [r.name for r in fss] == ["fss/apple/1", "fss/apple/2", "fss/zebra/1", "fss/zebra/2"]
    assert all(r.binary_masks and len(r) == 1 for r in flat + fss)


def test_unpaired_files_are_ignored(tmp_path: Path, caplog) -> None:
    root = make_flat(tmp_path / "ecssd", count=2)
    (root / "img_1.png").unlink()
    with caplog.at_level("WARNING"):
        records = scan_image_pairs(root)
    assert [r.name for r in records] == ["ecssd/img_0"]
    assert "without a partner" in caplog.text


def test_missing_root_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        StaticPseudoVideoDataset([tmp_path / "absent"])
    assert "absent" in str(error.value) and "\n" not in str(error.value)


def test_pseudo_videos_have_three_different_frames(tmp_path: Path) -> None:
    dataset = StaticPseudoVideoDataset(
        [make_flat(tmp_path / "DUTS"), make_fss(tmp_path / "fss")], crop_size=64
    )
    assert len(dataset) == 7
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["frames"].shape == (3, 3, 64, 64)
        assert sample["frames"].dtype == torch.float32
        assert sample["masks"].shape == (3, 64, 64) and sample["masks"].dtype == torch.int64
        assert sample["num_objects"] == 1
        assert set(sample["masks"].unique().tolist()) <= {0, 1}
        assert sample["masks"][0].sum() > 0
        assert sample["info"]["frame_ids"] == [0, 0, 0]
        frames, masks = sample["frames"], sample["masks"]
        assert not torch.equal(masks[0], masks[1]) or not torch.equal(masks[1], masks[2])
        assert (frames[0] - frames[1]).abs().mean() > 0.01
        assert (frames[1] - frames[2]).abs().mean() > 0.01


def test_object_mask_is_binarised_at_128_and_aligned(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "DUTS", count=1)
    dataset = StaticPseudoVideoDataset([root], crop_size=90, augment=False, fixed_seed=0)
    sample = dataset[0]
    # no augmentation: three identical frames, the mask is the >= 128 part of the PNG
    assert torch.equal(sample["frames"][0], sample["frames"][2])
    mask = np.asarray(Image.open(root / "img_0.png"))
    expected = (mask >= 128)[:, 15:105]  # shorter side 90 → centre crop of the width
    assert (sample["masks"][0].numpy() == expected).mean() > 0.999
    rgb = denormalise_frames(sample["frames"][0]).permute(1, 2, 0).numpy()
    inside = rgb[sample["masks"][0].numpy() == 1]
    assert inside[:, 0].mean() > 0.8  # the bright (yellow) disc sits under the mask


def test_default_collate_batches_static_samples(tmp_path: Path) -> None:
    dataset = StaticPseudoVideoDataset([make_flat(tmp_path / "DUTS", count=4)], crop_size=32)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["frames"].shape == (2, 3, 3, 32, 32)
    assert batch["masks"].shape == (2, 3, 32, 32)
    assert batch["num_objects"].tolist() == [1, 1]


def test_fixed_seed_reproduces_pseudo_videos(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "DUTS", count=2)
    a = StaticPseudoVideoDataset([root], crop_size=48, fixed_seed=5)[1]
    b = StaticPseudoVideoDataset([root], crop_size=48, fixed_seed=5)[1]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])


def test_datamodule_static_stage(tmp_path: Path) -> None:
    from deva.data.datamodule import VOSDataModule

    module = VOSDataModule(
        stage="static",
        roots={"duts": make_flat(tmp_path / "DUTS", count=4)},
        batch_size=2,
        num_workers=0,
        crop_size=32,
        pin_memory=False,
    )
    batches = list(module.train_dataloader())
    assert len(batches) == 2
    assert batches[0]["frames"].shape == (2, 3, 3, 32, 32)
    module.set_max_skip(10)  # no frame gaps in pseudo-videos: accepted and ignored
