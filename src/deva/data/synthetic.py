"""Procedurally generated videos with exact ground truth and a simulated noisy image model.

A synthetic video is a textured background (split into a few "stuff" regions) seen by a
moving camera, with textured "thing" objects (ellipses, star polygons, smooth blobs) moving
in front of it with translation, rotation, scaling and a mild non-rigid warp. Objects are
painted back to front, so they occlude each other. With the default configuration every
video contains an object that enters the view, one that leaves it, one that leaves and comes
back (disappears and reappears) and one whose path crosses another object (occlusion).

Besides the frames and the ground-truth masks (object k has label k in every frame), the
generator simulates a per-frame image segmenter: ids drawn at random in every frame,
boundaries dilated or eroded, missed and spurious detections, splits and merges, and the
background returned as stuff segments. Everything is deterministic given the seed, and the
whole video lives in memory, so datasets, tests and benchmarks can use it without disk;
:func:`write_synthetic_video` writes it in a DAVIS-style layout when a folder is wanted.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

from deva.io.detections import write_frame_segmentation
from deva.io.masks import write_index_png
from deva.types import Segment, Segmentation

logger = logging.getLogger(__name__)

SHAPES = ("ellipse", "polygon", "blob")
ROLES = ("free", "enter", "leave", "exit_return", "cross")
_SUBDIRS = ("JPEGImages", "Annotations", "Detections", "Meta")


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """What a synthetic video looks like and how noisy its simulated detections are.

    Sizes are in pixels; object sizes and speeds are fractions of the shorter frame side so
    that the same config gives similar videos at any resolution.
    """

    num_frames: int = 40
    height: int = 240
    width: int = 320
    num_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    object_radius: tuple[float, float] = (0.1, 0.2)
    max_speed: float = 0.02
    max_rotation: float = 0.05
    scale_range: tuple[float, float] = (0.8, 1.25)
    warp_amplitude: float = 0.08
    camera_shift: float = 0.1
    camera_zoom: float = 0.05
    camera_rotation: float = 3.0
    noise_std: float = 3.0
    enter_leave: bool = True
    exit_and_return: bool = True
    crossing: bool = True
    num_thing_categories: int = 8
    num_stuff_regions: int = 3
    num_stuff_categories: int = 4
    det_miss_rate: float = 0.1
    det_spurious_rate: float = 0.3
    det_split_rate: float = 0.05
    det_merge_rate: float = 0.1
    det_boundary_noise: int = 3
    det_category_noise: float = 0.05
    det_stuff_miss_rate: float = 0.05
    det_min_area: int = 30

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frame size must be at least 16x16, got {self.height}x{self.width}")
        if not 0 <= self.num_objects <= 255:
            raise ValueError(f"num_objects must lie in [0, 255], got {self.num_objects}")
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")
        lo, hi = self.object_radius
        if not 0 < lo <= hi:
            raise ValueError(f"object_radius must be 0 < min <= max, got {self.object_radius}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < min <= max, got {self.scale_range}")
        if self.num_thing_categories < 1:
            raise ValueError(f"num_thing_categories must be >= 1, got {self.num_thing_categories}")
        if self.num_stuff_regions < 1 or self.num_stuff_categories < 1:
            raise ValueError(
                "num_stuff_regions and num_stuff_categories must be >= 1, got "
                f"{self.num_stuff_regions} and {self.num_stuff_categories}"
            )
        for name in ("det_miss_rate", "det_split_rate", "det_merge_rate", "det_category_noise"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}")

    @property
    def stuff_category_ids(self) -> list[int]:
        """Stuff categories come after the thing categories: ``T+1 .. T+S``."""
        first = self.num_thing_categories + 1
        return list(range(first, first + self.num_stuff_categories))


@dataclass
class SyntheticObject:
    """One generated thing: its label in the ground truth and how it was made."""

    id: int
    category_id: int
    shape: str
    role: str
    depth: int
    isthing: bool = True


@dataclass
class StuffRegion:
    """One background region: its index in :attr:`SyntheticVideo.stuff` and its category."""

    index: int
    category_id: int
    isthing: bool = False


@dataclass
class SyntheticVideo:
    """A generated video with its ground truth and simulated detections.

    Shapes: T frames, H×W pixels, K objects.

    - ``frames``: (T, H, W, 3) uint8 RGB.
    - ``masks``: (T, H, W) uint8, object k (``objects[k-1]``) has label k, 0 elsewhere.
    - ``stuff``: (T, H, W) uint8 background region index (1..R) under every pixel, objects
      ignored (the panoptic ground truth is ``masks`` on top of ``stuff``).
    - ``visible_area``: (T, K) pixels of each object in the ground truth.
    - ``unoccluded_area``: (T, K) pixels each object would have in the frame without the
      objects in front of it; ``visible_area < unoccluded_area`` means it is occluded.
    - ``detections``: one simulated image-model :class:`Segmentation` per frame.
    """

    frames: np.ndarray
    masks: np.ndarray
    stuff: np.ndarray
    objects: list[SyntheticObject]
    stuff_regions: list[StuffRegion]
    visible_area: np.ndarray
    unoccluded_area: np.ndarray
    detections: list[Segmentation] = field(default_factory=list)
    seed: int | list[int] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def visible(self) -> np.ndarray:
        """(T, K) bool: whether each object has at least one pixel in each frame."""
        return self.visible_area > 0

    def meta(self, config: SyntheticVideoConfig | None = None) -> dict:
        """A JSON-serialisable description of what was generated (per-frame visibility too)."""
        meta: dict = {
            "num_frames": self.num_frames,
            "height": int(self.frames.shape[1]),
            "width": int(self.frames.shape[2]),
            "seed": self.seed,
            "objects": [
                {
                    **asdict(obj),
                    "visible": self.visible[:, i].tolist(),
                    "visible_area": self.visible_area[:, i].tolist(),
                    "unoccluded_area": self.unoccluded_area[:, i].tolist(),
                }
                for i, obj in enumerate(self.objects)
            ],
            "stuff": [asdict(region) for region in self.stuff_regions],
        }
        if config is not None:
            meta["config"] = asdict(config)
        return meta


# --------------------------------------------------------------------------------------------
# Textures and shapes


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Band-limited noise in [0, 1]: coarse Gaussian noise upsampled with bicubic interpolation."""
    gh = max(2, math.ceil(height / cell) + 2)
    gw = max(2, math.ceil(width / cell) + 2)
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    field_ = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(field_.min()), float(field_.max())
    return (field_ - lo) / max(hi - lo, 1e-6)


