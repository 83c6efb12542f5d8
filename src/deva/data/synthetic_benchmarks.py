"""Synthetic videos as video-panoptic and open-world benchmarks (VIPSeg / BURST layouts).

The generator's videos carry everything a benchmark needs: frames, panoptic ground truth
(thing objects over stuff regions, every one with a category) and a simulated image model's
per-frame detections. This module turns them into

- :func:`panoptic_ground_truth`: VIPSeg-style panoptic ids and ``segments_info`` in memory
  (what the ``synthetic_panoptic`` validation task scores against);
- :func:`write_vipseg_layout`: ``images/``, ``panomasksRGB/``, ``panoptic_gt_VIPSeg_<split>.json``
  and the detections in VIPSeg's prediction layout (``detections/pred.json`` + ``pan_pred/``)
  or the generic per-frame layout (``detections/<video>/<frame>.png + .json``);
- :func:`write_burst_layout`: ``frames/<split>/<dataset>/<video>/``, ``gt/<split>/`` with the
  three class-split jsons and a BURST-style detections json.

All writing goes through the readers' own formats (``deva.io``), so tests and smoke runs
exercise the real benchmark code paths without any download.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deva.data.synthetic import SyntheticVideo, SyntheticVideoConfig, frame_name
from deva.data.synthetic.writing import write_jpeg
from deva.io import atomic
from deva.io.burst import BurstSequence, encode_rle, write_burst
from deva.io.detections import write_frame_segmentation
from deva.io.masks import write_id_png
from deva.io.outputs import OutputFolder
from deva.io.vipseg import GT_PNG_DIR, PRED_JSON, PRED_PNG_DIR, PredictionWriter

#: Panoptic ids of things start here (stuff ids are their category ids, always below).
THING_ID_OFFSET = 1000
BURST_DATASET = "synthetic"


@dataclass
class PanopticVideo:
    """Panoptic ground truth of one video: (T, H, W) int32 ids and per-frame segment infos."""

    ids: np.ndarray
    segments: list[list[dict[str, Any]]]


JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]


def synthetic_categories(config: SyntheticVideoConfig) -> list[dict[str, Any]]:
    """VIPSeg-style category table: things ``1..T`` then stuff ``T+1..T+S``."""
    things = [
        {"id": c, "name": f"thing_{c}", "isthing": 1}
        for c in range(1, config.num_thing_categories + 1)
    ]
    stuff = [{"id": c, "name": f"stuff_{c}", "isthing": 0} for c in config.stuff_category_ids]
    return things + stuff


def panoptic_ground_truth(video: SyntheticVideo) -> PanopticVideo:
    """Things (object k → id ``THING_ID_OFFSET + k``) over stuff (one id per category)."""
    stuff_lut = np.zeros(max((r.index for r in video.stuff_regions), default=0) + 1, np.int32)
    for region in video.stuff_regions:
        stuff_lut[region.index] = region.category_id
    masks = video.masks.astype(np.int32)
    ids = np.where(masks > 0, THING_ID_OFFSET + masks, stuff_lut[video.stuff])
    category_of = {THING_ID_OFFSET + obj.id: obj.category_id for obj in video.objects}
    category_of.update({r.category_id: r.category_id for r in video.stuff_regions})
    segments = []
    for t in range(ids.shape[0]):
        values, counts = np.unique(ids[t], return_counts=True)
        segments.append(
            [
                {
                    "id": int(v),
                    "category_id": int(category_of[int(v)]),
                    "iscrowd": 0,
                    "area": int(n),
                }
                for v, n in zip(values, counts)
                if v != 0
            ]
        )
    return PanopticVideo(ids.astype(np.int32), segments)


def write_vipseg_layout(
    root: str | Path | OutputFolder,
    videos: Sequence[tuple[str, SyntheticVideo]],
    config: SyntheticVideoConfig,
    *,
    split: str = "val",
    detections: str = "vipseg",
) -> dict[str, Path]:
    """Write ``videos`` (name, video) as a VIPSeg folder plus their simulated detections.

    Returns the paths a validation set needs: ``images``, ``gt`` (the json) and
    ``detections`` (``<root>/detections``, in the VIPSeg prediction layout or, with
    ``detections="generic"``, the per-frame layout).
    """
    if detections not in ("vipseg", "generic"):
        raise ValueError(f"detections layout must be vipseg or generic, got {detections!r}")
    out = OutputFolder.of(root, tool="make_synthetic")
    root = out.root
    det_root = root / "detections"
    writer = PredictionWriter(det_root)
    json_videos, annotations = [], []
    for name, video in videos:
        gt = panoptic_ground_truth(video)
        images, frames = [], []
        for t in range(video.num_frames):
            stem = frame_name(t)
            write_jpeg(out.path(f"images/{name}/{stem}.jpg"), video.frames[t], JPEG)
            write_id_png(out.path(f"{GT_PNG_DIR}/{name}/{stem}.png"), gt.ids[t])
            height, width = gt.ids.shape[1:]
            images.append(
                {"id": stem, "width": width, "height": height, "file_name": f"{stem}.jpg"}
            )
            frames.append(
                {"image_id": stem, "file_name": f"{stem}.png", "segments_info": gt.segments[t]}
            )
            det = video.detections[t]
            if detections == "generic":
                for suffix in (".png", ".json"):
                    out.path(f"detections/{name}/{stem}{suffix}")
                write_frame_segmentation(det_root / name, stem, det)
            else:
                out.path(f"detections/{PRED_PNG_DIR}/{name}/{stem}.png")
                infos = [
                    {"id": s.id, "category_id": s.category_id, "isthing": bool(s.isthing)}
                    for s in det.segments
                ]
                writer.add_frame(name, f"{stem}.png", det.mask.numpy(), infos, image_id=stem)
        json_videos.append({"video_id": name, "images": images})
        annotations.append({"video_id": name, "annotations": frames})
    if detections == "vipseg":
        out.path(f"detections/{PRED_JSON}")
        writer.close()
    gt_json = out.path(f"panoptic_gt_VIPSeg_{split}.json")
    data = {
        "videos": json_videos,
        "annotations": annotations,
        "categories": synthetic_categories(config),
    }
    atomic.write_text(gt_json, json.dumps(data))
    return {"images": root / "images", "gt": gt_json, "detections": det_root}


def _burst_ground_truth(
    video: SyntheticVideo,
    sequence: partial[BurstSequence],
    names: Sequence[str],
    annotated: Sequence[int],
    common_limit: int,
) -> dict[str, BurstSequence]:
    """One video's ground-truth sequence for each class split (all, common, uncommon)."""
    categories = {str(obj.id): int(obj.category_id) for obj in video.objects}
    splits: dict[str, BurstSequence] = {}
    for key, keep in (
        ("all", lambda c: True),
        ("common", lambda c: c <= common_limit),
        ("uncommon", lambda c: c > common_limit),
    ):
        tracks = {k: c for k, c in categories.items() if keep(c)}
        segmentations = [
            {
                k: {"rle": encode_rle(video.masks[t] == int(k)), "is_crowd": 0}
                for k in tracks
                if np.any(video.masks[t] == int(k))
            }
            for t in annotated
        ]
        splits[key] = sequence(
            annotated_image_paths=[names[t] for t in annotated],
            segmentations=segmentations,
            track_category_ids=tracks,
        )
    return splits


