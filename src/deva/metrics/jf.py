"""DAVIS region similarity J and boundary accuracy F, as davis2017-evaluation computes them.

Semi-supervised semantics: the objects of a sequence are labels ``1..max`` of the first
ground-truth frame; every annotated frame except the first and the last is evaluated; every
object gets a J and an F value on every evaluated frame. Ground-truth value 255 (void) counts
as background. Per object: Mean (nan-mean), Recall (fraction of frames above 0.5) and Decay
(mean of the first quarter minus mean of the last quarter). Global numbers are plain means
over all objects of all sequences.

Example:
    >>> import torch
    >>> from deva.metrics import JAndF
    >>> metric = JAndF()
    >>> target = torch.zeros(4, 8, 8, dtype=torch.long)
    >>> target[:, 2:6, 2:6] = 1
    >>> metric.update(target.clone(), target, sequence_id=0)
    >>> float(metric.compute()["J&F-Mean"])
    1.0
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric

from deva.metrics._common import Float64States, rows_to_state, state_to_rows, to_numpy

log = logging.getLogger(__name__)

#: Keys of the global result, named as the official tool names them.
JF_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
VOID_LABEL = 255


def boundary_tolerance(height: int, width: int, bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``ceil(bound_th * sqrt(H² + W²))``, or ``bound_th`` if ≥ 1."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: all offsets (dy, dx) with dx² + dy² ≤ radius², as uint8."""
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (dx * dx + dy * dy <= radius * radius).astype(np.uint8)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary of a binary mask (..., H, W).

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
    (pixels outside the image count as background); in the last row only the right neighbour
    counts, in the last column only the lower one, and the bottom-right pixel never is.
    """
    m = np.asarray(mask, dtype=bool)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[..., :, :-1] = m[..., :, 1:]
    down[..., :-1, :] = m[..., 1:, :]
    diag[..., :-1, :-1] = m[..., 1:, 1:]
    edge = (m ^ right) | (m ^ down) | (m ^ diag)
    edge[..., -1, :] = m[..., -1, :] ^ right[..., -1, :]
    edge[..., :, -1] = m[..., :, -1] ^ down[..., :, -1]
    edge[..., -1, -1] = False
    return edge


def _dilate(binary: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation with zero padding (pixels outside the image never contribute)."""
    return cv2.dilate(binary.astype(np.uint8), kernel) > 0


def boundary_f(pred_boundary: np.ndarray, gt_boundary: np.ndarray, kernel: np.ndarray) -> float:
    """F-measure of two boundary maps (H, W) with a dilation ``kernel`` as tolerance."""
    n_pred = int(pred_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    # Only pixels within the tolerance of some boundary pixel matter: crop to that window.
    radius = kernel.shape[0] // 2
    both = pred_boundary | gt_boundary
    rows = np.flatnonzero(both.any(axis=1))
    cols = np.flatnonzero(both.any(axis=0))
    r0, r1 = max(rows[0] - radius, 0), rows[-1] + radius + 1
    c0, c1 = max(cols[0] - radius, 0), cols[-1] + radius + 1
    bp = pred_boundary[r0:r1, c0:c1]
    bg = gt_boundary[r0:r1, c0:c1]
    precision = int((bp & _dilate(bg, kernel)).sum()) / float(n_pred)
    recall = int((bg & _dilate(bp, kernel)).sum()) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def davis_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's per-frame values, as the official tool.

    Decay bins: split points ``round_half_up(1 + i(N-1)/4) - 1`` (i = 0..4), bin i spans
    frames ``s_i..s_{i+1}`` inclusive; Decay = mean(bin 0) - mean(bin 3). The official code
    stores the split points as uint8, so they wrap for sequences longer than 256 frames; that
    is reproduced for agreement.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values)) if n else math.nan
        recall = float(np.nanmean(values > 0.5)) if n else math.nan
        if n == 0:
            return mean, recall, math.nan
        splits = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64) % 256
        first = values[splits[0] : splits[1] + 1]
        last = values[splits[3] : splits[4] + 1]
        decay = (
            float(np.nanmean(first) - np.nanmean(last)) if first.size and last.size else math.nan
        )
    return mean, recall, decay


