"""Lightning data module for propagation training (static and video stages).

Training data come from folders (:mod:`deva.data.static`, :mod:`deva.data.video`), from
webdataset shards (:mod:`deva.data.shards`), or from any ready-made dataset (e.g. the
synthetic videos). The curriculum's maximum frame gap reaches the datasets through
:meth:`VOSDataModule.set_max_skip`; the training code calls it with
:func:`deva.data.video.max_skip_at`.

The training loader is a :class:`~deva.data.order.ResumableLoader`: the sample at each step,
rank and batch slot is a function of ``seed`` and of that place (:mod:`deva.data.order`),
the curriculum's gap one of the step (:meth:`VOSDataModule.set_gap_schedule`), and the
checkpoint holds the position, so a resumed run continues the same stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, IterableDataset

from deva.data.order import GapSchedule, ResumableLoader, StepSampler
from deva.data.shards import ShardClipDataset
from deva.data.static import PseudoVideoSampler, StaticPseudoVideoDataset
from deva.data.video import DEFAULT_SOURCES, ClipSampler, SourceOptions, build_video_mix

logger = logging.getLogger(__name__)

Stage = Literal["static", "video"]
DEFAULT_FRAMES: dict[str, int] = {"static": 3, "video": 8}


class VOSDataModule(LightningDataModule):
    """Training loaders for the static or video stage.

    Exactly one source is used, in this order: ``dataset`` (a ready-made dataset),
    ``shard_urls`` (webdataset shards, streamed and split over ranks and workers), or
    ``roots`` (folders: for ``static`` every value is an image-pair folder; for ``video`` the
    keys ``davis`` / ``ytvos`` / ``ovis`` / ``generic`` name the dataset roots, generic taking
    a folder or a list of folders).

    Args:
        stage: ``static`` (3-frame pseudo-videos) or ``video`` (8-frame clips).
        batch_size: samples per device and step (global batch = this × devices).
        num_frames: clip length; default 3 (static) or 8 (video).
        max_skip: initial maximum frame gap (video stage).
        sources: per-source options of the video mix (repeats, frame-gap divisor, object
            limit), over :data:`~deva.data.video.DEFAULT_SOURCES` (DAVIS ×5, YouTube-VOS ×1
            ÷5, OVIS ×3 ÷5, generic ×1). Shards use the gap divisors, by the dataset name each
            sample carries.
        static_repeats: copies of each static root (by its name in ``roots``) in the mix;
            absent names count once.
        samples_per_epoch: per rank, for shards (required with shards: it keeps DDP ranks in
            step); rounded up so every worker yields whole batches and every epoch whole
            optimizer steps.
        augment: ``False`` gives deterministic resize + centre crop (debugging).
        fixed_seed: every video always yields the same sample (tests); ``None`` to train.
        seed: the training stream's seed (sample order and per-sample randomness).
    """

    def __init__(
        self,
        *,
        stage: Stage = "video",
        roots: Mapping[str, str | Path] | None = None,
        shard_urls: str | Sequence[str] | None = None,
        dataset: Dataset | None = None,
        batch_size: int = 4,
        num_workers: int = 4,
        crop_size: int = 384,
        num_frames: int | None = None,
        max_objects: int = 3,
        max_skip: int = 5,
        sources: Mapping[str, SourceOptions] | None = None,
        static_repeats: Mapping[str, int] | None = None,
        samples_per_epoch: int | None = None,
        shuffle_buffer: int = 8,
        min_object_pixels: int = 100,
        augment: bool = True,
        fixed_seed: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if stage not in DEFAULT_FRAMES:
            raise ValueError(f"stage must be 'static' or 'video', got {stage!r}")
        if dataset is None and shard_urls is None and not roots:
            raise ValueError("give training data: roots=..., shard_urls=... or dataset=...")
        if shard_urls is not None and dataset is None and samples_per_epoch is None:
            raise ValueError("shards need samples_per_epoch (per rank) so DDP ranks stay in step")
        self.stage = stage
        self.roots = dict(roots or {})
        self.shard_urls = shard_urls
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.crop_size = crop_size
        self.num_frames = num_frames or DEFAULT_FRAMES[stage]
        self.max_objects = max_objects
        self.sources = {**DEFAULT_SOURCES, **dict(sources or {})}
        self.static_repeats = dict(static_repeats or {})
        self.samples_per_epoch = samples_per_epoch
        self.shuffle_buffer = shuffle_buffer
        self.min_object_pixels = min_object_pixels
        self.augment = augment
        self.fixed_seed = fixed_seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self._max_skip = max_skip
        self.seed = int(seed)
        self.gap_schedule: GapSchedule | None = None
        self.train_dataset: Dataset | None = dataset

    # -- curriculum -------------------------------------------------------------------------

    @property
    def max_skip(self) -> int:
        """The maximum frame gap currently asked for."""
        return self._max_skip

    def set_max_skip(self, max_skip: int) -> None:
        """Set the curriculum's maximum frame gap; reaches running workers (shared memory).
        Static pseudo-videos have no frame gap: there it is only remembered."""
        self._max_skip = int(max_skip)
        if self.stage == "static":
            return
        setter = getattr(self.train_dataset, "set_max_skip", None)
        if setter is not None:
            setter(self._max_skip)

    def set_gap_schedule(self, schedule: GapSchedule | None) -> None:
        """The curriculum as a function of the step: each sample of the training stream
        gets the gap of its own step (exact on resume, independent of prefetching)."""
        self.gap_schedule = schedule

    # -- building ---------------------------------------------------------------------------

    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None, None
        return trainer.global_rank, trainer.world_size

    def _accumulate(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "accumulate_grad_batches", 1) or 1)

    def position(self) -> int:
        """Micro-batches this rank has trained on: optimizer steps × gradient accumulation
        (what the training stream resumes from)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.global_step) * self._accumulate()

    def _samples_per_rank(self) -> int:
        assert self.samples_per_epoch is not None
        # whole batches for every worker and whole optimizer steps (see StepSampler)
        chunk = max(1, self.num_workers) * self.batch_size * self._accumulate()
        return math.ceil(self.samples_per_epoch / chunk) * chunk

    def _build(self) -> Dataset:
        if self.shard_urls is not None:
            if self.stage == "static":
                sampler = PseudoVideoSampler(
                    num_frames=self.num_frames,
                    crop_size=self.crop_size,
                    augment=self.augment,
                    min_object_pixels=self.min_object_pixels,
                )
            else:
                sampler = ClipSampler(
                    num_frames=self.num_frames,
                    max_objects=self.max_objects,
                    max_skip=self._max_skip,
                    skip_divisor={k: v.skip_divisor for k, v in self.sources.items()},
                    augment=self.augment,
                    crop_size=self.crop_size,
                    min_object_pixels=self.min_object_pixels,
                )
            rank, world = self._rank_world()
            return ShardClipDataset(
                self.shard_urls,
                sampler,
                samples_per_epoch=self._samples_per_rank(),
                rank=rank,
                world_size=world,
                shuffle_buffer=self.shuffle_buffer,
                fixed_seed=self.fixed_seed,
                seed=self.seed,
                batch_size=self.batch_size,
                accumulate=self._accumulate(),
                gap_schedule=self.gap_schedule,
            )
        if self.stage == "static":
            return StaticPseudoVideoDataset(
                list(self.roots.values()),
                repeats=[int(self.static_repeats.get(name, 1)) for name in self.roots],
                num_frames=self.num_frames,
                crop_size=self.crop_size,
                augment=self.augment,
                min_object_pixels=self.min_object_pixels,
                fixed_seed=self.fixed_seed,
            )
        unknown = set(self.roots) - set(self.sources)
        if unknown:
            raise ValueError(
                f"unknown video dataset(s) {sorted(unknown)}; use {', '.join(self.sources)}"
            )
        return build_video_mix(
            self.roots,
            sources=self.sources,
            num_frames=self.num_frames,
            crop_size=self.crop_size,
            max_objects=self.max_objects,
            max_skip=self._max_skip,
            augment=self.augment,
            min_object_pixels=self.min_object_pixels,
            fixed_seed=self.fixed_seed,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the training dataset once (folders are scanned here, on every rank)."""
        if self.train_dataset is None:
            self.train_dataset = self._build()
            self.set_max_skip(self._max_skip)

    def train_dataloader(self) -> DataLoader:
        """The training loader: a resumable stream (see :mod:`deva.data.order`), split over
        the DDP ranks here (the trainer must not add a distributed sampler)."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        dataset = self.train_dataset
        rank, world = self._rank_world()
        common = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "drop_last": True,
            "position": self.position,
            "seed": self.seed,
        }
        if isinstance(dataset, IterableDataset):
            if isinstance(dataset, ShardClipDataset):
                dataset.gap_schedule = self.gap_schedule
                dataset.accumulate = self._accumulate()
            # workers copy the dataset when an epoch starts: persistent ones would not see
            # where the next epoch begins
            loader = ResumableLoader(dataset, persistent_workers=False, **common)
        else:
            sampler = StepSampler(
                len(dataset),  # type: ignore[arg-type]
                batch_size=self.batch_size,
                seed=self.seed,
                rank=rank or 0,
                world_size=world or 1,
                accumulate=self._accumulate(),
                gap_schedule=self.gap_schedule,
            )
            loader = ResumableLoader(
                dataset, sampler=sampler, persistent_workers=self.persistent_workers, **common
            )
        loader.begin_at(self.position())  # the trainer's restored step (checkpoints say too)
        return loader
