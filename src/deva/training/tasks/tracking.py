"""Validation tasks that run the whole decoupled loop: detections + propagation -> tracks.

Each task runs the real :class:`~deva.inference.tracker.DecoupledTracker` (with the task's
own tracker settings) on one video at a time with precomputed detections, and scores the
tracks with the benchmark's metric through :mod:`deva.metrics.scoring` - the same per-video
code as ``tools/score.py``, so a task's numbers equal ``tools/evaluate.py`` +
``tools/score.py`` on the same data, weights and settings. Everything that can be wrong with a
set (missing folders, frames, detections for frames that do not exist, an empty set) is found
when the task is built, before training starts. The first video of each pass also yields a
picture (:attr:`TrackingTask.preview`): sampled frames, ground truth and our tracks with their
ids.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from torchmetrics import Metric

from deva.inference.backend import PropagationBackend
from deva.inference.backends import make_backend, needs_model
from deva.inference.options import InferenceOptions
from deva.inference.tracker import DecoupledTracker, TrackedFrame
from deva.inference.tracker_config import TrackerConfig
from deva.io.frames import list_frame_files, read_frame
from deva.io.video import overlay_mask
from deva.modeling.propagation import PropagationModel
from deva.training.tasks.base import PredictionTask
from deva.types import ImageSegmenter, Segmentation, check_image, empty_segmentation

log = logging.getLogger(__name__)


PREVIEW_WIDTH = 256


class TrackingTask(PredictionTask):
    """A validation set scored through the decoupled tracker (one video per ``process``).

    Subclasses say which frames a video has, which segmenter serves its detections, what the
    ground truth of a frame is, and how a tracked video is scored.

    Args:
        name: the set's name (``val/<name>/...``).
        config: tracker settings (mode, detect_every, clip_size, max_missed, size, ...).
        max_frames: only the first N frames of each video (None: all).
        preview_frames: frames in the picture of the first video (0: no picture).
        options: how the network runs (precision, layout; None: defaults).
    """

    def __init__(
        self,
        name: str,
        config: TrackerConfig,
        *,
        max_frames: int | None = None,
        preview_frames: int = 4,
        options: InferenceOptions | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"validation set {name!r}: max_frames must be >= 1, got {max_frames}")
        self.name = name
        self.config = config
        self.options = options
        self.max_frames = max_frames
        self.preview_frames = preview_frames
        self.preview: np.ndarray | None = None
        self._backend: PropagationBackend | None = None  # a model-free backend, built once

    # -- what subclasses provide ---------------------------------------------------------
    @abstractmethod
    def frames(self, index: int) -> Iterator[tuple[str, np.ndarray]]:
        """``(frame name, RGB uint8)`` of video ``index`` (at most ``max_frames``)."""

    @abstractmethod
    def num_frames(self, index: int) -> int:
        """How many frames :meth:`frames` yields for video ``index``."""

    @abstractmethod
    def segmenter(self, index: int) -> ImageSegmenter:
        """The detections of video ``index``."""

    @abstractmethod
    def score(self, index: int, tracked: list[TrackedFrame], metric: Metric) -> None:
        """Update ``metric`` with the tracks of video ``index`` (frames in order)."""

    @abstractmethod
    def ground_truth_ids(self, index: int, position: int, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) ground-truth ids of frame ``position`` of video ``index`` (for pictures)."""

    # -- the shared loop -----------------------------------------------------------------
    def _propagation(self, model: PropagationModel) -> PropagationModel | PropagationBackend:
        """The trained ``model``, or the set's own backend when ``propagator`` is not ``deva``
        (built on first use, then reset for each video)."""
        c = self.config
        if needs_model(c.propagator):
            return model
        if self._backend is None:
            self._backend = make_backend(
                c.propagator,
                None,
                c.memory,
                mem_every=c.mem_every,
                options=self.options,
                source=c.propagator_model,
            )
        return self._backend

    def process(self, model: PropagationModel, index: int, metric: Metric) -> None:
        """Track video ``index`` with the current weights and score it."""
        propagation = self._propagation(model)
        options = self.options if propagation is model else None  # a backend has its own
        tracker = DecoupledTracker(propagation, self.segmenter(index), self.config, options=options)
        count = self.num_frames(index)
        shown = _spread(count, self.preview_frames) if index == 0 else []
        kept: list[TrackedFrame] = []
        pictures: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for result in tracker.stream(self.frames(index)):
            if result.index in shown and result.image is not None:
                ids = result.mask.numpy()
                gt = self.ground_truth_ids(index, result.index, ids.shape)
                pictures.append((result.image, gt, ids))
            result.image = None  # frames are not kept in memory
            kept.append(result)
        if len(kept) != count:
            raise RuntimeError(
                f"{self.name}: tracked {len(kept)} of {count} frames of video {index}"
            )
        self.score(index, kept, metric)
        if pictures:
            self.preview = preview_strip(pictures)


def _spread(count: int, wanted: int) -> list[int]:
    if count <= 0 or wanted <= 0:
        return []
    return sorted({round(float(v)) for v in np.linspace(0, count - 1, min(wanted, count))})


def preview_strip(pictures: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """One RGB image: frames (top), ground truth (middle), our tracks with ids (bottom)."""
    columns = []
    for rgb, gt, pred in pictures:
        height, width = rgb.shape[:2]
        scale = min(1.0, PREVIEW_WIDTH / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        gt_small = cv2.resize(gt.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        pred_small = cv2.resize(pred.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        tracks = overlay_mask(small, pred_small)
        for value in np.unique(pred_small):
            if value == 0:
                continue
            ys, xs = np.nonzero(pred_small == value)
            at = (int(xs.mean()) - 6, int(ys.mean()) + 4)
            cv2.putText(tracks, str(int(value)), at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
            cv2.putText(tracks, str(int(value)), at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255,) * 3, 1)
        columns.append(np.concatenate([small, overlay_mask(small, gt_small), tracks], axis=0))
    height = min(c.shape[0] for c in columns)
    return np.concatenate([c[:height] for c in columns], axis=1)


class DictSegmenter:
    """Detections held in memory, looked up by frame name (missing frames: no segments)."""

    def __init__(self, detections: dict[str, Segmentation]) -> None:
        self.detections = detections

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        height, width = check_image(image)
        found = self.detections.get(str(frame_name))
        return found if found is not None else empty_segmentation(height, width)


def _frames_by_stem(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in list_frame_files(directory)}


class _FrameFiles:
    """Frames read from files: ``self.files[index]`` lists video ``index``'s frames."""

    files: list[list[Path]]
    max_frames: int | None

    def num_frames(self, index: int) -> int:
        total = len(self.files[index])
        return min(total, self.max_frames) if self.max_frames else total

    def frames(self, index: int) -> Iterator[tuple[str, np.ndarray]]:
        for path in self.files[index][: self.num_frames(index)]:
            yield path.stem, read_frame(path)
