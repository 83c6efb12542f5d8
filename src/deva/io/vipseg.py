"""VIPSeg video panoptic layout: ground-truth json + RGB panoptic PNGs, and our predictions.

Ground truth: ``panoptic_gt_VIPSeg_<split>.json`` with ``videos[] {video_id, images[] {id,
width, height, file_name}}`` (order = frame order), ``annotations[] {video_id, annotations[]
{image_id, file_name, segments_info[] {id, category_id, iscrowd, area}}}`` and
``categories[] {id, name, isthing, color}``; PNGs ``panomasksRGB/<video_id>/<file_name>`` with
id = R + 256·G + 256²·B (0 = void). Predictions: ``<pred>/pred.json`` (``annotations[]`` as
above, segments ``{id, category_id, isthing}``) and ``<pred>/pan_pred/<video_id>/<file_name>``.
Prediction frames are paired with ground-truth frames by list position.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deva.io import atomic
from deva.io.masks import read_id_png, write_id_png

log = logging.getLogger(__name__)

PRED_JSON = "pred.json"
PRED_PNG_DIR = "pan_pred"
GT_PNG_DIR = "panomasksRGB"


@dataclass
class VipsegVideo:
    """One ground-truth video: frame infos (``images``) and per-frame ``segments_info``."""

    video_id: str
    images: list[dict[str, Any]]
    segments: list[list[dict[str, Any]]]


@dataclass
class VipsegGroundTruth:
    """A parsed ground-truth json plus the folder holding its RGB panoptic PNGs."""

    videos: list[VipsegVideo]
    categories: list[dict[str, Any]]
    png_root: Path

    @property
    def isthing(self) -> dict[int, bool]:
        """Category id → isthing, in json order."""
        return {int(c["id"]): c.get("isthing", 0) == 1 for c in self.categories}


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"json file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from error


def resolve_gt(path: str | Path, split: str = "val") -> tuple[Path, Path]:
    """(json path, PNG folder) from a VIPSeg root folder or a ground-truth json path."""
    path = Path(path)
    if path.is_dir():
        return path / f"panoptic_gt_VIPSeg_{split}.json", path / GT_PNG_DIR
    return path, path.parent / GT_PNG_DIR


def load_ground_truth(path: str | Path, split: str = "val") -> VipsegGroundTruth:
    """Parse a VIPSeg ground-truth json (``path`` = VIPSeg root folder or the json itself)."""
    json_path, png_root = resolve_gt(path, split)
    data = _load_json(json_path)
    try:
        by_video = {str(a["video_id"]): a["annotations"] for a in data["annotations"]}
        videos = []
        for video in data["videos"]:
            vid = str(video["video_id"])
            if vid not in by_video:
                raise ValueError(f"{json_path}: video {vid!r} has no annotations entry")
            frames = by_video[vid]
            if len(frames) != len(video["images"]):
                raise ValueError(
                    f"{json_path}: video {vid!r} lists {len(video['images'])} images but "
                    f"{len(frames)} annotated frames"
                )
            videos.append(
                VipsegVideo(vid, list(video["images"]), [list(f["segments_info"]) for f in frames])
            )
        categories = list(data["categories"])
    except KeyError as error:
        raise ValueError(f"{json_path}: missing field {error}") from error
    return VipsegGroundTruth(videos, categories, png_root)


def load_predictions(pred_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """``video_id`` → per-frame prediction annotations from ``<pred_dir>/pred.json``."""
    data = _load_json(Path(pred_dir) / PRED_JSON)
    try:
        return {str(a["video_id"]): list(a["annotations"]) for a in data["annotations"]}
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{Path(pred_dir) / PRED_JSON}: malformed annotations ({error})"
        ) from error


def _png_path(folder: Path, file_name: str) -> Path:
    path = folder / file_name
    if not path.is_file() and path.suffix.lower() != ".png" and path.with_suffix(".png").is_file():
        return path.with_suffix(".png")
    return path


def read_video(
    gt: VipsegGroundTruth,
    video: VipsegVideo,
    pred_dir: str | Path,
    pred_frames: Sequence[Mapping[str, Any]],
    *,
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[list[dict]], list[list[dict]]]:
    """Read one video: (T, H, W) gt ids, (T, H, W) predicted ids and both segment lists.

    Raises FileNotFoundError for a missing PNG and ValueError for a frame-count or size
    mismatch, or (``strict``) a predicted frame whose PNG ids and ``segments_info`` differ.
    """
    n = len(video.images)
    if len(pred_frames) != n:
        raise ValueError(
            f"video {video.video_id!r}: {n} ground-truth frames but {len(pred_frames)} predicted"
        )
    gt_ids, pred_ids = [], []
    for image in video.images:
        name = str(image["file_name"])
        gt_path = _png_path(gt.png_root / video.video_id, name)
        pred_path = _png_path(Path(pred_dir) / PRED_PNG_DIR / video.video_id, name)
        for path, what in ((gt_path, "ground-truth"), (pred_path, "prediction")):
            if not path.is_file():
                raise FileNotFoundError(f"missing {what} frame {path}")
        g = read_id_png(gt_path)
        p = read_id_png(pred_path)
        if g.shape != p.shape:
            raise ValueError(
                f"{pred_path}: prediction is {p.shape[1]}x{p.shape[0]} but the ground truth is "
                f"{g.shape[1]}x{g.shape[0]} (W x H)"
            )
        gt_ids.append(g)
        pred_ids.append(p)
    try:
        pred_segments = [list(frame["segments_info"]) for frame in pred_frames]
    except KeyError as error:
        raise ValueError(f"video {video.video_id!r}: prediction frame without {error}") from error
    if strict:
        for t, (ids, infos) in enumerate(zip(pred_ids, pred_segments)):
            check_prediction_frame(ids, infos, where=f"video {video.video_id!r}, frame {t}")
    shapes = {g.shape for g in gt_ids}
    if len(shapes) > 1:
        raise ValueError(f"video {video.video_id!r}: frame sizes differ: {sorted(shapes)}")
    return np.stack(gt_ids), np.stack(pred_ids), video.segments, pred_segments


def check_prediction_frame(
    ids: np.ndarray, segments: Sequence[Mapping[str, Any]], *, where: str = "frame"
) -> None:
    """Raise ValueError unless the non-zero ids of ``ids`` are exactly the listed segment ids."""
    present = set(np.unique(ids).tolist()) - {0}
    listed = {int(s["id"]) for s in segments}
    if present - listed:
        raise ValueError(
            f"{where}: predicted ids {sorted(present - listed)} are in the PNG but "
            "not in segments_info"
        )
    if listed - present:
        raise ValueError(
            f"{where}: predicted ids {sorted(listed - present)} are in "
            "segments_info but not in the PNG"
        )


@dataclass
class PredictionWriter:
    """Collects predicted frames and writes ``pred.json`` + ``pan_pred/<video>/<file>.png``.

    Example:
        >>> writer = PredictionWriter("out")  # doctest: +SKIP
        >>> segments = [{"id": 5, "category_id": 3, "isthing": 1}]  # doctest: +SKIP
        >>> writer.add_frame("vid", "00000001.png", ids, segments)  # doctest: +SKIP
        >>> writer.close()  # doctest: +SKIP
    """

    out_dir: str | Path
    _videos: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add_frame(
        self,
        video_id: str,
        file_name: str,
        ids: np.ndarray,
        segments: Sequence[Mapping[str, Any]],
        *,
        image_id: str | None = None,
    ) -> None:
        """Write one frame's id PNG and remember its ``segments_info``.

        ``segments`` must list exactly the non-zero ids of ``ids`` (each with ``id``,
        ``category_id`` and ``isthing``).
        """
        ids = np.asarray(ids)
        check_prediction_frame(ids, segments, where=f"{video_id}/{file_name}")
        write_id_png(Path(self.out_dir) / PRED_PNG_DIR / video_id / file_name, ids)
        infos = [
            {
                "id": int(s["id"]),
                "category_id": int(s["category_id"]),
                "isthing": int(bool(s.get("isthing", 0))),
            }
            for s in segments
        ]
        self._videos.setdefault(video_id, []).append(
            {
                "image_id": image_id if image_id is not None else Path(file_name).stem,
                "file_name": file_name,
                "segments_info": infos,
            }
        )

    def take(self, video_id: str) -> dict[str, Any]:
        """The ``pred.json`` entry of one video, forgotten here (for :func:`write_pred_json`)."""
        return {"video_id": video_id, "annotations": self._videos.pop(video_id, [])}

    def close(self) -> Path:
        """Write ``pred.json`` and return its path."""
        return write_pred_json(self.out_dir, [self.take(v) for v in list(self._videos)])


def write_pred_json(out_dir: str | Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """``<out_dir>/pred.json`` from per-video entries (``video_id``, ``annotations``)."""
    path = Path(out_dir) / PRED_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps({"annotations": [dict(e) for e in entries]}))
    return path
