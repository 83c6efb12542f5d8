"""Semi-supervised VOS validation: propagate first-frame ground truth, score J&F.

Videos are held in memory (:class:`ArrayVideo`, e.g. :class:`SyntheticVideos`) or read from
benchmark folders (:func:`vos_folder_videos`: generic / DAVIS layouts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from deva.data.synthetic import SyntheticVideoConfig, generate_video, video_name, video_seed
from deva.inference.backend import PropagationBackend
from deva.inference.backends import DEFAULT_BACKEND, check_backend, make_backend, needs_model
from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.io.masks import read_index_png
from deva.metrics import JAndF
from deva.modeling.propagation import PropagationModel
from deva.pipelines.vos import davis_videos, generic_videos, segment_frames, segment_video
from deva.training.tasks.base import PredictionTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArrayVideo:
    """A video held in memory: frames (T, H, W, 3) uint8, masks (T, H, W) int labels."""

    name: str
    frames: np.ndarray
    masks: np.ndarray


class SyntheticVideos(Sequence[ArrayVideo]):
    """``num_videos`` synthetic videos generated on demand (seed ``[seed, i]`` for video i).

    Use a seed that training does not use: training draws its videos from random seeds.
    """

    def __init__(self, num_videos: int = 4, *, seed: int = 12345, **video_config: Any) -> None:

        self.num_videos = int(num_videos)
        self.seed = int(seed)
        self.config = SyntheticVideoConfig(**video_config)

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> ArrayVideo:  # type: ignore[override]

        if not 0 <= index < self.num_videos:
            raise IndexError(index)
        video = generate_video(self.config, video_seed(self.seed, index))
        return ArrayVideo(video_name(index), video.frames, video.masks.astype(np.int64))


class VOSTask(PredictionTask):
    """Semi-supervised VOS: propagate the first frame's ground truth, score J&F.

    ``videos`` is a sequence of :class:`ArrayVideo` (in memory, e.g. :class:`SyntheticVideos`)
    or of :class:`deva.pipelines.vos.VOSVideo` (folders: generic / DAVIS layouts, see
    :func:`vos_folder_videos`); folder videos are scored on their annotated frames.

    Args:
        shorter_side: processing size (-1: original size).
        mem_every, top_k: propagator settings (inference defaults 5 and 30).
        options: how the propagator's network runs (precision, layout; None: defaults).
        propagator: the backend (:mod:`deva.inference.backends`); ``hold`` scores the
            copy-the-first-mask baseline, ``sam2`` / ``sam3`` / ``edgetam`` a SAM-family model.
        propagator_model: that model's hub id or folder (None: the family's default).
    """

    def __init__(
        self,
        name: str,
        videos: Sequence[Any],
        *,
        shorter_side: int = 480,
        mem_every: int = 5,
        top_k: int = 30,
        options: InferenceOptions | None = None,
        propagator: str = DEFAULT_BACKEND,
        propagator_model: str | None = None,
    ) -> None:
        self.name = name
        self.videos = videos
        self.propagator = check_backend(propagator)
        self.propagator_model = propagator_model
        self._backend: PropagationBackend | None = None  # a model-free backend, built once
        self.shorter_side = shorter_side
        self.mem_every = mem_every
        self.top_k = top_k
        self.options = options

    def __len__(self) -> int:
        return len(self.videos)

    def make_metric(self) -> Metric:

        return JAndF()

    def _propagator(self, model: PropagationModel) -> PropagationBackend:
        """A backend over the trained ``model``; one that needs no such model is built once
        (each video resets it)."""
        if self._backend is not None:
            return self._backend
        backend = make_backend(
            self.propagator,
            model if needs_model(self.propagator) else None,
            MemoryConfig(top_k=self.top_k),
            mem_every=self.mem_every,
            options=self.options,
            source=self.propagator_model,
        )
        if not needs_model(self.propagator):
            self._backend = backend
        return backend

    def process(self, model: PropagationModel, index: int, metric: Metric) -> None:
        video = self.videos[index]
        propagator = self._propagator(model)
        if isinstance(video, ArrayVideo):
            pred = propagate_arrays(propagator, video.frames, video.masks[0], self.shorter_side)
            target = video.masks
        else:
            pred, target = _propagate_folder(propagator, video, self.shorter_side)
        metric.update(torch.from_numpy(pred), torch.from_numpy(target), sequence_id=index)

    def summarize(self, metric: Metric) -> dict[str, float]:
        """``jf``, ``j``, ``f`` (means over all objects of all videos) and ``num_objects``."""
        computed = metric.compute()
        with metric.sync_context():  # per-object rows of every rank (no-op in one process)
            rows = metric.per_object()
        return {
            "jf": float(computed["J&F-Mean"]),
            "j": float(computed["J-Mean"]),
            "f": float(computed["F-Mean"]),
            "num_objects": float(len(rows)),
        }


def propagate_arrays(
    propagator: PropagationBackend,
    frames: np.ndarray,
    first_mask: np.ndarray,
    shorter_side: int = 480,
) -> np.ndarray:
    """Propagate ``first_mask`` (H, W) through frames (T, H, W, 3) uint8; (T, H, W) id maps."""
    named = ((str(t), frame) for t, frame in enumerate(frames))
    given = {"0": np.asarray(first_mask, dtype=np.int64)}
    predicted = segment_frames(propagator, named, given, shorter_side=shorter_side)
    return np.stack([ids for _, ids in predicted]).astype(np.int64, copy=False)


def _propagate_folder(propagator: Any, video: Any, shorter_side: int) -> tuple[np.ndarray, ...]:
    """Predictions and ground truth on the annotated frames of a folder video."""

    annotations = {p.stem: p for p in Path(video.annotations_dir).glob("*.png")}
    preds, targets = [], []
    for name, pred in segment_video(propagator, video, shorter_side=shorter_side):
        if name in annotations:
            preds.append(pred)
            targets.append(read_index_png(annotations[name]).astype(np.int64))
    if not preds:
        raise FileNotFoundError(f"{video.name}: no annotated frame to score")
    return np.stack(preds), np.stack(targets)


def vos_folder_videos(root: str | Path, layout: str = "generic", **kwargs: Any) -> list[Any]:
    """Videos of a folder benchmark: ``generic`` (JPEGImages/ + Annotations/) or ``davis``
    (``split``, ``resolution`` keyword arguments)."""

    if layout == "generic":
        return generic_videos(root)
    if layout == "davis":
        return davis_videos(root, **kwargs)
    raise ValueError(f"unknown VOS folder layout {layout!r}; expected generic or davis")
