"""A simulated per-frame panoptic image model, made from the ground truth by adding noise.

Detections are what an image segmenter would return frame by frame: masks with wrong
boundaries, missed, split, merged or spurious objects, wrong categories, the background as
stuff segments, and ids that carry no identity from one frame to the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from deva.data.synthetic.config import StuffRegion, SyntheticObject, SyntheticVideoConfig
from deva.types import Segment, Segmentation


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _jitter_boundary(rng: np.random.Generator, mask: np.ndarray, max_radius: int) -> np.ndarray:
    """Dilate or erode a binary mask by a random radius in [-max_radius, max_radius]."""
    if max_radius <= 0:
        return mask
    radius = int(rng.integers(-max_radius, max_radius + 1))
    if radius == 0:
        return mask
    as_u8 = mask.astype(np.uint8)
    op = cv2.dilate if radius > 0 else cv2.erode
    return op(as_u8, _disk(abs(radius))).astype(bool)


def _split(rng: np.random.Generator, mask: np.ndarray) -> list[np.ndarray]:
    """Cut a mask in two along a random line through its centroid."""
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, math.pi)
    side = (xs - xs.mean()) * math.cos(angle) + (ys - ys.mean()) * math.sin(angle) > 0
    parts = []
    for keep in (side, ~side):
        part = np.zeros_like(mask)
        part[ys[keep], xs[keep]] = True
        parts.append(part)
    return parts


@dataclass
class _Proposal:
    """One simulated segment before it is painted and given an id."""

    mask: np.ndarray
    category_id: int
    isthing: bool
    score: float


def _thing_proposals(
    rng: np.random.Generator,
    labels: np.ndarray,
    objects: Sequence[SyntheticObject],
    categories: Mapping[int, int],
    config: SyntheticVideoConfig,
    unoccluded: np.ndarray | None,
) -> list[_Proposal]:
    """Noisy proposals of the visible objects in one frame (before merging).

    ``unoccluded`` is the frame's row of unoccluded areas, or None; mostly hidden objects
    are then missed more often.
    """
    areas = np.bincount(labels.ravel(), minlength=len(objects) + 1)
    things: list[_Proposal] = []
    for obj in objects:
        area = int(areas[obj.id])
        if area < config.det_min_area:
            continue
        miss = config.det_miss_rate
        if unoccluded is not None:
            full = max(int(unoccluded[obj.id - 1]), area)
            miss += 0.5 * (1.0 - area / full)
        if rng.random() < miss:
            continue
        mask = _jitter_boundary(rng, labels == obj.id, config.det_boundary_noise)
        if np.count_nonzero(mask) < config.det_min_area:
            continue
        category = categories[obj.id]
        if rng.random() < config.det_category_noise:
            category = int(rng.integers(1, config.num_thing_categories + 1))
        score = float(np.clip(rng.normal(0.85, 0.08), 0.3, 1.0))
        if rng.random() < config.det_split_rate:
            for part in _split(rng, mask):
                if np.count_nonzero(part) >= config.det_min_area:
                    things.append(_Proposal(part, category, True, score * 0.8))
        else:
            things.append(_Proposal(mask, category, True, score))
    return things


def _spurious_proposals(
    rng: np.random.Generator, config: SyntheticVideoConfig, size: tuple[int, int]
) -> list[_Proposal]:
    """Random elliptic blobs with random categories and low scores (Poisson count)."""
    h, w = size
    short = min(h, w)
    blobs: list[_Proposal] = []
    for _ in range(int(rng.poisson(config.det_spurious_rate))):
        blob = np.zeros((h, w), dtype=np.uint8)
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        axes = tuple(int(a) for a in rng.uniform(0.03, 0.1, 2) * short + 2)
        cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        category = int(rng.integers(1, config.num_thing_categories + 1))
        blobs.append(_Proposal(blob.astype(bool), category, True, rng.uniform(0.2, 0.6)))
    return blobs


def _stuff_proposals(
    rng: np.random.Generator,
    labels: np.ndarray,
    regions: np.ndarray,
    stuff_regions: Sequence[StuffRegion],
    region_categories: Mapping[int, int],
    config: SyntheticVideoConfig,
) -> list[_Proposal]:
    """One proposal per background region that shows enough, unless it is missed."""
    stuff_props: list[_Proposal] = []
    for region in stuff_regions:
        mask = regions == region.index
        if np.count_nonzero(mask & (labels == 0)) < config.det_min_area:
            continue
        if rng.random() < config.det_stuff_miss_rate:
            continue
        mask = _jitter_boundary(rng, mask, config.det_boundary_noise)
        score = float(np.clip(rng.normal(0.8, 0.08), 0.3, 1.0))
        stuff_props.append(_Proposal(mask, region_categories[region.index], False, score))
    return stuff_props


def simulate_detections(
    masks: np.ndarray,
    stuff: np.ndarray,
    objects: Sequence[SyntheticObject],
    stuff_regions: Sequence[StuffRegion],
    config: SyntheticVideoConfig,
    seed: int | Sequence[int] | np.random.SeedSequence,
    unoccluded_area: np.ndarray | None = None,
) -> list[Segmentation]:
    """Simulate a noisy per-frame panoptic image model from the ground truth.

    Per frame: each visible object is missed with probability ``det_miss_rate`` (higher
    when it is mostly occluded), otherwise its mask is dilated or eroded, sometimes split in
    two or merged with a touching object, and sometimes given a wrong category; spurious
    blobs appear (Poisson with mean ``det_spurious_rate``); every background region becomes a
    stuff segment. Things are painted over stuff, smaller things on top. Ids are drawn at
    random in every frame, so they carry no identity over time.

    Args:
        masks: (T, H, W) ground-truth object labels (label k = ``objects[k-1]``).
        stuff: (T, H, W) background region indices (1..R = ``stuff_regions``).
        unoccluded_area: optional (T, K) areas without occluders; mostly hidden objects are
            then missed more often.
    """
    rng = np.random.default_rng(seed)
    categories = {obj.id: obj.category_id for obj in objects}
    region_categories = {region.index: region.category_id for region in stuff_regions}
    size = masks.shape[1:]
    results: list[Segmentation] = []
    for t in range(masks.shape[0]):
        labels, regions = masks[t], stuff[t]
        unoccluded = None if unoccluded_area is None else unoccluded_area[t]
        things = _thing_proposals(rng, labels, objects, categories, config, unoccluded)
        things = _merge_touching(rng, things, config.det_merge_rate)
        things += _spurious_proposals(rng, config, size)
        stuff_props = _stuff_proposals(
            rng, labels, regions, stuff_regions, region_categories, config
        )
        results.append(_paint_proposals(rng, stuff_props, things, size))
    return results


def _merge_touching(
    rng: np.random.Generator, things: list[_Proposal], rate: float
) -> list[_Proposal]:
    """With probability ``rate`` per touching pair, fuse two thing proposals into one."""
    if rate <= 0 or len(things) < 2:
        return things
    kernel = _disk(2)
    grown = [cv2.dilate(p.mask.astype(np.uint8), kernel).astype(bool) for p in things]
    merged = list(things)
    used: set[int] = set()
    for i in range(len(things)):
        for j in range(i + 1, len(things)):
            if i in used or j in used or not np.any(grown[i] & things[j].mask):
                continue
            if rng.random() >= rate:
                continue
            a, b = things[i], things[j]
            big = a if np.count_nonzero(a.mask) >= np.count_nonzero(b.mask) else b
            merged[i] = _Proposal(a.mask | b.mask, big.category_id, True, min(a.score, b.score))
            used.add(j)
    return [p for k, p in enumerate(merged) if k not in used]


def _paint_proposals(
    rng: np.random.Generator,
    stuff_props: list[_Proposal],
    things: list[_Proposal],
    size: tuple[int, int],
) -> Segmentation:
    """Paint stuff, then things by descending area, with fresh random ids; drop empty ones."""
    ordered = stuff_props + sorted(things, key=lambda p: -int(np.count_nonzero(p.mask)))
    pool = 255 if len(ordered) <= 255 else 4 * len(ordered)
    ids = rng.choice(np.arange(1, pool + 1), size=len(ordered), replace=False)
    canvas = np.zeros(size, dtype=np.int64)
    for proposal, sid in zip(ordered, ids):
        canvas[proposal.mask] = sid
    present = set(np.flatnonzero(np.bincount(canvas.ravel(), minlength=pool + 1)).tolist())
    segments = [
        Segment(
            id=int(sid),
            category_id=int(p.category_id),
            score=round(float(p.score), 4),
            isthing=p.isthing,
        )
        for p, sid in zip(ordered, ids)
        if int(sid) in present
    ]
    return Segmentation(mask=torch.from_numpy(canvas), segments=segments)
