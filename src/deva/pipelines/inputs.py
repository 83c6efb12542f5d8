"""Inputs of the decoupled tracker on benchmarks: frame folders and precomputed detections.

``images``: one video (a folder of frames) or a folder of videos — every sub-folder (at any
depth, e.g. BURST's ``<dataset>/<seq_name>/``) that holds frames is a video, named by its path
relative to ``images``.

``detections``: the image model's output, in one of three layouts, chosen automatically:

- generic (``deva.io.detections``): ``<detections>/<video>/<frame>.png + .json``; for a
  single video also ``<detections>/<frame>.png + .json`` directly;
- VIPSeg-style: ``<detections>/pred.json`` + ``<detections>/pan_pred/<video>/*.png``, or a
  json file whose PNGs lie in ``pan_pred/`` next to it;
- BURST-style: a json file with ``sequences`` (one per video, matched by
  ``<dataset>/<seq_name>`` or ``seq_name``).

A frame without detections counts as an empty segmentation; detections for a frame that is
not in the video are an error found by :meth:`DetectionSource.check_frames` before any work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from deva.io.frames import IMAGE_EXTENSIONS, list_frame_files, natural_sorted, read_frame
from deva.segmenters import BurstSegmenter, PrecomputedSegmenter, VipsegSegmenter
from deva.types import ImageSegmenter, Segmentation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSource:
    """One input video: its name (relative path, ``/``-separated) and its frame files."""

    name: str
    files: tuple[Path, ...]

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(frame stem, RGB uint8 (H, W, 3))`` in natural order, read lazily."""
        for path in self.files:
            yield path.stem, read_frame(path)


def _has_frames(directory: Path) -> bool:
    return any(
        p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        for p in directory.iterdir()
    )


