"""OVIS (YouTube-VIS-style instance json) → the VOS training layout.

OVIS ships its training annotations as one COCO-style json (``annotations_train.json``):
``videos`` (``id``, ``file_names`` relative to the image folder, ``height``, ``width``) and
``annotations`` (one per instance track: ``video_id``, ``category_id`` and ``segmentations``,
one COCO RLE or ``null`` per frame). The video stage reads OVIS in the YouTube-VOS layout:

    <output>/JPEGImages/<video>/<frame>.jpg    (linked or copied from the image folder)
    <output>/Annotations/<video>/<frame>.png   (palette PNG: 0 background, k instance k)

Instance ``k`` is the k-th track of its video in the json's order of annotation ids. Where
two instances claim a pixel, the one with the smaller mask in that frame keeps it (the
occluding part of heavily occluded scenes is usually the smaller region, and the small one
would otherwise vanish); overlapping pixels are counted in the summary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from deva.io.masks import write_index_png
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)

LINK_METHODS = ("hard", "symlink", "copy")


@dataclass
class ConversionSummary:
    """What a conversion wrote."""

    videos: int = 0
    frames: int = 0
    instances: int = 0
    overlap_pixels: int = 0
    copied_instead_of_linked: int = 0
    skipped_videos: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VisVideo:
    """One video of the json with its instance tracks (segmentations per frame)."""

    name: str
    file_names: tuple[str, ...]
    height: int
    width: int
    tracks: tuple[Sequence[Any], ...]  # per instance: one RLE dict or None per frame


def load_vis_json(path: str | Path) -> list[VisVideo]:
    """The videos of a YouTube-VIS / OVIS annotation file, each with its instance tracks in
    the order of their annotation ids. One clear error for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a json file ({error})") from None
    if not isinstance(data, dict) or "videos" not in data or "annotations" not in data:
        raise ValueError(f"{path}: expected an OVIS / YouTube-VIS json with videos and annotations")
    tracks: dict[Any, list[tuple[Any, Sequence[Any]]]] = {}
    for annotation in data["annotations"]:
        segmentations = annotation.get("segmentations")
        if segmentations is None or "video_id" not in annotation:
            raise ValueError(f"{path}: annotation {annotation.get('id')!r} has no segmentations")
        tracks.setdefault(annotation["video_id"], []).append(
            (annotation.get("id", 0), segmentations)
        )
    videos = []
    for video in data["videos"]:
        names = tuple(str(name) for name in video["file_names"])
        if not names:
            continue
        own = sorted(tracks.get(video["id"], []), key=lambda item: item[0])
        for _, segmentations in own:
            if len(segmentations) != len(names):
                raise ValueError(
                    f"{path}: video {video['id']} has {len(names)} frames but an instance with "
                    f"{len(segmentations)} segmentations"
                )
        folder = PurePosixPath(names[0]).parent.name or str(video["id"])
        videos.append(
            VisVideo(
                name=folder,
                file_names=names,
                height=int(video["height"]),
                width=int(video["width"]),
                tracks=tuple(segmentations for _, segmentations in own),
            )
        )
    return videos


def decode_segmentation(rle: Mapping[str, Any] | None, height: int, width: int) -> np.ndarray:
    """One frame's instance mask (bool, H×W) from a COCO RLE (compressed or not) or ``None``."""
    if rle is None:
        return np.zeros((height, width), bool)
    if isinstance(rle.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(dict(rle), height, width)
    mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"RLE of size {mask.shape} in a video of size {(height, width)}")
    return mask.astype(bool)


def index_mask(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Instance masks → one index map (instance k → k + 1) where the smaller mask wins a
    contested pixel; also the number of contested pixels."""
    if not masks:
        raise ValueError("no instance masks")
    height, width = masks[0].shape
    if len(masks) > 255:
        raise ValueError(f"{len(masks)} instances in one video; palette PNGs hold 255")
    labels = np.zeros((height, width), np.uint8)
    claimed = np.zeros((height, width), np.int16)
    areas = [int(mask.sum()) for mask in masks]
    for k in sorted(range(len(masks)), key=lambda i: (-areas[i], i)):  # largest first
        labels[masks[k]] = k + 1
        claimed += masks[k]
    return labels, int((claimed > 1).sum())


def _place_frame(source: Path, target: Path, link: str) -> bool:
    """Put ``source`` at ``target`` by ``link``; False when a hard link had to be a copy."""
    if target.exists() or target.is_symlink():
        target.unlink()
    if link == "symlink":
        target.symlink_to(source.resolve())
        return True
    if link == "hard":
        try:
            os.link(source, target)
            return True
        except OSError:
            shutil.copy2(source, target)
            return False
    shutil.copy2(source, target)
    return True


def convert_video(
    video: VisVideo, images: Path, out: OutputFolder, *, link: str = "hard"
) -> tuple[int, int, int]:
    """Write one video's frames and index PNGs; returns (frames, contested pixels, copies)."""
    contested = copies = 0
    for t, name in enumerate(video.file_names):
        source = images / name
        if not source.is_file():
            raise FileNotFoundError(f"frame of video {video.name} not found: {source}")
        stem = PurePosixPath(name).stem
        frame_target = out.path(f"JPEGImages/{video.name}/{stem}{source.suffix.lower()}")
        copies += not _place_frame(source, frame_target, link)
        masks = [decode_segmentation(track[t], video.height, video.width) for track in video.tracks]
        if masks:
            labels, overlap = index_mask(masks)
            contested += overlap
        else:
            labels = np.zeros((video.height, video.width), np.uint8)
        write_index_png(out.path(f"Annotations/{video.name}/{stem}.png"), labels)
    return len(video.file_names), contested, copies


def convert_ovis(
    annotations: str | Path,
    images: str | Path,
    out: OutputFolder,
    *,
    link: str = "hard",
    wrap: Callable[[Sequence[VisVideo]], Iterable[VisVideo]] = iter,
) -> ConversionSummary:
    """Convert an OVIS json + image folder into ``out`` (the VOS layout above).

    ``wrap`` may wrap the video list (a progress bar); videos without instances are skipped
    and named in the summary.
    """
    if link not in LINK_METHODS:
        raise ValueError(f"link must be one of {', '.join(LINK_METHODS)}, got {link!r}")
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder not found: {images}")
    videos = load_vis_json(annotations)
    if not videos:
        raise ValueError(f"{annotations}: no videos with frames")
    summary = ConversionSummary()
    for video in wrap(videos):
        if not video.tracks:
            summary.skipped_videos.append(video.name)
            continue
        frames, contested, copies = convert_video(video, images, out, link=link)
        summary.videos += 1
        summary.frames += frames
        summary.instances += len(video.tracks)
        summary.overlap_pixels += contested
        summary.copied_instead_of_linked += copies
    if summary.videos == 0:
        raise ValueError(f"{annotations}: no video has an annotated instance")
    return summary
