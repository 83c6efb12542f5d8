"""In-clip consensus (paper §3.2.1): denoise the image segmentations of a short clip.

The caller aligns the segmentations of frames t .. t+n-1 to the key frame t (eq. 1) and passes
them here, key frame first. Every segment of every aligned frame is an *object proposal*
(eq. 2). Proposal j supports proposal i when IoU_ij > 0.5 (eq. 6); two proposals that support
each other may not both be selected (eq. 7); each selected proposal costs α = 0.5 (eq. 8).
So the integer program of eq. 4 is a maximum-weight independent set on the support graph with
node weights

    w_i = Σ_{j ≠ i, IoU_ij > 0.5} IoU_ij − α,

which we solve exactly: per connected component, by branch and bound when it is small and
with scipy's HiGHS ``milp`` otherwise. With ``separate_things`` (panoptic input, the default
here) proposals of different ``isthing`` status (True, False, None = unknown) never support,
and therefore never conflict with, each other; the tracker turns this off for generic and BURST
input, where all proposals form one group.

Each output segment lists in ``Segment.detections`` the (category, score) of its selected
proposal and of all its supporters, so that the tracker's category vote and mean score run over
every detection behind an object, as in the published implementation.

Notation: F frames in the clip, P proposals over all frames, H×W the key frame's size.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from deva.types import Segment, Segmentation

logger = logging.getLogger(__name__)

ALPHA = 0.5
IOU_THRESHOLD = 0.5
# Components of the conflict graph up to this size are solved by branch and bound (exact,
# deterministic tie-breaking); larger ones go to HiGHS. With n frames a proposal has at most
# n - 1 neighbours (segments of one frame never overlap), so components are tiny in practice.
MAX_SEARCH_SIZE = 24
_TIE_TOLERANCE = 1e-9
# Ids up to this value are mapped with a lookup table; larger ids fall back to torch.unique.
_MAX_LUT_ID = 1 << 22


@dataclass
class ProposalSet:
    """The proposals of F segmentations of equal size, flattened into one list of P.

    Attributes:
        index_maps: (F, H, W) int64; per pixel of frame f, 1 + the flat index of the proposal
            of frame f covering it, 0 where frame f has no segment.
        frames: (P,) int64, the frame each proposal comes from.
        segments: the P proposals' ``Segment`` records, in flat order (frame by frame, in the
            order of each segmentation's ``segments`` list).
        areas: (P,) int64 pixel counts.
        intersections: (P, P) int64 pairwise intersection areas (areas on the diagonal).
        iou: (P, P) float64 pairwise IoU (eq. 5); 1 on the diagonal for non-empty proposals,
            0 for pairs whose union is empty.
    """

    index_maps: torch.Tensor
    frames: np.ndarray
    segments: list[Segment]
    areas: np.ndarray
    intersections: np.ndarray
    iou: np.ndarray

    def __len__(self) -> int:
        return len(self.segments)


@dataclass
class ConsensusResult:
    """The consensus segmentation plus how it was obtained.

    Attributes:
        segmentation: the consensus C_t, with fresh ids 1..K.
        proposals: all flattened proposals with their IoU matrix.
        weights: (P,) objective weight of each proposal (summed support − α).
        selected: (P,) bool, the optimal indicator v*.
        sources: output segment id -> flat index of the selected proposal it comes from.
        supporters: output segment id -> flat indices of that proposal and its supporters,
            whose metadata was merged into the output segment.
    """

    segmentation: Segmentation
    proposals: ProposalSet
    weights: np.ndarray
    selected: np.ndarray
    sources: dict[int, int]
    supporters: dict[int, list[int]]


def _index_map(seg: Segmentation, offset: int) -> torch.Tensor:
    """Map a segmentation's ids to ``offset + 1 + position in seg.segments`` (0 = background)."""
    mask = torch.as_tensor(seg.mask)
    if mask.ndim != 2:
        raise ValueError(f"segmentation mask must be 2-D (H, W), got shape {tuple(mask.shape)}")
    mask = mask.long()
    ids = torch.tensor([int(s.id) for s in seg.segments], dtype=torch.long)
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"segment ids must be unique, got {sorted(ids.tolist())}")
    if ids.numel() and int(ids.min()) <= 0:
        raise ValueError(f"segment ids must be positive (0 = background), got {ids.tolist()}")
    if mask.numel() == 0:
        return mask.clone()
    low, high = int(mask.min()), int(mask.max())
    if low < 0:
        raise ValueError(f"segmentation mask holds negative ids (minimum {low})")
    values = torch.arange(1, len(ids) + 1, dtype=torch.long) + offset
    if high <= _MAX_LUT_ID:
        lut = torch.zeros(high + 1, dtype=torch.long)
        keep = ids <= high
        lut[ids[keep]] = values[keep]
        out = lut[mask]
    else:
        unique, inverse = torch.unique(mask, return_inverse=True)
        lookup = dict(zip(ids.tolist(), values.tolist()))
        lut = torch.tensor([lookup.get(int(u), 0) for u in unique], dtype=torch.long)
        out = lut[inverse]
    unlisted = (out == 0) & (mask != 0)
    if bool(unlisted.any()):
        missing = torch.unique(mask[unlisted])[:5].tolist()
        raise ValueError(f"ids {missing} are in the mask but not in the segment list")
    return out


