"""Validation while training: the :class:`Predictor` callback and its tasks.

At a chosen cadence the callback runs every :class:`PredictionTask` with the current weights
and logs the task's numbers as ``val/<task>/<key>`` (e.g. ``val/synthetic/jf``). Videos are
split round-robin over the ranks (each video on exactly one rank); every task accumulates
into a torchmetrics ``Metric`` whose ``compute()`` gathers the states of all ranks, so every
rank — and the log — sees the global numbers.

A task type only implements :class:`PredictionTask` (how many videos, a fresh metric, how to
process one video, which numbers to report). :class:`VOSTask` is plain semi-supervised
propagation scored with J&F; the tasks of :mod:`deva.training.tasks` run the whole
decoupled tracker on precomputed detections (VIPSeg VPQ / STQ, BURST OWTA, synthetic VPQ).
:func:`run_tasks` is the loop itself, shared with ``tools/validate.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from deva.training.tasks.base import PredictionTask, log_previews, run_tasks

log = logging.getLogger(__name__)


# -- VOS (semi-supervised propagation, J&F) -------------------------------------------------


# -- the callback ---------------------------------------------------------------------------


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