def _texture(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """A (H, W, 3) float32 texture in [0, 255]: two colours mixed by noise and a pattern."""
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    noise = 0.6 * _smooth_noise(rng, height, width, scale) + 0.4 * _smooth_noise(
        rng, height, width, scale / 4
    )
    kind = rng.integers(4)
    if kind == 0:
        mix = noise
    else:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.15, 0.5) * scale
        along = xs * math.cos(angle) + ys * math.sin(angle)
        across = -xs * math.sin(angle) + ys * math.cos(angle)
        if kind == 1:  # stripes
            pattern = 0.5 + 0.5 * np.sin(2 * math.pi * along / period)
        elif kind == 2:  # checker
            pattern = (
                (np.sin(2 * math.pi * along / period) * np.sin(2 * math.pi * across / period)) > 0
            ).astype(np.float32)
        else:  # spots
            pattern = (
                np.cos(2 * math.pi * along / period) * np.cos(2 * math.pi * across / period)
            ) ** 2
        mix = 0.55 * pattern + 0.45 * noise
    texture = colours[0] * (1 - mix[..., None]) + colours[1] * mix[..., None]
    grain = rng.standard_normal((height, width, 1), dtype=np.float32) * 6.0
    return np.clip(texture + grain, 0, 255).astype(np.float32)


