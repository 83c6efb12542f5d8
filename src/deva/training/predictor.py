"""Validation while training: the :class:`Predictor` callback and its tasks.

At a chosen cadence the callback runs every :class:`PredictionTask` with the current weights
and logs the task's numbers as ``val/<task>/<key>`` (e.g. ``val/synthetic/jf``). Videos are
split round-robin over the ranks (each video on exactly one rank); every task accumulates
into a torchmetrics ``Metric`` whose ``compute()`` gathers the states of all ranks, so every
rank — and the log — sees the global numbers.

A task type only implements :class:`PredictionTask` (how many videos, a fresh metric, how to
process one video, which numbers to report). :class:`VOSTask` is plain semi-supervised
propagation scored with J&F; the tasks of :mod:`deva.training.tracking_tasks` run the whole
decoupled tracker on precomputed detections (VIPSeg VPQ / STQ, BURST OWTA, synthetic VPQ).
:func:`run_tasks` is the loop itself, shared with ``tools/validate.py``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric

from deva.modeling.propagation import PropagationModel

log = logging.getLogger(__name__)


class PredictionTask(ABC):
    """One validation set and how to score it."""

    name: str

    @abstractmethod
    def __len__(self) -> int:
        """Number of videos (the unit split over ranks)."""

    @abstractmethod
    def make_metric(self) -> Metric:
        """A fresh metric accumulating this task's results."""

    @abstractmethod
    def process(self, model: PropagationModel, index: int, metric: Metric) -> None:
        """Run the model on video ``index`` and update ``metric`` with it."""

    @abstractmethod
    def summarize(self, metric: Metric) -> dict[str, float]:
        """The numbers to log (short keys); calls ``metric.compute()``, which gathers the
        states of all ranks, so every rank must call it."""


# -- VOS (semi-supervised propagation, J&F) -------------------------------------------------


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
        from deva.data.synthetic import SyntheticVideoConfig

        self.num_videos = int(num_videos)
        self.seed = int(seed)
        self.config = SyntheticVideoConfig(**video_config)

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> ArrayVideo:  # type: ignore[override]
        from deva.data.synthetic import generate_video, video_name, video_seed

        if not 0 <= index < self.num_videos:
            raise IndexError(index)
        video = generate_video(self.config, video_seed(self.seed, index))
        return ArrayVideo(video_name(index), video.frames, video.masks.astype(np.int64))


class VOSTask(PredictionTask):
    """Semi-supervised VOS: propagate the first frame's ground truth, score J&F.

    ``videos`` is a sequence of :class:`ArrayVideo` (in memory, e.g. :class:`SyntheticVideos`)
    or of :class:`deva.inference.vos.VOSVideo` (folders: generic / DAVIS layouts, see
    :func:`vos_folder_videos`); folder videos are scored on their annotated frames.

    Args:
        shorter_side: processing size (-1: original size).
        mem_every, top_k: propagator settings (inference defaults 5 and 30).
        autocast_dtype: mixed precision of the propagator (None: fp32).
    """

    def __init__(
        self,
        name: str,
        videos: Sequence[Any],
        *,
        shorter_side: int = 480,
        mem_every: int = 5,
        top_k: int = 30,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.name = name
        self.videos = videos
        self.shorter_side = shorter_side
        self.mem_every = mem_every
        self.top_k = top_k
        self.autocast_dtype = autocast_dtype

    def __len__(self) -> int:
        return len(self.videos)

    def make_metric(self) -> Metric:
        from deva.metrics import JAndF

        return JAndF()

    def _propagator(self, model: PropagationModel) -> Any:
        from deva.inference.memory import MemoryConfig
        from deva.inference.propagator import Propagator

        return Propagator(
            model,
            MemoryConfig(top_k=self.top_k),
            mem_every=self.mem_every,
            autocast_dtype=self.autocast_dtype,
        )

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
    propagator: Any, frames: np.ndarray, first_mask: np.ndarray, shorter_side: int = 480
) -> np.ndarray:
    """Propagate ``first_mask`` (H, W) through frames (T, H, W, 3) uint8; (T, H, W) id maps."""
    from deva.io.frames import (
        argmax_channels,
        preprocess_frame,
        preprocess_mask,
        restore_probabilities,
    )

    propagator.reset()
    out = np.zeros(frames.shape[:3], dtype=np.int64)
    first = np.asarray(first_mask, dtype=np.int64)
    objects = [int(v) for v in np.unique(first) if v != 0]
    last = len(frames) - 1
    for t, frame in enumerate(frames):
        image, geometry = preprocess_frame(frame, shorter_side, device=propagator.device)
        mask = None
        if t == 0 and objects:
            mask = preprocess_mask(torch.from_numpy(first), geometry).to(propagator.device)
        result = propagator.step(image, mask, objects if mask is not None else None, end=t == last)
        prob = restore_probabilities(result.prob, geometry)
        lut = torch.tensor([0, *result.object_ids], dtype=torch.int64, device=prob.device)
        out[t] = lut[argmax_channels(prob)].cpu().numpy()
    return out


