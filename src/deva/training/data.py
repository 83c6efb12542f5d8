"""Training data built by the training entry point: synthetic clips and the data module.

:class:`SyntheticClipDataset` generates a fresh synthetic video (:mod:`deva.data.synthetic`)
for every sample and draws a clip from it with the same :class:`~deva.data.vos.ClipSampler`
(gap curriculum, clip-consistent augmentation, object choice) as the real video datasets, so
``python tools/train.py`` needs no data at all. :func:`build_datamodule` turns the ``data``
config group into a :class:`~deva.data.datamodule.VOSDataModule`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset

from deva.data.sample import Sample, VideoRecord, sample_rng

log = logging.getLogger(__name__)


class SyntheticClipDataset(Dataset):
    """Map-style dataset of ``length`` clip samples, each from a newly generated video.

    With ``fixed_seed=None`` every draw makes a new video (the seed comes from torch's
    generator, seeded per DataLoader worker); with a fixed seed item ``i`` is always the same
    sample (tests, overfitting). Samples follow :mod:`deva.data.sample`'s contract.

    Args:
        length: samples per epoch.
        num_frames: clip length T; crop_size: output size (square).
        video_frames: frames generated per video (clips are drawn from them with gaps).
        height, width: generated frame size (the shorter side is resized to ``crop_size``).
        video: extra :class:`~deva.data.synthetic.SyntheticVideoConfig` fields.
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
    ) -> None:
        from deva.data.augment import ResizeCrop, VideoAugment
        from deva.data.synthetic import SyntheticVideoConfig
        from deva.data.vos import ClipSampler

        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
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

    def _record(self, seed: int, index: int) -> VideoRecord:
        from deva.data.synthetic import frame_name, generate_video

        video = generate_video(self.video_config, seed)
        count = video.num_frames
        return VideoRecord(
            name=f"synthetic_{index:06d}",
            frame_names=tuple(frame_name(t) for t in range(count)),
            images=tuple(video.frames[t] for t in range(count)),
            masks=tuple(video.masks[t] for t in range(count)),
            meta={"dataset": "synthetic", "seed": seed},
        )

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.fixed_seed, f"synthetic_{index}")
        for _ in range(self.max_tries):
            record = self._record(int(rng.integers(0, 2**62)), index)
            sample = self.sampler.sample(record, rng)
            if sample is not None:
                return sample
        raise RuntimeError(
            f"no synthetic clip with an object of >= {self.sampler.min_object_pixels} px in "
            f"{self.max_tries} videos; lower data.min_object_pixels or enlarge the frames"
        )


def build_datamodule(
    data: Mapping[str, Any],
    *,
    kind: str,
    batch_size: int,
    num_frames: int,
    crop_size: int,
    max_objects: int,
    max_skip: int,
) -> Any:
    """A :class:`~deva.data.datamodule.VOSDataModule` for the ``data`` config group.

    ``data.source`` picks the data: ``synthetic`` (generated on the fly), ``static`` (image
    folders ``data.roots``), ``video`` (``data.roots.{davis,ytvos,ovis}``) or ``shards``
    (``data.urls``, ``data.samples_per_epoch`` per rank). ``kind`` (``static`` | ``video``)
    is the stage's sample type (clip sampler of shards). ``batch_size`` is per device.
    """
    from deva.data.datamodule import VOSDataModule

    source = data.get("source")
    common = {
        "batch_size": int(batch_size),
        "num_workers": int(data.get("num_workers", 0)),
        "crop_size": int(crop_size),
        "num_frames": int(num_frames),
        "max_objects": int(max_objects),
        "max_skip": int(max_skip),
        "min_object_pixels": int(data.get("min_object_pixels", 100)),
        "augment": bool(data.get("augment", True)),
        "fixed_seed": data.get("fixed_seed"),
        "pin_memory": bool(data.get("pin_memory", False)),
        "persistent_workers": bool(data.get("persistent_workers", False)),
    }
    if source == "synthetic":
        dataset = SyntheticClipDataset(
            length=int(data.get("samples_per_epoch", 1000)),
            num_frames=num_frames,
            crop_size=crop_size,
            max_objects=max_objects,
            max_skip=max_skip,
            video_frames=int(data.get("video_frames", 24)),
            height=int(data.get("height", 240)),
            width=int(data.get("width", 320)),
            augment=common["augment"],
            min_object_pixels=common["min_object_pixels"],
            fixed_seed=common["fixed_seed"],
            video=dict(data.get("video") or {}),
        )
        return VOSDataModule(stage="video", dataset=dataset, **common)
    if source == "static":
        roots = data.get("roots") or []
        if isinstance(roots, str):
            roots = [roots]
        if isinstance(roots, Mapping):
            named = {str(k): v for k, v in roots.items() if v}
        else:
            named = {f"root{i}": r for i, r in enumerate(roots) if r}
        if not named:
            raise ValueError("data=static needs data.roots=[FOLDER,...] (image + mask folders)")
        return VOSDataModule(stage="static", roots=named, **common)
    if source == "video":
        roots = {str(k): v for k, v in (data.get("roots") or {}).items() if v}
        if not roots:
            raise ValueError(
                "data=video needs at least one of data.roots.davis / .ytvos / .ovis = FOLDER"
            )
        repeats = data.get("repeats")
        return VOSDataModule(
            stage="video",
            roots=roots,
            repeats=dict(repeats) if repeats else None,
            **common,
        )
    if source == "shards":
        urls = data.get("urls")
        if not urls:
            raise ValueError("data=shards needs data.urls=PATTERN (e.g. dir/train-{000..099}.tar)")
        if kind not in ("static", "video"):
            raise ValueError(f"shards need a stage of kind static or video, got {kind!r}")
        per_rank = data.get("samples_per_epoch")
        return VOSDataModule(
            stage=kind,  # type: ignore[arg-type]
            shard_urls=list(urls) if not isinstance(urls, str) else urls,
            samples_per_epoch=int(per_rank) if per_rank else None,
            shuffle_buffer=int(data.get("shuffle_buffer", 8)),
            **common,
        )
    raise ValueError(f"unknown data.source {source!r}; expected synthetic, static, video or shards")
