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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deva.inference.options import InferenceOptions
from deva.inference.tracker import DecoupledTracker, TrackedFrame
from deva.inference.tracker_config import TrackerConfig
from deva.modeling.propagation import PropagationModel
from deva.pipelines.inputs import DetectionSource, VideoSource, find_videos
from deva.pipelines.writers import BurstWriter, GenericWriter, VipsegWriter, burst_ground_truth

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
    model: PropagationModel,
    config: TrackerConfig,
    *,
    options: InferenceOptions | None = None,
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
        burst_gt = burst_ground_truth(gt)
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
        Benchmark.DETECTIONS: lambda: GenericWriter(out),
        Benchmark.VIPSEG: lambda: VipsegWriter(out),
        Benchmark.BURST: lambda: BurstWriter(out / BURST_OUTPUT, burst_gt, split),
    }
    writer = writers[benchmark]()
    tracker = DecoupledTracker(model, source.segmenter(videos[0].name), config, options=options)
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