def _propagate_folder(propagator: Any, video: Any, shorter_side: int) -> tuple[np.ndarray, ...]:
    """Predictions and ground truth on the annotated frames of a folder video."""
    from deva.inference.vos import segment_video
    from deva.io.masks import read_index_png

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
    from deva.inference.vos import davis_videos, generic_videos

    if layout == "generic":
        return generic_videos(root)
    if layout == "davis":
        return davis_videos(root, **kwargs)
    raise ValueError(f"unknown VOS folder layout {layout!r}; expected generic or davis")


# -- the callback ---------------------------------------------------------------------------


def rank_indices(count: int, rank: int, world_size: int) -> range:
    """Items of ``rank``: every ``world_size``-th from ``rank`` (disjoint, covering all)."""
    return range(rank, count, max(1, world_size))


def run_tasks(
    model: PropagationModel, tasks: Sequence[PredictionTask], *, rank: int = 0, world: int = 1
) -> dict[str, float]:
    """Run ``tasks`` with ``model`` (eval mode): this rank's videos, then the global numbers.

    With several processes every rank must call this together (``summarize`` gathers the
    metric states of all ranks); each video is processed on exactly one rank.
    """
    model.eval()
    device = next(model.parameters()).device
    results: dict[str, float] = {}
    with torch.inference_mode():
        for task in tasks:
            metric = task.make_metric().to(device)
            for index in rank_indices(len(task), rank, world):
                task.process(model, index, metric)
            for key, value in task.summarize(metric).items():
                results[f"val/{task.name}/{key}"] = value
            metric.reset()
    return results


