"""Webdataset shards: round trip to the folder samples, rank/worker splitting, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from deva.data.datamodule import VOSDataModule
from deva.data.sample import VideoRecord, load_image, load_mask, read_bytes
from deva.data.shards import (
    ShardClipDataset,
    expand_urls,
    records_from_arrays,
    shard_sample_to_record,
    write_shards,
)
from deva.data.static import PseudoVideoSampler, StaticPseudoVideoDataset, scan_image_pairs
from deva.data.video import ClipSampler, VOSVideoDataset
from deva.data.video_folders import davis_records
from deva.io.masks import write_index_png
from tests.helpers import load_tool, results_in

COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def make_davis(root: Path, names: tuple[str, ...] = ("bear", "car", "dog")) -> Path:
    for v, name in enumerate(names):
        for t in range(6 + v):
            mask = np.zeros((40, 56), np.uint8)
            mask[5:20, 4 + 2 * t : 20 + 2 * t] = 1
            mask[22:36, 30 - t : 50 - t] = 2
            frame = COLOURS[mask]
            (root / "JPEGImages/480p" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(root / "JPEGImages/480p" / name / f"{t:05d}.jpg")
            write_index_png(root / "Annotations/480p" / name / f"{t:05d}.png", mask)
    (root / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/2017/train.txt").write_text("\n".join(names) + "\n")
    return root


def make_static(root: Path, count: int = 3) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        mask = np.zeros((48, 64), np.uint8)
        mask[10 + i : 40, 8 : 40 + i] = 255
        Image.fromarray(COLOURS[(mask > 0).astype(int)]).save(root / f"{i}.jpg")
        Image.fromarray(mask, mode="L").save(root / f"{i}.png")
    return root


def fake_records(count: int) -> list[VideoRecord]:
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    masks = np.ones((2, 8, 8), np.uint8)
    return list(records_from_arrays([(frames, masks)] * count, prefix="v"))


class NameSampler:
    """Test double: the sample is the video's name (no decoding)."""

    def sample(self, record: VideoRecord, rng: np.random.Generator) -> dict:
        return {"name": record.name}


def clip_sampler(augment: bool) -> ClipSampler:
    return ClipSampler(num_frames=3, crop_size=32, augment=augment, min_object_pixels=4)


def assert_same_sample(a: dict, b: dict) -> None:
    assert a["info"] == b["info"] and a["num_objects"] == b["num_objects"]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])


# -- format -----------------------------------------------------------------------------------


def test_records_round_trip_through_a_shard(tmp_path: Path) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS"))
    paths = write_shards(records, tmp_path / "shards", prefix="davis", samples_per_shard=2)
    assert [p.name for p in paths] == ["davis-000000.tar", "davis-000001.tar"]
    loaded = list(ShardClipDataset(tmp_path / "shards", NameSampler()).records(expand_urls(paths)))
    assert [r.name for r in loaded] == [r.name for r in records]
    for original, copy in zip(records, loaded):
        assert copy.frame_names == original.frame_names
        assert [read_bytes(x) for x in copy.images] == [read_bytes(x) for x in original.images]
        assert [read_bytes(x) for x in copy.masks] == [read_bytes(x) for x in original.masks]
        np.testing.assert_array_equal(load_mask(copy.masks[3]), load_mask(original.masks[3]))


def test_arrays_are_encoded_losslessly_for_masks(tmp_path: Path) -> None:
    ramp = np.linspace(0, 250, 24, dtype=np.float32)
    frames = np.broadcast_to(ramp[None, None, :, None], (3, 16, 24, 3)).astype(np.uint8)
    masks = np.random.default_rng(1).integers(0, 4, (3, 16, 24)).astype(np.uint8)
    write_shards(records_from_arrays([(frames, masks)]), tmp_path, samples_per_shard=5)
    (record,) = ShardClipDataset(tmp_path, NameSampler()).records(expand_urls(tmp_path))
    assert record.name == "video_00000" and len(record) == 3
    np.testing.assert_array_equal(np.stack([load_mask(m) for m in record.masks]), masks)
    decoded = np.stack([load_image(f) for f in record.images]).astype(int)
    assert np.abs(decoded - frames).mean() < 20  # JPEG, lossy but close


