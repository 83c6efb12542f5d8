"""Per-video scoring of benchmark predictions, shared by ``tools/score.py`` and validation.

The official tools score VIPSeg (VPQ^k, STQ) and BURST (OWTA) one video at a time; these
functions are that step for arrays and sequences already in memory, so the command-line
scorer (which reads files) and the training-time validation tasks (which score the tracker's
output directly) run the same code and give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from deva.io import burst
from deva.metrics.owta import OWTAStats, box_iou_xywh, owta_sequence_stats_from_similarity
from deva.metrics.stq import SegmentationAndTrackingQuality, instance_numbering, vipseg_stq_labels
from deva.metrics.vpq import VideoPanopticQuality, VPQStats, vpq_video_stats

Segments = Sequence[Sequence[Mapping[str, Any]]]


def stq_metric(isthing: Mapping[int, bool], num_classes: int | None = None) -> Any:
    """The STQ metric of a VIPSeg category table (``num_classes``: largest id + 1 by default)."""
    classes = int(num_classes) if num_classes is not None else max(isthing) + 1
    things = [c for c, thing in isthing.items() if thing]
    return SegmentationAndTrackingQuality(classes, things)


def vpq_stats(
    metric: VideoPanopticQuality,
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    gt_segments: Segments,
    pred_segments: Segments,
) -> VPQStats:
    """VPQ statistics of one video with ``metric``'s windows and categories (not added)."""
    return vpq_video_stats(
        gt_ids,
        pred_ids,
        gt_segments,
        pred_segments,
        num_categories=metric.num_categories,
        window_sizes=metric.window_sizes,
        known_categories=set(metric.categories),
    )


def update_stq(
    metric: SegmentationAndTrackingQuality,
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    gt_segments: Segments,
    pred_segments: Segments,
    sequence_id: int,
) -> None:
    """Add one VIPSeg video ((T, H, W) panoptic ids + per-frame ``segments_info``) to STQ."""
    gt_inst, pred_inst = instance_numbering(gt_segments), instance_numbering(pred_segments)
    for t in range(gt_ids.shape[0]):
        try:
            metric.update(
                vipseg_stq_labels(pred_ids[t], pred_segments[t], pred_inst),
                vipseg_stq_labels(gt_ids[t], gt_segments[t], gt_inst),
                sequence_id=sequence_id,
            )
        except ValueError as error:
            raise ValueError(f"frame {t}: {error}") from error


def owta_stats(
    gt: burst.BurstSequence,
    pred: burst.BurstSequence | None,
    *,
    max_detections: int = burst.MAX_DETECTIONS,
    similarity: str = "box",
) -> OWTAStats:
    """OWTA statistics of one BURST sequence (``pred=None``: nothing predicted)."""
    inputs = owta_inputs(gt, pred, max_detections=max_detections, similarity=similarity)
    return owta_sequence_stats_from_similarity(
        inputs.gt_ids,
        inputs.pred_ids,
        inputs.similarities,
        remove_unmatched=inputs.remove_unmatched,
        neg_category=inputs.neg_category,
    )


def _frame_index(path: str, fallback: int) -> int:
    stem = path.replace(".jpg", "").replace(".png", "").replace("frame", "")
    try:
        return int(stem.split("_")[-1])
    except ValueError:
        return fallback


@dataclass
class OWTAInputs:
    """Per-timestep ids and similarity matrices of one sequence, ready for OWTA."""

    gt_ids: list[np.ndarray]
    pred_ids: list[np.ndarray]
    similarities: list[np.ndarray]
    remove_unmatched: bool
    neg_category: bool
    frames: list[str]