def build_proposals(segmentations: Sequence[Segmentation]) -> ProposalSet:
    """Flatten all segments of ``segmentations`` and compute their pairwise IoU.

    The intersections of all proposal pairs come from one joint histogram (``bincount``) of
    flat-index pairs per frame, so the cost is O(F² · H · W + P²), with no loop over pairs.
    """
    if len(segmentations) == 0:
        raise ValueError("expected at least one segmentation, got none")
    shapes = {tuple(torch.as_tensor(s.mask).shape) for s in segmentations}
    if len(shapes) != 1:
        raise ValueError(f"all segmentations must have the same (H, W), got {sorted(shapes)}")
    maps, frames, segments = [], [], []
    for f, seg in enumerate(segmentations):
        maps.append(_index_map(seg, len(segments)))
        frames.extend([f] * len(seg.segments))
        segments.extend(seg.segments)
    index_maps = torch.stack(maps)
    num = len(segments)
    bins = num + 1
    flat = index_maps.reshape(len(segmentations), -1)
    areas = torch.bincount(flat.reshape(-1), minlength=bins)[1:]
    # Joint histogram of (proposal of frame f, proposal of frame g > f) over pixels. Flat
    # indices are global, so the histograms of all frame pairs share one bins×bins table.
    joint = torch.zeros(bins * bins, dtype=torch.long)
    for f in range(len(segmentations) - 1):
        codes = flat[f].unsqueeze(0) * bins + flat[f + 1 :]
        joint += torch.bincount(codes.reshape(-1), minlength=bins * bins)
    inter = joint.reshape(bins, bins)[1:, 1:].numpy().astype(np.int64)
    inter = inter + inter.T
    area_np = areas.numpy().astype(np.int64)
    np.fill_diagonal(inter, area_np)
    union = (area_np[:, None] + area_np[None, :] - inter).astype(np.float64)
    iou = np.divide(inter, union, out=np.zeros(union.shape), where=union > 0)
    return ProposalSet(
        index_maps=index_maps,
        frames=np.asarray(frames, dtype=np.int64),
        segments=list(segments),
        areas=area_np,
        intersections=inter,
        iou=iou,
    )


def support_matrix(
    iou: np.ndarray,
    isthing: Sequence[bool | None],
    *,
    iou_threshold: float = IOU_THRESHOLD,
    separate_things: bool = True,
) -> np.ndarray:
    """(P, P) bool: j supports i (IoU > threshold, i ≠ j, same ``isthing`` status).

    The same relation is the conflict graph of eq. 7: supporting proposals cannot both be
    selected. ``None`` (unknown status) is a group of its own. Without ``separate_things``
    the status is ignored (one group).
    """
    support = iou > iou_threshold
    if separate_things:
        groups = [{True: 1, False: 2, None: 0}[_as_status(s)] for s in isthing]
        status = np.array(groups, dtype=int)
        support &= status[:, None] == status[None, :]
    np.fill_diagonal(support, False)
    return support


