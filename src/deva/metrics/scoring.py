"""Per-video scoring of benchmark predictions, shared by ``tools/score.py`` and validation.

The official tools score VIPSeg (VPQ^k, STQ) and BURST (OWTA) one video at a time; these
functions are that step for arrays and sequences already in memory, so the command-line
scorer (which reads files) and the training-time validation tasks (which score the tracker's
output directly) run the same code and give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deva.io import burst
from deva.metrics.owta import OWTAStats, owta_sequence_stats_from_similarity
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
    inputs = burst.owta_inputs(gt, pred, max_detections=max_detections, similarity=similarity)
    return owta_sequence_stats_from_similarity(
        inputs.gt_ids,
        inputs.pred_ids,
        inputs.similarities,
        remove_unmatched=inputs.remove_unmatched,
        neg_category=inputs.neg_category,
    )
