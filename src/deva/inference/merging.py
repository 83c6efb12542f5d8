"""Merging propagation and consensus, and deleting inactive objects (paper §3.2.2).

We follow the published implementation where it is more specific than (or differs from) the
paper's wording, because the paper's numbers were produced by that code and users compare our
scores with those tables. One merge, in order:

1. **Associate.** Propagated segments R_t (ids = registry object ids) and consensus segments
   C_t are associated when their IoU exceeds 0.5 (eq. 10). Both sides are non-overlapping
   segmentations, so each segment has at most one partner above 0.5 and the greedy matching
   is the optimal one. ``isthing`` splits the matching into groups (things, stuff, unknown)
   only with ``separate_things`` (panoptic, VIPSeg-style input); for generic and BURST input
   all segments are matched in one group.
2. **Paint** (eq. 9) on an empty canvas: one entry per consensus segment in its order (an
   associated pair as r_i ∪ c_j under the object's id, an unassociated segment as a new
   object), then one per unassociated live object in channel order (its propagated mask).
   Entries are painted in descending area (of the union for pairs), later paint on top, so
   smaller segments win (§3.2.1) and among equal areas the later entry ends on top. New
   objects are created in this painting order and without a minimum area: a new object that
   ends up with no visible pixel is still an object (with an empty mask).
3. **Count misses.** An associated object's counter is reset to 0; every other live object's
   counter grows by one, also when the propagation lost it entirely. In ``incremental``
   mode (automatic segmentation) an unassociated object whose propagated mask is non-empty
   is reset instead.
4. **Delete** objects whose counter *exceeds* ``max_missed`` (L), i.e. at the (L+1)-th
   consecutive miss; ``max_missed=0`` deletes at the first miss. The paper says an object is
   deleted when its counter *reaches* L; the published code (whose results are the paper's
   results) deletes one merge later, and so do we. A deleted object's pixels become
   background (they are not handed to the segment painted below it) and it is not in the
   output's segments. ``MergeResult.removed_ids`` tells the caller to drop it from the
   registry and the memory.

``max_objects``: when the live objects plus this merge's consensus segments would exceed the
cap, all consensus segments are discarded (nothing associates; every live object misses).

Categories and scores: an object's category is the most frequent one over all detections
merged into it (``Segment.merged_detections``: a consensus segment brings every supporting
proposal), ties to the smallest id; its score is their mean (see ``ObjectRegistry``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from deva.inference.consensus import IOU_THRESHOLD, ProposalSet, build_proposals, paint_by_area
from deva.inference.objects import ObjectRegistry
from deva.types import Segment, Segmentation

logger = logging.getLogger(__name__)

MAX_MISSED = 5


@dataclass
class MergeResult:
    """Outcome of one merge.

    Attributes:
        segmentation: M_t, ids = registry object ids, metadata from the registry; removed
            objects have no pixel and no segment in it. Objects without pixels (lost by the
            propagation, or new and covered by smaller segments) are not listed either.
        added_ids: objects created from unassociated consensus segments, in creation (=
            painting) order; some may have no pixel in ``segmentation``.
        removed_ids: objects whose consecutive misses exceed ``max_missed``, in channel order;
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
    separate_things: bool = True,
    incremental: bool = False,
) -> MergeResult:
    """Merge the propagated segmentation R_t with the consensus C_t into M_t (eq. 9).

    Args:
        propagated: R_t with registry object ids (None or empty on the first frame); live
            objects absent from it have an empty propagated mask.
        consensus: C_t at the same (H, W); its ids are arbitrary.
        registry: the live objects; updated in place (votes, miss counters, new objects).
        iou_threshold: association threshold (0.5 in the paper).
        max_missed: an object is deleted when its consecutive misses exceed this (L >= 0).
        max_objects: cap on live objects; when ``len(registry) + len(consensus.segments)``
            exceeds it, the consensus is discarded (with a warning).
        separate_things: match things, stuff and unknown separately (panoptic input).
        incremental: an unassociated object with a non-empty propagated mask is reset
            instead of counting a miss.

    Returns:
        A ``MergeResult`` whose segmentation has no pixel of the removed objects.
    """
    if max_missed < 0:
        raise ValueError(f"max_missed must be >= 0, got {max_missed}")
    propagated, consensus, cons = _checked_inputs(propagated, consensus, registry, max_objects)
    props = build_proposals([propagated, consensus])
    n_r = len(propagated.segments)
    r_ids = [int(s.id) for s in propagated.segments]
    row_of = {object_id: r for r, object_id in enumerate(r_ids)}
    pairs = _match(props, r_ids, cons, registry, separate_things, iou_threshold)
    associations = {r_ids[r]: int(cons[c].id) for r, c in pairs}
    unassociated = [o for o in registry.ids if o not in associations]
    groups, areas, owners, sources = _paint_entries(props, r_ids, cons, pairs, unassociated, row_of)
    added_ids = _create_objects(registry, cons, areas, owners, sources)
    painted = paint_by_area(props.index_maps, groups, areas, later_on_top=True)
    for r, c in pairs:
        registry.mark_associated(r_ids[r], detections=cons[c].merged_detections())
    removed_ids = _count_misses(registry, props, unassociated, row_of, max_missed, incremental)
    segmentation = _output_segmentation(painted, owners, removed_ids, registry)
    logger.debug(
        "merge: %d propagated, %d consensus, %d associated, %d added, %d to delete",
        n_r,
        len(cons),
        len(pairs),
        len(added_ids),
        len(removed_ids),
    )
    return MergeResult(
        segmentation=segmentation,
        added_ids=added_ids,
        removed_ids=removed_ids,
        associations=associations,
    )


