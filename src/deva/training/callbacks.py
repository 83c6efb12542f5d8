"""Small training callbacks: the maximum-frame-gap curriculum, the config snapshot, the
random-generator state, checkpoints that also stop cleanly on Ctrl+C, atomic checkpoint
files and a progress bar that counts iterations of the whole run."""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from deva.data.video import MaxSkipSchedule, max_skip_at
from deva.io.atomic import atomic_path

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

    def schedule(self, trainer: Trainer) -> MaxSkipSchedule:
        """The curriculum as a picklable function of the step, for this trainer's length."""
        return MaxSkipSchedule(tuple(self.values), tuple(self.boundaries), self._total(trainer))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Hand the step → gap function to the data module: each sample then carries the gap
        of its own step, whatever the prefetching and wherever a run was resumed."""
        setter = getattr(trainer.datamodule, "set_gap_schedule", None)
        if setter is not None:
            setter(self.schedule(trainer))

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


class RNGState(Callback):
    """Saves the random generators of this process (Python, NumPy, torch CPU and CUDA) in the
    checkpoint and restores them when training starts from it.

    Dropout-like choices of the training step (memory frames, deep updates) then continue
    as in an uninterrupted run; the data do not need this (their randomness follows the
    stream, :mod:`deva.data.order`). The state of a step interrupted half-way is that of its
    start, so a checkpoint written then replays the step exactly.
    """

    def __init__(self) -> None:
        self._at_batch_start: dict[str, Any] | None = None
        self._to_restore: dict[str, Any] | None = None

    @staticmethod
    def capture() -> dict[str, Any]:
        """The generators' states now."""
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
        state: dict[str, Any] = {  # plain containers and tensors: readable with weights_only
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def restore(state: dict[str, Any]) -> None:
        """Set the generators to ``state`` (from :meth:`capture`)."""
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        keys = np.asarray(torch.as_tensor(keys).numpy(), dtype=np.uint32)
        np.random.set_state((kind, keys, int(pos), int(has_gauss), float(cached)))  # noqa: NPY002
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def state_dict(self) -> dict[str, Any]:
        return self._at_batch_start if self._at_batch_start is not None else self.capture()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = dict(state_dict)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._to_restore is not None:  # after everything that consumed randomness on resume
            self.restore(self._to_restore)
            self._to_restore = None

    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._at_batch_start = self.capture()

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._at_batch_start = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl+C during training; the message says where ``last.ckpt`` is and how to resume."""


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training stops between two
    checkpoint steps (at ``max_steps``, or on Ctrl+C), so a run always resumes from its end.

    Ctrl+C (SIGINT) during ``fit`` finishes the current step, writes ``last.ckpt`` and stops
    the trainer (:attr:`interrupted_at` is then the step); a second Ctrl+C interrupts at
    once, and ``last.ckpt`` is then written from the state of the unfinished step's start
    unless the optimizer was updating the weights. All DDP ranks stop at the same step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interrupted_at: int | None = None
        self._requested = False
        self._updating = False
        self._previous_handler: Any = None

    @property
    def last_path(self) -> Path:
        """Where ``last.ckpt`` is written."""
        assert self.dirpath is not None
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one is immediate
        log.info("Ctrl+C: finishing the step, then writing %s (again to stop at once)", "last.ckpt")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_before_optimizer_step(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._updating = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._updating = False
        super().on_train_batch_end(trainer, pl_module, *args)
        requested = self._requested
        if trainer.world_size > 1:  # every rank stops at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested and self.interrupted_at is None:
            self._save_last(trainer)
            self.interrupted_at = trainer.global_step
            trainer.should_stop = True

    def _save_last(self, trainer: Trainer) -> None:
        if self.dirpath is None:
            return
        if trainer.global_step != self._last_global_step_saved or not self.last_model_path:
            trainer.save_checkpoint(str(self.last_path))
            self._last_global_step_saved = trainer.global_step
        self.last_model_path = str(self.last_path)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()
        if not isinstance(exception, KeyboardInterrupt) or self.interrupted_at is not None:
            return
        if self._updating or trainer.fast_dev_run or trainer.world_size > 1:
            # mid-update weights are torn; with DDP the other ranks may not join a save
            log.warning("interrupted at once: last.ckpt not rewritten")
            return
        self._save_last(trainer)
        self.interrupted_at = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._restore_handler()
        if trainer.fast_dev_run or not self.save_last or self.dirpath is None:
            return
        if trainer.global_step == self._last_global_step_saved:
            return
        self._save_last(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files written whole or not at all (:mod:`deva.io.atomic`): a kill during a
    save leaves the previous file, never a torn one."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)


class IterationProgressBar(TQDMProgressBar):
    """One bar for the whole run: optimizer steps done of ``max_steps`` (``iterations
    1234/10000``), continuing from the restored step on resume.

    Lightning's default bar restarts every epoch and, when training is bounded by
    ``max_steps``, names an epoch total computed from ``max_epochs=-1`` (``Epoch 0/-2``).
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        bar.initial = 0
        bar.n = trainer.global_step
        bar.set_description("iterations")
        if not bar.disable:
            bar.refresh()

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        """Nothing: the bar spans every epoch."""

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is None or bar.disable or step == bar.n:
            return
        if step % self.refresh_rate == 0 or step == bar.total:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Nothing: the bar was refreshed at the epoch's last step (one line per step in logs)."""
