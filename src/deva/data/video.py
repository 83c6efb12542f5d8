"""Video-stage training data: DAVIS-2017, YouTube-VOS-2019, OVIS-VOS, MOSE, BURST and your
own videos.

Layouts (see ``datasets/README.md``):

- DAVIS-2017: ``<root>/JPEGImages/480p/<seq>/*.jpg``, ``<root>/Annotations/480p/<seq>/*.png``,
  sequence list ``<root>/ImageSets/2017/train.txt``;
- YouTube-VOS-2019 train, OVIS-VOS (``tools/convert_ovis.py``), MOSE train and BURST
  train-vos: ``<root>/JPEGImages/<vid>/*.jpg``, ``<root>/Annotations/<vid>/*.png``;
- generic (fine-tuning on your own videos): ``<root>/JPEGImages/<video>/*.jpg|png`` and
  ``<root>/Annotations/<video>/*.png`` (palette / grey index or RGB-encoded ids), any subset
  of the frames annotated.

Frames and masks are paired by file name; only annotated frames are used. For DAVIS,
YouTube-VOS and OVIS frame gaps are counted in annotated frames (YouTube-VOS annotates every
5th frame, hence its ``skip_divisor`` of 5); for the generic source they are counted in frames
of the folder, so sparse annotations keep their real spacing. A clip is ``num_frames``
frames with consecutive gaps of at most the current maximum skip, which follows the curriculum
:func:`max_skip_at` during training. Each source has its :class:`SourceOptions` (repeats in
the mix, gap divisor, object limit, video subset). The published recipe trains on a subset of
the YouTube-VOS videos (:data:`PUBLISHED_SUBSETS`, shipped in ``deva/data/subsets/``) and on
the DAVIS-2017 train split.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from deva.data.augment import ResizeCrop, VideoAugment
from deva.data.order import Draw
from deva.data.sample import (
    Sample,
    VideoRecord,
    draw_sample,
    load_image,
    load_mask,
    make_sample,
    select_objects,
)
from deva.data.video_folders import records_for

logger = logging.getLogger(__name__)

ClipTransform = Callable[
    [Sequence[np.ndarray], Sequence[np.ndarray], np.random.Generator],
    tuple[list[np.ndarray], list[np.ndarray]],
]


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """How one training source enters the video mix.

    ``repeats``: copies of the source in the mix (its weight); ``skip_divisor``: the
    curriculum's maximum gap is divided by it (``max(1, max_skip // skip_divisor)``), for
    folders that hold only every n-th raw frame; ``max_objects``: objects kept per clip
    (``None``: the stage's value); ``subset``: train only on the videos named in a text file
    (one name per line), ``published`` for the list the published recipe uses (YouTube-VOS),
    ``None`` for every video of the folder.
    """

    repeats: int = 1
    skip_divisor: int = 1
    max_objects: int | None = None
    subset: str | None = None

    def __post_init__(self) -> None:
        if self.repeats < 0 or self.skip_divisor < 1:
            raise ValueError(
                f"repeats must be ≥ 0 and skip_divisor ≥ 1, got {self.repeats} and "
                f"{self.skip_divisor}"
            )
        if self.max_objects is not None and self.max_objects < 1:
            raise ValueError(f"max_objects must be ≥ 1 or None, got {self.max_objects}")


#: The published video-stage mix (DAVIS ×5, YouTube-VOS ×1 on its published subset, OVIS ×3;
#: YouTube-VOS and OVIS folders hold every 5th raw frame), MOSE and BURST (×1, every 5th frame,
#: as later propagation models train on them) and the generic source (your videos, gaps in
#: folder frames). The training config states the same values (``configs/data/video.yaml``).
DEFAULT_SOURCES: dict[str, SourceOptions] = {
    "davis": SourceOptions(repeats=5, skip_divisor=1),
    "ytvos": SourceOptions(repeats=1, skip_divisor=5, subset="published"),
    "ovis": SourceOptions(repeats=3, skip_divisor=5),
    "mose": SourceOptions(repeats=1, skip_divisor=5),
    "burst": SourceOptions(repeats=1, skip_divisor=5),
    "generic": SourceOptions(repeats=1, skip_divisor=1),
}
DEFAULT_REPEATS: dict[str, int] = {k: v.repeats for k, v in DEFAULT_SOURCES.items()}
DEFAULT_SKIP_DIVISORS: dict[str, int] = {k: v.skip_divisor for k, v in DEFAULT_SOURCES.items()}


def max_skip_at(
    progress: float,
    *,
    values: Sequence[int] = (5, 10, 15, 5),
    boundaries: Sequence[float] = (0.1, 0.3, 0.8),
) -> int:
    """Maximum frame gap of the curriculum at a fraction ``progress`` ∈ [0, 1] of training.

    Default schedule: 5 until 10 %, 10 until 30 %, 15 until 80 %, then 5 again. Values
    outside [0, 1] are clamped (a resumed run may overshoot by a step).
    """
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"need one more value than boundaries, got {len(values)} and {len(boundaries)}"
        )
    if not np.isfinite(progress):
        raise ValueError(f"progress must be a finite fraction, got {progress}")
    progress = min(max(float(progress), 0.0), 1.0)
    for value, boundary in zip(values, boundaries):
        if progress < boundary:
            return int(value)
    return int(values[-1])


@dataclasses.dataclass(frozen=True)
class MaxSkipSchedule:
    """The curriculum as a function of the optimizer step (picklable: it travels with the
    training stream): :func:`max_skip_at` of ``step / total_steps``."""

    values: tuple[int, ...]
    boundaries: tuple[float, ...]
    total_steps: int

    def __call__(self, step: int) -> int:
        total = max(1, int(self.total_steps))
        return max_skip_at(step / total, values=self.values, boundaries=self.boundaries)


def sample_frame_indices(
    length: int,
    num_frames: int,
    max_gap: int,
    rng: np.random.Generator,
    *,
    reverse_p: float = 0.0,
) -> list[int]:
    """Pick ``num_frames`` increasing frame indices in ``[0, length)`` with gaps ≤ ``max_gap``.

    Gaps are drawn uniformly in ``[1, max_gap]`` and shrunk at random until the clip fits.
    Videos shorter than the clip repeat frames (sorted draws with replacement). With
    probability ``reverse_p`` the clip is played backwards.
    """
    if length < 1:
        raise ValueError("cannot sample a clip from a video without frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    if length < num_frames:
        indices = np.sort(rng.integers(0, length, size=num_frames))
    else:
        gaps = rng.integers(1, max(1, max_gap) + 1, size=num_frames - 1)
        excess = int(gaps.sum()) - (length - 1)
        while excess > 0:
            shrinkable = np.flatnonzero(gaps > 1)
            j = int(rng.choice(shrinkable))
            cut = min(excess, int(gaps[j]) - 1, int(rng.integers(1, gaps[j])))
            gaps[j] -= cut
            excess -= cut
        start = int(rng.integers(0, length - int(gaps.sum())))
        indices = start + np.concatenate([[0], np.cumsum(gaps)])
    result = [int(i) for i in indices]
    if reverse_p > 0 and rng.random() < reverse_p:
        result.reverse()
    return result


def sample_annotated_frames(
    positions: Sequence[int],
    num_frames: int,
    max_gap: int,
    rng: np.random.Generator,
    *,
    reverse_p: float = 0.0,
) -> list[int]:
    """Pick ``num_frames`` increasing indices into ``positions`` (the folder frame number of
    each annotated frame, increasing) whose folder frames lie at most ``max_gap`` apart.

    Each next frame is drawn uniformly among the annotated frames within ``max_gap`` folder
    frames of the current one that still leave room for the rest of the clip; where the next
    annotated frame is farther than ``max_gap``, it is taken (the closest there is). Fewer
    annotated frames than the clip: sorted draws with replacement. With probability
    ``reverse_p`` the clip is played backwards.
    """
    count = len(positions)
    if count < 1:
        raise ValueError("cannot sample a clip from a video without annotated frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    where = np.asarray(positions, dtype=np.int64)
    if count < num_frames:
        chosen = [int(i) for i in np.sort(rng.integers(0, count, size=num_frames))]
    else:
        chosen = [int(rng.integers(0, count - num_frames + 1))]
        for k in range(1, num_frames):
            current = chosen[-1]
            room = count - (num_frames - k)  # the last index that leaves room for the rest
            reach = int(np.searchsorted(where, where[current] + max(1, max_gap), "right")) - 1
            last = min(reach, room)
            chosen.append(
                current + 1 if last <= current else int(rng.integers(current + 1, last + 1))
            )
    if reverse_p > 0 and rng.random() < reverse_p:
        chosen.reverse()
    return chosen


def compact_ids(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Relabel the id maps of one clip to ``uint8`` labels ``1..n`` (0 stays background),
    the same id getting the same label in every frame.

    For masks with ids beyond 255 (RGB-encoded); there is no void label in them. A clip with
    more than 254 ids keeps the 254 smallest ids and drops the rest to background."""
    stack = np.stack([np.asarray(mask, dtype=np.int64) for mask in masks])
    ids = np.unique(stack)
    ids = ids[ids > 0]
    if ids.size == 0:
        return list(np.zeros(stack.shape, np.uint8))
    if ids.size > 254:
        logger.debug("clip with %d ids: keeping 254", ids.size)
        ids = ids[:254]
    labels = np.minimum(np.searchsorted(ids, stack), ids.size - 1)
    known = (ids[labels] == stack) & (stack > 0)
    return list(np.where(known, labels + 1, 0).astype(np.uint8))


class ClipSampler:
    """Draws one training clip from a video record (frames, augmentation, object choice).

    Used by the folder datasets and the shard reader alike. ``max_skip`` is kept in a
    shared-memory tensor so :meth:`set_max_skip` reaches DataLoader workers that are already
    running; the gap used is ``max(1, max_skip // divisor)``, where the divisor is
    ``skip_divisor`` or, if that is a mapping, looked up by the record's dataset. The gap counts
    annotated frames, or frames of the folder for records with ``meta["positions"]`` (the
    generic source, :func:`sample_annotated_frames`).
    """

    def __init__(
        self,
        *,
        num_frames: int = 8,
        max_objects: int = 3,
        max_skip: int = 5,
        skip_divisor: int | Mapping[str, int] = 1,
        augment: bool | ClipTransform = True,
        crop_size: int = 384,
        min_object_pixels: int = 100,
        clip_tries: int = 5,
        reverse_p: float = 0.5,
    ) -> None:
        divisors = (
            dict(skip_divisor) if isinstance(skip_divisor, Mapping) else {"": int(skip_divisor)}
        )
        if any(d < 1 for d in divisors.values()):
            raise ValueError(f"skip divisors must be ≥ 1, got {skip_divisor}")
        self.num_frames = num_frames
        self.max_objects = max_objects
        self.skip_divisors = divisors
        self.min_object_pixels = min_object_pixels
        self.clip_tries = clip_tries
        self.reverse_p = reverse_p
        if augment is True:
            self.augment: ClipTransform = VideoAugment(crop_size)
        elif augment is False:
            self.augment = ResizeCrop(crop_size)
        else:
            self.augment = augment
        self._max_skip = torch.zeros((), dtype=torch.int64).share_memory_()
        self.set_max_skip(max_skip)

    @property
    def max_skip(self) -> int:
        """The current maximum frame gap, in raw frames."""
        return int(self._max_skip.item())

    def set_max_skip(self, max_skip: int) -> None:
        """Change the maximum frame gap (seen by workers from their next sample on)."""
        if max_skip < 1:
            raise ValueError(f"max_skip must be ≥ 1, got {max_skip}")
        self._max_skip.fill_(int(max_skip))

    def max_gap(self, dataset: str | None = None, max_skip: int | None = None) -> int:
        """The maximum gap between sampled frames, in annotated frames, for ``max_skip`` raw
        frames (default: the current value).

        The divisor is looked up by the record's dataset (``record.meta["dataset"]``) when
        ``skip_divisor`` is a mapping (mixed shards), else the single divisor applies.
        """
        divisor = self.skip_divisors.get(dataset or "", self.skip_divisors.get("", 1))
        raw = self.max_skip if max_skip is None else int(max_skip)
        return max(1, raw // divisor)

    def sample(
        self, record: VideoRecord, rng: np.random.Generator, *, max_skip: int | None = None
    ) -> Sample | None:
        """A clip sample from ``record``, or ``None`` after ``clip_tries`` clips without objects.

        ``max_skip`` (raw frames) overrides the shared value: the training stream gives each
        sample the gap of its step, so the curriculum does not depend on prefetching."""
        if len(record) == 0:
            return None
        gap = self.max_gap(record.meta.get("dataset"), max_skip)
        positions = record.meta.get("positions")
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for _ in range(self.clip_tries):
            if positions is not None:  # gaps in frames of the folder (generic source)
                indices = sample_annotated_frames(
                    positions, self.num_frames, gap, rng, reverse_p=self.reverse_p
                )
            else:
                indices = sample_frame_indices(
                    len(record), self.num_frames, gap, rng, reverse_p=self.reverse_p
                )
            for i in indices:
                if i not in cache:
                    cache[i] = (
                        load_image(record.images[i]),
                        load_mask(record.masks[i], binary=record.binary_masks),
                    )
            masks = [cache[i][1] for i in indices]
            if any(mask.dtype != np.uint8 for mask in masks):
                masks = compact_ids(masks)
            frames, masks = self.augment([cache[i][0] for i in indices], masks, rng)
            labels, count = select_objects(
                masks, rng, max_objects=self.max_objects, min_pixels=self.min_object_pixels
            )
            if count > 0:
                return make_sample(frames, labels, count, record.name, indices)
        logger.debug(
            "no object of ≥ %d px in %d clips of %s",
            self.min_object_pixels,
            self.clip_tries,
            record.name,
        )
        return None


class VOSVideoDataset(Dataset):
    """Map-style dataset: item ``i`` is a clip sample drawn from video ``i``.

    When the video yields no clip with a large-enough object, other videos are tried at
    random (up to ``max_tries``) so a sample is always returned. ``fixed_seed`` (tests,
    debugging) makes every video always yield the same sample; leave it ``None`` to train.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        sampler: ClipSampler,
        *,
        fixed_seed: int | None = None,
        max_tries: int = 50,
        name: str = "vos",
    ) -> None:
        if not records:
            raise ValueError(f"{name}: no videos to sample from")
        self.records = list(records)
        self.sampler = sampler
        self.fixed_seed = fixed_seed
        self.max_tries = max_tries
        self.name = name
        short = sum(1 for r in self.records if len(r) < sampler.num_frames)
        if short:
            logger.warning(
                "%s: %d of %d videos have fewer than %d annotated frames; their clips repeat "
                "frames",
                name,
                short,
                len(self.records),
                sampler.num_frames,
            )

    def __len__(self) -> int:
        return len(self.records)

    def set_max_skip(self, max_skip: int) -> None:
        """Set the maximum frame gap of the curriculum (raw frames)."""
        self.sampler.set_max_skip(max_skip)

    def __getitem__(self, index: int | Draw) -> Sample:
        return draw_sample(
            self.records,
            self.sampler,
            index,
            fixed_seed=self.fixed_seed,
            max_tries=self.max_tries,
            what=self.name,
        )


class VideoMix(ConcatDataset):
    """Concatenation of VOS datasets with repeats; forwards :meth:`set_max_skip` to all."""

    def __init__(self, parts: Mapping[str, VOSVideoDataset], repeats: Mapping[str, int]) -> None:
        datasets: list[Dataset] = []
        for key, dataset in parts.items():
            datasets += [dataset] * int(repeats.get(key, 1))
        if not datasets:
            raise ValueError("the video mix is empty: give at least one root with repeats ≥ 1")
        super().__init__(datasets)
        self.parts = dict(parts)

    def __getitem__(self, index: int | Draw) -> Sample:  # type: ignore[override]
        if not isinstance(index, Draw):
            return super().__getitem__(index)
        if not 0 <= index.index < len(self):
            raise IndexError(f"item {index.index} of a mix of {len(self)}")
        part = bisect.bisect_right(self.cumulative_sizes, index.index)
        offset = self.cumulative_sizes[part - 1] if part > 0 else 0
        return self.datasets[part][dataclasses.replace(index, index=index.index - offset)]

    def set_max_skip(self, max_skip: int) -> None:
        """Set the maximum frame gap (raw frames) of every dataset in the mix."""
        for dataset in self.parts.values():
            dataset.set_max_skip(max_skip)


def build_video_mix(
    roots: Mapping[str, str | Path | Sequence[str | Path]],
    *,
    sources: Mapping[str, SourceOptions] | None = None,
    num_frames: int = 8,
    crop_size: int = 384,
    max_objects: int = 3,
    max_skip: int = 5,
    augment: bool = True,
    min_object_pixels: int = 100,
    fixed_seed: int | None = None,
) -> VideoMix:
    """The video-stage training set: by default DAVIS ×5, YouTube-VOS ×1, OVIS ×3, MOSE ×1,
    BURST ×1, generic ×1.

    ``roots`` maps source names (:data:`DEFAULT_SOURCES`) to dataset roots (generic: one
    folder or a list); absent keys are left out of the mix. ``sources`` overrides the
    :data:`DEFAULT_SOURCES` options of a source (repeats, gap divisor, object limit, subset).
    Each source gets its own :class:`ClipSampler`.
    """
    options = {**DEFAULT_SOURCES, **dict(sources or {})}
    parts = {}
    for key, root in roots.items():
        source = options.get(key, SourceOptions())
        records = records_for(key, root, subset=source.subset)
        sampler = ClipSampler(
            num_frames=num_frames,
            max_objects=source.max_objects or max_objects,
            max_skip=max_skip,
            skip_divisor=source.skip_divisor,
            augment=augment,
            crop_size=crop_size,
            min_object_pixels=min_object_pixels,
        )
        parts[key] = VOSVideoDataset(records, sampler, fixed_seed=fixed_seed, name=key)
        logger.info(
            "%s: %d videos from %s, repeated ×%d, maximum gap ÷%d, ≤ %d objects",
            key,
            len(records),
            root,
            source.repeats,
            source.skip_divisor,
            sampler.max_objects,
        )
    return VideoMix(parts, {key: options.get(key, SourceOptions()).repeats for key in parts})
