"""Open-World Tracking Accuracy (OWTA = sqrt(DetRe · AssA)), HOTA family, class-agnostic.

Per sequence, given per-timestep ground-truth / predicted track ids and a similarity matrix
(box IoU for BURST), for every α in 0.05, 0.10, …, 0.95: a Hungarian matching per timestep
maximising (global alignment of the id pair) × similarity, TP only if similarity ≥ α;
DetRe_α = TP / (TP + FN); AssA_α = mean over TPs of TPA / (TPA + FPA + FNA) of their id pair;
OWTA_α = sqrt(DetRe_α · AssA_α); the reported numbers are 100 × the mean over α. Sequences
combine by summing TP / FN / FP and TP-weighting AssA (as TrackEval's HOTA does).

Example:
    >>> import numpy as np
    >>> from deva.metrics.owta import owta_sequence_stats, owta_summary
    >>> boxes = [np.array([[0, 0, 10, 10]]), np.array([[5, 5, 10, 10]])]
    >>> ids = [np.array([1]), np.array([1])]
    >>> stats = owta_sequence_stats(ids, boxes, ids, boxes)
    >>> owta_summary(stats)["OWTA"]
    100.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric

from deva.metrics._common import to_numpy

log = logging.getLogger(__name__)

#: The α thresholds exactly as TrackEval builds them (floating-point values included).
ALPHAS = np.arange(0.05, 0.99, 0.05)
_EPS = np.finfo("float").eps


def box_iou_xywh(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of boxes given as (x, y, w, h); degenerate boxes have IoU 0."""
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4).copy()
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4).copy()
    b1[:, 2:] += b1[:, :2]
    b2[:, 2:] += b2[:, :2]
    lo = np.maximum(b1[:, None, :], b2[None, :, :])
    hi = np.minimum(b1[:, None, :], b2[None, :, :])
    inter = np.maximum(hi[..., 2] - lo[..., 0], 0) * np.maximum(hi[..., 3] - lo[..., 1], 0)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    inter[area1 <= 0 + _EPS, :] = 0
    inter[:, area2 <= 0 + _EPS] = 0
    inter[union <= 0 + _EPS] = 0
    union[union <= 0 + _EPS] = 1
    return inter / union


@dataclass
class OWTAStats:
    """Per-α accumulators, arrays of shape (A,) with A = number of α values."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    assa_tp: np.ndarray  # Σ over sequences of AssA_α · TP_α

    @classmethod
    def zeros(cls, n_alpha: int = len(ALPHAS)) -> OWTAStats:
        return cls(*(np.zeros(n_alpha, dtype=np.float64) for _ in range(4)))

    def __iadd__(self, other: OWTAStats) -> OWTAStats:
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp
        self.assa_tp += other.assa_tp
        return self


def remove_unmatched_predictions(similarity: np.ndarray) -> np.ndarray:
    """Indices of predictions that a Hungarian matching at similarity ≥ 0.5 leaves unmatched."""
    n_gt, n_pred = similarity.shape
    if n_gt == 0 or n_pred == 0:
        return np.arange(n_pred)
    scores = similarity.copy()
    scores[scores < 0.5 - _EPS] = 0
    rows, cols = linear_sum_assignment(-scores)
    matched = cols[scores[rows, cols] > 0 + _EPS]
    return np.delete(np.arange(n_pred), matched)


def _relabel(ids: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    nonempty = [i for i in ids if len(i)]
    if not nonempty:
        return ids, 0
    uniq = np.unique(np.concatenate(nonempty))
    return [np.searchsorted(uniq, i).astype(np.int64) for i in ids], len(uniq)


def owta_sequence_stats_from_similarity(
    gt_ids: Sequence[np.ndarray],
    pred_ids: Sequence[np.ndarray],
    similarities: Sequence[np.ndarray],
    *,
    remove_unmatched: bool = False,
    neg_category: bool = False,
    alphas: np.ndarray = ALPHAS,
) -> OWTAStats:
    """HOTA-family statistics of one sequence from per-timestep similarity matrices.

    Args:
        gt_ids: per timestep, (N_t,) ground-truth track ids.
        pred_ids: per timestep, (M_t,) predicted track ids.
        similarities: per timestep, (N_t, M_t) similarity (e.g. box IoU).
        remove_unmatched: drop predictions not matched at similarity ≥ 0.5 (BURST: the video
            is "not exhaustively labelled" for the class-agnostic class id 1).
        neg_category: keep predictions on timesteps without ground truth (TAO: the class is
            a negative category of the video); by default they are dropped.
    """
    if not len(gt_ids) == len(pred_ids) == len(similarities):
        raise ValueError("gt_ids, pred_ids and similarities must have one entry per timestep")
    gts, preds, sims = _kept_predictions(
        gt_ids, pred_ids, similarities, remove_unmatched=remove_unmatched, neg_category=neg_category
    )
    gts, n_gt_ids = _relabel(gts)
    preds, n_pred_ids = _relabel(preds)
    n_alpha = len(alphas)
    stats = OWTAStats.zeros(n_alpha)
    n_gt_dets = sum(len(g) for g in gts)
    n_pred_dets = sum(len(p) for p in preds)
    if n_pred_dets == 0:
        stats.fn[:] = n_gt_dets
        return stats
    if n_gt_dets == 0:
        stats.fp[:] = n_pred_dets
        return stats

    alignment, gt_count, pred_count = _global_alignment(gts, preds, sims, n_gt_ids, n_pred_ids)
    matches = _match_timesteps(gts, preds, sims, alignment, alphas, stats)
    for a in range(n_alpha):
        m = matches[a]
        ass = m / np.maximum(1, gt_count + pred_count - m)
        assa = np.sum(m * ass) / np.maximum(1, stats.tp[a])
        stats.assa_tp[a] = assa * stats.tp[a]
    return stats


def _kept_predictions(
    gt_ids: Sequence[np.ndarray],
    pred_ids: Sequence[np.ndarray],
    similarities: Sequence[np.ndarray],
    *,
    remove_unmatched: bool,
    neg_category: bool,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per-timestep ids and similarities, without the predictions the evaluation drops."""
    gts = [np.asarray(g, dtype=np.int64).reshape(-1) for g in gt_ids]
    preds = [np.asarray(p, dtype=np.int64).reshape(-1) for p in pred_ids]
    sims = []
    for t, (g, p, s) in enumerate(zip(gts, preds, similarities)):
        s = np.asarray(s, dtype=np.float64).reshape(len(g), len(p))
        if (len(g) == 0 and not neg_category) or remove_unmatched:
            drop = remove_unmatched_predictions(s)
            preds[t] = np.delete(p, drop)
            s = np.delete(s, drop, axis=1)
        sims.append(s)
    return gts, preds, sims