def owta_inputs(
    gt: burst.BurstSequence,
    pred: burst.BurstSequence | None,
    *,
    max_detections: int = burst.MAX_DETECTIONS,
    similarity: str = "box",
) -> OWTAInputs:
    """Build OWTA inputs for one ground-truth sequence and its prediction (or ``None``).

    Follows the official BURST open-world evaluation: ground-truth tracks of the 45 TAO-OW
    distractor categories are dropped, only annotated frames with at least one remaining
    ground-truth object are timesteps, at most ``max_detections`` predictions per frame
    (highest score) are kept, and unmatched predictions are removed in videos whose
    ``not_exhaustive_category_ids`` contain the class-agnostic id 1. ``similarity`` is
    ``"box"`` (IoU of the masks' integer bounding boxes: the official numbers) or ``"mask"``
    (mask IoU, documented alternative).
    """
    if similarity not in ("box", "mask"):
        raise ValueError(f"similarity must be 'box' or 'mask', got {similarity!r}")
    height, width = _checked_size(gt, pred)
    pred_frames: dict[str, dict[str, Any]] = {}
    if pred is not None:
        for path, dets in zip(pred.annotated_image_paths, pred.segmentations):
            pred_frames[path] = dets
    gt_ids, pred_ids, sims, frames = [], [], [], []
    for path, kept in _timesteps(gt):
        dets = _frame_predictions(gt, path, pred_frames.get(path) or {}, max_detections)
        g_ids = np.array([k[0] for k in kept], dtype=np.int64)
        p_ids = np.array([d[0] for d in dets], dtype=np.int64)
        if len(set(p_ids.tolist())) != len(p_ids):
            raise ValueError(f"sequence {gt.seq_name!r}, frame {path}: duplicate track ids")
        gt_ids.append(g_ids)
        pred_ids.append(p_ids)
        sims.append(_similarity(kept, dets, height, width, similarity))
        frames.append(path)
    return OWTAInputs(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        similarities=sims,
        remove_unmatched=burst.AGNOSTIC_CLASS_ID in gt.not_exhaustive_category_ids,
        neg_category=burst.AGNOSTIC_CLASS_ID in gt.neg_category_ids,
        frames=frames,
    )


def _checked_size(gt: burst.BurstSequence, pred: burst.BurstSequence | None) -> tuple[int, int]:
    """The sequence's (H, W); a prediction of another size is an error."""
    if gt.height is None or gt.width is None:
        raise ValueError(f"ground-truth sequence {gt.seq_name!r} lacks width / height")
    height, width = int(gt.height), int(gt.width)
    if (
        pred is not None
        and pred.height is not None
        and pred.width is not None
        and (int(pred.height), int(pred.width)) != (height, width)
    ):
        raise ValueError(
            f"sequence {gt.dataset}/{gt.seq_name}: prediction size {pred.width}x{pred.height} "
            f"differs from the ground truth {width}x{height}"
        )
    return height, width


def _timesteps(gt: burst.BurstSequence) -> list[tuple[str, list[tuple[int, str]]]]:
    """(frame path, [(track id, RLE)]) of the annotated frames with a non-distractor object,
    in frame order."""
    steps = []
    for position, (path, objects) in enumerate(zip(gt.annotated_image_paths, gt.segmentations)):
        kept = []
        for track, det in objects.items():
            category = gt.track_category_ids.get(str(track))
            if category is None:
                raise ValueError(
                    f"sequence {gt.seq_name!r}: track {track} has no entry in track_category_ids"
                )
            if category in burst.DISTRACTOR_CATEGORY_IDS:
                continue
            kept.append((int(track), det["rle"]))
        if kept:
            steps.append((_frame_index(path, position), position, path, kept))
    steps.sort(key=lambda s: (s[0], s[1]))
    return [(path, kept) for _, _, path, kept in steps]


def _frame_predictions(
    gt: burst.BurstSequence, path: str, objects: Mapping[str, Any], max_detections: int
) -> list[tuple[int, str, float]]:
    """(track id, RLE, score) of a frame's predictions, the ``max_detections`` best."""
    dets = []
    for track, det in objects.items():
        try:
            track_id = int(track)
        except ValueError as error:
            raise ValueError(
                f"sequence {gt.seq_name!r}, frame {path}: track id {track!r} is not an integer"
            ) from error
        dets.append((track_id, det["rle"], float(det.get("score", 1.0))))
    if max_detections and len(dets) > max_detections:
        dets = sorted(dets, key=lambda d: d[2], reverse=True)[:max_detections]
    return dets


def _similarity(
    kept: list[tuple[int, str]],
    dets: list[tuple[int, str, float]],
    height: int,
    width: int,
    similarity: str,
) -> np.ndarray:
    """(G, P) box or mask IoU between ground-truth and predicted RLEs."""
    if similarity == "box":
        g_boxes = np.array([burst.rle_box(k[1], height, width) for k in kept], dtype=np.float64)
        p_boxes = np.array([burst.rle_box(d[1], height, width) for d in dets], dtype=np.float64)
        return box_iou_xywh(g_boxes.reshape(-1, 4), p_boxes.reshape(-1, 4))
    g_rles = [{"counts": k[1], "size": [height, width]} for k in kept]
    p_rles = [{"counts": d[1], "size": [height, width]} for d in dets]
    if not dets:
        return np.zeros((len(kept), 0))
    iou = mask_utils.iou(g_rles, p_rles, [0] * len(p_rles))
    return np.asarray(iou, dtype=np.float64).reshape(len(kept), len(dets))