def _as_status(value: bool | None) -> bool | None:
    return None if value is None else bool(value)


def proposal_weights(iou: np.ndarray, support: np.ndarray, *, alpha: float = ALPHA) -> np.ndarray:
    """Per-proposal objective weight of eq. 4: Σ_j IoU_ij over supporters j (eq. 6) − α (eq. 8)."""
    return np.where(support, iou, 0.0).sum(axis=1) - alpha


def max_weight_independent_set(
    weights: np.ndarray,
    conflict: np.ndarray,
    *,
    max_search_size: int = MAX_SEARCH_SIZE,
) -> np.ndarray:
    """Exactly maximise Σ w_i v_i subject to v_i v_j = 0 for every conflicting pair (i, j).

    Args:
        weights: (P,) float weights.
        conflict: (P, P) symmetric bool adjacency (diagonal ignored).
        max_search_size: connected components up to this size use branch and bound, larger
            ones HiGHS ``milp`` (components of one or two nodes are solved in closed form).

    Returns:
        (P,) bool indicator of an optimal set. Nodes with weight ≤ 0 are never chosen (dropping
        them never lowers the objective). Among optimal sets, branch and bound prefers the
        lexicographically earliest indices (for consensus: proposals of earlier frames, the
        key frame first); HiGHS breaks ties its own (deterministic) way.
    """
    weights = np.asarray(weights, dtype=np.float64)
    conflict = np.asarray(conflict, dtype=bool)
    num = len(weights)
    if conflict.shape != (num, num):
        raise ValueError(f"conflict must be ({num}, {num}), got {conflict.shape}")
    chosen = np.zeros(num, dtype=bool)
    candidates = np.flatnonzero(weights > 0)
    if len(candidates) == 0:
        return chosen
    sub = conflict[np.ix_(candidates, candidates)].copy()
    sub = sub | sub.T
    np.fill_diagonal(sub, False)
    n_comp, labels = connected_components(coo_matrix(sub), directed=False)
    rows, cols = np.nonzero(sub)
    adjacency: list[list[int]] = [[] for _ in range(len(candidates))]
    for r, c in zip(rows.tolist(), cols.tolist()):
        adjacency[r].append(c)
    order = np.argsort(labels, kind="stable")
    splits = np.flatnonzero(np.diff(labels[order])) + 1
    cand_w = weights[candidates].tolist()
    for members in np.split(order, splits):
        members = members.tolist()
        if len(members) == 1:
            picked = [True]
        elif len(members) == 2:
            # Two conflicting nodes: the heavier one, the earlier one on a tie.
            first, second = cand_w[members[0]], cand_w[members[1]]
            picked = [first >= second - _TIE_TOLERANCE, first < second - _TIE_TOLERANCE]
        elif len(members) <= max_search_size:
            local = {m: k for k, m in enumerate(members)}
            masks = [sum(1 << local[n] for n in adjacency[m]) for m in members]
            picked = _branch_and_bound([cand_w[m] for m in members], masks)
        else:
            local_c = sub[np.ix_(members, members)]
            picked = _milp(weights[candidates[members]], local_c).tolist()
        for m, keep in zip(members, picked):
            if keep:
                chosen[candidates[m]] = True
    logger.debug("independent set: %d nodes, %d components, %d chosen", num, n_comp, chosen.sum())
    return chosen


def _branch_and_bound(weights: list[float], neighbours: list[int]) -> list[bool]:
    """Exact MWIS of a small graph with positive weights; include-first DFS in index order.

    ``neighbours[i]`` is the bitmask of i's neighbours. The first optimum found is kept, so
    ties go to the set that includes the earliest differing index.
    """
    k = len(weights)
    best_value = -1.0
    best_set = 0

    def visit(i: int, chosen: int, blocked: int, value: float) -> None:
        nonlocal best_value, best_set
        while i < k and (blocked >> i) & 1:
            i += 1
        if i == k:
            if value > best_value + _TIE_TOLERANCE:
                best_value, best_set = value, chosen
            return
        bound = value + sum(weights[j] for j in range(i, k) if not (blocked >> j) & 1)
        if bound <= best_value + _TIE_TOLERANCE:
            return
        visit(i + 1, chosen | (1 << i), blocked | neighbours[i], value + weights[i])
        visit(i + 1, chosen, blocked, value)

    visit(0, 0, 0, 0.0)
    return [(best_set >> i) & 1 == 1 for i in range(k)]


