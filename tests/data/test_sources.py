"""Every stage from every source, through the training config and the data module: static from
folders and shards, video from each VOS layout, its shards and your own videos, fine-tuning
from folders and shards; the published subsets, the static mix, DDP-split shards."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deva.config import ConfigError, compose
from deva.config.builder.training import datamodule
from deva.config.schema import TrainConfig, parse, parse_data
from deva.data.shards import ShardClipDataset, write_shards
from deva.data.video import DEFAULT_SOURCES
from deva.data.video_folders import PUBLISHED_SUBSETS, generic_records, load_subset, records_for
from tests.data.test_generic import write_generic
from tests.data.test_shards import make_davis, make_static
from tests.data.test_vos import make_youtube

COMMON = [
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.persistent_workers=false",
    "data.min_object_pixels=4",
    "stage.crop_size=32",
    "stage.num_frames=3",
]


def module_for(overrides: list[str], *, rank: int | None = None, world: int | None = None):
    """The data module ``tools/train.py`` would build for ``overrides`` (batch 2 per device);
    ``rank`` / ``world`` stand in for a DDP trainer."""
    config = parse(TrainConfig, compose("train", [*overrides, *COMMON]))
    module = datamodule(parse_data(config.data), config.stage, batch_size=2, max_skip=5, seed=3)
    if rank is not None:
        module.trainer = SimpleNamespace(
            global_rank=rank, world_size=world, accumulate_grad_batches=1, global_step=0
        )
    module.setup("fit")
    return module


def first_batch(module) -> dict:
    batch = next(iter(module.train_dataloader()))
    assert batch["frames"].shape == (2, 3, 3, 32, 32)
    assert batch["masks"].shape == (2, 3, 32, 32)
    assert (batch["num_objects"] >= 1).all()
    return batch


def folders(tmp_path: Path) -> dict[str, Path]:
    """One small folder of every training layout."""
    listed = load_subset("ytvos", "published")[:2]
    return {
        "static": make_static(tmp_path / "ecssd", count=4),
        "davis": make_davis(tmp_path / "DAVIS"),
        "ytvos": make_youtube(tmp_path / "yt", videos=2, names=listed),
        "ovis": make_youtube(tmp_path / "ovis", videos=2),
        "mose": make_youtube(tmp_path / "mose", videos=2),
        "burst": make_youtube(tmp_path / "burst", videos=2),
        "generic": write_generic(tmp_path / "mine", {"a": 10, "b": 8}),
    }


@pytest.mark.parametrize(
    ("stage", "source"),
    [("static", "static"), ("video", "davis"), ("video", "ytvos"), ("video", "ovis"),
     ("video", "mose"), ("video", "burst"), ("video", "generic"), ("finetune", "generic")],
)  # fmt: skip
def test_every_stage_from_folders(tmp_path: Path, stage: str, source: str) -> None:
    roots = folders(tmp_path)
    if source == "static":
        data = ["data=static", f"data.roots=[{roots['static']}]"]
    else:
        data = ["data=video", f"data.roots.{source}={roots[source]}"]
    module = module_for([f"stage={stage}", *data])
    batch = first_batch(module)
    if stage == "static":
        assert (batch["num_objects"] == 1).all()
    else:
        assert list(module.train_dataset.parts) == [source]
        assert module.train_dataset.parts[source].sampler.skip_divisors[""] == (
            DEFAULT_SOURCES[source].skip_divisor
        )


@pytest.mark.parametrize(
    ("stage", "source"),
    [("static", "static"), ("video", "davis"), ("video", "mose"), ("video", "generic"),
     ("finetune", "generic")],
)  # fmt: skip
def test_every_stage_from_shards(tmp_path: Path, stage: str, source: str) -> None:
    from tests.helpers import load_tool

    roots = folders(tmp_path)
    tool = load_tool("make_shards")
    out = tmp_path / "shards"
    argv = [f"dataset={source}", f"root={roots[source]}", f"output={out}", "samples_per_shard=1"]
    assert tool.main(argv) == 0
    module = module_for(
        [f"stage={stage}", "data=shards", f"data.urls={out}", "data.samples_per_epoch=4"]
    )
    assert isinstance(module.train_dataset, ShardClipDataset)
    batch = first_batch(module)
    if stage == "static":
        assert (batch["num_objects"] == 1).all()


def test_generic_shards_keep_folder_positions(tmp_path: Path) -> None:
    from deva.data.shards import read_records

    root = write_generic(tmp_path / "mine", {"a": 10})
    write_shards(generic_records(root), tmp_path / "shards", samples_per_shard=1)
    (record,) = list(read_records(tmp_path / "shards"))
    assert record.meta == {"dataset": "generic", "positions": (0, 3, 6, 9)}


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_split_shards_through_the_datamodule(tmp_path: Path, world: int) -> None:
    """Each rank's module streams its own share of the videos; together they cover all."""
    root = make_davis(tmp_path / "DAVIS", names=tuple(f"v{i}" for i in range(6)))
    from deva.data.video_folders import davis_records

    write_shards(davis_records(root), tmp_path / "shards", samples_per_shard=1)
    seen = []
    for rank in range(world):
        module = module_for(
            ["stage=video", "data=shards", f"data.urls={tmp_path / 'shards'}",
             "data.samples_per_epoch=6", "data.shuffle_buffer=1"],
            rank=rank,
            world=world,
        )  # fmt: skip
        names = [name for batch in module.train_dataloader() for name in batch["info"]["name"]]
        assert len(names) == 6  # every rank yields the same count: DDP stays in step
        seen.append(set(names))
    for a in range(world):
        for b in range(a + 1, world):
            assert not seen[a] & seen[b]
    assert set().union(*seen) == {f"v{i}" for i in range(6)}


