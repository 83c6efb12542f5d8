"""Motion of the synthetic scene: every object's appearance and path, and the camera's path.

Paths are keyframes interpolated with PCHIP. Each object has a role (``ROLES``): it wanders
in the view, enters it, leaves it, leaves and comes back, or crosses another object's path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.interpolate import PchipInterpolator

from deva.data.synthetic.appearance import Appearance
from deva.data.synthetic.config import SyntheticObject, SyntheticVideoConfig


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
    """One role per object: the events the config asks for first, then free ones, shuffled."""
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


def _draw_object(
    config: SyntheticVideoConfig,
    rng: np.random.Generator,
    appearance: Appearance,
    index: int,
    role: str,
    depth: int,
) -> _ObjectPlan:
    """Draw object ``index``'s sprite (from ``appearance``), category, rotation, scale, warp.

    Its path is left at zero: paths are drawn once every object exists (see
    :func:`_object_keyframes`).
    """
    t_count = config.num_frames
    short = min(config.height, config.width)
    last = max(t_count - 1, 1)
    radius = rng.uniform(*config.object_radius) * short
    shape = str(rng.choice(list(config.shapes)))
    alpha, texture, kind = appearance.sprite(rng, shape, radius)
    obj = SyntheticObject(
        id=index + 1,
        category_id=int(rng.integers(1, config.num_thing_categories + 1)),
        shape=kind,
        role=role,
        depth=depth,
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
    return _ObjectPlan(obj, texture, alpha, radius, np.zeros((t_count, 2)), angle, scale, warp)


def _wander(
    rng: np.random.Generator, times: np.ndarray, *, width: int, height: int, step: float
) -> np.ndarray:
    """Keyframes of a random walk that stays well inside the view."""
    w, h = width, height
    points = [np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])]
    for dt in np.diff(times):
        move = rng.uniform(-1, 1, 2) * step * max(dt, 1.0)
        nxt = points[-1] + move
        nxt = np.clip(nxt, [0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h])
        points.append(nxt)
    return np.stack(points)


def _object_keyframes(
    config: SyntheticVideoConfig,
    rng: np.random.Generator,
    plan: _ObjectPlan,
    plans: Sequence[_ObjectPlan],
) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe times and (x, y) centres of ``plan``'s path, as its role asks.

    A crossing object passes through a partner's position, so the partners' paths in
    ``plans`` must already be set.
    """
    t_count, h, w = config.num_frames, config.height, config.width
    last = max(t_count - 1, 1)
    wander = partial(_wander, rng, width=w, height=h, step=config.max_speed * min(h, w))
    role, reach = plan.obj.role, plan.reach()
    if role == "free":
        times = np.array([0.0, 0.25, 0.5, 0.75, 1.0]) * last
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
    return times, keys


def _plan_objects(
    config: SyntheticVideoConfig, rng: np.random.Generator, appearance: Appearance
) -> list[_ObjectPlan]:
    """Draw every object's appearance and its whole trajectory."""
    t_count = config.num_frames
    roles = _assign_roles(config, rng)
    depths = rng.permutation(config.num_objects)
    plans = [
        _draw_object(config, rng, appearance, index, role, int(depths[index]))
        for index, role in enumerate(roles)
    ]
    # Non-crossing objects first: crossing paths are defined relative to them.
    for plan in sorted(plans, key=lambda p: p.obj.role == "cross"):
        times, keys = _object_keyframes(config, rng, plan, plans)
        if t_count == 1:
            plan.position = keys[:1].copy()
        else:
            plan.position = _interpolate(times, keys, t_count)
    return plans


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