def _checked_inputs(
    propagated: Segmentation | None,
    consensus: Segmentation,
    registry: ObjectRegistry,
    max_objects: int | None,
) -> tuple[Segmentation, Segmentation, list[Segment]]:
    """Validated R_t (empty when None) and C_t with its segments (none beyond ``max_objects``)."""
    shape = tuple(torch.as_tensor(consensus.mask).shape)
    if propagated is None:
        propagated = Segmentation(mask=torch.zeros(shape, dtype=torch.long))
    unknown = [s.id for s in propagated.segments if s.id not in registry]
    if unknown:
        raise ValueError(f"propagated ids {unknown} are not live objects; live: {registry.ids}")
    cons = list(consensus.segments)
    if max_objects is not None and cons and len(registry) + len(cons) > max_objects:
        logger.warning(
            "max_objects=%d: %d live objects + %d detections exceed it; discarding the detections",
            max_objects,
            len(registry),
            len(cons),
        )
        cons = []
        consensus = Segmentation(mask=torch.zeros(shape, dtype=torch.long))
    return propagated, consensus, cons


def _match(
    props: ProposalSet,
    r_ids: list[int],
    cons: list[Segment],
    registry: ObjectRegistry,
    separate_things: bool,
    iou_threshold: float,
) -> list[tuple[int, int]]:
    """Associated (propagated row, consensus index) pairs (eq. 10)."""
    n_r = len(r_ids)
    status_r = [registry[i].isthing for i in r_ids] if separate_things else [None] * n_r
    status_c = [s.isthing for s in cons] if separate_things else [None] * len(cons)
    return associate(props.iou[:n_r, n_r:], status_r, status_c, iou_threshold=iou_threshold)


def _paint_entries(
    props: ProposalSet,
    r_ids: list[int],
    cons: list[Segment],
    pairs: list[tuple[int, int]],
    unassociated: list[int],
    row_of: dict[int, int],
) -> tuple[list[list[int]], list[int], list[int | None], list[int | None]]:
    """Paint entries (flat proposal indices, area, owner id or None, new object's source)."""
    # Consensus segments in their order, then unassociated live objects in channel order.
    n_r = len(r_ids)
    row_of_col = {c: r for r, c in pairs}
    groups: list[list[int]] = []
    areas: list[int] = []
    owners: list[int | None] = []
    sources: list[int | None] = []  # consensus index of a new object's entry
    for c in range(len(cons)):
        flat = n_r + c
        if c in row_of_col:
            r = row_of_col[c]
            groups.append([r, flat])
            areas.append(int(props.areas[r] + props.areas[flat] - props.intersections[r, flat]))
            owners.append(r_ids[r])
            sources.append(None)
        else:
            groups.append([flat])
            areas.append(int(props.areas[flat]))
            owners.append(None)
            sources.append(c)
    for object_id in unassociated:
        r = row_of.get(object_id)
        groups.append([] if r is None else [r])
        areas.append(0 if r is None else int(props.areas[r]))
        owners.append(object_id)
        sources.append(None)
    return groups, areas, owners, sources


def _create_objects(
    registry: ObjectRegistry,
    cons: list[Segment],
    areas: list[int],
    owners: list[int | None],
    sources: list[int | None],
) -> list[int]:
    """Create the new objects in painting order (stable, descending area); fills ``owners``."""
    added_ids: list[int] = []
    for g in sorted(range(len(areas)), key=lambda g: -areas[g]):
        c = sources[g]
        if c is None:
            continue
        seg = cons[c]
        obj = registry.create(isthing=seg.isthing, detections=seg.merged_detections())
        owners[g] = obj.id
        added_ids.append(obj.id)
    return added_ids


def _count_misses(
    registry: ObjectRegistry,
    props: ProposalSet,
    unassociated: list[int],
    row_of: dict[int, int],
    max_missed: int,
    incremental: bool,
) -> list[int]:
    """Count the unassociated objects' misses; returns those to delete (counter > max)."""
    for object_id in unassociated:
        r = row_of.get(object_id)
        if incremental and r is not None and props.areas[r] > 0:
            registry.reset_missed(object_id)
        else:
            registry.mark_missed(object_id)
    return [o for o in registry.ids if registry[o].missed > max_missed]


def _output_segmentation(
    painted: torch.Tensor,
    owners: list[int | None],
    removed_ids: list[int],
    registry: ObjectRegistry,
) -> Segmentation:
    """M_t from the painted entry slots, without the removed objects."""
    slot_to_id = np.zeros(len(owners) + 1, dtype=np.int64)
    removed = set(removed_ids)
    for g, owner in enumerate(owners):
        if owner is not None and owner not in removed:
            slot_to_id[g + 1] = owner
    mask = torch.from_numpy(slot_to_id)[painted]
    present = set(torch.unique(mask).tolist())
    segments = [registry[o].to_segment() for o in registry.ids if o in present]
    return Segmentation(mask=mask, segments=segments)