# -- the published recipe's lists and mixes ---------------------------------------------------


def test_published_youtube_subset_is_shipped() -> None:
    names = load_subset("ytvos", "published")
    assert len(names) == 3464 == len(set(names))
    assert all(re.fullmatch(r"[0-9a-f]{10}", name) for name in names)
    assert names == sorted(names)
    assert DEFAULT_SOURCES["ytvos"].subset == "published" and set(PUBLISHED_SUBSETS) == {"ytvos"}
    with pytest.raises(ValueError, match="no video list"):
        load_subset("ovis", "published")


def test_subset_options(tmp_path: Path) -> None:
    listed = load_subset("ytvos", "published")[:2]
    root = make_youtube(tmp_path / "yt", videos=3, names=[*listed, "ffffffffff0"])
    assert sorted(r.name for r in records_for("ytvos", root, subset="published")) == listed
    assert len(records_for("ytvos", root)) == 3  # null: every video
    mine = tmp_path / "mine.txt"
    mine.write_text("ffffffffff0\n\n")
    assert [r.name for r in records_for("ytvos", root, subset=str(mine))] == ["ffffffffff0"]
    with pytest.raises(FileNotFoundError, match="subset list not found"):
        records_for("ytvos", root, subset=str(tmp_path / "absent.txt"))
    other = make_youtube(tmp_path / "other", videos=1)
    with pytest.raises(ValueError, match="none of the 1 videos found is in the subset"):
        records_for("ytvos", other, subset="published")
    # through the config: the key exists per source and reaches the reader
    module = module_for(["stage=video", "data=video", f"data.roots.ytvos={root}",
                         "data.sources.ytvos.subset=null"])  # fmt: skip
    assert len(module.train_dataset.parts["ytvos"].records) == 3


def test_static_mix_repeats_big_and_hrsod_and_keeps_one_object(tmp_path: Path) -> None:
    make_static(tmp_path / "BIG", count=2)
    make_static(tmp_path / "ecssd", count=3)
    module = module_for(
        ["stage=static", "data=static", f"data.roots=[{tmp_path / 'BIG'},{tmp_path / 'ecssd'}]"]
    )
    assert len(module.train_dataset) == 2 * 5 + 3  # the published stage 0: BIG ×5
    named = module_for(
        ["stage=static", "data=static", f"data.roots=[{tmp_path / 'ecssd'}]",
         "+data.repeats.ECSSD=2"]
    )  # fmt: skip
    assert len(named.train_dataset) == 6
    with pytest.raises(ConfigError, match="static pseudo-videos hold one object"):
        module_for(["stage=static", "data=static", f"data.roots=[{tmp_path / 'ecssd'}]",
                    "stage.max_objects=3"])  # fmt: skip
    with pytest.raises(ConfigError, match="data.repeats.ecssd"):
        module_for(["stage=static", "data=static", f"data.roots=[{tmp_path / 'ecssd'}]",
                    "+data.repeats.ecssd=-1"])  # fmt: skip


def test_make_shards_subset_default_follows_training(tmp_path: Path) -> None:
    from deva.data.shards import read_records
    from tests.helpers import load_tool

    listed = load_subset("ytvos", "published")[:1]
    root = make_youtube(tmp_path / "yt", videos=2, names=[*listed, "0123456789"])
    tool = load_tool("make_shards")
    assert tool.main(["dataset=ytvos", f"root={root}", f"output={tmp_path / 'a'}"]) == 0
    assert [r.name for r in read_records(tmp_path / "a")] == listed
    argv = ["dataset=ytvos", f"root={root}", f"output={tmp_path / 'b'}", "subset=all"]
    assert tool.main(argv) == 0
    assert len(list(read_records(tmp_path / "b"))) == 2


def test_mose_frames_keep_their_gaps(tmp_path: Path) -> None:
    """MOSE and BURST folders hold every 5th raw frame: the curriculum's gap is divided by 5."""
    root = make_youtube(tmp_path / "mose", videos=1, frames=60)
    module = module_for(["stage=video", "data=video", f"data.roots.mose={root}"])
    module.set_max_skip(15)
    assert module.train_dataset.parts["mose"].sampler.max_gap() == 3
    gaps = np.diff(module.train_dataset[0]["info"]["frame_ids"])
    assert np.abs(gaps).max() <= 3
