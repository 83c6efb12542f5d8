"""Run the decoupled tracker over folders of frames and precomputed detections; write results.

Used by ``tools/evaluate.py benchmark=detections|vipseg|burst`` and ``tools/track.py``.

Inputs
    ``images``: one video (a folder of frames) or a folder of videos — every sub-folder
    (at any depth, e.g. BURST's ``<dataset>/<seq_name>/``) that holds frames is a video,
    named by its path relative to ``images``.
    ``detections``: the image model's output, in one of three layouts, chosen automatically:

    - generic (``deva.io.detections``): ``<detections>/<video>/<frame>.png + .json``; for a
      single video also ``<detections>/<frame>.png + .json`` directly;
    - VIPSeg-style: ``<detections>/pred.json`` + ``<detections>/pan_pred/<video>/*.png``, or
      a json file whose PNGs lie in ``pan_pred/`` next to it;
    - BURST-style: a json file with ``sequences`` (one per video, matched by
      ``<dataset>/<seq_name>`` or ``seq_name``).

    A frame without detections counts as an empty segmentation.

Outputs (``deva.io`` formats, see METRICS.md "Output formats we write")
    - :class:`Benchmark.DETECTIONS`: ``<output>/<video>/<frame>.png`` (palette, or RGB ids
      above 255) + ``<frame>.json`` with ``[{id, category_id, score, isthing}]``;
    - :class:`Benchmark.VIPSEG`: ``<output>/pred.json`` + ``<output>/pan_pred/<video>/<frame>.png``
      with stuff merged to one id per category per video and a new id for a thing whose voted
      category changes;
    - :class:`Benchmark.BURST`: ``<output>/<burst_file>`` (BURST prediction json).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from deva.inference.segmentation import Segment, Segmentation
from deva.inference.tracker import DecoupledTracker, TrackedFrame, TrackerConfig
from deva.io.burst import BurstSequence, encode_rle, load_burst, write_burst
from deva.io.detections import write_frame_segmentation
from deva.io.frames import (
    IMAGE_EXTENSIONS,
    FrameReader,
    list_frame_files,
    natural_sorted,
    read_frame,
)
from deva.io.video import Mp4Writer, overlay_mask
from deva.io.vipseg import PredictionWriter
from deva.modeling.propagation import PropagationModel
from deva.segmenters import BurstSegmenter, PrecomputedSegmenter, VipsegSegmenter
from deva.segmenters.base import ImageSegmenter

logger = logging.getLogger(__name__)

BURST_OUTPUT = "burst_predictions.json"


class Benchmark(enum.Enum):
    """Which output format :func:`run_benchmark` writes."""

    DETECTIONS = "detections"
    VIPSEG = "vipseg"
    BURST = "burst"


# --------------------------------------------------------------------------------------------
# Inputs


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


class DetectionSource:
    """Builds the per-video segmenter for a detections path in any of the three layouts."""

    def __init__(self, detections: str | Path, *, single_video: bool) -> None:
        self.path = Path(detections)
        self.single_video = single_video
        if not self.path.exists():
            raise FileNotFoundError(f"detections not found: {self.path}")
        self._vipseg: VipsegSegmenter | None = None
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


# --------------------------------------------------------------------------------------------
# Writers


class _GenericWriter:
    """``<root>/<video>/<frame>.png + .json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def start(self, video: VideoSource) -> None:
        self.directory = self.root / video.name

    def add(self, frame: TrackedFrame, file_name: str) -> None:
        write_frame_segmentation(self.directory, frame.name, frame.segmentation)

    def end(self) -> None:
        pass

    def close(self) -> list[Path]:
        return [self.root]