def _shape_sprite(rng: np.random.Generator, shape: str, radius: float) -> np.ndarray:
    """A square (S, S) float32 alpha sprite in [0, 1] with the shape centred, within ``radius``."""
    size = 2 * math.ceil(radius) + 5
    centre = (size - 1) / 2
    sprite = np.zeros((size, size), dtype=np.uint8)
    if shape == "ellipse":
        angles = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        ratio = rng.uniform(0.45, 1.0)
        radii_x = np.full_like(angles, radius)
        points = np.stack(
            [centre + radii_x * np.cos(angles), centre + ratio * radius * np.sin(angles)], axis=1
        )
    elif shape == "polygon":
        n = int(rng.integers(3, 9))
        # Keep vertices spread out so that the polygon is not degenerate.
        angles = np.sort(
            (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * math.pi / n + rng.uniform(0, 6.3)
        )
        radii = radius * rng.uniform(0.55, 1.0, n)
        points = np.stack(
            [centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1
        )
    else:  # smooth blob: a radial function with a few low harmonics
        angles = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        profile = np.ones_like(angles)
        for k in (2, 3, 4, 5):
            profile += rng.uniform(0, 0.35 / k * 2) * np.cos(k * angles + rng.uniform(0, 6.3))
        profile = profile / profile.max()
        radii = radius * profile
        points = np.stack(
            [centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1
        )
    shift = 4  # sub-pixel precision of cv2.fillPoly
    cv2.fillPoly(
        sprite,
        [np.round(points * (1 << shift)).astype(np.int32)],
        255,
        lineType=cv2.LINE_AA,
        shift=shift,
    )
    return sprite.astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------------
# Motion


def _interpolate(times: Sequence[float], values: np.ndarray, num_frames: int) -> np.ndarray:
    """Shape-preserving (PCHIP) interpolation of keyframe values at integer frames.

    PCHIP never overshoots between two keyframes, so a path whose keyframes are all outside
    the view stays outside in between.
    """
    values = np.asarray(values, dtype=np.float64)
    frames = np.arange(num_frames, dtype=np.float64)
    if len(times) == 1:
        return np.repeat(values[None], num_frames, axis=0)
    return PchipInterpolator(np.asarray(times, dtype=np.float64), values, axis=0)(frames)


@dataclass
class _ObjectPlan:
    """Everything needed to render one object in any frame."""

    obj: SyntheticObject
    texture: np.ndarray  # (S, S, 3) float32
    alpha: np.ndarray  # (S, S) float32
    radius: float
    position: np.ndarray  # (T, 2) x, y in frame pixels
    angle: np.ndarray  # (T,)
    scale: np.ndarray  # (T,)
    warp: np.ndarray  # (4, 2): amplitude, wave number, speed, phase; for u and v

    def reach(self) -> float:
        """Largest distance from the centre that any of its pixels can reach, in frame pixels."""
        return float(self.scale.max() * (self.radius + self.warp[0].max()) + 3.0)


def _outside_point(
    rng: np.random.Generator, width: int, height: int, reach: float, side: int | None = None
) -> tuple[np.ndarray, int]:
    """A centre from which an object of the given reach is entirely out of the view."""
    side = int(rng.integers(4)) if side is None else side
    along = rng.uniform(0.2, 0.8)
    if side == 0:
        point = (-reach, along * height)
    elif side == 1:
        point = (width + reach, along * height)
    elif side == 2:
        point = (along * width, -reach)
    else:
        point = (along * width, height + reach)
    return np.asarray(point, dtype=np.float64), side


def _assign_roles(config: SyntheticVideoConfig, rng: np.random.Generator) -> list[str]:
    wanted: list[str] = []
    if config.exit_and_return:
        wanted.append("exit_return")
    if config.crossing:
        wanted.append("cross")
    if config.enter_leave:
        wanted += ["enter", "leave"]
    roles = wanted[: config.num_objects]
    roles += ["free"] * (config.num_objects - len(roles))
    if "cross" in roles and not any(r in ("free", "enter", "leave") for r in roles):
        roles[roles.index("cross")] = "free"  # nothing suitable to cross
    order = rng.permutation(len(roles))
    return [roles[i] for i in order]


def _plan_objects(config: SyntheticVideoConfig, rng: np.random.Generator) -> list[_ObjectPlan]:
    """Draw every object's appearance and its whole trajectory."""
    t_count, h, w = config.num_frames, config.height, config.width
    short = min(h, w)
    last = max(t_count - 1, 1)
    roles = _assign_roles(config, rng)
    depths = rng.permutation(config.num_objects)
    plans: list[_ObjectPlan] = []
    for index, role in enumerate(roles):
        radius = rng.uniform(*config.object_radius) * short
        shape = str(rng.choice(list(config.shapes)))
        alpha = _shape_sprite(rng, shape, radius)
        size = alpha.shape[0]
        texture = _texture(rng, size, size, scale=max(radius * 0.8, 4.0))
        obj = SyntheticObject(
            id=index + 1,
            category_id=int(rng.integers(1, config.num_thing_categories + 1)),
            shape=shape,
            role=role,
            depth=int(depths[index]),
        )
        angle = rng.uniform(0, 2 * math.pi) + rng.uniform(
            -config.max_rotation, config.max_rotation
        ) * np.arange(t_count)
        log_lo, log_hi = np.log(config.scale_range)
        scale_times = np.linspace(0, last, 4)
        scale = np.exp(_interpolate(scale_times, rng.uniform(log_lo, log_hi, 4), t_count))
        warp = np.stack(
            [
                rng.uniform(0.3, 1.0, 2) * config.warp_amplitude * radius,
                2 * math.pi / (rng.uniform(0.8, 1.6, 2) * 2 * radius),
                rng.uniform(0.1, 0.4, 2) * rng.choice([-1, 1], 2),
                rng.uniform(0, 2 * math.pi, 2),
            ],
            axis=0,
        )
        plans.append(
            _ObjectPlan(obj, texture, alpha, radius, np.zeros((t_count, 2)), angle, scale, warp)
        )

    step = config.max_speed * short

    def wander(times: np.ndarray) -> np.ndarray:
        """Keyframes of a random walk that stays well inside the view."""
        points = [np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])]
        for dt in np.diff(times):
            move = rng.uniform(-1, 1, 2) * step * max(dt, 1.0)
            nxt = points[-1] + move
            nxt = np.clip(nxt, [0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h])
            points.append(nxt)
        return np.stack(points)

    # Non-crossing objects first: crossing paths are defined relative to them.
    for plan in sorted(plans, key=lambda p: p.obj.role == "cross"):
        role, reach = plan.obj.role, plan.reach()
        fractions = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
        if role == "free":
            times = fractions * last
            keys = wander(times)
        elif role == "enter":
            times = np.array([0.0, 0.2, 0.45, 0.7, 1.0]) * last
            keys = wander(times)
            keys[0], _ = _outside_point(rng, w, h, reach)
        elif role == "leave":
            times = np.array([0.0, 0.3, 0.55, 0.8, 1.0]) * last
            keys = wander(times)
            keys[-1], _ = _outside_point(rng, w, h, reach)
        elif role == "exit_return":
            times = np.array([0.0, 0.22, 0.42, 0.58, 0.78, 1.0]) * last
            keys = wander(times)
            keys[2], side = _outside_point(rng, w, h, reach)
            keys[3], _ = _outside_point(rng, w, h, reach, side)
        else:  # cross: pass through a partner's position in the middle of the video
            partners = [p for p in plans if p.obj.role in ("free", "enter", "leave")]
            partner = partners[int(rng.integers(len(partners)))]
            meet = round(rng.uniform(0.35, 0.65) * last)
            times = np.array([0.0, float(meet), float(last)])
            keys = wander(times)
            keys[1] = partner.position[min(meet, t_count - 1)] + rng.uniform(-0.2, 0.2, 2) * (
                plan.radius
            )
        if t_count == 1:
            plan.position = keys[:1].copy()
        else:
            plan.position = _interpolate(times, keys, t_count)
    return plans


# --------------------------------------------------------------------------------------------
# Rendering


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


def _camera_matrices(
    config: SyntheticVideoConfig, rng: np.random.Generator, margin: int
) -> np.ndarray:
    """(T, 2, 3) affine maps from frame pixels to background-canvas pixels."""
    t_count, h, w = config.num_frames, config.height, config.width
    last = max(t_count - 1, 1)
    times = np.linspace(0, last, 4)
    shift_max = config.camera_shift * max(h, w)
    shift = _interpolate(times, rng.uniform(-shift_max, shift_max, (4, 2)), t_count)
    zoom = np.exp(
        _interpolate(times, rng.uniform(-config.camera_zoom, config.camera_zoom, 4), t_count)
    )
    rot = np.deg2rad(
        _interpolate(
            times, rng.uniform(-config.camera_rotation, config.camera_rotation, 4), t_count
        )
    )
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    matrices = np.zeros((t_count, 2, 3))
    for t in range(t_count):
        c, s = math.cos(rot[t]), math.sin(rot[t])
        linear = zoom[t] * np.array([[c, -s], [s, c]])
        offset = centre + margin + shift[t] - linear @ centre
        matrices[t, :, :2] = linear
        matrices[t, :, 2] = offset
    return matrices


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
    config: SyntheticVideoConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[_ObjectPlan], list[StuffRegion], np.ndarray]:
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
    background = np.zeros((ch, cw, 3), dtype=np.float32)
    for r in range(1, num_regions + 1):
        inside = layout == r
        background[inside] = _texture(rng, ch, cw, scale=rng.uniform(0.08, 0.25) * min(h, w))[
            inside
        ]
    stuff_ids = config.stuff_category_ids
    replace = num_regions > len(stuff_ids)
    categories = rng.choice(stuff_ids, size=num_regions, replace=replace)
    regions = [StuffRegion(index=r + 1, category_id=int(categories[r])) for r in range(num_regions)]

    cameras = _camera_matrices(config, rng, margin)
    plans = _plan_objects(config, rng)
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


