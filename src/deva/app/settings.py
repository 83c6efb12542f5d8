"""What the web demo serves and what a request may ask for.

:class:`AppSettings` (models, tracker defaults, output folder), :class:`DemoResult` (one
request's outputs), :class:`DemoInputError` and the request checks: :func:`check_request`
(video, segmenter, prompt, mode) and :func:`request_tracker_config` (the per-request
detection interval and processing size).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from deva.inference.options import InferenceOptions
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.io.video import VideoFrames
from deva.segmenters.grounded_sam import parse_prompt
from deva.segmenters.registry import PROMPTED, check_segmenter_name

SEGMENTER_LABELS: dict[str, str] = {
    "sam": "Automatic: SAM (segment everything)",
    "grounded_sam": "Text prompt: Grounding-DINO + SAM",
    "owlv2_sam": "Text prompt: OWLv2 + SAM",
    "sam3": "Text prompt: SAM 3",
    "mask2former": "Panoptic: Mask2Former",
    "oneformer": "Panoptic: OneFormer",
}


class DemoInputError(ValueError):
    """A request the demo cannot run (no video, missing prompt, unknown segmenter, ...)."""


@dataclass
class AppSettings:
    """What the demo serves (built by ``deva.cli.app`` from ``deva/configs/app.yaml``).

    Attributes:
        segmenters: offered segmenter name → its options (``deva/configs/segmenter/<name>.yaml``
            keys: ``model``, thresholds, ...), in display order.
        default_segmenter: the segmenter selected when the page opens.
        model_preset, model_weights: propagation model (``weights=None``: random).
        tracker: base tracker settings; mode, detection interval and size come per request.
        inference: how the propagation network runs (precision, layout).
        workdir: where each request writes its outputs (``runs/<id>``).
        device: torch device for both models; ``segmenter_dtype`` its half precision.
        local_files_only: never download image models (None: the hub's default).
        random_segmenters: the segmenters are randomly initialised (the page says so).
        default_prompt: the text prompt shown when the page opens.
        keep_runs: output folders of older requests beyond this are deleted (only the
            demo's own run folders).
        max_frames, max_seconds: the longest video a request may track (None: no limit).
        max_file_mb: the largest upload (MB); cache_seconds: uploads and results older than
            this leave Gradio's cache (checked as often), and all of them when it stops.
        title: page title.
        notes: further Markdown notes shown at the top of the page.
    """

    segmenters: dict[str, dict[str, Any]]
    default_segmenter: str
    model_preset: str
    model_weights: str | None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    workdir: Path = Path("outputs/app")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    segmenter_dtype: str | None = None
    local_files_only: bool | None = None
    random_segmenters: bool = False
    default_prompt: str = "person. dog."
    keep_runs: int = 20
    max_frames: int | None = 3000
    max_seconds: float | None = 300.0
    max_file_mb: int = 500
    cache_seconds: int = 3600
    title: str = "DEVA: track anything in your video"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segmenters:
            raise DemoInputError("the demo needs at least one segmenter")
        for name in self.segmenters:
            check_segmenter_name(name)
            if name == "precomputed":
                raise DemoInputError("segmenter 'precomputed' needs detection files; not offered")
        if self.default_segmenter not in self.segmenters:
            raise DemoInputError(
                f"default segmenter {self.default_segmenter!r} is not among the offered ones: "
                f"{', '.join(self.segmenters)}"
            )
        self.workdir = Path(self.workdir)


@dataclass
class DemoResult:
    """One request's outputs: run folder, overlay video, zip, summary and a Markdown report."""

    output: Path
    overlay: Path | None
    archive: Path
    summary: dict[str, Any]
    report: str


def check_request(
    settings: AppSettings,
    video: str | Path | None,
    segmenter: str,
    prompt: str | None,
    mode: str,
) -> tuple[Path, str | None, TrackingMode]:
    """The video path, the normalised prompt and the mode, or :class:`DemoInputError`."""
    if not video:
        raise DemoInputError("upload a video first")
    path = Path(video)
    if not path.is_file():
        raise DemoInputError(f"the uploaded video is missing: {path.name}")
    if segmenter not in settings.segmenters:
        raise DemoInputError(
            f"segmenter {segmenter!r} is not offered here; choose one of: "
            f"{', '.join(settings.segmenters)}"
        )
    text = (prompt or "").strip() or None
    if segmenter in PROMPTED:
        if not text:
            raise DemoInputError(
                'the text-prompt segmenter needs a prompt, e.g. "person. bicycle. dog."'
            )
        parse_prompt(text)  # one-line error for a prompt without phrases
    else:
        text = None
    try:
        tracking_mode = TrackingMode.parse(mode)
    except ValueError as error:
        raise DemoInputError(str(error)) from None
    _check_length(settings, path)
    return path, text, tracking_mode


def request_tracker_config(
    base: TrackerConfig,
    mode: TrackingMode,
    detect_every: int | None = None,
    size: int | None = None,
) -> TrackerConfig:
    """``base`` with a request's mode and, where given, detection interval and size.

    ``size`` is the processing shorter side (-1: original); bad values raise
    :class:`DemoInputError`.
    """
    config = replace(base, mode=mode)
    if detect_every is not None:
        if int(detect_every) < 1:
            raise DemoInputError(f"detect every must be at least 1, got {detect_every}")
        config = replace(config, detect_every=int(detect_every))
    if size is not None:
        if int(size) != -1 and int(size) < 32:
            raise DemoInputError(f"processing size must be -1 or at least 32, got {size}")
        config = replace(config, shorter_side=int(size))
    return config


def _check_length(settings: AppSettings, path: Path) -> None:
    """DemoInputError for an unreadable video or one longer than the demo tracks."""
    try:
        frames = VideoFrames(path)
    except (OSError, ValueError) as error:
        raise DemoInputError(f"cannot read the uploaded video: {error}") from None
    count, fps = len(frames), frames.fps or 24.0
    if settings.max_frames is not None and count > settings.max_frames:
        raise DemoInputError(
            f"the video has {count} frames; this demo tracks at most {settings.max_frames} "
            "(max_frames)"
        )
    if settings.max_seconds is not None and count / fps > settings.max_seconds:
        raise DemoInputError(
            f"the video lasts {count / fps:.0f} s; this demo tracks at most "
            f"{settings.max_seconds:.0f} s (max_seconds)"
        )