class PanopticIds:
    """Per-video output ids for video panoptic formats (VIPSeg).

    Stuff objects of the same category share one id for the whole video; a thing gets one id
    per (object, category) pair, i.e. a new id when its voted category changes. Objects without
    a category are dropped (left as void). ``isthing=None`` counts as a thing.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int, int], int] = {}

    def __call__(self, segment: Segment) -> int | None:
        if segment.category_id is None:
            return None
        category = int(segment.category_id)
        key = (
            ("stuff", category, 0) if segment.isthing is False else ("thing", segment.id, category)
        )
        if key not in self._ids:
            self._ids[key] = len(self._ids) + 1
        return self._ids[key]

    def remap(self, frame: TrackedFrame) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(H, W) panoptic ids and their ``segments_info`` for one frame."""
        ids = frame.mask.numpy()
        out = np.zeros(ids.shape, dtype=np.int64)
        infos: dict[int, dict[str, Any]] = {}
        for seg in frame.segments:
            new = self(seg)
            if new is None:
                continue
            out[ids == seg.id] = new
            infos.setdefault(
                new,
                {
                    "id": new,
                    "category_id": int(seg.category_id),
                    "isthing": seg.isthing is not False,
                },
            )
        present = set(np.unique(out).tolist()) - {0}
        return out, [info for new, info in infos.items() if new in present]


class _VipsegWriter:
    """``pred.json`` + ``pan_pred/<video>/<frame>.png`` through ``deva.io.vipseg``."""

    def __init__(self, root: Path) -> None:
        self.writer = PredictionWriter(root)
        self.root = root

    def start(self, video: VideoSource) -> None:
        self.video = PurePosixPath(video.name).name
        self.ids = PanopticIds()

    def add(self, frame: TrackedFrame, file_name: str) -> None:
        ids, infos = self.ids.remap(frame)
        png = f"{PurePosixPath(file_name).stem}.png"
        self.writer.add_frame(self.video, png, ids, infos, image_id=frame.name)

    def end(self) -> None:
        pass

    def close(self) -> list[Path]:
        return [self.writer.close(), self.root / "pan_pred"]


class _BurstWriter:
    """One BURST prediction json; with ground truth, only its annotated frames are written."""

    def __init__(self, path: Path, gt: dict[str, BurstSequence] | None, split: str | None) -> None:
        self.path = path
        self.gt = gt
        self.split = split
        self.sequences: list[BurstSequence] = []

    def start(self, video: VideoSource) -> None:
        parts = PurePosixPath(video.name).parts
        dataset = parts[0] if len(parts) > 1 else ""
        seq_name = "/".join(parts[1:]) if len(parts) > 1 else parts[-1]
        template = self.gt.get(video.name) if self.gt else None
        self.annotated = set(template.annotated_image_paths) if template else None
        self.current = BurstSequence(
            id=template.id if template else len(self.sequences) + 1,
            dataset=template.dataset if template else dataset,
            seq_name=template.seq_name if template else seq_name,
            width=template.width if template else None,
            height=template.height if template else None,
            annotated_image_paths=[],
            segmentations=[],
        )

    def add(self, frame: TrackedFrame, file_name: str) -> None:
        if self.annotated is not None and file_name not in self.annotated:
            return
        ids = frame.mask.numpy()
        tracks: dict[str, dict[str, Any]] = {}
        for seg in frame.segments:
            key = str(int(seg.id))
            score = 1.0 if seg.score is None else float(seg.score)
            tracks[key] = {"rle": encode_rle(ids == seg.id), "score": score}
            if seg.category_id is not None:
                self.current.track_category_ids.setdefault(key, int(seg.category_id))
        if self.current.height is None:
            self.current.height, self.current.width = (int(v) for v in ids.shape)
        self.current.annotated_image_paths.append(file_name)
        self.current.segmentations.append(tracks)

    def end(self) -> None:
        self.sequences.append(self.current)

    def close(self) -> list[Path]:
        return [write_burst(self.path, self.sequences, split=self.split)]


def _burst_ground_truth(path: Path) -> dict[str, BurstSequence]:
    """BURST ground-truth sequences by ``<dataset>/<seq_name>`` (their frame folders)."""
    return {f"{s.dataset}/{s.seq_name}": s for s in load_burst(path).sequences}


# --------------------------------------------------------------------------------------------
# Running


def track_frames(
    tracker: DecoupledTracker,
    frames: Iterator[tuple[str, np.ndarray]],
    *,
    total: int | None = None,
    desc: str = "frames",
    progress: bool = True,
) -> Iterator[TrackedFrame]:
    """``tracker.stream(frames)`` with a progress bar counting output frames."""
    bar = tqdm(total=total, desc=desc, unit="frame", leave=False, disable=not progress)
    try:
        for result in tracker.stream(frames):
            bar.update(1)
            yield result
    finally:
        bar.close()


