"""Video panoptic quality VPQ^k as DEVA's VIPSeg evaluation computes it.

For each video of T frames, every window of k consecutive frames (start 0..T-k, stride 1; a
video shorter than k is one window; k = ``None`` means the whole video) is one "image" of
panoptic quality over tubes: a ground-truth tube is one GT id in the window (area = sum of its
annotated ``area`` values, category/iscrowd from the first window frame that lists it); a
predicted tube is one predicted id (area = its pixel count). Tube IoU = |∩| / (|pred| + |gt| −
|∩| − |pred ∩ void|); same category and IoU > 0.5 → TP. Unmatched non-crowd GT → FN; unmatched
predictions → FP unless more than half of them lies on void or on a crowd region of their
class. TP / FP / FN / IoU sums accumulate per category over all windows of all videos; VPQ is
100 × the mean of ``IoU / (TP + FP/2 + FN/2)`` over categories with TP + FP + FN > 0 (all,
things, stuff).

Example:
    >>> import numpy as np
    >>> from deva.metrics.vpq import vpq_video_stats, vpq_summary
    >>> gt = np.array([[[1, 1], [2, 2]]])
    >>> segs = [[{"id": 1, "category_id": 0, "iscrowd": 0, "area": 2},
    ...          {"id": 2, "category_id": 1, "iscrowd": 0, "area": 2}]]
    >>> stats = vpq_video_stats(gt, gt, segs, segs, num_categories=2, window_sizes=(1,))
    >>> vpq_summary(stats, {0: True, 1: False})["VPQ"]["1"]
    100.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from deva.metrics._common import to_numpy

log = logging.getLogger(__name__)

DEFAULT_WINDOWS: tuple[int | None, ...] = (1, 2, 4, 6, 8, 10, None)
VOID_ID = 0


def window_name(k: int | None) -> str:
    """Key of a window size in results: ``"1"``, ``"2"``, …, ``"inf"`` for the whole video."""
    return "inf" if k is None else str(int(k))


@dataclass
class VPQStats:
    """Per-window-size, per-category accumulators; arrays are (K, C) (K window sizes, C ids)."""

    window_sizes: tuple[int | None, ...]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @classmethod
    def zeros(cls, window_sizes: Sequence[int | None], num_categories: int) -> VPQStats:
        shape = (len(window_sizes), num_categories)
        return cls(
            tuple(window_sizes),
            np.zeros(shape, np.int64),
            np.zeros(shape, np.int64),
            np.zeros(shape, np.int64),
            np.zeros(shape, np.float64),
        )

    def __iadd__(self, other: VPQStats) -> VPQStats:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self


@dataclass
class _FrameTables:
    """What one frame contributes: segment infos and its (gt id, pred id) pixel histogram."""

    gt_segments: dict[int, list]  # id -> [category, iscrowd, area]
    pred_segments: dict[int, list]  # id -> [category, area]
    pairs: np.ndarray  # (P, 2) int64 gt id, pred id
    counts: np.ndarray  # (P,) int64


def _frame_tables(
    gt: np.ndarray,
    pred: np.ndarray,
    gt_infos: Sequence[Mapping[str, Any]],
    pred_infos: Sequence[Mapping[str, Any]],
    num_categories: int,
    known_categories: set[int] | None,
    frame: int,
) -> _FrameTables:
    gt_segments: dict[int, list] = {}
    for info in gt_infos:
        seg_id = int(info["id"])
        area = info.get("area")
        if area is None:
            area = int((gt == seg_id).sum())
        if seg_id in gt_segments:
            gt_segments[seg_id][2] += area
        else:
            gt_segments[seg_id] = [int(info["category_id"]), int(info.get("iscrowd", 0)), area]
    pred_segments: dict[int, list] = {}
    for info in pred_infos:
        seg_id = int(info["id"])
        if seg_id not in pred_segments:
            category = int(info["category_id"])
            if not 0 <= category < num_categories or (
                known_categories is not None and category not in known_categories
            ):
                raise ValueError(
                    f"frame {frame}: predicted segment {seg_id} has unknown category_id {category}"
                )
            pred_segments[seg_id] = [category, 0]
    key = gt.astype(np.int64).reshape(-1) * (1 << 24) + pred.astype(np.int64).reshape(-1)
    uniq, counts = np.unique(key, return_counts=True)
    pairs = np.stack([uniq >> 24, uniq & ((1 << 24) - 1)], axis=1)
    pred_ids, inverse = np.unique(pairs[:, 1], return_inverse=True)
    pred_areas = np.bincount(inverse, weights=counts, minlength=len(pred_ids)).astype(np.int64)
    for seg_id, area in zip(pred_ids.tolist(), pred_areas.tolist()):
        if seg_id in pred_segments:
            pred_segments[seg_id][1] = area
        elif seg_id != VOID_ID:
            raise ValueError(
                f"frame {frame}: predicted id {seg_id} is in the PNG but not in segments_info"
            )
    missing = sorted(set(pred_segments) - set(pred_ids.tolist()))
    if missing:
        raise ValueError(
            f"frame {frame}: predicted ids {missing} are in segments_info but not in the PNG"
        )
    return _FrameTables(gt_segments, pred_segments, pairs, counts.astype(np.int64))


def _window_stats(tables: Sequence[_FrameTables], out: VPQStats, row: int) -> None:
    """Add the TP / FP / FN / IoU of one window (a list of frames) to ``out[row]``."""
    gt_tubes: dict[int, list] = {}
    pred_tubes: dict[int, list] = {}
    for table in tables:
        for seg_id, (category, crowd, area) in table.gt_segments.items():
            if seg_id in gt_tubes:
                gt_tubes[seg_id][2] += area
            else:
                gt_tubes[seg_id] = [category, crowd, area]
        for seg_id, (category, area) in table.pred_segments.items():
            if seg_id in pred_tubes:
                pred_tubes[seg_id][1] += area
            else:
                pred_tubes[seg_id] = [category, area]
    pairs = np.concatenate([t.pairs for t in tables])
    counts = np.concatenate([t.counts for t in tables])
    key = pairs[:, 0] * (1 << 24) + pairs[:, 1]
    uniq, inverse = np.unique(key, return_inverse=True)
    inter = np.bincount(inverse.reshape(-1), weights=counts, minlength=len(uniq)).astype(np.int64)
    gt_ids = (uniq >> 24).tolist()
    pred_ids = (uniq & ((1 << 24) - 1)).tolist()
    overlap = dict(zip(zip(gt_ids, pred_ids), inter.tolist()))

    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    for (g, p), n in overlap.items():
        gt_info = gt_tubes.get(g)
        pred_info = pred_tubes.get(p)
        if gt_info is None or pred_info is None or gt_info[1] == 1:
            continue
        if gt_info[0] != pred_info[0]:
            continue
        union = pred_info[1] + gt_info[2] - n - overlap.get((VOID_ID, p), 0)
        iou = n / union
        if iou > 1.0:
            raise ValueError(
                f"ground-truth segment {g}: tube IoU {iou:.4f} > 1, its annotated 'area' is "
                "smaller than its pixel count"
            )
        if iou > 0.5:
            out.tp[row, gt_info[0]] += 1
            out.iou[row, gt_info[0]] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_of_category: dict[int, int] = {}
    for g, (category, crowd, _area) in gt_tubes.items():
        if g in gt_matched:
            continue
        if crowd == 1:
            crowd_of_category[category] = g
            continue
        out.fn[row, category] += 1
    for p, (category, area) in pred_tubes.items():
        if p in pred_matched:
            continue
        ignored = overlap.get((VOID_ID, p), 0)
        if category in crowd_of_category:
            ignored += overlap.get((crowd_of_category[category], p), 0)
        if ignored / area > 0.5:
            continue
        out.fp[row, category] += 1


def vpq_video_stats(
    gt_ids: np.ndarray | Tensor,
    pred_ids: np.ndarray | Tensor,
    gt_segments: Sequence[Sequence[Mapping[str, Any]]],
    pred_segments: Sequence[Sequence[Mapping[str, Any]]],
    *,
    num_categories: int,
    window_sizes: Sequence[int | None] = DEFAULT_WINDOWS,
    known_categories: set[int] | None = None,
) -> VPQStats:
    """TP / FP / FN / IoU per window size and category for one video.

    Args:
        gt_ids: (T, H, W) ground-truth panoptic ids (0 = void), T frames of H × W.
        pred_ids: (T, H, W) predicted panoptic ids (0 = void).
        gt_segments: per frame, ``{"id", "category_id", "iscrowd", "area"}`` dicts (a missing
            ``area`` is taken as the pixel count).
        pred_segments: per frame, ``{"id", "category_id"}`` dicts; every non-zero id of a
            frame must be listed and every listed id must be present.
        num_categories: category ids lie in ``0..num_categories-1``.
        window_sizes: k values; ``None`` is the whole video.
        known_categories: if given, predicted categories outside it are an error.
    """
    gt = to_numpy(gt_ids)
    pred = to_numpy(pred_ids)
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(
            f"gt and pred ids must be (T, H, W) with equal shapes, got {gt.shape} and {pred.shape}"
        )
    n_frames = gt.shape[0]
    if len(gt_segments) != n_frames or len(pred_segments) != n_frames:
        raise ValueError(
            f"{n_frames} frames but {len(gt_segments)} ground-truth and "
            f"{len(pred_segments)} predicted segments_info lists"
        )
    tables = [
        _frame_tables(
            gt[t], pred[t], gt_segments[t], pred_segments[t], num_categories, known_categories, t
        )
        for t in range(n_frames)
    ]
    for t, table in enumerate(tables):
        for seg_id, (category, _crowd, _area) in table.gt_segments.items():
            if not 0 <= category < num_categories:
                raise ValueError(
                    f"frame {t}: ground-truth segment {seg_id} has category {category} outside "
                    f"0..{num_categories - 1}"
                )
    stats = VPQStats.zeros(window_sizes, num_categories)
    for row, k in enumerate(stats.window_sizes):
        size = n_frames if k is None else int(k)
        if size < 1:
            raise ValueError(f"window size must be >= 1 or None, got {k}")
        for start in range(max(n_frames - size + 1, 1)):
            _window_stats(tables[start : start + size], stats, row)
    return stats


def _pq_mean(
    stats: VPQStats, row: int, categories: Mapping[int, bool], isthing: bool | None
) -> float:
    total, n = 0.0, 0
    for category, cat_isthing in categories.items():
        if isthing is not None and bool(cat_isthing) != isthing:
            continue
        tp, fp, fn = (int(a[row, category]) for a in (stats.tp, stats.fp, stats.fn))
        if tp + fp + fn == 0:
            continue
        n += 1
        total += stats.iou[row, category] / (tp + 0.5 * fp + 0.5 * fn)
    return float(100 * (total / n)) if n else math.nan


def vpq_summary(stats: VPQStats, categories: Mapping[int, bool]) -> dict[str, Any]:
    """VPQ by window size (all / things / stuff) and VPQ_bar from accumulated stats.

    ``categories`` maps every evaluated category id to its ``isthing`` flag, in the order of
    the ground-truth json (only these categories are averaged). VPQ_bar is the mean of VPQ^∞
    and the mean of the finite window sizes (just the available one if the other is missing).
    Splits without any category with TP + FP + FN > 0 are NaN.
    """
    out: dict[str, Any] = {}
    for key, isthing in (("VPQ", None), ("VPQ_things", True), ("VPQ_stuff", False)):
        by_k = {
            window_name(k): _pq_mean(stats, row, categories, isthing)
            for row, k in enumerate(stats.window_sizes)
        }
        out[key] = by_k
        finite = [by_k[window_name(k)] for k in stats.window_sizes if k is not None]
        parts = ([float(np.mean(finite))] if finite else []) + (
            [by_k["inf"]] if None in stats.window_sizes else []
        )
        out[f"{key}_bar"] = float(np.mean(parts)) if parts else math.nan
    out["VPQ_bar_things"] = out.pop("VPQ_things_bar")
    out["VPQ_bar_stuff"] = out.pop("VPQ_stuff_bar")
    return out


def vpq_per_category(stats: VPQStats, categories: Mapping[int, bool]) -> dict[str, Any]:
    """Per window size and category: PQ (×100), TP, FP, FN and IoU sum."""
    out: dict[str, Any] = {}
    for row, k in enumerate(stats.window_sizes):
        rows = {}
        for category in categories:
            tp, fp, fn = (int(a[row, category]) for a in (stats.tp, stats.fp, stats.fn))
            iou = float(stats.iou[row, category])
            denom = tp + 0.5 * fp + 0.5 * fn
            rows[str(category)] = {
                "PQ": 100 * iou / denom if denom else 0.0,
                "TP": tp,
                "FP": fp,
                "FN": fn,
                "IoU": iou,
            }
        out[window_name(k)] = rows
    return out


class VideoPanopticQuality(Metric):
    """VPQ^k over videos (one ``update`` per whole video), all / things / stuff and VPQ_bar.

    Args:
        categories: category id → isthing (dict) or a sequence of ``{"id", "isthing"}``
            dicts as in the VIPSeg json; only these categories are averaged.
        window_sizes: the k values; ``None`` = the whole video (VPQ^∞).

    States are (K, C) sums, so DDP gives the same numbers as one process. ``compute()``
    returns scalar tensors ``VPQ_<k>``, ``VPQ_things_<k>``, ``VPQ_stuff_<k>``, ``VPQ_bar``,
    ``VPQ_bar_things`` and ``VPQ_bar_stuff`` (NaN where a split has no category).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        categories: Mapping[int, bool] | Sequence[Mapping[str, Any]],
        *,
        window_sizes: Sequence[int | None] = DEFAULT_WINDOWS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(categories, Mapping):
            self.categories = {int(k): bool(v) for k, v in categories.items()}
        else:
            self.categories = {int(c["id"]): c.get("isthing", 0) == 1 for c in categories}
        if not self.categories or min(self.categories) < 0:
            raise ValueError("categories must be a non-empty set of non-negative ids")
        self.window_sizes = tuple(None if k is None else int(k) for k in window_sizes)
        self.num_categories = max(self.categories) + 1
        shape = (len(self.window_sizes), self.num_categories)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("iou", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        preds: Tensor | np.ndarray | None = None,
        target: Tensor | np.ndarray | None = None,
        pred_segments: Sequence[Sequence[Mapping[str, Any]]] | None = None,
        target_segments: Sequence[Sequence[Mapping[str, Any]]] | None = None,
        *,
        stats: VPQStats | None = None,
    ) -> None:
        """Add one video: (T, H, W) predicted and ground-truth ids plus per-frame segment
        infos, or precomputed ``stats`` from :func:`vpq_video_stats`."""
        if stats is None:
            if preds is None or target is None or pred_segments is None or target_segments is None:
                raise ValueError("update needs preds, target and both segment lists, or stats")
            stats = vpq_video_stats(
                target,
                preds,
                target_segments,
                pred_segments,
                num_categories=self.num_categories,
                window_sizes=self.window_sizes,
                known_categories=set(self.categories),
            )
        if stats.window_sizes != self.window_sizes or stats.tp.shape[1] != self.num_categories:
            raise ValueError("stats were computed with other window sizes or categories")
        self.tp += torch.from_numpy(stats.tp).to(self.tp.device)
        self.fp += torch.from_numpy(stats.fp).to(self.fp.device)
        self.fn += torch.from_numpy(stats.fn).to(self.fn.device)
        self.iou += torch.from_numpy(stats.iou).to(self.iou.device)

    def update_stats(self, stats: VPQStats) -> None:
        """Add precomputed per-video stats (same as ``update(stats=...)``)."""
        self.update(stats=stats)

    def stats(self) -> VPQStats:
        """The accumulated (synchronised) stats as NumPy arrays."""
        return VPQStats(
            self.window_sizes,
            self.tp.cpu().numpy(),
            self.fp.cpu().numpy(),
            self.fn.cpu().numpy(),
            self.iou.cpu().numpy(),
        )

    def compute(self) -> dict[str, Tensor]:
        """Scalar tensors for every window size and split plus the VPQ_bar numbers."""
        summary = vpq_summary(self.stats(), self.categories)
        out: dict[str, Tensor] = {}
        for key in ("VPQ", "VPQ_things", "VPQ_stuff"):
            for k, value in summary[key].items():
                out[f"{key}_{k}"] = torch.tensor(value, dtype=torch.float64)
        for key in ("VPQ_bar", "VPQ_bar_things", "VPQ_bar_stuff"):
            out[key] = torch.tensor(summary[key], dtype=torch.float64)
        return out

    def summary(self) -> dict[str, Any]:
        """Nested result as the CLI prints it (VPQ by k, VPQ_bar, per-category table)."""
        stats = self.stats()
        out = vpq_summary(stats, self.categories)
        out["per_category"] = vpq_per_category(stats, self.categories)
        return out
