"""Training clips drawn from synthetic videos generated on the fly.

:class:`SyntheticClipDataset` generates a fresh synthetic video (:mod:`deva.data.synthetic`)
for every sample and draws a clip from it with the same :class:`~deva.data.video.ClipSampler`
(gap curriculum, clip-consistent augmentation, object choice) as the real video datasets, so
``python tools/train.py`` needs no data at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from deva.data.augment import ResizeCrop, VideoAugment
from deva.data.order import Draw, split_index
from deva.data.sample import Sample, VideoRecord, sample_rng
from deva.data.synthetic import SyntheticVideoConfig, frame_name, generate_video
from deva.data.synthetic.appearance import Appearance
from deva.data.video import ClipSampler

log = logging.getLogger(__name__)


class SyntheticClipDataset(Dataset):
    """Map-style dataset of ``length`` clip samples, each from a newly generated video.

    With ``fixed_seed=None`` every draw makes a new video, seeded by the
    :class:`~deva.data.order.Draw` of the training stream (or, for a plain index, from torch's
    generator); with a fixed seed item ``i`` is always the same sample (tests, overfitting).
    Samples follow :mod:`deva.data.sample`'s contract.

    Args:
        length: samples per epoch.
        num_frames: clip length T; crop_size: output size (square).
        video_frames: frames generated per video (clips are drawn from them with gaps).
        height, width: generated frame size (the shorter side is resized to ``crop_size``).
        video: extra :class:`~deva.data.synthetic.SyntheticVideoConfig` fields.
        appearance: looks of ``appearance_fraction`` of the videos (e.g. real cut-outs over
            real photographs, :class:`deva.data.real_imagery.CutoutAppearance`); the others
            keep the procedural textures and shapes.
    """

    def __init__(
        self,
        *,
        length: int = 1000,
        num_frames: int = 8,
        crop_size: int = 384,
        max_objects: int = 3,
        max_skip: int = 5,
        video_frames: int = 24,
        height: int = 240,
        width: int = 320,
        augment: bool = True,
        min_object_pixels: int = 100,
        fixed_seed: int | None = None,
        max_tries: int = 20,
        video: Mapping[str, Any] | None = None,
        appearance: Appearance | None = None,
        appearance_fraction: float = 1.0,
    ) -> None:

        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if not 0 <= appearance_fraction <= 1:
            raise ValueError(f"appearance_fraction must lie in [0, 1], got {appearance_fraction}")
        self.appearance = appearance
        self.appearance_fraction = float(appearance_fraction)
        fields = dict(video or {})
        fields.update(num_frames=int(video_frames), height=int(height), width=int(width))
        self.video_config = SyntheticVideoConfig(**fields)
        transform = (
            VideoAugment(crop_size, short_side=crop_size) if augment else ResizeCrop(crop_size)
        )
        self.sampler = ClipSampler(
            num_frames=num_frames,
            max_objects=max_objects,
            max_skip=max_skip,
            augment=transform,
            crop_size=crop_size,
            min_object_pixels=min_object_pixels,
        )
        self.length = int(length)
        self.fixed_seed = fixed_seed
        self.max_tries = max_tries

    def __len__(self) -> int:
        return self.length

    def set_max_skip(self, max_skip: int) -> None:
        """Maximum frame gap of the curriculum (reaches running workers)."""
        self.sampler.set_max_skip(max_skip)

    def _record(self, seed: int, index: int, rng: np.random.Generator) -> VideoRecord:
        appearance = None
        if self.appearance is not None and rng.random() < self.appearance_fraction:
            appearance = self.appearance
        video = generate_video(self.video_config, seed, appearance)
        count = video.num_frames
        kind = "synthetic" if appearance is None else "real"
        return VideoRecord(
            name=f"{kind}_{index:06d}",
            frame_names=tuple(frame_name(t) for t in range(count)),
            images=tuple(video.frames[t] for t in range(count)),
            masks=tuple(video.masks[t] for t in range(count)),
            meta={"dataset": kind, "seed": seed},
        )

    def __getitem__(self, index: int | Draw) -> Sample:
        index, drawn, max_skip = split_index(index)
        if drawn is not None and self.fixed_seed is None:
            rng = drawn
        else:
            rng = sample_rng(self.fixed_seed, f"synthetic_{index}")
        for _ in range(self.max_tries):
            record = self._record(int(rng.integers(0, 2**62)), index, rng)
            sample = self.sampler.sample(record, rng, max_skip=max_skip)
            if sample is not None:
                return sample
        raise RuntimeError(
            f"no synthetic clip with an object of >= {self.sampler.min_object_pixels} px in "
            f"{self.max_tries} videos; lower data.min_object_pixels or enlarge the frames"
        )
