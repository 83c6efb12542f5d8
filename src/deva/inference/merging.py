"""Merging propagation and consensus, and deleting inactive objects (paper §3.2.2).

Propagated segments R_t (ids = registry object ids) and consensus segments C_t are associated
when their IoU exceeds 0.5 and they have the same ``isthing`` status (things, stuff and
unknown are matched separately). Both sides are non-overlapping segmentations, so each segment
has at most one partner above 0.5 and the greedy matching is the optimal one (eq. 10).

The output follows eq. 9: associated pairs become r_i ∪ c_j under the object's id, unassociated
propagated segments and unassociated consensus segments pass through, the latter as new
objects. Where these segments overlap (a union's consensus part reaching into another object,
say), the paper's rule from §3.2.1 applies: segments are painted in descending area — the
area of the union for associated pairs — so the smaller segment keeps the contested pixels.

Every live object's miss counter is reset when it associates and incremented otherwise
(including objects that the propagation lost entirely); an object whose counter reaches
``max_missed`` is reported in ``MergeResult.removed_ids``. It still appears in this frame's
output (eq. 9 passes it through); the caller removes it from the memory and the registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from deva.inference.consensus import IOU_THRESHOLD, build_proposals, paint_by_area
from deva.inference.objects import ObjectRegistry
from deva.inference.segmentation import Segmentation

logger = logging.getLogger(__name__)

MAX_MISSED = 5


@dataclass
class MergeResult:
    """Outcome of one merge.

    Attributes:
        segmentation: M_t, ids = registry object ids, metadata from the registry.
        added_ids: objects created from unassociated consensus segments, in creation order.
        removed_ids: objects that reached ``max_missed`` consecutive misses, in channel order;
            they are still in the registry: call ``registry.remove(removed_ids)`` to get the
            memory channels to drop.
        associations: object id -> id of the consensus segment merged into it.
    """

    segmentation: Segmentation
    added_ids: list[int] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)
    associations: dict[int, int] = field(default_factory=dict)


def associate(
    iou: np.ndarray,
    status_a: list[bool | None],
    status_b: list[bool | None],
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of rows and columns with IoU > threshold and equal status.

    Args:
        iou: (A, B) IoU between the segments of two segmentations.
        status_a, status_b: ``isthing`` of each row / column (None = unknown, its own group).

    Returns:
        (row, column) pairs, highest IoU first. For non-overlapping segmentations and a
        threshold ≥ 0.5 the candidate pairs are already disjoint, so this is the optimum.
    """
    a = np.array([_group(s) for s in status_a], dtype=int).reshape(-1, 1)
    b = np.array([_group(s) for s in status_b], dtype=int).reshape(1, -1)
    valid = (iou > iou_threshold) & (a == b)
    rows, cols = np.nonzero(valid)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def _group(status: bool | None) -> int:
    return 0 if status is None else (1 if status else 2)


def merge_with_consensus(
    propagated: Segmentation | None,
    consensus: Segmentation,
    registry: ObjectRegistry,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    max_missed: int = MAX_MISSED,
    max_objects: int | None = None,
) -> MergeResult:
    """Merge the propagated segmentation R_t with the consensus C_t into M_t (eq. 9).

    Args:
        propagated: R_t with registry object ids (None or empty on the first frame).
        consensus: C_t at the same (H, W); its ids are arbitrary.
        registry: the live objects; updated in place (votes, miss counters, new objects).
        iou_threshold: association threshold (0.5 in the paper).
        max_missed: consecutive misses after which an object is reported for deletion (L).
        max_objects: cap on live objects; new objects beyond it are dropped with a warning.
            Objects reported for deletion in this call do not count towards the cap.

    Returns:
        A ``MergeResult``. Each object's category is the vote over the consensus segments
        merged into it (its creating segment included), its score their mean.
    """
    if max_missed < 1:
        raise ValueError(f"max_missed must be >= 1, got {max_missed}")
    if propagated is None:
        propagated = Segmentation(mask=torch.zeros_like(torch.as_tensor(consensus.mask)))
    unknown = [s.id for s in propagated.segments if s.id not in registry]
    if unknown:
        raise ValueError(f"propagated ids {unknown} are not live objects; live: {registry.ids}")
    props = build_proposals([propagated, consensus])
    n_r = len(propagated.segments)
    r_ids = [int(s.id) for s in propagated.segments]
    cons = consensus.segments
    cross = props.iou[:n_r, n_r:]
    pairs = associate(
        cross,
        [registry[i].isthing for i in r_ids],
        [s.isthing for s in cons],
        iou_threshold=iou_threshold,
    )
    partner = dict(pairs)
    associations = {r_ids[r]: int(cons[c].id) for r, c in pairs}

    # Miss counters of every live object, including those absent from R_t.
    removed_ids = []
    row_of = {object_id: r for r, object_id in enumerate(r_ids)}
    for obj in registry:
        if obj.id in associations:
            c = cons[partner[row_of[obj.id]]]
            registry.mark_associated(obj.id, c.category_id, c.score)
        elif registry.mark_missed(obj.id) >= max_missed:
            removed_ids.append(obj.id)

    # Output segments: (flat proposal indices, area, object id or None for a new object).
    groups: list[list[int]] = []
    areas: list[int] = []
    owners: list[int | None] = []
    for r in range(n_r):
        if r in partner:
            c = n_r + partner[r]
            groups.append([r, c])
            areas.append(int(props.areas[r] + props.areas[c] - props.intersections[r, c]))
        else:
            groups.append([r])
            areas.append(int(props.areas[r]))
        owners.append(r_ids[r])
    matched = set(partner.values())
    fresh = [c for c in range(len(cons)) if c not in matched and props.areas[n_r + c] > 0]
    if max_objects is not None:
        room = max(0, max_objects - (len(registry) - len(removed_ids)))
        if len(fresh) > room:
            logger.warning(
                "max_objects=%d reached: dropping %d of %d new objects",
                max_objects,
                len(fresh) - room,
                len(fresh),
            )
            fresh = fresh[:room]
    for c in fresh:
        groups.append([n_r + c])
        areas.append(int(props.areas[n_r + c]))
        owners.append(None)

    painted = paint_by_area(props.index_maps, groups, areas)
    present = torch.bincount(painted.reshape(-1), minlength=len(groups) + 1)[1:] > 0
    slot_to_id = np.zeros(len(groups) + 1, dtype=np.int64)
    added_ids, segments = [], []
    for g, owner in enumerate(owners):
        if not bool(present[g]):
            continue
        if owner is None:
            # A new consensus segment that kept pixels becomes a new object.
            c = cons[groups[g][0] - n_r]
            owner = registry.create(category_id=c.category_id, score=c.score, isthing=c.isthing).id
            added_ids.append(owner)
        slot_to_id[g + 1] = owner
        segments.append(registry[owner].to_segment())
    mask = torch.from_numpy(slot_to_id)[painted]
    logger.debug(
        "merge: %d propagated, %d consensus, %d associated, %d added, %d to delete",
        n_r,
        len(cons),
        len(pairs),
        len(added_ids),
        len(removed_ids),
    )
    return MergeResult(
        segmentation=Segmentation(mask=mask, segments=segments),
        added_ids=added_ids,
        removed_ids=removed_ids,
        associations=associations,
    )
