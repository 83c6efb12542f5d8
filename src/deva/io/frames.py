"""Reading video frames: folders of images and video files.

Frames come from a folder of images (natural sort: ``2.jpg`` before ``10.jpg``) or a video
file; both are read lazily, one frame at a time, as ``(name, RGB uint8 (H, W, 3))``. Turning
frames into network inputs is :mod:`deva.inference.preprocess`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

T = TypeVar("T")
_DIGITS = re.compile(r"(\d+)")


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

    def names(self) -> list[str]:
        """The frames' names, in order (a video's from its reported frame count)."""
        if self.files is not None:
            return [p.stem for p in self.files]
        return [f"{index:05d}" for index in range(self._length)]

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