def run_benchmark(
    benchmark: Benchmark | str,
    model: PropagationModel,
    config: TrackerConfig,
    *,
    images: str | Path,
    detections: str | Path,
    output: str | Path,
    gt: str | Path | None = None,
    split: str | None = None,
    progress: bool = True,
) -> int:
    """Track every video under ``images`` with its detections; write ``benchmark``'s format.

    Args:
        benchmark: output format (``detections``, ``vipseg`` or ``burst``).
        model: the propagation network; config: tracker settings.
        images, detections: inputs as described in the module docstring.
        output: output folder (the caller checks that it may be written).
        gt: BURST only: a ground-truth json; its sequences select the videos
            (``<images>/<dataset>/<seq_name>/``) and its annotated frames the output frames.
        split: BURST only: the ``split`` written into the json.

    Returns:
        The number of frames tracked.
    """
    benchmark = Benchmark(benchmark) if not isinstance(benchmark, Benchmark) else benchmark
    out = Path(output)
    videos, single = find_videos(images)
    burst_gt = None
    if gt is not None:
        if benchmark is not Benchmark.BURST:
            raise ValueError(f"data.gt is only used with benchmark=burst, not {benchmark.value}")
        burst_gt = _burst_ground_truth(Path(gt))
        by_name = {v.name: v for v in videos}
        missing = [name for name in burst_gt if name not in by_name]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} ground-truth sequences have no frames folder under {images}, "
                f"e.g. {missing[0]}"
            )
        videos = [by_name[name] for name in burst_gt]
    source = DetectionSource(detections, single_video=single)
    writers: dict[Benchmark, Callable[[], Any]] = {
        Benchmark.DETECTIONS: lambda: _GenericWriter(out),
        Benchmark.VIPSEG: lambda: _VipsegWriter(out),
        Benchmark.BURST: lambda: _BurstWriter(out / BURST_OUTPUT, burst_gt, split),
    }
    writer = writers[benchmark]()
    tracker = DecoupledTracker(model, source.segmenter(videos[0].name), config)
    logger.info(
        "%s: %d video(s) from %s, %s detections from %s, mode %s -> %s",
        benchmark.value,
        len(videos),
        images,
        source.layout,
        detections,
        config.mode.value,
        out,
    )
    count = 0
    for video in tqdm(videos, desc="videos", unit="video", disable=not progress):
        tracker.segmenter = source.segmenter(video.name)
        writer.start(video)
        file_names = {path.stem: path.name for path in video.files}
        for result in track_frames(
            tracker, video.frames(), total=len(video.files), desc=video.name, progress=progress
        ):
            writer.add(result, file_names[result.name])
            count += 1
        writer.end()
    written = writer.close()
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return count


def track_video(
    model: PropagationModel,
    segmenter: ImageSegmenter,
    config: TrackerConfig,
    *,
    source: str | Path,
    output: str | Path,
    overlay: bool = True,
    fps: float | None = None,
    progress: bool = True,
) -> int:
    """Track a video file or frame folder; write ``<output>/masks/<frame>.png + .json`` and
    ``<output>/overlay.mp4``. Returns the number of frames written."""
    reader = FrameReader(source)
    out = Path(output)
    masks = out / "masks"
    tracker = DecoupledTracker(model, segmenter, config)
    rate = fps or reader.fps or 24.0
    video = Mp4Writer(out / "overlay.mp4", rate) if overlay else None
    count = 0
    try:
        for result in track_frames(
            tracker, iter(reader), total=len(reader) or None, desc="tracking", progress=progress
        ):
            write_frame_segmentation(masks, result.name, result.segmentation)
            if video is not None and result.image is not None:
                video.write(overlay_mask(result.image, result.mask.numpy()))
            count += 1
    finally:
        if video is not None:
            video.close()
    summary = {
        "frames": count,
        "objects_created": tracker.registry.next_id - 1,
        "mode": config.mode.value,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return count
