"""The training stream is a function of the place: restarting at a step gives what a fresh
stream gives at that step (sampler, loader state, datasets, shards, curriculum)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deva.data.order import Draw, ResumableLoader, StepSampler
from deva.data.shards import ShardClipDataset, synthetic_records, write_shards
from deva.data.synthetic import SyntheticVideoConfig
from deva.data.synthetic_clips import SyntheticClipDataset
from deva.data.video import ClipSampler, MaxSkipSchedule
from deva.training.callbacks import MaxSkipCurriculum


def numbers(draws: list[Draw]) -> list[tuple[int, int, int | None]]:
    return [(d.index, d.number, d.max_skip) for d in draws]


def test_sampler_restarted_at_a_step_continues_the_fresh_order() -> None:
    def sampler() -> StepSampler:
        return StepSampler(7, batch_size=2, seed=3, gap_schedule=lambda step: 1 + step // 2)

    fresh = sampler()
    stream = [d for _ in range(5) for d in fresh]  # five epochs of 3 batches
    assert len(stream) == 30 and len(fresh) == 6
    for step in range(9):
        restarted = sampler()
        restarted.begin_at(step)
        rest = list(restarted) + list(restarted)  # the rest of its epoch, then the next one
        assert len(rest) == 2 * (3 - step % 3) + 6
        assert numbers(rest) == numbers(stream[2 * step :][: len(rest)])
        assert all(d.max_skip == 1 + (d.number // 2) // 2 for d in rest)


def test_sampler_order_covers_every_item_per_pass_and_splits_ranks() -> None:
    ranks = [StepSampler(8, batch_size=2, seed=0, rank=r, world_size=2) for r in range(2)]
    draws = [d for s in ranks for d in s]
    assert sorted(d.number for d in draws) == list(range(8))  # ranks never share a sample
    assert sorted(d.index for d in draws) == list(range(8))  # one pass = every item once
    other = StepSampler(8, batch_size=2, seed=1, world_size=2)
    assert [d.index for d in other] != [d.index for d in ranks[0]]  # the seed matters


class Echo(Dataset):
    """Item = what its draw says, plus one number from the draw's generator."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, draw: Draw) -> dict[str, Any]:
        return {"index": draw.index, "number": draw.number, "random": draw.rng().random()}


def loader(state: dict[str, int]) -> ResumableLoader:
    sampler = StepSampler(5, batch_size=2, seed=9)
    return ResumableLoader(
        Echo(), sampler=sampler, position=lambda: state["step"], batch_size=2, drop_last=True
    )


def test_loader_state_restarts_where_training_was() -> None:
    progress = {"step": 0}
    first = loader(progress)
    stream = [b for _ in range(3) for b in first]
    assert len(stream) == 6  # 2 batches an epoch
    progress["step"] = 3
    state = first.state_dict()
    assert state["position"] == 3 and state["batch_size"] == 2
    resumed = loader({"step": 3})
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert len(rest) == 3
    for got, want in zip(rest, stream[3:]):
        for key in ("index", "number", "random"):
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_a_draw_fixes_the_synthetic_sample_and_its_gap() -> None:
    data = SyntheticClipDataset(
        length=4, num_frames=3, crop_size=48, video_frames=10, height=64, width=64,
        min_object_pixels=10,
    )  # fmt: skip
    draw = Draw(index=1, number=17, seed=5, max_skip=1)
    a, b = data[draw], data[draw]
    torch.testing.assert_close(a["frames"], b["frames"], rtol=0, atol=0)
    assert torch.equal(a["masks"], b["masks"])
    gaps = np.abs(np.diff(a["info"]["frame_ids"]))
    assert gaps.max() <= 1  # the draw's gap, not the sampler's shared one (5)
    other = data[Draw(index=1, number=18, seed=5, max_skip=1)]
    assert not torch.equal(other["frames"], a["frames"])


def test_shard_stream_resumes_at_a_position(tmp_path: Path) -> None:
    config = SyntheticVideoConfig(num_frames=6, height=48, width=48)
    write_shards(synthetic_records(5, config=config), tmp_path / "shards", samples_per_shard=2)

    def dataset() -> ShardClipDataset:
        sampler = ClipSampler(num_frames=3, crop_size=32, min_object_pixels=5, augment=False)
        return ShardClipDataset(
            tmp_path / "shards", sampler, samples_per_epoch=6, batch_size=2, seed=4,
            rank=0, world_size=1, gap_schedule=lambda step: 1 + step % 3,
        )  # fmt: skip

    def signature(samples: list[dict[str, Any]]) -> list[tuple[str, tuple[int, ...], float]]:
        return [
            (s["info"]["name"], tuple(s["info"]["frame_ids"]), float(s["frames"].sum()))
            for s in samples
        ]

    fresh = dataset()
    stream = []
    for epoch in range(2):
        fresh.begin_at(3 * epoch)
        stream += signature(list(fresh))
    assert len(stream) == 12
    for position in (1, 2, 4):
        again = dataset()
        again.begin_at(position)
        rest = signature(list(again))
        assert rest == stream[2 * position :][: len(rest)]
        assert len(rest) == 2 * (3 - position % 3)


def test_curriculum_schedule_is_a_function_of_the_step() -> None:
    curriculum = MaxSkipCurriculum(values=[2, 3, 4, 2], boundaries=[0.1, 0.3, 0.8], total_steps=20)
    schedule = MaxSkipSchedule((2, 3, 4, 2), (0.1, 0.3, 0.8), 20)
    assert [schedule(s) for s in range(21)] == [curriculum.value_at(s, 20) for s in range(21)]


def test_epochs_hold_whole_optimizer_steps() -> None:
    """With gradient accumulation an epoch is rounded up to whole optimizer steps: Lightning
    steps at an epoch's end even mid-accumulation, which would desynchronise the position
    (optimizer steps × accumulation) that a resumed run starts from."""
    sampler = StepSampler(5, batch_size=2, seed=0, accumulate=4)
    assert sampler.batches_per_epoch == 4 and len(sampler) == 8
    draws = list(sampler)
    assert len(draws) == 8 and {d.index for d in draws} == set(range(5))
    assert StepSampler(5, batch_size=2, seed=0).batches_per_epoch == 2