def _milp(weights: np.ndarray, conflict: np.ndarray) -> np.ndarray:
    """Exact MWIS with HiGHS: maximise w·x, x_i + x_j ≤ 1 per conflicting pair, x binary."""
    k = len(weights)
    rows, cols = np.nonzero(np.triu(conflict, k=1))
    edges = len(rows)
    a = coo_matrix(
        (np.ones(2 * edges), (np.repeat(np.arange(edges), 2), np.stack([rows, cols], 1).ravel())),
        shape=(edges, k),
    )
    result = milp(
        c=-np.asarray(weights, dtype=np.float64),
        constraints=LinearConstraint(a.tocsr(), -np.inf, 1.0),
        integrality=np.ones(k),
        bounds=Bounds(0.0, 1.0),
    )
    if not result.success or result.x is None:
        raise RuntimeError(f"HiGHS failed on a {k}-node consensus component: {result.message}")
    return result.x > 0.5


def merge_metadata(segments: Sequence[Segment], *, new_id: int) -> Segment:
    """One segment record from several: majority category, mean score, shared ``isthing``.

    The vote and the mean run over all detections behind the segments (their
    ``merged_detections``), which the result keeps in ``detections``. Category ties go to
    the smallest category id; missing values (None) do not vote; ``isthing`` is the first
    non-None value (callers list the selected proposal first).
    """
    detections = tuple(d for s in segments for d in s.merged_detections())
    votes = Counter(int(c) for c, _ in detections if c is not None)
    category = None
    if votes:
        top = max(votes.values())
        category = min(c for c, n in votes.items() if n == top)
    scores = [float(score) for _, score in detections if score is not None]
    isthing = next((s.isthing for s in segments if s.isthing is not None), None)
    return Segment(
        id=new_id,
        category_id=category,
        score=sum(scores) / len(scores) if scores else None,
        isthing=None if isthing is None else bool(isthing),
        detections=detections,
    )


def paint_by_area(
    index_maps: torch.Tensor,
    groups: Sequence[Sequence[int]],
    areas: Sequence[int],
    *,
    later_on_top: bool = False,
) -> torch.Tensor:
    """Render output segments in descending area, so smaller segments end up on top.

    Args:
        index_maps: (F, H, W) maps of 1 + flat proposal index (0 = none), as in ProposalSet.
        groups: per output segment, the flat indices of the proposals it is the union of; a
            proposal belongs to at most one group.
        areas: per output segment, its area (of the union), which sets the painting order.
        later_on_top: among equal areas, the later group ends on top (a stable sort by
            descending area, painted in that order); otherwise the earlier one does.

    Returns:
        (H, W) int64 map of 1 + group index (0 = background).
    """
    painted_max = int(index_maps.max()) if index_maps.numel() else 0
    if len(groups) == 0 or painted_max == 0:
        return torch.zeros(index_maps.shape[1:], dtype=torch.long)
    # Proposals without pixels may have indices beyond the largest one in the maps.
    num_props = max([painted_max, *(p + 1 for members in groups for p in members)])
    # Painting order: descending area; among equal areas the group that must end on top is
    # painted last (later paint wins).
    tie = 1 if later_on_top else -1
    order = sorted(range(len(groups)), key=lambda g: (-int(areas[g]), tie * g))
    priority = np.zeros(len(groups), dtype=np.int64)
    priority[order] = np.arange(1, len(groups) + 1)
    prop_priority = np.zeros(num_props + 1, dtype=np.int64)
    for g, members in enumerate(groups):
        for p in members:
            prop_priority[p + 1] = priority[g]
    top = torch.from_numpy(prop_priority)[index_maps].amax(dim=0)
    group_of_priority = np.zeros(len(groups) + 1, dtype=np.int64)
    group_of_priority[priority] = np.arange(1, len(groups) + 1)
    return torch.from_numpy(group_of_priority)[top]