# --------------------------------------------------------------------------------------------
# Simulated image model


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
    mask: np.ndarray
    category_id: int
    isthing: bool
    score: float


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
    h, w = masks.shape[1:]
    short = min(h, w)
    results: list[Segmentation] = []
    for t in range(masks.shape[0]):
        labels, regions = masks[t], stuff[t]
        areas = np.bincount(labels.ravel(), minlength=len(objects) + 1)
        things: list[_Proposal] = []
        for obj in objects:
            area = int(areas[obj.id])
            if area < config.det_min_area:
                continue
            miss = config.det_miss_rate
            if unoccluded_area is not None:
                full = max(int(unoccluded_area[t, obj.id - 1]), area)
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
        things = _merge_touching(rng, things, config.det_merge_rate)
        for _ in range(int(rng.poisson(config.det_spurious_rate))):
            blob = np.zeros((h, w), dtype=np.uint8)
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            axes = tuple(int(a) for a in rng.uniform(0.03, 0.1, 2) * short + 2)
            cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            category = int(rng.integers(1, config.num_thing_categories + 1))
            things.append(_Proposal(blob.astype(bool), category, True, rng.uniform(0.2, 0.6)))
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
        results.append(_paint_proposals(rng, stuff_props, things, (h, w)))
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


# --------------------------------------------------------------------------------------------
# Public entry points


