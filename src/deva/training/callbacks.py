"""Small training callbacks: the maximum-frame-gap curriculum and the config snapshot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from deva.data.video import max_skip_at

log = logging.getLogger(__name__)


class MaxSkipCurriculum(Callback):
    """Sets the data's maximum frame gap from the training progress before every step.

    progress = global step / ``total_steps`` (default: the trainer's ``max_steps``); the gap
    is :func:`deva.data.video.max_skip_at` (5 → 10 → 15 → 5 at 10 %, 30 %, 80 % by default).
    The data module (or its dataset) must have ``set_max_skip``; the datasets keep the value
    in shared memory, so running DataLoader workers see it (with prefetching, a few batches
    late). A resumed run gets the gap of its step at once.
    """

    def __init__(
        self,
        *,
        values: Sequence[int] = (5, 10, 15, 5),
        boundaries: Sequence[float] = (0.1, 0.3, 0.8),
        total_steps: int | None = None,
    ) -> None:
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"need one more value than boundaries, got {len(values)} and {len(boundaries)}"
            )
        self.values = [int(v) for v in values]
        self.boundaries = [float(b) for b in boundaries]
        self.total_steps = total_steps
        self.current: int | None = None

    def _total(self, trainer: Trainer) -> int:
        total = self.total_steps or trainer.max_steps
        if not total or total < 0:
            total = trainer.estimated_stepping_batches
        return max(1, int(total))

    def value_at(self, step: int, total: int) -> int:
        """The maximum gap at ``step`` of ``total`` steps."""

        return max_skip_at(step / total, values=self.values, boundaries=self.boundaries)

    def _apply(self, trainer: Trainer) -> None:
        value = self.value_at(trainer.global_step, self._total(trainer))
        if value == self.current:
            return
        target: Any = trainer.datamodule
        if target is None or not hasattr(target, "set_max_skip"):
            loader = trainer.train_dataloader
            target = getattr(loader, "dataset", None)
        setter = getattr(target, "set_max_skip", None)
        if setter is None:
            log.warning("max-skip curriculum: the training data has no set_max_skip; disabled")
            self.current = value
            return
        setter(value)
        if self.current is not None:
            log.info("step %d: maximum frame gap %d", trainer.global_step, value)
        self.current = value

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._apply(trainer)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._apply(trainer)


class SaveConfig(Callback):
    """Writes the resolved config as YAML into the given folders (global rank zero only).

    Written when fitting starts (after the checkpoint callback has looked at its folder).
    """

    def __init__(self, text: str, folders: Sequence[str | Path], name: str = "config.yaml"):
        self.text = text
        self.folders = [Path(f) for f in folders]
        self.name = name

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / self.name).write_text(self.text)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training stops between two
    checkpoint steps (e.g. at ``max_steps``), so a finished run always resumes from its end."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.fast_dev_run or not self.save_last or self.dirpath is None:
            return
        if trainer.global_step == self._last_global_step_saved:
            return
        path = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        trainer.save_checkpoint(path)
        self.last_model_path = path
        self._last_global_step_saved = trainer.global_step
