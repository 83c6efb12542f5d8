"""Clip-consistent augmentation with albumentations.

Geometry must be identical for a frame and its mask, and (video stage) for every frame of a
clip, otherwise the propagation model learns from misaligned targets. Every pipeline here
passes all frames of a clip through one albumentations call (``images=`` / ``masks=``), which
draws one set of random parameters for the whole stack; only the mild colour jitter is drawn
per frame. Masks are always resampled with nearest-neighbour interpolation and padded with
background (0).

Randomness comes from an explicit ``numpy.random.Generator``: each pipeline call reseeds its
albumentations ``Compose`` from it, so a sample is a pure function of its generator (no
global RNG, reproducible in DataLoader workers).

Frames are RGB ``uint8`` ``(H, W, 3)``, masks ``uint8`` label maps ``(H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import cv2
import numpy as np

Frames = list[np.ndarray]
Masks = list[np.ndarray]


if TYPE_CHECKING:
    import albumentations as A


def _albumentations() -> ModuleType:
    """albumentations, imported on first use with its online version check turned off (it
    queries PyPI when first imported, in every data worker)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _run_clip(
    compose: A.Compose, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], seed: int
) -> tuple[Frames, Masks]:
    """Apply ``compose`` with one parameter draw to all frames and masks."""
    _check_clip(frames, masks)
    compose.set_random_seed(seed)
    out = compose(images=np.stack(frames), masks=np.stack(masks))
    return list(out["images"]), list(out["masks"])


def _run_images(compose: A.Compose, frames: Sequence[np.ndarray], seeds: Sequence[int]) -> Frames:
    """Apply an image-only ``compose`` to each frame with its own seed (one seed repeated:
    the same parameters for every frame)."""
    result = []
    for frame, seed in zip(frames, seeds, strict=True):
        compose.set_random_seed(seed)
        result.append(compose(image=frame)["image"])
    return result


def _check_clip(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    if len(frames) == 0 or len(frames) != len(masks):
        raise ValueError(f"expected as many masks as frames (≥ 1), got {len(frames)}/{len(masks)}")
    shape = frames[0].shape[:2]
    for frame, mask in zip(frames, masks):
        if frame.shape[:2] != shape or mask.shape[:2] != shape:
            raise ValueError(
                f"all frames and masks of a clip must share one size, got {shape}, "
                f"{frame.shape[:2]} and {mask.shape[:2]}"
            )


def _colour_jitter(strength: float, hue: float, p: float) -> A.ColorJitter:
    A = _albumentations()
    return A.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=hue, p=p)


class ResizeCrop:
    """Deterministic "no augmentation": resize the shorter side to ``crop_size``, centre crop.

    Keeps the fixed output size of the contract; used for debugging, validation-like
    sampling and the folder/shard equivalence tests.
    """

    def __init__(self, crop_size: int = 384) -> None:
        A = _albumentations()
        self.crop_size = crop_size
        self._compose = A.Compose(
            [
                A.SmallestMaxSize(max_size=crop_size, area_for_downscale="image"),
                A.CenterCrop(height=crop_size, width=crop_size),
            ]
        )

    def __call__(
        self, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], rng: np.random.Generator
    ) -> tuple[Frames, Masks]:
        """Resize and crop a clip; ``rng`` is accepted for interface parity and unused."""
        return _run_clip(self._compose, frames, masks, 0)