def generate_video(
    config: SyntheticVideoConfig | None = None, seed: int | Sequence[int] = 0
) -> SyntheticVideo:
    """Generate one synthetic video, its ground truth and simulated detections, in memory.

    The same ``config`` and ``seed`` always give identical arrays. Scene and detections use
    independent random streams, so changing only the ``det_*`` settings keeps the frames.
    """
    config = config or SyntheticVideoConfig()
    scene_seq, det_seq = np.random.SeedSequence(seed).spawn(2)
    frames, masks, stuff, plans, regions, unoccluded = _render(
        config, np.random.default_rng(scene_seq)
    )
    objects = [plan.obj for plan in plans]
    visible_area = (
        np.stack([np.count_nonzero(masks == obj.id, axis=(1, 2)) for obj in objects], axis=1)
        if objects
        else np.zeros((config.num_frames, 0), dtype=np.int64)
    )
    detections = simulate_detections(
        masks, stuff, objects, regions, config, det_seq, unoccluded_area=unoccluded
    )
    return SyntheticVideo(
        frames=frames,
        masks=masks,
        stuff=stuff,
        objects=objects,
        stuff_regions=regions,
        visible_area=visible_area.astype(np.int64),
        unoccluded_area=unoccluded,
        detections=detections,
        seed=seed if isinstance(seed, int) else [int(s) for s in seed],
    )