def _burst_detection_frames(video: SyntheticVideo) -> list[dict[str, dict[str, Any]]]:
    """Per frame, the simulated things as BURST detections: RLE, score and category."""
    det_frames = []
    for seg in video.detections:
        ids = seg.mask.numpy()
        det_frames.append(
            {
                str(s.id): {
                    "rle": encode_rle(ids == s.id),
                    "score": 1.0 if s.score is None else float(s.score),
                    "category_id": s.category_id,
                }
                for s in seg.segments
                if s.isthing is not False
            }
        )
    return det_frames


def write_burst_layout(
    root: str | Path | OutputFolder,
    videos: Sequence[tuple[str, SyntheticVideo]],
    config: SyntheticVideoConfig,
    *,
    split: str = "val",
    annotate_every: int = 1,
) -> dict[str, Path]:
    """Write ``videos`` as a BURST folder: frames, the three class-split ground-truth jsons
    and a BURST-style detections json of the simulated image model (things only).

    Every ``annotate_every``-th frame is annotated (BURST annotates 1 frame per second);
    categories up to half the thing categories are "common", the rest "uncommon". Returns
    ``images`` (``frames/<split>``), ``gt`` (``gt/<split>``) and ``detections``.
    """
    out = OutputFolder.of(root, tool="make_synthetic")
    root = out.root
    frames_root = root / "frames" / split
    common_limit = max(1, config.num_thing_categories // 2)
    splits: dict[str, list[BurstSequence]] = {"all": [], "common": [], "uncommon": []}
    detections: list[BurstSequence] = []
    for number, (name, video) in enumerate(videos, start=1):
        height, width = video.frames.shape[1:3]
        names = [f"{frame_name(t)}.jpg" for t in range(video.num_frames)]
        for t, file_name in enumerate(names):
            path = out.path(f"frames/{split}/{BURST_DATASET}/{name}/{file_name}")
            write_jpeg(path, video.frames[t], JPEG)
        annotated = list(range(0, video.num_frames, max(1, annotate_every)))
        sequence = partial(
            BurstSequence,
            id=number,
            dataset=BURST_DATASET,
            seq_name=name,
            width=int(width),
            height=int(height),
        )
        ground_truth = _burst_ground_truth(video, sequence, names, annotated, common_limit)
        for key, gt_sequence in ground_truth.items():
            splits[key].append(gt_sequence)
        detections.append(
            sequence(annotated_image_paths=names, segmentations=_burst_detection_frames(video))
        )
    gt_root = root / "gt" / split
    for key, sequences in splits.items():
        write_burst(out.path(f"gt/{split}/{key}_classes.json"), sequences, split=split)
    det_path = write_burst(out.path("detections.json"), detections, split=split)
    return {"images": frames_root, "gt": gt_root, "detections": det_path}
