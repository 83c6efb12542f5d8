"""Segmentation and Tracking Quality (STQ = sqrt(AQ · SQ)), deeplab2 definition as used on VIPSeg.

Labels are ``semantic << bit_shift | instance`` per pixel (deeplab2 convention, bit_shift 16).
SQ is the mIoU of a semantic confusion matrix summed over all frames; with an ignore label
above the class count the matrix gets one extra class (index ``num_classes``) for it, whose
ground-truth row is dropped and whose prediction column is kept. AQ is computed inside thing
classes, class-agnostically: ground-truth tubes are thing labels whose instance is not 0
(instance 0 marks "crowd", which also removes the prediction pixels on it); per tube g,
``(1/|g|) Σ_p TPA(p,g) · TPA / (|p| + |g| − TPA)``; AQ = sum over all tubes / number of tubes.

For VIPSeg, :func:`vipseg_stq_labels` builds labels from panoptic ids and ``segments_info``
the way the VIPSeg/DEVA script does (instance = index of the id in the order ids first appear in
the video's json, starting at 0; unlisted pixels and id 0 get semantic = instance = 255).

Example:
    >>> import torch
    >>> from deva.metrics import SegmentationAndTrackingQuality
    >>> stq = SegmentationAndTrackingQuality(num_classes=2, thing_ids=[1])
    >>> labels = torch.tensor([[0, (1 << 16) + 1], [(1 << 16) + 1, (1 << 16) + 1]])
    >>> stq.update(labels, labels, sequence_id=0)
    >>> float(stq.compute()["STQ"])
    1.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from deva.metrics._common import Float64States, group_sum, rows_to_state, state_to_rows, to_numpy

log = logging.getLogger(__name__)


def instance_numbering(frames: Iterable[Sequence[Mapping[str, Any]]]) -> dict[int, int]:
    """Map each segment id to the index of its first appearance across a video's json frames."""
    order: dict[int, int] = {}
    for infos in frames:
        for info in infos:
            order.setdefault(int(info["id"]), len(order))
    return order


def vipseg_stq_labels(
    ids: np.ndarray | Tensor,
    segments: Sequence[Mapping[str, Any]],
    instance_of: Mapping[int, int],
    *,
    bit_shift: int = 16,
    void: int = 255,
) -> np.ndarray:
    """STQ labels (H, W) of one VIPSeg frame: ``category << bit_shift`` + instance number.

    Pixels whose id is 0 or not listed in ``segments`` get ``void << bit_shift`` + ``void``.
    When an id is listed twice, the later entry wins (as in the official script).
    """
    ids = to_numpy(ids).astype(np.int64, copy=False)
    uniq, inverse = np.unique(ids, return_inverse=True)
    semantic = np.full(len(uniq), void, dtype=np.int64)
    instance = np.full(len(uniq), void, dtype=np.int64)
    position = {int(v): i for i, v in enumerate(uniq.tolist())}
    for info in segments:
        seg_id = int(info["id"])
        i = position.get(seg_id)
        if i is None:
            continue
        semantic[i] = int(info["category_id"])
        instance[i] = int(instance_of[seg_id])
    labels = (semantic << bit_shift) + instance
    return labels[inverse.reshape(ids.shape)]


@dataclass
class STQFrameStats:
    """Sparse statistics of one or more frames of one sequence.

    Attributes:
        confusion: (R, 3) rows ``gt class, pred class, count`` of the semantic confusion.
        gt_areas: (G, 2) rows ``gt label, pixels`` of non-crowd thing pixels.
        pred_areas: (P, 2) rows ``pred label, pixels`` of thing predictions off crowd.
        intersections: (I, 3) rows ``gt label, pred label, pixels``.
    """

    confusion: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray
    intersections: np.ndarray


def _count(values: np.ndarray) -> np.ndarray:
    uniq, counts = np.unique(values, return_counts=True)
    return np.stack([uniq, counts], axis=1).astype(np.int64).reshape(-1, 2)


