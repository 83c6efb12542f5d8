"""Metrics that agree with the official evaluation tools: J&F, VPQ^k, STQ and OWTA.

Each metric is a torchmetrics ``Metric`` (states with ``dist_reduce_fx`` so DDP matches one
process) backed by functional code in its module: :mod:`deva.metrics.jf`,
:mod:`deva.metrics.vpq`, :mod:`deva.metrics.stq` and :mod:`deva.metrics.owta`.
"""

from deva.metrics.jf import JAndF, jf_sequence, jf_summary, jf_unsupervised_sequence
from deva.metrics.owta import (
    OpenWorldTrackingAccuracy,
    OWTAStats,
    box_iou_xywh,
    owta_sequence_stats,
    owta_summary,
)
from deva.metrics.stq import SegmentationAndTrackingQuality, stq_frame_stats, stq_summary
from deva.metrics.vpq import VideoPanopticQuality, VPQStats, vpq_summary, vpq_video_stats

__all__ = [
    "JAndF",
    "OWTAStats",
    "OpenWorldTrackingAccuracy",
    "SegmentationAndTrackingQuality",
    "VPQStats",
    "VideoPanopticQuality",
    "box_iou_xywh",
    "jf_sequence",
    "jf_summary",
    "jf_unsupervised_sequence",
    "owta_sequence_stats",
    "owta_summary",
    "stq_frame_stats",
    "stq_summary",
    "vpq_summary",
    "vpq_video_stats",
]