def build_consensus(
    proposals: Sequence[Segmentation],
    *,
    alpha: float = ALPHA,
    iou_threshold: float = IOU_THRESHOLD,
    max_search_size: int = MAX_SEARCH_SIZE,
    separate_things: bool = True,
) -> ConsensusResult:
    """In-clip consensus with its intermediate results (see ``in_clip_consensus``)."""
    props = build_proposals(proposals)
    if len(proposals) == 1:
        # Online setting (n = 1): the consensus is the segmentation itself (§3.2.1), segments
        # without pixels included (no minimum area: they still become objects).
        selected = np.ones(len(props), dtype=bool)
        weights = np.zeros(len(props))
        supporters = {i: [i] for i in np.flatnonzero(selected).tolist()}
    else:
        support = support_matrix(
            props.iou,
            [s.isthing for s in props.segments],
            iou_threshold=iou_threshold,
            separate_things=separate_things,
        )
        weights = proposal_weights(props.iou, support, alpha=alpha)
        selected = max_weight_independent_set(weights, support, max_search_size=max_search_size)
        # A selected proposal always has support (weight > 0 needs it for α ≥ 0).
        supporters = {
            i: [i, *np.flatnonzero(support[i]).tolist()] for i in np.flatnonzero(selected).tolist()
        }
    chosen = sorted(supporters)
    painted = paint_by_area(
        props.index_maps, [[i] for i in chosen], [int(props.areas[i]) for i in chosen]
    )
    # Fresh ids 1..K in flat proposal order. A selected segment painted over entirely by
    # smaller ones stays a segment without pixels: like any new detection without a visible
    # pixel it still becomes an object (the published implementation's rule).
    relabel = np.zeros(len(chosen) + 1, dtype=np.int64)
    segments, sources, merged_from = [], {}, {}
    for g, index in enumerate(chosen):
        new_id = len(segments) + 1
        relabel[g + 1] = new_id
        members = supporters[index]
        segments.append(merge_metadata([props.segments[m] for m in members], new_id=new_id))
        sources[new_id] = index
        merged_from[new_id] = members
    mask = torch.from_numpy(relabel)[painted]
    logger.debug(
        "consensus: %d proposals from %d frames -> %d segments",
        len(props),
        len(proposals),
        len(segments),
    )
    return ConsensusResult(
        segmentation=Segmentation(mask=mask, segments=segments),
        proposals=props,
        weights=weights,
        selected=selected,
        sources=sources,
        supporters=merged_from,
    )


def in_clip_consensus(
    proposals: Sequence[Segmentation],
    *,
    alpha: float = ALPHA,
    iou_threshold: float = IOU_THRESHOLD,
    max_search_size: int = MAX_SEARCH_SIZE,
    separate_things: bool = True,
) -> Segmentation:
    """The consensus C_t of a clip's segmentations, all aligned to the key frame t.

    Args:
        proposals: per clip frame a Segmentation at the key frame's (H, W), key frame first
            (already aligned by the caller, eq. 1). With a single frame the result is that
            frame's segmentation (online setting), segments without pixels included.
        alpha: penalty per selected proposal (eq. 8).
        iou_threshold: IoU above which proposals support / conflict with each other.
        max_search_size: largest conflict component solved by branch and bound.
        separate_things: proposals of different ``isthing`` never support each other
            (panoptic input); False puts all proposals in one group.

    Returns:
        The selected proposals painted in descending area (smaller on top), with fresh ids
        1..K; each segment's category is the vote of the selected proposal and its supporters
        (ties: smallest id), its score their mean score, and ``detections`` lists all their
        (category, score) pairs. With several frames, selected proposals fully covered by
        smaller ones are left out.
    """
    return build_consensus(
        proposals,
        alpha=alpha,
        iou_threshold=iou_threshold,
        max_search_size=max_search_size,
        separate_things=separate_things,
    ).segmentation
