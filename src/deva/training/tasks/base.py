"""What a validation task is and the loop that runs tasks: each video on exactly one rank,
metrics gathered over all ranks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
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

    for task in tasks:
        picture = getattr(task, "preview", None)
        if picture is None:
            continue
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    f"val/{task.name}/tracks", picture, step, dataformats="HWC"
                )
