"""Synthetic videos on disk, in the DAVIS-style layout that the folder datasets read."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deva.data.synthetic.config import SyntheticVideoConfig, frame_name, video_name, video_seed
from deva.data.synthetic.video import SyntheticVideo, generate_video
from deva.io.atomic import atomic_path
from deva.io.detections import write_frame_segmentation
from deva.io.masks import write_index_png
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)


def write_synthetic_video(
    out: OutputFolder,
    name: str,
    video: SyntheticVideo,
    *,
    config: SyntheticVideoConfig | None = None,
    jpeg_quality: int = 95,
    prefix: str = "",
) -> None:
    """Write one video into ``out`` (under ``prefix``, e.g. ``"videos/val/"``) in the
    DAVIS-style layout.

    ``JPEGImages/<name>/00000.jpg``, ``Annotations/<name>/00000.png`` (palette, every frame),
    ``Detections/<name>/00000.png + .json`` (precomputed-detection format) and
    ``Meta/<name>/meta.json``; every file recorded in ``out`` and written atomically.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    for t in range(video.num_frames):
        stem = frame_name(t)
        write_jpeg(out.path(f"{prefix}JPEGImages/{name}/{stem}.jpg"), video.frames[t], params)
        write_index_png(out.path(f"{prefix}Annotations/{name}/{stem}.png"), video.masks[t])
        if t < len(video.detections):
            for suffix in (".png", ".json"):
                out.path(f"{prefix}Detections/{name}/{stem}{suffix}")
            detections = out.root / prefix / "Detections" / name
            write_frame_segmentation(detections, stem, video.detections[t])
    meta = video.meta(config)
    meta["name"] = name
    out.write_json(f"{prefix}Meta/{name}/meta.json", meta)


def write_jpeg(path: Path, rgb: np.ndarray, params: list[int]) -> None:
    """An RGB frame as a JPEG, atomically."""
    with atomic_path(path) as temporary:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"cannot write frame {path}")


def write_synthetic_dataset(
    root: str | Path | OutputFolder,
    config: SyntheticVideoConfig | None = None,
    *,
    num_videos: int = 3,
    seed: int = 0,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    progress: bool = False,
) -> list[str]:
    """Generate ``num_videos`` videos and write them into ``root``; return their names.

    ``root`` is an :class:`~deva.io.outputs.OutputFolder` or a folder made one (a non-empty
    folder only with ``overwrite``, which replaces exactly the files of the previous run).
    Video ``i`` uses seed ``[seed, i]``, so a dataset can be regenerated or extended
    video by video. A ``dataset.json`` at the root records the config and the seeds.
    """
    config = config or SyntheticVideoConfig()
    out = OutputFolder.of(root, tool="make_synthetic", overwrite=overwrite)
    names = [video_name(i) for i in range(num_videos)]
    iterator = range(num_videos)
    if progress:
        iterator = tqdm(iterator, desc="synthetic videos", unit="video")
    for i in iterator:
        video = generate_video(config, video_seed(seed, i))
        write_synthetic_video(out, names[i], video, config=config, jpeg_quality=jpeg_quality)
        logger.debug("wrote %s (%d frames)", names[i], video.num_frames)
    summary = {
        "videos": names,
        "seeds": [video_seed(seed, i) for i in range(num_videos)],
        "config": asdict(config),
        "thing_categories": list(range(1, config.num_thing_categories + 1)),
        "stuff_categories": config.stuff_category_ids,
    }
    out.write_json("dataset.json", summary)
    return names
