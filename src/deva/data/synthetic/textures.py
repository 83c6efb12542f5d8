"""Textures and shape sprites of the synthetic scene: band-limited noise, patterns, outlines."""

from __future__ import annotations

import math

import cv2
import numpy as np


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
