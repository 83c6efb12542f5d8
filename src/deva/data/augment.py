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


def _run_each(compose: A.Compose, frames: Sequence[np.ndarray], rng: np.random.Generator) -> Frames:
    """Apply an image-only ``compose`` with an independent parameter draw per frame."""
    result = []
    for frame in frames:
        compose.set_random_seed(_seed(rng))
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
    ``short_side``, horizontal flip, affine (±25° rotation, ±20° shear), random resized crop to
    ``crop_size``² of 16–100 % of the area, colour jitter and, with probability ``gray_p``
    (5 %), grey scale. Frame level: mild colour jitter. (The published crop draws its area
    from 0.16–2.0 of the image and rejects draws that do not fit, which leaves 0.16–1.0.)
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
        geometry: list[A.BasicTransform] = []
        if short_side is not None:
            geometry.append(
                A.SmallestMaxSize(max_size=max(short_side, crop_size), area_for_downscale="image")
            )
        geometry += [
            A.HorizontalFlip(p=flip_p),
            A.Affine(
                rotate=(-rotate, rotate),
                shear=(-shear, shear),
                scale=scale,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=1.0,
            ),
            A.RandomResizedCrop(
                size=(crop_size, crop_size),
                scale=crop_scale,
                ratio=(0.75, 4.0 / 3.0),
                mask_interpolation=cv2.INTER_NEAREST,
            ),
            _colour_jitter(clip_jitter, 0.05, p=0.8),
            A.ToGray(p=gray_p),
        ]
        self._clip = A.Compose(geometry)
        self._frame = A.Compose([_colour_jitter(frame_jitter, 0.0, p=1.0)])

    def __call__(
        self, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], rng: np.random.Generator
    ) -> tuple[Frames, Masks]:
        """Augment a clip of T frames and masks; returns T frames and masks of ``crop_size``²."""
        frames_out, masks_out = _run_clip(self._clip, frames, masks, _seed(rng))
        return _run_each(self._frame, frames_out, rng), masks_out


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