def frame_name(index: int) -> str:
    """DAVIS-style frame name: ``00000``, ``00001``, ..."""
    return f"{index:05d}"


def write_synthetic_video(
    root: str | Path,
    name: str,
    video: SyntheticVideo,
    *,
    config: SyntheticVideoConfig | None = None,
    jpeg_quality: int = 95,
) -> None:
    """Write one video under ``root`` in the DAVIS-style layout.

    ``JPEGImages/<name>/00000.jpg``, ``Annotations/<name>/00000.png`` (palette, every frame),
    ``Detections/<name>/00000.png + .json`` (precomputed-detection format) and
    ``Meta/<name>/meta.json``.
    """
    root = Path(root)
    image_dir = root / "JPEGImages" / name
    mask_dir = root / "Annotations" / name
    det_dir = root / "Detections" / name
    meta_dir = root / "Meta" / name
    for directory in (image_dir, mask_dir, det_dir, meta_dir):
        directory.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    for t in range(video.num_frames):
        stem = frame_name(t)
        bgr = cv2.cvtColor(video.frames[t], cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(image_dir / f"{stem}.jpg"), bgr, params):
            raise OSError(f"cannot write frame {image_dir / f'{stem}.jpg'}")
        write_index_png(mask_dir / f"{stem}.png", video.masks[t])
        if t < len(video.detections):
            write_frame_segmentation(det_dir, stem, video.detections[t])
    meta = video.meta(config)
    meta["name"] = name
    (meta_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def prepare_output_dir(root: str | Path, *, overwrite: bool = False) -> Path:
    """Make sure ``root`` can receive a dataset; with ``overwrite`` clear our sub-folders.

    A non-empty existing folder is refused unless ``overwrite`` is set; even then only the
    folders this module writes (and ``dataset.json``) are removed.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"output is not a directory: {root}")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output folder {root} is not empty; pass overwrite=true to replace it"
            )
        for sub in _SUBDIRS:
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
        (root / "dataset.json").unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return root


def video_seed(seed: int, index: int) -> list[int]:
    """The seed of video ``index`` in a dataset generated with ``seed``."""
    return [int(seed), int(index)]


def video_name(index: int) -> str:
    return f"video_{index:03d}"


def write_synthetic_dataset(
    root: str | Path,
    config: SyntheticVideoConfig | None = None,
    *,
    num_videos: int = 3,
    seed: int = 0,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    progress: bool = False,
) -> list[str]:
    """Generate ``num_videos`` videos and write them under ``root``; return their names.

    Video ``i`` uses seed ``[seed, i]``, so a dataset can be regenerated or extended
    video by video. A ``dataset.json`` at the root records the config and the seeds.
    """
    config = config or SyntheticVideoConfig()
    root = prepare_output_dir(root, overwrite=overwrite)
    names = [video_name(i) for i in range(num_videos)]
    iterator = range(num_videos)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="synthetic videos", unit="video")
    for i in iterator:
        video = generate_video(config, video_seed(seed, i))
        write_synthetic_video(root, names[i], video, config=config, jpeg_quality=jpeg_quality)
        logger.debug("wrote %s (%d frames)", names[i], video.num_frames)
    summary = {
        "videos": names,
        "seeds": [video_seed(seed, i) for i in range(num_videos)],
        "config": asdict(config),
        "thing_categories": list(range(1, config.num_thing_categories + 1)),
        "stuff_categories": config.stuff_category_ids,
    }
    (root / "dataset.json").write_text(json.dumps(summary, indent=1))
    return names