@dataclass(frozen=True)
class SequenceJF:
    """Per-object results of one sequence.

    Attributes:
        j: (O, N) region similarity per object and evaluated frame.
        f: (O, N) boundary F per object and evaluated frame.
        stats: (O, 6) rows ``J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay``.
    """

    j: np.ndarray
    f: np.ndarray
    stats: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.j.shape[0])


def _as_sequences(
    preds: np.ndarray | Tensor, target: np.ndarray | Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """int64 (T, H, W) copies of prediction and ground truth (a single frame gets T = 1)."""
    pred = to_numpy(preds).astype(np.int64, copy=False)
    gt = to_numpy(target).astype(np.int64, copy=True)
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"preds and target must both be (T, H, W) with equal shapes, got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    return pred, gt


def jf_sequence(
    preds: np.ndarray | Tensor,
    target: np.ndarray | Tensor,
    *,
    bound_th: float = 0.008,
    skip_first_last: bool = True,
    strict: bool = True,
    num_objects: int | None = None,
) -> SequenceJF:
    """J and F of every object on every evaluated frame of one sequence.

    Args:
        preds: (T, H, W) integer predicted index masks (0 = background, k = object k).
        target: (T, H, W) integer ground-truth index masks (255 = void, read as background).
        bound_th: boundary tolerance as a fraction of the image diagonal (or pixels if ≥ 1).
        skip_first_last: evaluate frames 1..T-2 only (DAVIS semi-supervised protocol).
        strict: raise on a predicted label above the number of objects (the official tool
            silently stops there); otherwise such labels are ignored.
        num_objects: override the object count (default: max label of the first GT frame).
    """
    pred, gt = _as_sequences(preds, target)
    gt[gt == VOID_LABEL] = 0
    if (gt.size and gt.min() < 0) or (pred.size and pred.min() < 0):
        raise ValueError("masks must hold non-negative labels")
    n_obj = int(gt[0].max(initial=0)) if num_objects is None else int(num_objects)
    frames = np.arange(1, gt.shape[0] - 1) if skip_first_last else np.arange(gt.shape[0])
    gt, pred = gt[frames], pred[frames]
    top = int(pred.max(initial=0))
    if top > n_obj:
        if strict:
            raise ValueError(
                f"prediction holds label {top} but the first ground-truth frame has "
                f"only {n_obj} object(s)"
            )
        pred = np.where(pred > n_obj, 0, pred)
    gt = np.where(gt > n_obj, 0, gt)  # labels absent from the first frame are not objects
    n_frames = len(frames)
    j = np.zeros((n_obj, n_frames), dtype=np.float64)
    f = np.zeros((n_obj, n_frames), dtype=np.float64)
    if n_obj and n_frames:
        # Region J for all objects and frames from one joint histogram.
        size = n_obj + 1
        key = (np.arange(n_frames)[:, None, None] * size + gt) * size + pred
        hist = np.bincount(key.reshape(-1), minlength=n_frames * size * size)
        hist = hist.reshape(n_frames, size, size)
        inter = np.diagonal(hist, axis1=1, axis2=2)[:, 1:]
        union = hist.sum(axis=2)[:, 1:] + hist.sum(axis=1)[:, 1:] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            j_ft = inter / union
        j_ft[union == 0] = 1.0
        j = j_ft.T.astype(np.float64)
        # Boundary F per object and frame.
        height, width = gt.shape[1:]
        kernel = disk(boundary_tolerance(height, width, bound_th))
        labels = np.arange(1, n_obj + 1)[:, None, None]
        for t in range(n_frames):
            gt_edges = boundary_map(gt[t][None] == labels)
            pred_edges = boundary_map(pred[t][None] == labels)
            for k in range(n_obj):
                f[k, t] = boundary_f(pred_edges[k], gt_edges[k], kernel)
    stats = np.array(
        [davis_statistics(j[k]) + davis_statistics(f[k]) for k in range(n_obj)],
        dtype=np.float64,
    ).reshape(n_obj, 6)
    return SequenceJF(j=j, f=f, stats=stats)


def jf_unsupervised_sequence(
    preds: np.ndarray | Tensor,
    target: np.ndarray | Tensor,
    *,
    bound_th: float = 0.008,
    max_proposals: int = 20,
) -> SequenceJF:
    """J and F of one sequence under the unsupervised DAVIS protocol.

    Every frame is scored; ground-truth void (255) is excluded from J and blanked before the
    boundaries are taken; predicted objects (proposals 1..max label, at most
    ``max_proposals``) are matched one-to-one to ground-truth objects by a Hungarian
    assignment maximising (mean J + mean F) / 2. As in the official tool, result rows follow
    the proposal order of the assignment, so row k is not necessarily ground-truth object k.

    Args:
        preds: (T, H, W) integer proposal masks (0 = background).
        target: (T, H, W) integer ground-truth masks (255 = void).
    """

    pred, gt = _as_sequences(preds, target)
    void = gt == VOID_LABEL
    gt[void] = 0
    n_gt = int(gt[0].max(initial=0)) if gt.shape[0] else 0
    gt = np.where(gt > n_gt, 0, gt)
    n_res = int(pred.max(initial=0))
    if n_res > max_proposals:
        raise ValueError(
            f"prediction holds {n_res} proposals, more than the {max_proposals} allowed"
        )
    n_res = max(n_res, n_gt)
    n_frames = gt.shape[0]
    j = np.zeros((n_res, n_gt, n_frames))
    f = np.zeros((n_res, n_gt, n_frames))
    if n_gt and n_frames:
        keep = ~void
        g_size, p_size = n_gt + 1, n_res + 1
        key = (np.arange(n_frames)[:, None, None] * g_size + gt) * p_size + pred
        hist = np.bincount(key[keep], minlength=n_frames * g_size * p_size)
        hist = hist.reshape(n_frames, g_size, p_size)[:, 1:, 1:].astype(np.float64)
        inter = hist  # (T, G, R) pixels of gt object ii predicted as proposal jj
        gt_area = np.stack([((gt == k) & keep).sum(axis=(1, 2)) for k in range(1, n_gt + 1)], 1)
        pr_area = np.stack([((pred == k) & keep).sum(axis=(1, 2)) for k in range(1, n_res + 1)], 1)
        union = gt_area[:, :, None] + pr_area[:, None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            j_tgr = inter / union
        j_tgr[union == 0] = 1.0
        j = j_tgr.transpose(2, 1, 0)
        height, width = gt.shape[1:]
        kernel = disk(boundary_tolerance(height, width, bound_th))
        for t in range(n_frames):
            gt_edges = boundary_map(
                (gt[t][None] == np.arange(1, n_gt + 1)[:, None, None]) & keep[t]
            )
            pr_edges = boundary_map(
                (pred[t][None] == np.arange(1, n_res + 1)[:, None, None]) & keep[t]
            )
            for jj in range(n_res):
                for ii in range(n_gt):
                    f[jj, ii, t] = boundary_f(pr_edges[jj], gt_edges[ii], kernel)
    if n_gt and n_frames:
        score = (j.mean(axis=2) + f.mean(axis=2)) / 2
        rows, cols = linear_sum_assignment(-score)
        j, f = j[rows, cols], f[rows, cols]
    else:
        j, f = np.zeros((n_gt, n_frames)), np.zeros((n_gt, n_frames))
    stats = np.array(
        [davis_statistics(j[k]) + davis_statistics(f[k]) for k in range(n_gt)], dtype=np.float64
    ).reshape(n_gt, 6)
    return SequenceJF(j=j, f=f, stats=stats)


def jf_summary(stats: np.ndarray) -> dict[str, float]:
    """Global J&F numbers from per-object rows (O, 6) (plain means, as the official tool)."""
    stats = np.asarray(stats, dtype=np.float64).reshape(-1, 6)
    if stats.shape[0] == 0:
        return dict.fromkeys(JF_KEYS, math.nan)
    means = stats.mean(axis=0)
    return {
        "J&F-Mean": float((means[0] + means[3]) / 2.0),
        "J-Mean": float(means[0]),
        "J-Recall": float(means[1]),
        "J-Decay": float(means[2]),
        "F-Mean": float(means[3]),
        "F-Recall": float(means[4]),
        "F-Decay": float(means[5]),
    }


class JAndF(Float64States, Metric):
    """DAVIS J&F accumulated over sequences (one ``update`` per whole sequence).

    ``update(preds, target, sequence_id)`` takes (T, H, W) integer index masks of all annotated
    frames of one sequence (T = frames, H × W = image size); the first ground-truth frame
    defines the objects and, by default, the first and last frames are not scored. State is
    one row per object, so a DDP run gives the same numbers as one process as long as every
    sequence is updated on one rank and ``sequence_id`` is unique.

    ``compute()`` returns the seven global numbers as scalar float64 tensors (for
    ``self.log_dict``); :meth:`per_object` gives the ``<seq>_<k>`` rows. With
    ``mode="unsupervised"`` every frame is scored and proposals are matched to objects
    (:func:`jf_unsupervised_sequence`).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        *,
        bound_th: float = 0.008,
        skip_first_last: bool = True,
        strict: bool = True,
        mode: str = "semi-supervised",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("semi-supervised", "unsupervised"):
            raise ValueError(f"mode must be 'semi-supervised' or 'unsupervised', got {mode!r}")
        self.mode = mode
        self.bound_th = bound_th
        self.skip_first_last = skip_first_last
        self.strict = strict
        self.add_state("objects", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)
        self._next_sequence = 0

    def update(
        self,
        preds: Tensor | np.ndarray,
        target: Tensor | np.ndarray,
        sequence_id: int | None = None,
    ) -> None:
        """Score one sequence: ``preds`` and ``target`` are (T, H, W) index masks."""
        if sequence_id is None:
            sequence_id = self._next_sequence
        self._next_sequence = max(self._next_sequence, int(sequence_id) + 1)
        if self.mode == "unsupervised":
            result = jf_unsupervised_sequence(preds, target, bound_th=self.bound_th)
        else:
            result = jf_sequence(
                preds,
                target,
                bound_th=self.bound_th,
                skip_first_last=self.skip_first_last,
                strict=self.strict,
            )
        n = result.num_objects
        rows = np.concatenate(
            [
                np.full((n, 1), float(sequence_id)),
                np.arange(1, n + 1, dtype=np.float64)[:, None],
                result.stats,
            ],
            axis=1,
        )
        self.objects.append(rows_to_state(rows).to(self.device))

    def _rows(self) -> np.ndarray:
        rows = state_to_rows(self.objects, 8)
        order = np.lexsort((rows[:, 1], rows[:, 0]))
        return rows[order]

    def compute(self) -> dict[str, Tensor]:
        """Global J&F-Mean, J-Mean/Recall/Decay and F-Mean/Recall/Decay."""
        summary = jf_summary(self._rows()[:, 2:])
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in summary.items()}

    def per_object(self, names: Mapping[int, str] | None = None) -> dict[str, dict[str, float]]:
        """Rows ``<seq>_<k>`` → ``{"J-Mean", "F-Mean", ...}`` (``names`` maps sequence ids)."""
        out: dict[str, dict[str, float]] = {}
        for row in self._rows():
            seq = int(row[0])
            name = names.get(seq, str(seq)) if names is not None else str(seq)
            out[f"{name}_{int(row[1])}"] = dict(
                zip(
                    ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"),
                    map(float, row[2:]),
                )
            )
        return out

    def reset(self) -> None:
        super().reset()
        self._next_sequence = 0