def stq_frame_stats(
    target: np.ndarray | Tensor,
    preds: np.ndarray | Tensor,
    *,
    num_classes: int,
    thing_ids: Iterable[int],
    ignore_label: int = 255,
    bit_shift: int = 16,
) -> STQFrameStats:
    """Confusion, tube areas and intersections of label maps (any shape, e.g. (T, H, W))."""
    gt = to_numpy(target).astype(np.int64, copy=False).reshape(-1)
    pred = to_numpy(preds).astype(np.int64, copy=False).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f"target and preds sizes differ: {gt.shape} vs {pred.shape}")
    size = num_classes + 1 if ignore_label >= num_classes else num_classes
    sem_gt = gt >> bit_shift
    sem_pred = pred >> bit_shift
    if ignore_label > num_classes:
        sem_gt = np.where(sem_gt == ignore_label, num_classes, sem_gt)
        sem_pred = np.where(sem_pred == ignore_label, num_classes, sem_pred)
    for name, sem in (("ground-truth", sem_gt), ("predicted", sem_pred)):
        if sem.size and (sem.min() < 0 or sem.max() >= size):
            bad = int(sem[(sem < 0) | (sem >= size)][0])
            raise ValueError(
                f"{name} semantic class {bad} is neither in 0..{num_classes - 1} nor the "
                f"ignore label {ignore_label}"
            )
    hist = np.bincount(sem_gt * size + sem_pred, minlength=size * size)
    nz = np.flatnonzero(hist)
    confusion = np.stack([nz // size, nz % size, hist[nz]], axis=1).astype(np.int64)

    things = np.asarray(sorted(set(int(t) for t in thing_ids)), dtype=np.int64)
    gt_thing = np.isin(sem_gt, things)
    pred_thing = np.isin(sem_pred, things)
    crowd = gt_thing & ((gt & ((1 << bit_shift) - 1)) == 0)
    gt_mask = gt_thing & ~crowd
    pred_mask = pred_thing & ~crowd
    both = gt_mask & pred_mask
    gt_both, pred_both = gt[both], pred[both]
    if gt_both.size:
        # One 1-D key per (gt, pred) pair: much faster than a row-wise unique.
        low = int(pred_both.min())
        span = int(pred_both.max()) - low + 1
        uniq, counts = np.unique(gt_both * span + (pred_both - low), return_counts=True)
        intersections = np.stack([uniq // span, uniq % span + low, counts], axis=1)
        intersections = intersections.astype(np.int64)
    else:
        intersections = np.zeros((0, 3), dtype=np.int64)
    return STQFrameStats(
        confusion=confusion,
        gt_areas=_count(gt[gt_mask]),
        pred_areas=_count(pred[pred_mask]),
        intersections=intersections,
    )


def _miou(confusion: np.ndarray) -> float:
    inter = confusion.diagonal()
    unions = inter + (confusion.sum(axis=0) - inter) + (confusion.sum(axis=1) - inter)
    n = np.count_nonzero(unions)
    ious = inter.astype(np.double) / np.maximum(unions, 1e-15).astype(np.double)
    return float(np.sum(ious) / n) if n else math.nan


def stq_summary(
    confusion: np.ndarray,
    gt_areas: np.ndarray,
    pred_areas: np.ndarray,
    intersections: np.ndarray,
    *,
    num_classes: int,
    ignore_label: int = 255,
) -> dict[str, Any]:
    """STQ, AQ and SQ (plus per-sequence values) from sequence-tagged statistic rows.

    Args:
        confusion: (R, 4) rows ``seq, gt class, pred class, count``.
        gt_areas: (G, 3) rows ``seq, gt label, pixels``.
        pred_areas: (P, 3) rows ``seq, pred label, pixels``.
        intersections: (I, 4) rows ``seq, gt label, pred label, pixels``.
    """
    size = num_classes + 1 if ignore_label >= num_classes else num_classes
    include = (
        np.arange(num_classes)
        if ignore_label >= num_classes
        else np.array([c for c in range(num_classes) if c != ignore_label])
    )
    keep_row = np.zeros(size, dtype=bool)
    keep_row[include] = True

    conf_keys, conf_counts = group_sum(
        confusion[:, :3].astype(np.int64), confusion[:, 3].astype(np.int64)
    )
    gt_keys, gt_counts = group_sum(
        gt_areas[:, :2].astype(np.int64), gt_areas[:, 2].astype(np.int64)
    )
    pr_keys, pr_counts = group_sum(
        pred_areas[:, :2].astype(np.int64), pred_areas[:, 2].astype(np.int64)
    )
    in_keys, in_counts = group_sum(
        intersections[:, :3].astype(np.int64), intersections[:, 3].astype(np.int64)
    )
    sequences = sorted(
        set(conf_keys[:, 0].tolist()) | set(gt_keys[:, 0].tolist()) | set(pr_keys[:, 0].tolist())
    )
    total = np.zeros((size, size), dtype=np.int64)
    aq_sum = {s: 0.0 for s in sequences}
    tubes = {s: 0 for s in sequences}
    per_seq: dict[int, dict[str, float]] = {}
    for s in sequences:
        rows = conf_keys[:, 0] == s
        conf = np.zeros((size, size), dtype=np.int64)
        conf[conf_keys[rows, 1], conf_keys[rows, 2]] = conf_counts[rows]
        conf *= keep_row[:, None]
        total += conf
        outer, tubes[s] = _association_sum(
            s, (gt_keys, gt_counts), (pr_keys, pr_counts), (in_keys, in_counts)
        )
        aq_sum[s] = outer
        aq_s = outer / max(tubes[s], 1e-15)
        sq_s = _miou(conf)
        per_seq[s] = {
            "STQ": math.sqrt(aq_s * sq_s) if sq_s == sq_s else math.nan,
            "AQ": aq_s,
            "SQ": sq_s,
        }
    aq = float(np.sum(list(aq_sum.values())) / max(sum(tubes.values()), 1e-15))
    sq = _miou(total)
    stq = math.sqrt(aq * sq) if sq == sq else math.nan
    return {"STQ": stq, "AQ": aq, "SQ": sq, "per_sequence": per_seq}


def _association_sum(
    sequence: int,
    gt_areas: tuple[np.ndarray, np.ndarray],
    pred_areas: tuple[np.ndarray, np.ndarray],
    intersections: tuple[np.ndarray, np.ndarray],
) -> tuple[float, int]:
    """Sum over the tubes of ``sequence`` of their association quality, and the tube count.

    Each table is the (keys, counts) of :func:`group_sum` over sequence-tagged rows.
    """
    gt_keys, gt_counts = gt_areas
    pr_keys, pr_counts = pred_areas
    in_keys, in_counts = intersections
    g_rows = gt_keys[:, 0] == sequence
    gt_size = dict(zip(gt_keys[g_rows, 1].tolist(), gt_counts[g_rows].tolist()))
    p_rows = pr_keys[:, 0] == sequence
    pr_size = dict(zip(pr_keys[p_rows, 1].tolist(), pr_counts[p_rows].tolist()))
    i_rows = in_keys[:, 0] == sequence
    inner = dict.fromkeys(gt_size, 0.0)
    for g, p, tpa in zip(
        in_keys[i_rows, 1].tolist(), in_keys[i_rows, 2].tolist(), in_counts[i_rows].tolist()
    ):
        fpa = pr_size[p] - tpa
        fna = gt_size[g] - tpa
        inner[g] += tpa * (tpa / (tpa + fpa + fna))
    outer = 0.0
    for g, g_size in gt_size.items():
        outer += 1.0 / g_size * inner[g]
    return outer, len(gt_size)


class SegmentationAndTrackingQuality(Float64States, Metric):
    """STQ / AQ / SQ over sequences of label maps (``semantic << bit_shift | instance``).

    ``update(preds, target, sequence_id)`` takes label maps of any shape — one frame (H, W) or
    several (T, H, W) — of one sequence; frames of a sequence may arrive in several calls (and
    on several ranks). States are sparse count tables concatenated across ranks, so DDP gives
    the same numbers as one process. ``compute()`` returns scalar ``STQ``, ``AQ`` and ``SQ``;
    :meth:`per_sequence` gives the per-sequence values.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        thing_ids: Iterable[int],
        *,
        ignore_label: int = 255,
        bit_shift: int = 16,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.thing_ids = sorted(int(t) for t in thing_ids)
        self.ignore_label = int(ignore_label)
        self.bit_shift = int(bit_shift)
        for name in ("confusion", "gt_areas", "pred_areas", "intersections"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(
        self, preds: Tensor | np.ndarray, target: Tensor | np.ndarray, sequence_id: int = 0
    ) -> None:
        """Add frames of sequence ``sequence_id``."""
        stats = stq_frame_stats(
            target,
            preds,
            num_classes=self.num_classes,
            thing_ids=self.thing_ids,
            ignore_label=self.ignore_label,
            bit_shift=self.bit_shift,
        )
        for name in ("confusion", "gt_areas", "pred_areas", "intersections"):
            table = getattr(stats, name)
            tagged = np.concatenate([np.full((table.shape[0], 1), sequence_id), table], axis=1)
            getattr(self, name).append(rows_to_state(tagged).to(self.device))

    def _summary(self) -> dict[str, Any]:
        return stq_summary(
            state_to_rows(self.confusion, 4),
            state_to_rows(self.gt_areas, 3),
            state_to_rows(self.pred_areas, 3),
            state_to_rows(self.intersections, 4),
            num_classes=self.num_classes,
            ignore_label=self.ignore_label,
        )

    def compute(self) -> dict[str, Tensor]:
        """Scalar ``STQ``, ``AQ`` and ``SQ`` (fractions in [0, 1])."""
        summary = self._summary()
        return {k: torch.tensor(summary[k], dtype=torch.float64) for k in ("STQ", "AQ", "SQ")}

    def per_sequence(self) -> dict[int, dict[str, float]]:
        """``sequence_id`` → ``{"STQ", "AQ", "SQ"}``."""
        return self._summary()["per_sequence"]
