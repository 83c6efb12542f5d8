"""Zero padding of image tensors to a multiple of the network stride, and its inverse."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
