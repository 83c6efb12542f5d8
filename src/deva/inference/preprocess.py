"""Frames to network inputs and network outputs back to frames.

Network inputs follow one rule (the published implementation's): resize so the shorter
side is ``shorter_side`` (480 by default, ``-1`` keeps the original size) and the longer side
is ``floor(shorter_side * long / short)``, bilinear with antialiasing for images and
pixel-centre nearest (``nearest-exact``) for masks; ImageNet normalisation; zero padding to a
multiple of 16 split evenly. Outputs go back the other way: un-pad, resize the probabilities to
the original size (bilinear), then take the arg-max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deva.types import Segmentation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Padding:
    """Pixels added on each side: (left, right, top, bottom)."""

    left: int
    right: int
    top: int
    bottom: int


def pad_to_multiple(x: torch.Tensor, divisor: int = 16) -> tuple[torch.Tensor, Padding]:
    """Zero-pad the last two dims of ``x`` to multiples of ``divisor``.

    The padding is split as evenly as possible, the extra pixel going to the bottom / right.
    """
    h, w = x.shape[-2:]
    pad_h = (divisor - h % divisor) % divisor
    pad_w = (divisor - w % divisor) % divisor
    padding = Padding(pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h == 0 and pad_w == 0:
        return x, padding
    padded = F.pad(x, (padding.left, padding.right, padding.top, padding.bottom))
    return padded, padding


def unpad(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Remove the padding added by :func:`pad_to_multiple` from the last two dims."""
    h, w = x.shape[-2:]
    return x[..., padding.top : h - padding.bottom, padding.left : w - padding.right]