class VideoAugment:
    """Video-stage augmentation with the published ranges: one random geometry per clip.

    Clip level (same parameters on every frame and mask): resize the shorter side to
    ``short_side``, horizontal flip, affine (±25° rotation, ±20° shear along x), random resized
    crop to ``crop_size``² of 16–100 % of the area (aspect 3/4–4/3), colour jitter and, with
    probability ``gray_p`` (5 %), grey scale. Frame level: mild colour jitter. (The published
    crop draws its area from 0.16–2.0 of the image and rejects draws that do not fit, which
    leaves 0.16–1.0.)

    The geometric steps are all affine, so they are composed into one matrix per clip and
    each frame is warped once, from its decoded size straight to the crop (bilinear; masks
    nearest; background 0 outside the frame): one resampling instead of three, about a
    tenth of the work of running the steps one after another on 480p frames.
    """

    def __init__(
        self,
        crop_size: int = 384,
        *,
        short_side: int | None = 480,
        rotate: float = 25.0,
        shear: float = 20.0,
        scale: tuple[float, float] = (1.0, 1.0),
        crop_scale: tuple[float, float] = (0.16, 1.0),
        flip_p: float = 0.5,
        clip_jitter: float = 0.2,
        frame_jitter: float = 0.05,
        gray_p: float = 0.05,
    ) -> None:
        A = _albumentations()
        self.crop_size = crop_size
        self.short_side = None if short_side is None else max(short_side, crop_size)
        self.rotate = rotate
        self.shear = shear
        self.scale = scale
        self.crop_scale = crop_scale
        self.flip_p = flip_p
        self._colour = A.Compose([_colour_jitter(clip_jitter, 0.05, p=0.8), A.ToGray(p=gray_p)])
        self._frame = A.Compose([_colour_jitter(frame_jitter, 0.0, p=1.0)])

    def clip_matrix(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """The 3×3 map from a frame's pixel coordinates to the crop's, drawn from ``rng``:
        resize, flip, affine about the centre, then the random resized crop."""
        matrix = np.eye(3)
        if self.short_side is not None:
            matrix = _scale_matrix(self.short_side / min(height, width)) @ matrix
            height = max(1, round(height * self.short_side / min(height, width)))
            width = max(1, round(width * self.short_side / min(height, width)))
        if rng.random() < self.flip_p:
            matrix = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ matrix
        angle = np.deg2rad(rng.uniform(-self.rotate, self.rotate))
        shear = np.deg2rad(rng.uniform(-self.shear, self.shear))
        zoom = rng.uniform(*self.scale)
        cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
        linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, np.tan(shear)], [0.0, 1.0]])
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        affine = np.eye(3)
        affine[:2, :2] = linear
        affine[:2, 2] = centre - linear @ centre
        matrix = affine @ matrix
        x0, y0, w, h = _crop_box(height, width, self.crop_scale, rng)
        crop = _scale_matrix(self.crop_size / w, self.crop_size / h)
        crop[:2, 2] -= (x0 * self.crop_size / w, y0 * self.crop_size / h)
        return crop @ matrix

    def __call__(
        self, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], rng: np.random.Generator
    ) -> tuple[Frames, Masks]:
        """Augment a clip of T frames and masks; returns T frames and masks of ``crop_size``²."""
        _check_clip(frames, masks)
        height, width = frames[0].shape[:2]
        matrix = self.clip_matrix(height, width, rng)
        size = (self.crop_size, self.crop_size)
        frames_out = [_warp(frame, matrix, size, cv2.INTER_LINEAR) for frame in frames]
        masks_out = [_warp(mask, matrix, size, cv2.INTER_NEAREST) for mask in masks]
        frames_out = _run_images(self._colour, frames_out, [_seed(rng)] * len(frames_out))
        return _run_images(self._frame, frames_out, [_seed(rng) for _ in frames_out]), masks_out


def _scale_matrix(sx: float, sy: float | None = None) -> np.ndarray:
    """Scaling of pixel coordinates (pixel centres stay centres: x → (x + ½)·s − ½)."""
    sy = sx if sy is None else sy
    return np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])


