"""Synthetic videos on disk, in the DAVIS-style layout that the folder datasets read."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import cv2
from tqdm import tqdm

from deva.data.synthetic.config import SyntheticVideoConfig, frame_name, video_name, video_seed
from deva.data.synthetic.video import SyntheticVideo, generate_video
from deva.io.detections import write_frame_segmentation
from deva.io.masks import write_index_png

logger = logging.getLogger(__name__)

_SUBDIRS = ("JPEGImages", "Annotations", "Detections", "Meta")


def write_synthetic_video(
    root: str | Path,
    name: str,
    video: SyntheticVideo,
    *,
    config: SyntheticVideoConfig | None = None,
    jpeg_quality: int = 95,
) -> None:
    """Write one video under ``root`` in the DAVIS-style layout.

    ``JPEGImages/<name>/00000.jpg``, ``Annotations/<name>/00000.png`` (palette, every frame),
    ``Detections/<name>/00000.png + .json`` (precomputed-detection format) and
    ``Meta/<name>/meta.json``.
    """
    root = Path(root)
    image_dir = root / "JPEGImages" / name
    mask_dir = root / "Annotations" / name
    det_dir = root / "Detections" / name
    meta_dir = root / "Meta" / name
    for directory in (image_dir, mask_dir, det_dir, meta_dir):
        directory.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    for t in range(video.num_frames):
        stem = frame_name(t)
        bgr = cv2.cvtColor(video.frames[t], cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(image_dir / f"{stem}.jpg"), bgr, params):
            raise OSError(f"cannot write frame {image_dir / f'{stem}.jpg'}")
        write_index_png(mask_dir / f"{stem}.png", video.masks[t])
        if t < len(video.detections):
            write_frame_segmentation(det_dir, stem, video.detections[t])
    meta = video.meta(config)
    meta["name"] = name
    (meta_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def prepare_output_dir(root: str | Path, *, overwrite: bool = False) -> Path:
    """Make sure ``root`` can receive a dataset; with ``overwrite`` clear our sub-folders.

    A non-empty existing folder is refused unless ``overwrite`` is set; even then only the
    folders this module writes (and ``dataset.json``) are removed.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"output is not a directory: {root}")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output folder {root} is not empty; pass overwrite=true to replace it"
            )
        for sub in _SUBDIRS:
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
        (root / "dataset.json").unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_synthetic_dataset(
    root: str | Path,
    config: SyntheticVideoConfig | None = None,
    *,
    num_videos: int = 3,
    seed: int = 0,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    progress: bool = False,
) -> list[str]:
    """Generate ``num_videos`` videos and write them under ``root``; return their names.

    Video ``i`` uses seed ``[seed, i]``, so a dataset can be regenerated or extended
    video by video. A ``dataset.json`` at the root records the config and the seeds.
    """
    config = config or SyntheticVideoConfig()
    root = prepare_output_dir(root, overwrite=overwrite)
    names = [video_name(i) for i in range(num_videos)]
    iterator = range(num_videos)
    if progress:
        iterator = tqdm(iterator, desc="synthetic videos", unit="video")
    for i in iterator:
        video = generate_video(config, video_seed(seed, i))
        write_synthetic_video(root, names[i], video, config=config, jpeg_quality=jpeg_quality)
        logger.debug("wrote %s (%d frames)", names[i], video.num_frames)
    summary = {
        "videos": names,
        "seeds": [video_seed(seed, i) for i in range(num_videos)],
        "config": asdict(config),
        "thing_categories": list(range(1, config.num_thing_categories + 1)),
        "stuff_categories": config.stuff_category_ids,
    }
    (root / "dataset.json").write_text(json.dumps(summary, indent=1))
    return names
