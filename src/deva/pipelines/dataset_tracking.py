"""Run the decoupled tracker over folders of frames and precomputed detections; write results.

Used by ``tools/evaluate.py benchmark=detections|vipseg|burst`` (``tools/track.py`` uses
:mod:`deva.pipelines.video_tracking`).

Inputs are found by :mod:`deva.pipelines.inputs` (frame folders, detections in the generic,
VIPSeg or BURST layout) and results written by :mod:`deva.pipelines.writers` (generic PNG +
JSON, VIPSeg ``pred.json`` + ``pan_pred/``, BURST json).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deva.inference.backend import PropagationBackend
from deva.inference.options import InferenceOptions
from deva.inference.tracker import DecoupledTracker, TrackedFrame
from deva.inference.tracker_config import TrackerConfig
from deva.io.outputs import OutputFolder
from deva.modeling.propagation import PropagationModel
from deva.pipelines.inputs import DetectionSource, VideoSource, check_frame_sizes, find_videos
from deva.pipelines.sharding import Processes, VideoParts
from deva.pipelines.video_tracking import EmptyResultError
from deva.pipelines.writers import BurstWriter, GenericWriter, VipsegWriter, burst_ground_truth
from deva.types import ImageSegmenter, Segmentation

__all__ = ["Benchmark", "DetectionSource", "VideoSource", "find_videos", "track_dataset"]

logger = logging.getLogger(__name__)

BURST_OUTPUT = "burst_predictions.json"


class Benchmark(enum.Enum):
    """Which output format :func:`track_dataset` writes."""

    DETECTIONS = "detections"
    VIPSEG = "vipseg"
    BURST = "burst"


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


def track_dataset(
    benchmark: Benchmark | str,
    model: PropagationModel | PropagationBackend,
    config: TrackerConfig,
    *,
    options: InferenceOptions | None = None,
    images: str | Path,
    detections: str | Path,
    output: OutputFolder,
    gt: str | Path | None = None,
    split: str | None = None,
    extra_detections: str = "error",
    progress: bool = True,
    processes: Processes | None = None,
) -> int:
    """Track every video under ``images`` with its detections; write ``benchmark``'s format.

    Every video's frames and detections are checked first (one frame size per video,
    detections only for frames the video has: ``extra_detections``); a dataset that tracked
    no object although its detections held segments is an :class:`EmptyResultError`.

    With several ``processes`` (:func:`deva.pipelines.sharding.launch`) each tracks its share
    of the videos (:func:`~deva.pipelines.sharding.assign`) and the first merges the
    dataset-wide files; the output equals one process's. Videos an earlier run of a resumed
    ``output`` finished are skipped.

    Args:
        benchmark: output format (``detections``, ``vipseg`` or ``burst``).
        model: the propagation network (or another backend); config: tracker settings.
        images, detections: inputs as described in the module docstring.
        output: the output folder (its files recorded as it writes them).
        gt: BURST only: a ground-truth json; its sequences select the videos
            (``<images>/<dataset>/<seq_name>/``) and its annotated frames the output frames.
        split: BURST only: the ``split`` written into the json.
        processes: this process's place among those the videos are split over (None: one).

    Returns:
        The number of frames of the dataset's output (all processes, earlier runs included).
    """
    benchmark = Benchmark(benchmark) if not isinstance(benchmark, Benchmark) else benchmark
    videos, single = find_videos(images)
    burst_gt = burst_ground_truth(gt) if gt is not None else None
    if burst_gt is not None:
        if benchmark is not Benchmark.BURST:
            raise ValueError(f"data.gt is only used with benchmark=burst, not {benchmark.value}")
        videos = _ground_truth_videos(videos, burst_gt, images)
    source = DetectionSource(detections, single_video=single)
    for video in videos:
        check_frame_sizes(video.files)
        source.segmenter(video.name)  # fails now when the video's detections are missing
        source.check_frames(
            video.name,
            [p.stem for p in video.files],
            extra=extra_detections,
            hint="extra_detections=warn to go on",
        )
    writer = _writer(benchmark, output, burst_gt, split)
    logger.info(
        "%s: %d video(s) from %s, %s detections from %s, mode %s -> %s",
        benchmark.value,
        len(videos),
        images,
        source.layout,
        detections,
        config.mode.value,
        output.root,
    )
    processes = processes or Processes()
    parts = VideoParts(output)
    names = [v.name for v in videos]
    todo = parts.pending(names, [len(v.files) for v in videos], processes)
    with processes.share():  # then every video has its record
        _track_videos(videos, todo, source, writer, parts, model, config, options, progress)
    records = parts.collect(names, processes)
    objects, segments = (sum(int(r[key]) for r in records) for key in ("objects", "segments"))
    if not objects and segments:
        raise EmptyResultError(
            f"tracked 0 objects in {len(videos)} video(s) although the detections held "
            f"{segments} segment(s); check the detections (names, sizes) and max_objects"
        )
    if processes.main:
        written = writer.merge(records)
        parts.clear(names)
        logger.info("wrote %s", ", ".join(str(p) for p in written))
    return sum(int(r["frames"]) for r in records)


def _ground_truth_videos(
    videos: list[VideoSource], burst_gt: dict[str, Any], images: str | Path
) -> list[VideoSource]:
    """The videos the BURST ground truth lists, in its order; each must have frames."""
    by_name = {v.name: v for v in videos}
    missing = [name for name in burst_gt if name not in by_name]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ground-truth sequences have no frames folder under {images}, "
            f"e.g. {missing[0]}"
        )
    return [by_name[name] for name in burst_gt]


def _writer(
    benchmark: Benchmark, output: OutputFolder, burst_gt: dict[str, Any] | None, split: str | None
) -> Any:
    if benchmark is Benchmark.DETECTIONS:
        return GenericWriter(output)
    if benchmark is Benchmark.VIPSEG:
        return VipsegWriter(output)
    return BurstWriter(output.path(BURST_OUTPUT), burst_gt, split)


def _track_videos(
    videos: list[VideoSource],
    todo: list[int],
    source: DetectionSource,
    writer: Any,
    parts: VideoParts,
    model: PropagationModel | PropagationBackend,
    config: TrackerConfig,
    options: InferenceOptions | None,
    progress: bool,
) -> None:
    """Track videos ``todo`` one after another into ``writer``, recording each when it ends
    (with its objects tracked and segments detected)."""
    if not todo:
        return
    first = videos[todo[0]].name
    tracker = DecoupledTracker(model, source.segmenter(first), config, options=options)
    for index in tqdm(todo, desc="videos", unit="video", disable=not progress):
        video = videos[index]
        segmenter = _Counting(source.segmenter(video.name))
        tracker.segmenter = segmenter
        writer.start(video, index)
        file_names = {path.stem: path.name for path in video.files}
        frames = 0
        for result in track_frames(
            tracker, video.frames(), total=len(video.files), desc=video.name, progress=progress
        ):
            writer.add(result, file_names[result.name])
            frames += 1
        record = {"frames": frames, "objects": tracker.registry.next_id - 1}
        parts.write(video.name, {**writer.end(), **record, "segments": segmenter.segments})


class _Counting:
    """A segmenter that counts the segments it returns."""

    def __init__(self, inner: ImageSegmenter) -> None:
        self.inner = inner
        self.segments = 0

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        result = self.inner(image, frame_name=frame_name)
        self.segments += len(result.segments)
        return result
