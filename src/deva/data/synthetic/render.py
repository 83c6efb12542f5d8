"""Rendering of the synthetic scene: background regions seen by the camera, objects on top.

Objects are painted back to front with their alpha sprites, so nearer ones occlude farther
ones; the ground-truth labels follow the painted pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from deva.data.synthetic.appearance import Appearance
from deva.data.synthetic.config import StuffRegion, SyntheticVideoConfig
from deva.data.synthetic.motion import _camera_matrices, _ObjectPlan, _plan_objects
from deva.data.synthetic.textures import _smooth_noise


def _stuff_layout(rng: np.random.Generator, height: int, width: int, regions: int) -> np.ndarray:
    """(H, W) uint8 region index 1..R: a Voronoi partition with wavy, noise-bent borders."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    bend = 0.15 * min(height, width)
    xs = xs + (_smooth_noise(rng, height, width, min(height, width) / 2) - 0.5) * 2 * bend
    ys = ys + (_smooth_noise(rng, height, width, min(height, width) / 2) - 0.5) * 2 * bend
    seeds = rng.uniform([0, 0], [width, height], size=(regions, 2)).astype(np.float32)
    dist = (xs[None] - seeds[:, 0, None, None]) ** 2 + (ys[None] - seeds[:, 1, None, None]) ** 2
    layout = np.argmin(dist, axis=0).astype(np.uint8) + 1
    # A region may lose all its pixels to its neighbours; relabel so indices stay 1..R'.
    present = np.unique(layout)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.uint8)
    return lookup[layout]


def _paint_object(plan: _ObjectPlan, t: int, image: np.ndarray, labels: np.ndarray) -> int:
    """Paint one object over ``image`` / ``labels`` in place; return its unoccluded area."""
    h, w = labels.shape
    cx, cy = plan.position[t]
    reach = plan.reach()
    x0, x1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, w)
    y0, y1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return 0
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs - np.float32(cx), ys - np.float32(cy)
    c, s = math.cos(plan.angle[t]), math.sin(plan.angle[t])
    inv = 1.0 / plan.scale[t]
    centre = (plan.alpha.shape[0] - 1) / 2
    u = np.float32(inv) * (np.float32(c) * dx + np.float32(s) * dy)
    v = np.float32(inv) * (np.float32(-s) * dx + np.float32(c) * dy)
    amp, freq, speed, phase = plan.warp
    map_x = u + amp[0] * np.sin(freq[0] * v + speed[0] * t + phase[0]) + centre
    map_y = v + amp[1] * np.sin(freq[1] * u + speed[1] * t + phase[1]) + centre
    map_x, map_y = map_x.astype(np.float32), map_y.astype(np.float32)
    alpha = cv2.remap(plan.alpha, map_x, map_y, cv2.INTER_LINEAR, borderValue=0.0)
    texture = cv2.remap(plan.texture, map_x, map_y, cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    region = image[y0:y1, x0:x1]
    region += alpha[..., None] * (texture - region)
    inside = alpha > 0.5
    labels[y0:y1, x0:x1][inside] = plan.obj.id
    return int(inside.sum())


def _render(
    config: SyntheticVideoConfig, rng: np.random.Generator, appearance: Appearance
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[_ObjectPlan], list[StuffRegion], np.ndarray]:
    """Draw and render the whole scene: frames, labels, stuff, plans, regions, unoccluded areas."""
    t_count, h, w = config.num_frames, config.height, config.width
    diag = math.hypot(h, w)
    margin = math.ceil(
        config.camera_shift * max(h, w)
        + diag
        / 2
        * (math.exp(config.camera_zoom) - 1 + math.sin(math.radians(config.camera_rotation)))
        + 4
    )
    ch, cw = h + 2 * margin, w + 2 * margin
    layout = _stuff_layout(rng, ch, cw, config.num_stuff_regions)
    num_regions = int(layout.max())
    background = appearance.background(rng, layout, min(h, w))
    stuff_ids = config.stuff_category_ids
    replace = num_regions > len(stuff_ids)
    categories = rng.choice(stuff_ids, size=num_regions, replace=replace)
    regions = [StuffRegion(index=r + 1, category_id=int(categories[r])) for r in range(num_regions)]

    cameras = _camera_matrices(config, rng, margin)
    plans = _plan_objects(config, rng, appearance)
    back_to_front = sorted(plans, key=lambda p: -p.obj.depth)
    gain = 1.0 + 0.06 * np.sin(
        2 * math.pi * np.arange(t_count) / max(t_count, 8) * rng.uniform(0.3, 1.0)
        + rng.uniform(0, 6.3)
    )

    frames = np.empty((t_count, h, w, 3), dtype=np.uint8)
    masks = np.zeros((t_count, h, w), dtype=np.uint8)
    stuff = np.empty((t_count, h, w), dtype=np.uint8)
    unoccluded = np.zeros((t_count, len(plans)), dtype=np.int64)
    flags = cv2.WARP_INVERSE_MAP
    for t in range(t_count):
        image = cv2.warpAffine(
            background,
            cameras[t],
            (w, h),
            flags=cv2.INTER_LINEAR | flags,
            borderMode=cv2.BORDER_REFLECT,
        )
        stuff[t] = cv2.warpAffine(
            layout,
            cameras[t],
            (w, h),
            flags=cv2.INTER_NEAREST | flags,
            borderMode=cv2.BORDER_REFLECT,
        )
        for plan in back_to_front:
            unoccluded[t, plan.obj.id - 1] = _paint_object(plan, t, image, masks[t])
        image *= np.float32(gain[t])
        if config.noise_std > 0:
            image += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(config.noise_std)
        frames[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return frames, masks, stuff, plans, regions, unoccluded