def _global_alignment(
    gts: list[np.ndarray],
    preds: list[np.ndarray],
    sims: list[np.ndarray],
    n_gt_ids: int,
    n_pred_ids: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global alignment score of every (gt id, pred id) pair, plus per-id detection counts."""
    potential = np.zeros((n_gt_ids, n_pred_ids))
    gt_count = np.zeros((n_gt_ids, 1))
    pred_count = np.zeros((1, n_pred_ids))
    for g, p, s in zip(gts, preds, sims):
        denom = s.sum(0)[np.newaxis, :] + s.sum(1)[:, np.newaxis] - s
        sim_iou = np.zeros_like(s)
        mask = denom > 0 + _EPS
        sim_iou[mask] = s[mask] / denom[mask]
        potential[g[:, np.newaxis], p[np.newaxis, :]] += sim_iou
        gt_count[g] += 1
        pred_count[0, p] += 1
    alignment = potential / (gt_count + pred_count - potential)
    return alignment, gt_count, pred_count


def _match_timesteps(
    gts: list[np.ndarray],
    preds: list[np.ndarray],
    sims: list[np.ndarray],
    alignment: np.ndarray,
    alphas: np.ndarray,
    stats: OWTAStats,
) -> list[np.ndarray]:
    """Hungarian matching per timestep: adds TP / FN / FP to ``stats``, returns per-α matches."""
    matches = [np.zeros_like(alignment) for _ in range(len(alphas))]
    for g, p, s in zip(gts, preds, sims):
        if len(g) == 0:
            stats.fp += len(p)
            continue
        if len(p) == 0:
            stats.fn += len(g)
            continue
        score = alignment[g[:, np.newaxis], p[np.newaxis, :]] * s
        rows, cols = linear_sum_assignment(-score)
        for a, alpha in enumerate(alphas):
            ok = s[rows, cols] >= alpha - _EPS
            r, c = rows[ok], cols[ok]
            stats.tp[a] += len(r)
            stats.fn[a] += len(g) - len(r)
            stats.fp[a] += len(p) - len(r)
            if len(r):
                matches[a][g[r], p[c]] += 1
    return matches


def owta_sequence_stats(
    gt_ids: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    pred_ids: Sequence[np.ndarray],
    pred_boxes: Sequence[np.ndarray],
    *,
    remove_unmatched: bool = False,
    alphas: np.ndarray = ALPHAS,
) -> OWTAStats:
    """:func:`owta_sequence_stats_from_similarity` with box-IoU similarity.

    Args:
        gt_ids, pred_ids: per timestep, (N_t,) / (M_t,) track ids.
        gt_boxes, pred_boxes: per timestep, (N_t, 4) / (M_t, 4) boxes as (x, y, w, h).
    """
    sims = [box_iou_xywh(to_numpy(gb), to_numpy(pb)) for gb, pb in zip(gt_boxes, pred_boxes)]
    return owta_sequence_stats_from_similarity(
        [to_numpy(g) for g in gt_ids],
        [to_numpy(p) for p in pred_ids],
        sims,
        remove_unmatched=remove_unmatched,
        alphas=alphas,
    )


def owta_summary(stats: OWTAStats) -> dict[str, float]:
    """OWTA, DetRe and AssA (×100, means over α) from accumulated statistics."""
    det_re = stats.tp / np.maximum(1, stats.tp + stats.fn)
    ass_a = stats.assa_tp / np.maximum(1.0, stats.tp)
    owta = np.sqrt(det_re * ass_a)
    if len(stats.tp) == 0:
        return {"OWTA": math.nan, "DetRe": math.nan, "AssA": math.nan}
    return {
        "OWTA": float(owta.mean() * 100.0),
        "DetRe": float(det_re.mean() * 100.0),
        "AssA": float(ass_a.mean() * 100.0),
    }


class OpenWorldTrackingAccuracy(Metric):
    """OWTA / DetRe / AssA accumulated over sequences, for one or more class splits.

    ``update(gt_ids, gt_boxes, pred_ids, pred_boxes, remove_unmatched=False, split="all")``
    takes one sequence as per-timestep lists (only timesteps with ground truth, see
    :mod:`deva.io.burst`). States are per-split, per-α sums, so DDP gives the same numbers as
    one process. ``compute()`` returns scalar ``OWTA``, ``DetRe``, ``AssA`` for a single split,
    or ``OWTA/<split>`` etc. for several.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, splits: Sequence[str] = ("all",), **kwargs) -> None:
        super().__init__(**kwargs)
        if not splits:
            raise ValueError("at least one split is needed")
        self.splits = tuple(splits)
        shape = (len(self.splits), len(ALPHAS))
        for name in ("tp", "fn", "fp", "assa_tp"):
            self.add_state(
                name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(
        self,
        gt_ids: Sequence[np.ndarray | Tensor] | None = None,
        gt_boxes: Sequence[np.ndarray | Tensor] | None = None,
        pred_ids: Sequence[np.ndarray | Tensor] | None = None,
        pred_boxes: Sequence[np.ndarray | Tensor] | None = None,
        *,
        remove_unmatched: bool = False,
        split: str = "all",
        stats: OWTAStats | None = None,
    ) -> None:
        """Add one sequence (per-timestep ids and (x, y, w, h) boxes, or ready ``stats``)."""
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this metric has {list(self.splits)}")
        if stats is None:
            if gt_ids is None or gt_boxes is None or pred_ids is None or pred_boxes is None:
                raise ValueError("update needs gt_ids, gt_boxes, pred_ids and pred_boxes, or stats")
            stats = owta_sequence_stats(
                gt_ids, gt_boxes, pred_ids, pred_boxes, remove_unmatched=remove_unmatched
            )
        i = self.splits.index(split)
        for name in ("tp", "fn", "fp", "assa_tp"):
            state = getattr(self, name)
            state[i] += torch.from_numpy(np.asarray(getattr(stats, name), dtype=np.float64)).to(
                state.device
            )

    def update_stats(self, stats: OWTAStats, *, split: str = "all") -> None:
        """Add precomputed sequence statistics to ``split`` (same as ``update(stats=...)``)."""
        self.update(stats=stats, split=split)

    def split_stats(self, split: str) -> OWTAStats:
        """Accumulated statistics of one split as NumPy arrays."""
        i = self.splits.index(split)
        return OWTAStats(
            *(getattr(self, n)[i].cpu().numpy() for n in ("tp", "fn", "fp", "assa_tp"))
        )

    def compute(self) -> dict[str, Tensor]:
        """Scalar OWTA / DetRe / AssA (×100), suffixed ``/<split>`` when there are several."""
        out: dict[str, Tensor] = {}
        for split in self.splits:
            summary = owta_summary(self.split_stats(split))
            for key, value in summary.items():
                name = key if len(self.splits) == 1 else f"{key}/{split}"
                out[name] = torch.tensor(value, dtype=torch.float64)
        return out
