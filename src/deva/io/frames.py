"""Reading video frames and turning them into network inputs, and network outputs back.

Frames come from a folder of images (natural sort: ``2.jpg`` before ``10.jpg``) or a video
file; both are read lazily, one frame at a time, as ``(name, RGB uint8 (H, W, 3))``.

Network inputs follow one rule (see ARCHITECTURE.md, "Image side"): resize so the shorter
side is ``shorter_side`` (480 by default, ``-1`` keeps the original size) and the longer side
is ``floor(shorter_side * long / short)``, bilinear with antialiasing for images and
pixel-centre nearest (``nearest-exact``) for masks; ImageNet normalisation; zero padding to a
multiple of 16 split evenly. Outputs go back the other way: un-pad, resize the probabilities to
the original size (bilinear), then take the arg-max.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from deva.io.padding import Padding, pad_to_multiple, unpad

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

T = TypeVar("T")
_DIGITS = re.compile(r"(\d+)")


# --------------------------------------------------------------------------------------------
# Listing and decoding


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``.

    Text parts compare case-insensitively; the raw name breaks ties so the order is total.
    """
    parts = _DIGITS.split(name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)
    return (key, name)


def natural_sorted(items: Iterable[T], key: Callable[[T], str] = str) -> list[T]:
    """``items`` sorted by :func:`natural_key` of ``key(item)``."""
    return sorted(items, key=lambda item: natural_key(key(item)))


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` has a video extension (mp4, avi, mov, mkv, webm, m4v)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_frame_files(directory: str | Path) -> list[Path]:
    """Image files (jpg / jpeg / png) in ``directory`` in natural order; hidden files skipped.

    Raises FileNotFoundError for a missing folder and ValueError for one without frames.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"frame folder not found: {directory}")
    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise ValueError(f"no frames ({', '.join(IMAGE_EXTENSIONS)}) found in {directory}")
    return natural_sorted(files, key=lambda p: p.name)


def read_frame(path: str | Path) -> np.ndarray:
    """Read one image file as RGB uint8 (H, W, 3).

    Grey and RGBA images become RGB; EXIF orientation is ignored so that frames stay aligned
    with their mask files. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    image = None
    if data.size:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError(f"cannot decode frame {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class FrameReader:
    """Lazy frames of a folder or a video file, as ``(name, RGB uint8 (H, W, 3))``.

    Folder frames are named by their file stem; video frames ``00000``, ``00001``, ...
    ``len()`` is the number of files, or the frame count the container reports for videos
    (an estimate for some formats). ``fps`` is the video's frame rate (None for folders).
    Iterating again starts from the first frame.
    """

    def __init__(self, source: str | Path) -> None:
        self.source = Path(source)
        if not self.source.exists():
            raise FileNotFoundError(f"frame source not found: {self.source}")
        self.fps: float | None = None
        self.files: list[Path] | None = None
        if self.source.is_dir():
            self.files = list_frame_files(self.source)
            self._length = len(self.files)
        elif is_video_file(self.source):
            self.fps, self._length = self._probe_video()
        else:
            raise ValueError(
                f"unsupported frame source {self.source}: expected a folder of images or a "
                f"video file ({', '.join(VIDEO_EXTENSIONS)})"
            )

    @property
    def is_video(self) -> bool:
        return self.files is None

    def __len__(self) -> int:
        return self._length

    def _probe_video(self) -> tuple[float | None, int]:
        """(frame rate or None, frame count or 0) of the video file."""
        capture = self._open_video()
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            return (float(fps) if fps and fps > 0 else None), count
        finally:
            capture.release()

    def _open_video(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.source))
        if not capture.isOpened():
            capture.release()
            raise ValueError(f"cannot open video {self.source}")
        return capture

    def _decode_video(self) -> Iterator[np.ndarray]:
        """The video file's frames, RGB uint8, in order."""
        capture = self._open_video()
        try:
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.files is not None:
            for path in self.files:
                yield path.stem, read_frame(path)
            return
        index = 0
        for frame in self._decode_video():
            yield f"{index:05d}", frame
            index += 1
        if index == 0:
            raise ValueError(f"cannot decode any frame of video {self.source}")


def iter_frames(source: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(name, RGB uint8 (H, W, 3))`` over a frame folder or a video file."""
    return iter(FrameReader(source))


# --------------------------------------------------------------------------------------------
# Network input geometry


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


def denormalize_image(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_image` (for visualising network inputs)."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return image * std + mean


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


def probabilities_to_mask(prob: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Arg-max over channel dim -3 of restored probabilities: (..., N, H', W') → (..., H, W).

    Channel 0 is usually the background, so the result is a channel index, not an object id.
    """
    return argmax_channels(restore_probabilities(prob, geometry))