def test_empty_record_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no records"):
        write_shards([], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tar"))


def test_missing_frame_in_shard_sample_is_reported() -> None:
    sample = {"__key__": "00000000", "json": b'{"name": "x", "frames": ["a"]}'}
    with pytest.raises(ValueError, match="misses frame 0"):
        shard_sample_to_record(sample)


# -- same samples as the folders ----------------------------------------------------------------


@pytest.mark.parametrize("augment", [False, True])
def test_video_shards_give_the_folder_samples(tmp_path: Path, augment: bool) -> None:
    records = davis_records(make_davis(tmp_path / "DAVIS"))
    write_shards(records, tmp_path / "shards", samples_per_shard=2)
    folder = VOSVideoDataset(records, clip_sampler(augment), fixed_seed=11)
    shards = ShardClipDataset(
        tmp_path / "shards", clip_sampler(augment), fixed_seed=11, shuffle_buffer=3
    )
    streamed = {s["info"]["name"]: s for s in shards}
    assert sorted(streamed) == ["bear", "car", "dog"]
    for index, record in enumerate(records):
        assert_same_sample(folder[index], streamed[record.name])


def test_static_shards_give_the_folder_samples(tmp_path: Path) -> None:
    root = make_static(tmp_path / "ecssd")
    write_shards(scan_image_pairs(root), tmp_path / "shards", samples_per_shard=2)
    folder = StaticPseudoVideoDataset([root], crop_size=32, fixed_seed=2)
    sampler = PseudoVideoSampler(crop_size=32)
    shards = ShardClipDataset(tmp_path / "shards", sampler, fixed_seed=2)
    streamed = {s["info"]["name"]: s for s in shards}
    for index, record in enumerate(folder.records):
        assert_same_sample(folder[index], streamed[record.name])


# -- splitting over ranks and workers ---------------------------------------------------------


def names_for(urls: Path, rank: int, world: int, **kwargs) -> list[str]:
    dataset = ShardClipDataset(urls, NameSampler(), rank=rank, world_size=world, **kwargs)
    return [s["name"] for s in dataset]


@pytest.mark.parametrize("world", [1, 2, 3, 5, 9])
def test_rank_split_is_disjoint_and_complete(tmp_path: Path, world: int) -> None:
    write_shards(fake_records(7), tmp_path, samples_per_shard=2)  # 4 uneven shards
    parts = [names_for(tmp_path, rank, world) for rank in range(world)]
    everything = [name for part in parts for name in part]
    assert len(everything) == len(set(everything)) == 7  # disjoint
    assert set(everything) == {f"v_{i:05d}" for i in range(7)}  # complete


def test_fixed_samples_per_rank_with_uneven_shards(tmp_path: Path) -> None:
    write_shards(fake_records(7), tmp_path, samples_per_shard=2)
    counts = [len(names_for(tmp_path, rank, 3, samples_per_epoch=6)) for rank in range(3)]
    assert counts == [6, 6, 6]
    dataset = ShardClipDataset(tmp_path, NameSampler(), samples_per_epoch=6, rank=0, world_size=3)
    assert len(dataset) == 6


def test_workers_split_shards_and_keep_rank_quota(tmp_path: Path) -> None:
    write_shards(fake_records(9), tmp_path, samples_per_shard=1)  # 9 shards
    per_rank = []
    for rank in range(2):
        once = ShardClipDataset(tmp_path, NameSampler(), rank=rank, world_size=2, shuffle=False)
        loader = DataLoader(once, batch_size=None, num_workers=2)
        per_rank.append([s["name"] for s in loader])
    everything = [n for part in per_rank for n in part]
    assert sorted(everything) == sorted({f"v_{i:05d}" for i in range(9)})
    assert len(everything) == 9
    quota = ShardClipDataset(tmp_path, NameSampler(), rank=1, world_size=2, samples_per_epoch=10)
    batches = list(DataLoader(quota, batch_size=5, num_workers=2))
    assert [len(b["name"]) for b in batches] == [5, 5]


def test_set_max_skip_reaches_the_shard_sampler(tmp_path: Path) -> None:
    write_shards(fake_records(2), tmp_path)
    dataset = ShardClipDataset(tmp_path, clip_sampler(False))
    dataset.set_max_skip(15)
    assert dataset.sampler.max_skip == 15
    with pytest.raises(TypeError):
        ShardClipDataset(tmp_path, NameSampler()).set_max_skip(3)


# -- data module and command line -----------------------------------------------------------------


def test_datamodule_reads_folders_and_shards(tmp_path: Path) -> None:
    root = make_davis(tmp_path / "DAVIS")
    common = dict(
        stage="video", batch_size=2, num_workers=0, crop_size=32, num_frames=3,
        min_object_pixels=4, pin_memory=False,
    )  # fmt: skip
    folders = VOSDataModule(roots={"davis": root}, **common)
    folders.setup("fit")
    assert len(folders.train_dataset) == 15  # DAVIS ×5
    batch = next(iter(folders.train_dataloader()))
    assert batch["frames"].shape == (2, 3, 3, 32, 32) and batch["masks"].shape == (2, 3, 32, 32)
    folders.set_max_skip(10)
    assert folders.train_dataset.parts["davis"].sampler.max_skip == 10

    write_shards(davis_records(root), tmp_path / "shards", samples_per_shard=1)
    shards = VOSDataModule(shard_urls=str(tmp_path / "shards"), samples_per_epoch=3, **common)
    loader = shards.train_dataloader()
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["frames"].shape == (2, 3, 3, 32, 32)
    shards.set_max_skip(15)
    assert shards.train_dataset.sampler.max_skip == 15
    with pytest.raises(ValueError, match="samples_per_epoch"):
        VOSDataModule(shard_urls=str(tmp_path / "shards"), **common)


def test_make_shards_command_line(tmp_path: Path, capsys) -> None:
    tool = load_tool("make_shards")
    root = make_davis(tmp_path / "DAVIS")
    status = tool.main(
        ["dataset=davis", f"root={root}", f"output={tmp_path / 'out'}", "samples_per_shard=2"]
    )
    assert status == 0
    assert results_in(tmp_path / "out") == ["davis-000000.tar", "davis-000001.tar"]
    assert tool.main(["dataset=nope", f"output={tmp_path}"]) == 2
    assert tool.main(["dataset=ytvos", f"root={tmp_path / 'absent'}", f"output={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "dataset must be one of" in err and "absent" in err


def test_make_shards_synthetic(tmp_path: Path) -> None:
    pytest.importorskip("deva.data.synthetic")
    tool = load_tool("make_shards")
    status = tool.main(
        ["dataset=synthetic", "num_videos=2", "frames=4", "height=48", "width=64",
         f"output={tmp_path}"]
    )  # fmt: skip
    assert status == 0
    sampler = ClipSampler(num_frames=3, crop_size=32, augment=True, min_object_pixels=4)
    samples = list(ShardClipDataset(tmp_path, sampler, fixed_seed=0))
    assert sorted(s["info"]["name"] for s in samples) == ["video_000", "video_001"]
    assert all(1 <= s["num_objects"] <= 3 for s in samples)


def test_static_stage_from_shards_through_the_datamodule(tmp_path: Path) -> None:
    """``stage=static data=shards``: the pseudo-video sampler has no frame gap, and the data
    module must not ask it for one (it used to raise a TypeError at setup)."""
    from deva.config import compose
    from deva.config.builder.training import datamodule
    from deva.config.schema import TrainConfig, parse, parse_data

    root = make_static(tmp_path / "ecssd", count=4)
    write_shards(scan_image_pairs(root), tmp_path / "shards", samples_per_shard=2)
    config = parse(
        TrainConfig,
        compose(
            "train",
            [
                "stage=static",
                "data=shards",
                f"data.urls={tmp_path / 'shards'}",
                "data.samples_per_epoch=4",
                "data.num_workers=0",
                "data.pin_memory=false",
                "data.min_object_pixels=4",
                "stage.crop_size=32",
            ],
        ),
    )
    module = datamodule(parse_data(config.data), config.stage, batch_size=2, max_skip=5, seed=1)
    module.setup("fit")
    assert isinstance(module.train_dataset.sampler, PseudoVideoSampler)
    module.set_max_skip(10)  # what the curriculum callback would do: remembered, not forwarded
    assert module.max_skip == 10
    batches = list(module.train_dataloader())
    assert len(batches) == 2
    assert batches[0]["frames"].shape == (2, 3, 3, 32, 32)
    assert (batches[0]["num_objects"] == 1).all()