def find_videos(images: str | Path) -> tuple[list[VideoSource], bool]:
    """The videos under ``images`` and whether ``images`` itself is a single video.

    Raises FileNotFoundError when the folder is missing or holds no frames at any depth.
    """
    root = Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"frames folder not found: {root}")
    if _has_frames(root):
        return [VideoSource(root.name, tuple(list_frame_files(root)))], True
    found = []
    for directory in natural_sorted((p for p in root.rglob("*") if p.is_dir()), key=str):
        if not directory.name.startswith(".") and _has_frames(directory):
            name = directory.relative_to(root).as_posix()
            found.append(VideoSource(name, tuple(list_frame_files(directory))))
    if not found:
        raise FileNotFoundError(f"no frames ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return found, False


class _VideoScoped:
    """Looks frames up as ``<video>/<frame>`` in a segmenter that holds several videos."""

    def __init__(self, inner: ImageSegmenter, video: str) -> None:
        self.inner = inner
        self.video = video

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        return self.inner(image, frame_name=f"{self.video}/{frame_name}")


def check_frame_sizes(files: Sequence[Path]) -> tuple[int, int]:
    """The (H, W) every frame file has (read from the headers); ValueError naming the first
    frame of another size, before any frame is decoded."""
    sizes: tuple[int, int] | None = None
    for path in files:
        try:
            with Image.open(path) as image:
                size = (int(image.height), int(image.width))
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read frame {path}: {error}") from None
        if sizes is None:
            sizes = size
        elif size != sizes:
            raise ValueError(
                f"frame {path} is {size[0]}x{size[1]} but the video's first frame is "
                f"{sizes[0]}x{sizes[1]}; all frames of a video must have one size"
            )
    if sizes is None:
        raise ValueError("no frames to check")
    return sizes


def check_detections(
    detected: Sequence[str],
    frames: Sequence[str],
    where: str,
    *,
    extra: str = "error",
    hint: str = "",
) -> None:
    """Before the first frame: the frames with detections (by stem) must be frames of the
    video. No match at all, or (with ``extra="error"``) detections for frames the video does
    not have, is a ValueError naming the first mismatch (``hint`` appended, e.g. the option
    that relaxes it); ``extra="warn"`` logs a count."""
    if extra not in ("error", "warn"):
        raise ValueError(f"extra_detections must be error or warn, got {extra!r}")
    if not detected:
        return
    have = set(frames)
    matching = [n for n in detected if n in have]
    if not matching:
        raise ValueError(
            f"none of the {len(detected)} frame(s) with detections in {where} is a frame of "
            f"the video (detections e.g. {detected[0]!r}, frames e.g. {frames[0]!r})"
            if frames
            else f"the video has no frames to match the detections in {where}"
        )
    missing = [n for n in detected if n not in have]
    if missing and extra == "error":
        raise ValueError(
            f"{where} holds detections for {len(missing)} frame(s) the video does not have, "
            f"e.g. {missing[0]!r}" + (f" ({hint})" if hint else "")
        )
    if missing:
        logger.warning("%s: %d detection frame(s) match no frame of the video", where, len(missing))


class DetectionSource:
    """Builds the per-video segmenter for a detections path in any of the three layouts."""

    def __init__(self, detections: str | Path, *, single_video: bool) -> None:
        self.path = Path(detections)
        self.single_video = single_video
        if not self.path.exists():
            raise FileNotFoundError(f"detections not found: {self.path}")
        self._vipseg: VipsegSegmenter | None = None
        self._data: dict | None = None
        self.layout = self._detect_layout()

    def _detect_layout(self) -> str:
        if self.path.is_dir():
            if (self.path / "pred.json").is_file():
                json_path, png_root = self.path / "pred.json", self.path / "pan_pred"
                self._vipseg = VipsegSegmenter(json_path, png_root, missing="empty")
                return "vipseg"
            return "generic"
        if self.path.suffix.lower() != ".json":
            raise ValueError(f"detections must be a folder or a .json file, got {self.path}")
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.path}: invalid JSON ({error})") from error
        self._data = data if isinstance(data, dict) else {"annotations": data}
        if isinstance(data, dict) and ("sequences" in data or "segmentations" in data):
            return "burst"
        png_root = self.path.parent / "pan_pred"
        self._vipseg = VipsegSegmenter(self.path, png_root, missing="empty")
        return "vipseg"

    def segmenter(self, video: str) -> ImageSegmenter:
        """The segmenter serving ``video``'s frames (looked up by frame stem)."""
        if self.layout == "generic":
            directory = self.path / video
            if self.single_video and not directory.is_dir():
                directory = self.path  # a single video's detections may lie directly there
            if not directory.is_dir():
                raise FileNotFoundError(f"no detections folder for video {video!r}: {directory}")
            if not any(directory.glob("*.json")):
                logger.warning("detections folder %s holds no .json files", directory)
            return PrecomputedSegmenter(directory, missing="empty")
        if self.layout == "vipseg":
            assert self._vipseg is not None
            return _VideoScoped(self._vipseg, PurePosixPath(video).name)
        return BurstSegmenter(self.path, sequence=video, missing="empty")

    def check_frames(
        self, video: str, frame_stems: Sequence[str], *, extra: str = "error", hint: str = ""
    ) -> None:
        """:func:`check_detections` of ``video``'s detections against its frames (by stem:
        ``00005`` for ``00005.jpg``): a typo in a detections folder or a json for another
        frame rate would otherwise silently give empty frames."""
        listed = sorted(self.frame_stems(video))
        check_detections(
            listed,
            list(frame_stems),
            f"detections {self.path} of video {video!r}",
            extra=extra,
            hint=hint,
        )

    def frame_stems(self, video: str) -> list[str]:
        """Stems of the frames of ``video`` that have detections in this source."""
        if self.layout == "generic":
            directory = self.path / video
            if self.single_video and not directory.is_dir():
                directory = self.path
            if not directory.is_dir():
                raise FileNotFoundError(f"no detections folder for video {video!r}: {directory}")
            return [p.stem for p in directory.glob("*.json") if p.with_suffix(".png").is_file()]
        data = self._json()
        if self.layout == "vipseg":
            wanted = PurePosixPath(video).name
            for entry in data.get("annotations", []):
                if "annotations" in entry and str(entry.get("video_id")) == wanted:
                    return [PurePosixPath(f["file_name"]).stem for f in entry["annotations"]]
            return []
        sequences = data.get("sequences", [data] if "segmentations" in data else [])
        for seq in sequences:
            key = f"{seq.get('dataset', '')}/{seq.get('seq_name', '')}"
            if video in (key, str(seq.get("seq_name")), str(seq.get("id"))):
                return [PurePosixPath(p).stem for p in seq.get("annotated_image_paths", [])]
        return []

    def _json(self) -> dict:
        if self._data is None:
            path = self.path / "pred.json" if self.path.is_dir() else self.path
            data = json.loads(path.read_text())
            self._data = data if isinstance(data, dict) else {"annotations": data}
        return self._data