def _crop_box(
    height: int, width: int, area: tuple[float, float], rng: np.random.Generator, tries: int = 10
) -> tuple[float, float, float, float]:
    """A random crop ``(x0, y0, w, h)`` of ``area`` × the image's area with an aspect ratio in
    3/4–4/3 (log-uniform) that fits in the image; after ``tries`` misses, the largest centred
    crop of the nearest allowed ratio."""
    low, high = np.log(3 / 4), np.log(4 / 3)
    for _ in range(tries):
        target = height * width * rng.uniform(*area)
        ratio = np.exp(rng.uniform(low, high))
        w = round(np.sqrt(target * ratio))
        h = round(np.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            return x0, y0, w, h
    ratio = min(max(width / height, 3 / 4), 4 / 3)
    w, h = (
        (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    )
    return (width - w) // 2, (height - h) // 2, w, h


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], flags: int) -> np.ndarray:
    """``image`` through ``matrix`` into a ``size`` canvas, background 0. Bilinear frames
    shrunk to less than half first lose the extra pixels by area averaging (no aliasing)."""
    shrink = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    if flags == cv2.INTER_LINEAR and shrink < 0.5:
        factor = int(1 / shrink)
        h, w = image.shape[:2]
        small = (max(1, w // factor), max(1, h // factor))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        matrix = matrix @ _scale_matrix(w / small[0], h / small[1])
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix[:2],
        size,
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


class StaticAugment:
    """Static-stage augmentation with the published ranges: one image + mask becomes a
    pseudo-video.

    Sequence level (once): scale 0.5–2.0, horizontal flip, colour jitter and, with probability
    ``gray_p`` (5 %), grey scale. Frame level, drawn anew for each of the ``num_frames``
    frames: affine (±20° rotation, scale 0.5–2.0, ±10° shear), a resize of the shorter side
    to ``crop_size`` and a random ``crop_size``² crop of its own, with probability ``tps_p``
    (0.33) a thin-plate-spline warp (scale 0.02), and colour jitter (brightness 0.1, contrast
    and saturation 0.05). Frames therefore move as much as fast video does.
    """

    def __init__(
        self,
        crop_size: int = 384,
        *,
        num_frames: int = 3,
        rotate: float = 20.0,
        shear: float = 10.0,
        scale: tuple[float, float] = (0.5, 2.0),
        sequence_scale: tuple[float, float] = (0.5, 2.0),
        tps_p: float = 0.33,
        tps_scale: tuple[float, float] = (0.02, 0.02),
        jitter: tuple[float, float, float] = (0.1, 0.05, 0.05),
        flip_p: float = 0.5,
        gray_p: float = 0.05,
    ) -> None:
        A = _albumentations()
        if num_frames < 1:
            raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
        self.crop_size = crop_size
        self.num_frames = num_frames
        brightness, contrast, saturation = jitter
        self._sequence = A.Compose(
            [
                A.SmallestMaxSize(max_size=crop_size, area_for_downscale="image"),
                A.Affine(scale=sequence_scale, **_BORDERS, p=1.0),
                A.HorizontalFlip(p=flip_p),
                A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation,
                              hue=0.0, p=1.0),
                A.ToGray(p=gray_p),
            ]
        )  # fmt: skip
        self._frame = A.Compose(
            [
                A.Affine(
                    rotate=(-rotate, rotate), shear=(-shear, shear), scale=scale, **_BORDERS, p=1.0
                ),
                A.SmallestMaxSize(max_size=crop_size, area_for_downscale="image"),
                A.RandomCrop(height=crop_size, width=crop_size, pad_if_needed=True, fill=0,
                             fill_mask=0),
                A.ThinPlateSpline(scale_range=tps_scale, num_control_points=4, **_BORDERS,
                                  p=tps_p),
                A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation,
                              hue=0.0, p=1.0),
            ]
        )  # fmt: skip

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[Frames, Masks]:
        """Turn one image ``(H, W, 3)`` and mask ``(H, W)`` into ``num_frames`` warped frames."""
        (image,), (mask,) = _run_clip(self._sequence, [image], [mask], _seed(rng))
        frames: Frames = []
        masks: Masks = []
        for _ in range(self.num_frames):
            (frame,), (frame_mask,) = _run_clip(self._frame, [image], [mask], _seed(rng))
            frames.append(frame)
            masks.append(frame_mask)
        return frames, masks


#: Warps: bilinear pixels, nearest labels, background (0) outside the image.
_BORDERS = {
    "interpolation": cv2.INTER_LINEAR,
    "mask_interpolation": cv2.INTER_NEAREST,
    "border_mode": cv2.BORDER_CONSTANT,
    "fill": 0,
    "fill_mask": 0,
}