def clear_padding(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    """A copy of ``x`` with the ``padding`` border of its last two dims set to zero (for id
    maps: background), so that nothing lies outside the image."""
    h, w = x.shape[-2:]
    out = x.clone()
    out[..., : padding.top, :] = 0
    out[..., h - padding.bottom :, :] = 0
    out[..., : padding.left] = 0
    out[..., w - padding.right :] = 0
    return out


def resized_size(height: int, width: int, shorter_side: int = 480) -> tuple[int, int]:
    """Processing size (H', W') with the shorter side ``shorter_side``; ``-1`` keeps (H, W).

    The longer side is ``floor(shorter_side * long / short)``: 236×426 → 480×866.
    """
    if shorter_side is None or shorter_side < 0:
        return height, width
    if shorter_side == 0:
        raise ValueError("shorter_side must be positive or -1 (original size), got 0")
    if height <= width:
        return shorter_side, (shorter_side * width) // height
    return (shorter_side * height) // width, shorter_side


@dataclass(frozen=True)
class FrameGeometry:
    """How a frame was mapped to the network input: sizes (H, W) and the padding added."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    padding: Padding

    @property
    def padded_size(self) -> tuple[int, int]:
        h, w = self.resized_size
        p = self.padding
        return h + p.top + p.bottom, w + p.left + p.right


def image_to_tensor(frame: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """RGB uint8 (H, W, 3) → float32 (3, H, W) in [0, 1], on ``device`` (default: CPU).

    The frame travels as uint8 (a quarter of the bytes) and is converted on the device; the
    result equals converting on the CPU and moving the floats.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    raw = torch.from_numpy(np.ascontiguousarray(frame))
    if device is not None:
        raw = raw.to(device)
    return raw.permute(2, 0, 1).float().div_(255.0)


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of (..., 3, H, W) images in [0, 1]."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (image - mean) / std


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing (align_corners off) of (..., C, H, W) float images."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, *out.shape[-3:])


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (..., H, W) masks of any dtype (ids or probabilities).

    Pixel-centre sampling: output pixel i reads input pixel ``floor((i + 0.5) · in / out)``
    (torch's ``nearest-exact``, as PIL's NEAREST and the published implementation). Torch's
    plain ``nearest`` reads ``floor(i · in / out)``, up to one pixel off, which is enough to
    flip borderline associations (IoU just above / below 0.5).
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    lead = mask.shape[:-2]
    work = mask.reshape(1, -1, *mask.shape[-2:])
    if not work.is_floating_point():
        work = work.double()  # interpolate has no integer kernels; float64 keeps ids exact
    out = F.interpolate(work, size=size, mode="nearest-exact")
    return out.to(mask.dtype).reshape(*lead, *size)


def preprocess_frame(
    frame: np.ndarray | torch.Tensor,
    shorter_side: int = 480,
    *,
    divisor: int = 16,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, FrameGeometry]:
    """RGB frame → normalised, resized and padded (3, H', W') float32 network input.

    ``frame`` is RGB uint8 (H, W, 3) or a float (3, H, W) tensor in [0, 1]. The returned
    geometry undoes the mapping for masks and probabilities.
    """
    if isinstance(frame, torch.Tensor):
        image = frame.float()
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
        if device is not None:
            image = image.to(device)
    else:
        image = image_to_tensor(frame, device)
    original = (int(image.shape[-2]), int(image.shape[-1]))
    size = resized_size(*original, shorter_side)
    image = normalize_image(resize_image(image, size))
    image, padding = pad_to_multiple(image, divisor)
    return image, FrameGeometry(original, size, padding)


def preprocess_mask(mask: np.ndarray | torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Bring an original-size (..., H, W) mask to the network input size (nearest, padded).

    Works for id masks (integer) and per-object probabilities / one-hot masks (float).
    """
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if tuple(mask.shape[-2:]) != geometry.original_size:
        raise ValueError(
            f"mask size {tuple(mask.shape[-2:])} does not match the frame size "
            f"{geometry.original_size}"
        )
    resized = resize_mask(mask, geometry.resized_size)
    p = geometry.padding
    return F.pad(resized, (p.left, p.right, p.top, p.bottom))


def restore_probabilities(prob: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Un-pad (..., N, H', W') per-object probabilities and resize them to the original size.

    Bilinear, align_corners off, without antialiasing; call before the arg-max.
    """
    prob = unpad(prob, geometry.padding)
    if tuple(prob.shape[-2:]) == geometry.original_size:
        return prob
    lead = prob.shape[:-3]
    flat = prob.reshape(-1, *prob.shape[-3:])
    if not flat.is_floating_point():
        flat = flat.float()
    out = F.interpolate(flat, size=geometry.original_size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


def argmax_channels(prob: torch.Tensor) -> torch.Tensor:
    """``prob.argmax(dim=-3)`` for (..., C, H, W) probabilities: the first maximal channel.

    A reduction over the channel axis with few channels is slow in PyTorch on the CPU (80 ms
    for 3 × 480 × 852); C running comparisons over whole planes take a few milliseconds.
    """
    if prob.shape[-3] == 0:
        raise ValueError("argmax over zero channels")
    best = prob.select(-3, 0).clone()
    index = torch.zeros(best.shape, dtype=torch.int64, device=prob.device)
    for c in range(1, prob.shape[-3]):
        plane = prob.select(-3, c)
        index.masked_fill_(plane > best, c)
        torch.maximum(best, plane, out=best)
    # NaN: argmax picks the first NaN channel; keep that behaviour.
    nan = torch.isnan(prob).any(dim=-3)
    if bool(nan.any()):
        index[nan] = prob.argmax(dim=-3)[nan]
    return index


def probabilities_to_ids(
    prob: torch.Tensor, object_ids: list[int], geometry: FrameGeometry | None = None
) -> torch.Tensor:
    """Object ids (..., H, W) int64 (0 = background) from (..., N + 1, H', W') probabilities
    whose channel 0 is the background and channel i object ``object_ids[i - 1]``: restored to
    the original size first when ``geometry`` is given (:func:`restore_probabilities`), then
    arg-maxed (:func:`argmax_channels`), on ``prob``'s device."""
    if geometry is not None:
        prob = restore_probabilities(prob, geometry)
    lut = torch.tensor([0, *object_ids], dtype=torch.int64, device=prob.device)
    return lut[argmax_channels(prob)]


def resize_segmentation(seg: Segmentation, height: int, width: int) -> Segmentation:
    """Nearest-neighbour resize of an id mask to (H, W), keeping every listed segment.

    Pixel-centre sampling (torch's ``nearest-exact``, as PIL's NEAREST; see
    :func:`resize_mask`), so ids of any size survive exactly. A segment that
    loses all its pixels stays in ``segments``: the tracker treats it as a detection without
    pixels (no minimum area, as the published implementation).
    """
    mask = torch.as_tensor(seg.mask).long()
    if tuple(mask.shape) == (height, width):
        return seg
    return Segmentation(mask=resize_mask(mask, (height, width)), segments=list(seg.segments))