def log_previews(loggers: Sequence[Any], tasks: Sequence[PredictionTask], step: int) -> None:
    """Log each task's latest picture (HWC uint8) to the TensorBoard loggers."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for task in tasks:
        picture = getattr(task, "preview", None)
        if picture is None:
            continue
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    f"val/{task.name}/tracks", picture, step, dataformats="HWC"
                )


class Predictor(Callback):
    """Runs validation tasks with the current weights and logs ``val/<task>/<key>``.

    Cadence: before the first step of a fresh run (``at_start``: the "before" numbers),
    every ``every_n_steps`` optimizer steps, every ``every_n_epochs`` training epochs, at the
    end of each validation epoch (``on_validation``, when the trainer has a validation loop)
    and/or once when training ends (``at_end``). Tasks with a ``preview`` picture (the
    tracking tasks) log it to TensorBoard as ``val/<task>/tracks``. Results of the latest run
    are kept in :attr:`results`, the history in :attr:`history` (step → results).
    """

    def __init__(
        self,
        tasks: Sequence[PredictionTask],
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        on_validation: bool = False,
        at_start: bool = False,
        at_end: bool = True,
    ) -> None:
        names = [task.name for task in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"validation task names must be unique, got {names}")
        self.tasks = list(tasks)
        self.every_n_steps = every_n_steps or None
        self.every_n_epochs = every_n_epochs or None
        self.on_validation = on_validation
        self.at_start = at_start
        self.at_end = at_end
        self.results: dict[str, float] = {}
        self.history: dict[int, dict[str, float]] = {}
        self._last_run_step = -1

    # cadence hooks

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_start and trainer.global_step == 0:
            self.run(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.run(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_end:
            self.run(trainer, pl_module)

    # the work

    def run(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Run every task now (all ranks must call this together); returns the results."""
        step = trainer.global_step
        if step == self._last_run_step:
            return self.results
        self._last_run_step = step
        was_training = pl_module.training
        start = time.perf_counter()
        try:
            results = run_tasks(
                pl_module.model, self.tasks, rank=trainer.global_rank, world=trainer.world_size
            )
        finally:
            pl_module.train(was_training)
        self.results = results
        self.history[step] = dict(results)
        for logger in trainer.loggers:
            logger.log_metrics(results, step=step)
        if trainer.is_global_zero:
            log_previews(trainer.loggers, self.tasks, step)
            log.info(
                "validation at step %d (%.1f s): %s",
                step,
                time.perf_counter() - start,
                ", ".join(f"{k}={v:.4f}" for k, v in results.items()),
            )
        return results

    def state_dict(self) -> dict[str, Any]:
        return {"history": {int(k): dict(v) for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}


def build_tasks(
    sets: Mapping[str, Mapping[str, Any]], *, autocast_dtype: torch.dtype | None = None
) -> list[PredictionTask]:
    """Tasks from the ``validation.sets`` config: name → ``{type: ..., ...}``; a null entry is
    skipped. Every set is checked here (folders, frames, detections, keys), so a bad set fails
    before training starts, with one error naming the set.

    - ``synthetic`` (J&F): ``num_videos``, ``seed`` and SyntheticVideoConfig fields;
    - ``generic`` / ``davis`` (J&F): ``root`` (and ``split``, ``resolution`` for DAVIS);
      these three also take ``size`` (or ``shorter_side``), ``mem_every``, ``top_k``;
    - ``vipseg`` (VPQ / STQ), ``burst`` (OWTA), ``synthetic_panoptic`` (VPQ / STQ): see
      :func:`deva.training.tracking_tasks.build_tracking_task` — ``images``, ``gt``,
      ``detections``, ``max_videos``, ``max_frames`` and the tracker settings ``mode``,
      ``detect_every``, ``clip_size``, ``max_missed``, ``size``, ...
    """
    from deva.training.tracking_tasks import TRACKING_TYPES, build_tracking_task

    tasks: list[PredictionTask] = []
    for name, spec in sets.items():
        if spec is None:
            continue
        spec = dict(spec)
        kind = spec.pop("type", "synthetic")
        if kind in TRACKING_TYPES:
            tasks.append(build_tracking_task(str(name), kind, spec, autocast_dtype=autocast_dtype))
            continue
        if "size" in spec:
            spec["shorter_side"] = spec.pop("size")
        options = {
            key: spec.pop(key) for key in ("shorter_side", "mem_every", "top_k") if key in spec
        }
        if kind == "synthetic":
            videos: Sequence[Any] = SyntheticVideos(**spec)
            options.setdefault("shorter_side", -1)
        elif kind in ("generic", "davis"):
            root = spec.pop("root", None)
            if not root:
                raise ValueError(f"validation set {name!r} ({kind}) needs a root folder")
            videos = vos_folder_videos(root, kind, **spec)
        else:
            raise ValueError(
                f"validation set {name!r}: unknown type {kind!r}; expected one of "
                f"{['synthetic', 'generic', 'davis', *TRACKING_TYPES]}"
            )
        if len(videos) == 0:
            raise ValueError(f"validation set {name!r} is empty")
        tasks.append(VOSTask(str(name), videos, autocast_dtype=autocast_dtype, **options))
    return tasks
