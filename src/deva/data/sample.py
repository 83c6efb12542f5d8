"""The training-sample contract and the raw video record every training dataset reads.

A **clip sample** (what every training dataset of :mod:`deva.data` yields) is a dict:

- ``"frames"``: ``float32`` tensor ``(T, 3, H, W)``, RGB normalised with the ImageNet
  statistics (mean ``0.485, 0.456, 0.406``, std ``0.229, 0.224, 0.225``);
- ``"masks"``: ``int64`` tensor ``(T, H, W)``; ``0`` is background, ``1..K`` the selected
  objects, re-indexed consecutively in a random order (``K <= max_objects``, 3 by default);
- ``"num_objects"``: ``int`` ``K`` (at least 1: samples without a usable object are resampled);
- ``"info"``: ``{"name": str, "frame_ids": list[int]}``, the video (or image) name and, for
  each of the T frames, its position in the video's list of annotated frames (static
  pseudo-videos repeat ``0``).

T, H and W are fixed per dataset (crop size, clip length), so torch's default collate batches
samples without padding: ``frames`` → ``(B, T, 3, H, W)``, ``masks`` → ``(B, T, H, W)``,
``num_objects`` → ``(B,)``, ``info["name"]`` → list of B names, ``info["frame_ids"]`` → list
of T tensors of shape ``(B,)``.

A :class:`VideoRecord` is the *raw* side: the annotated frames of one video (or one image +
mask pair) as file paths, encoded bytes or decoded arrays. Folder datasets and shard readers
both produce records and hand them to the same sampler, so clip sampling and augmentation
exist once.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import cv2
import numpy as np
import torch
from PIL import Image

from deva.data.order import Draw, split_index
from deva.io.masks import decode_rgb_ids

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Where a frame or mask comes from: a file path, the encoded file bytes, or a decoded array.
MediaRef: TypeAlias = str | Path | bytes | np.ndarray

Sample: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class VideoRecord:
    """The annotated frames of one video (or one image pair, a one-frame "video").

    ``images[i]`` and ``masks[i]`` belong to frame ``frame_names[i]``; frames are in temporal
    order. ``binary_masks`` marks saliency-style masks (0/255, binarised at 128 into one
    object) as opposed to index masks (palette PNGs, value k = object k, 255 = void).
    """

    name: str
    frame_names: tuple[str, ...]
    images: tuple[MediaRef, ...]
    masks: tuple[MediaRef, ...]
    binary_masks: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.frame_names)
        if len(self.images) != n or len(self.masks) != n:
            raise ValueError(
                f"video {self.name!r}: {n} frame names but {len(self.images)} images and "
                f"{len(self.masks)} masks"
            )

    def __len__(self) -> int:
        return len(self.frame_names)


def read_bytes(ref: MediaRef) -> bytes:
    """The encoded bytes behind a path or bytes reference."""
    if isinstance(ref, bytes):
        return ref
    if isinstance(ref, np.ndarray):
        raise TypeError("a decoded array has no encoded bytes")
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return path.read_bytes()


def load_image(ref: MediaRef) -> np.ndarray:
    """Decode a frame to an RGB ``uint8`` array ``(H, W, 3)``."""
    if isinstance(ref, np.ndarray):
        if ref.ndim != 3 or ref.shape[2] != 3 or ref.dtype != np.uint8:
            raise ValueError(f"frame array must be uint8 (H, W, 3), got {ref.dtype} {ref.shape}")
        return ref
    data = read_bytes(ref)
    # OpenCV decodes JPEGs about twice as fast as Pillow; the pixel grid is the file's own
    # (no EXIF rotation, as Pillow), so masks stay aligned. Anything else goes to Pillow.
    decoded = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    if decoded is not None and decoded.dtype == np.uint8:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_mask(ref: MediaRef, *, binary: bool = False) -> np.ndarray:
    """Decode a mask to a label array ``(H, W)``: ``uint8`` for index and binary masks,
    ``int64`` ids for RGB-encoded masks (id = R + 256·G + 256²·B, no void label; the clip
    sampler relabels them, :func:`deva.data.video.compact_ids`).

    Index masks keep their palette indices (not colours); binary masks are read as grey and
    thresholded at 128 into labels 0/1.
    """
    if isinstance(ref, np.ndarray):
        array = ref
        if array.ndim == 3:
            raise ValueError(f"mask array must be (H, W), got shape {array.shape}")
        if binary:
            return (array >= 128).astype(np.uint8)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"mask labels must lie in [0, 255], got [{array.min()}, {array.max()}]"
            )
        return array.astype(np.uint8)
    data = read_bytes(ref)
    with Image.open(io.BytesIO(data)) as image:
        if binary:
            return (np.asarray(image.convert("L")) >= 128).astype(np.uint8)
        if image.mode in ("P", "L"):
            return np.asarray(image, dtype=np.uint8).copy()
        if image.mode in ("I", "I;16"):
            array = np.asarray(image)
            if array.size and array.max() > 255:
                raise ValueError(f"index mask {_describe(ref)} has labels above 255")
            return array.astype(np.uint8)
        if image.mode in ("RGB", "RGBA"):
            return decode_rgb_ids(np.asarray(image.convert("RGB")))
        raise ValueError(
            f"mask {_describe(ref)}: expected a palette, grey or RGB-encoded id PNG, got mode "
            f"{image.mode}"
        )


def _describe(ref: MediaRef) -> str:
    return "<bytes>" if isinstance(ref, bytes) else str(ref)


def normalise_frames(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack RGB ``uint8`` frames ``(H, W, 3)`` into an ImageNet-normalised ``(T, 3, H, W)``."""
    array = np.stack([np.asarray(frame) for frame in frames]).astype(np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (tensor - mean) / std


def denormalise_frames(frames: torch.Tensor) -> torch.Tensor:
    """Invert :func:`normalise_frames`: ``(..., 3, H, W)`` floats back to [0, 1] RGB."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return frames * std + mean


def select_objects(
    masks: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    max_objects: int,
    min_pixels: int,
) -> tuple[np.ndarray, int]:
    """Keep up to ``max_objects`` random objects of the first frame, relabelled ``1..K``.

    Candidates are the labels 1..254 covering at least ``min_pixels`` pixels of the first
    frame (255 is void). Every other label becomes background. Returns the ``int64`` label
    stack ``(T, H, W)`` and K (0 when the first frame has no usable object).
    """
    stack = np.stack([np.asarray(mask) for mask in masks]).astype(np.int64)
    labels, counts = np.unique(stack[0], return_counts=True)
    keep = (labels > 0) & (labels < 255) & (counts >= min_pixels)
    candidates = labels[keep]
    if candidates.size == 0:
        return np.zeros_like(stack), 0
    chosen = rng.permutation(candidates)[:max_objects]
    lookup = np.zeros(256, dtype=np.int64)
    lookup[chosen] = np.arange(1, len(chosen) + 1)
    return lookup[np.clip(stack, 0, 255)], len(chosen)


def make_sample(
    frames: Sequence[np.ndarray],
    labels: np.ndarray,
    num_objects: int,
    name: str,
    frame_ids: list[int],
) -> Sample:
    """Assemble a clip sample following the contract of this module."""
    return {
        "frames": normalise_frames(frames),
        "masks": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        "num_objects": int(num_objects),
        "info": {"name": name, "frame_ids": [int(i) for i in frame_ids]},
    }


def sample_rng(fixed_seed: int | None, key: str) -> np.random.Generator:
    """The random generator for one sample.

    With ``fixed_seed=None`` the seed is drawn from torch's generator (direct indexing; the
    training stream passes :class:`~deva.data.order.Draw` generators instead). With a
    fixed seed, the generator depends only on ``(fixed_seed, key)``: the same video always
    yields the same sample whichever dataset (folder or shard) or order it comes through.
    """
    if fixed_seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(fixed_seed), int.from_bytes(digest, "little")])


class RecordSampler(Protocol):
    """Turns one raw record into a clip sample, or ``None`` when no usable clip was found."""

    min_object_pixels: int

    def sample(self, record: VideoRecord, rng: np.random.Generator) -> Sample | None:
        """Draw one clip sample from ``record`` using ``rng`` for every random choice.

        Samplers with a frame gap also take ``max_skip=`` (the curriculum's gap for this
        sample); it is passed only when the training stream sets one."""
        ...


def sample_with(
    sampler: RecordSampler, record: VideoRecord, rng: np.random.Generator, max_skip: int | None
) -> Sample | None:
    """``sampler.sample(record, rng)``, with ``max_skip=`` when there is a gap to give."""
    if max_skip is None:
        return sampler.sample(record, rng)
    return sampler.sample(record, rng, max_skip=max_skip)  # type: ignore[call-arg]


def draw_sample(
    records: Sequence[VideoRecord],
    sampler: RecordSampler,
    index: int | Draw,
    *,
    fixed_seed: int | None,
    max_tries: int,
    what: str,
) -> Sample:
    """A sample from ``records[index]``, trying random other records when the sampler gives
    up on one (no object large enough); ``what`` names the dataset in the error.

    A :class:`~deva.data.order.Draw` brings its own generator and gap (training streams);
    ``fixed_seed`` still wins over it (every record always gives the same sample)."""
    position, drawn, max_skip = split_index(index)
    record = records[position]
    rng = drawn if drawn is not None and fixed_seed is None else sample_rng(fixed_seed, record.name)
    for _ in range(max_tries):
        sample = sample_with(sampler, record, rng, max_skip)
        if sample is not None:
            return sample
        record = records[int(rng.integers(len(records)))]
    raise RuntimeError(
        f"{what}: no sample kept an object of ≥ {sampler.min_object_pixels} px in {max_tries} "
        "tries; lower min_object_pixels or check the masks"
    )
