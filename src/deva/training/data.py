"""The training data module from the ``data`` config group (:func:`build_datamodule`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from deva.data.datamodule import VOSDataModule
from deva.data.synthetic_clips import SyntheticClipDataset

log = logging.getLogger(__name__)


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
