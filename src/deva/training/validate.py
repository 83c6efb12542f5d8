"""Score saved checkpoints on validation sets after training (``tools/validate.py``).

The same tasks as the training-time :class:`~deva.training.predictor.Predictor` (built by
:func:`~deva.config.builder.tasks.validation_tasks` from ``validation.sets``) run on each checkpoint
of a run folder, or on one checkpoint file, on 1 or N processes (Lightning Fabric; each video
on one rank, metrics gathered). Results go to ``validation.json`` / ``validation.csv`` — in
the run folder, or next to a single checkpoint — and, for a run, into its TensorBoard at
each checkpoint's global step, so they line up with the training curves. Checkpoints whose
sets are already in ``validation.json`` are skipped unless ``force``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from deva.errors import one_line
from deva.io import atomic
from deva.io.atomic import is_temporary
from deva.modeling.checkpoint import CheckpointError, WeightsMismatchError, load_file
from deva.modeling.propagation import PropagationModel
from deva.training.tasks.base import run_tasks

log = logging.getLogger(__name__)

RESULTS_JSON = "validation.json"
RESULTS_CSV = "validation.csv"


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file, its global step and the config it was trained with (if stored)."""

    path: Path
    step: int
    train_config: dict[str, Any] | None


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Global step and stored training config of a Lightning ``.ckpt`` (step -1 for a plain
    weights file, which has none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = load_file(path, what="checkpoint")  # CheckpointError: one line on what is wrong
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(data).__name__})")
    hparams = data.get("hyper_parameters") or {}
    config = hparams.get("train_config") if isinstance(hparams, Mapping) else None
    return CheckpointInfo(path, int(data.get("global_step", -1)), config)


def find_checkpoints(
    run_dir: str | Path, *, unreadable: list[str] | None = None
) -> list[CheckpointInfo]:
    """The checkpoints of a run (``<run>/checkpoints/*.ckpt``), one per global step, by step.

    ``last.ckpt`` is kept only when no step checkpoint has its step; temporary files of an
    interrupted save are ignored. A file that cannot be read raises, or, when ``unreadable``
    is given, adds its one-line reason there and is left out.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoints folder in run {run_dir}: {folder}")
    paths = [p for p in sorted(folder.glob("*.ckpt")) if not is_temporary(p)]
    if not paths:
        raise FileNotFoundError(f"no .ckpt files in {folder}")
    infos = []
    for path in paths:
        try:
            infos.append(read_checkpoint_info(path))
        except (CheckpointError, OSError) as error:
            if unreadable is None:
                raise
            unreadable.append(one_line(error))
    by_step: dict[int, CheckpointInfo] = {}
    for info in sorted(infos, key=lambda i: i.path.name == "last.ckpt"):
        by_step.setdefault(info.step, info)
    return [by_step[s] for s in sorted(by_step)]


def run_config(run_dir: Path | None, checkpoint: CheckpointInfo | None) -> dict[str, Any]:
    """The training config of a run: ``<run>/config.yaml``, else the checkpoint's copy."""

    if run_dir is not None and (run_dir / "config.yaml").is_file():
        loaded = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        return dict(loaded) if isinstance(loaded, dict) else {}
    if checkpoint is not None and checkpoint.train_config:
        return dict(checkpoint.train_config)
    return {}


class ResultsFile:
    """``validation.json`` (list of ``{checkpoint, step, results}``) and its CSV twin."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.json_path = self.folder / RESULTS_JSON
        self.csv_path = self.folder / RESULTS_CSV
        self.records: list[dict[str, Any]] = []
        if self.json_path.is_file():
            try:
                self.records = list(json.loads(self.json_path.read_text()))
            except (json.JSONDecodeError, TypeError) as error:
                raise ValueError(
                    f"{self.json_path} is not a validation results file: {error}"
                ) from error

    def record(self, checkpoint: str, step: int) -> dict[str, Any] | None:
        for rec in self.records:
            if rec.get("checkpoint") == checkpoint and rec.get("step") == step:
                return rec
        return None

    def scored_sets(self, checkpoint: str, step: int) -> set[str]:
        """Names of the sets already scored for this checkpoint."""
        rec = self.record(checkpoint, step)
        if rec is None:
            return set()
        return {key.split("/")[1] for key in rec.get("results", {}) if key.count("/") >= 2}

    def add(self, checkpoint: str, step: int, results: Mapping[str, float]) -> None:
        rec = self.record(checkpoint, step)
        if rec is None:
            rec = {"checkpoint": checkpoint, "step": step, "results": {}}
            self.records.append(rec)
        rec["results"].update({k: _json_number(v) for k, v in results.items()})
        self.records.sort(key=lambda r: (r["step"], r["checkpoint"]))

    def save(self) -> list[Path]:
        """Both files, each written whole or not at all (a kill keeps the previous ones)."""
        atomic.write_text(self.json_path, json.dumps(self.records, indent=1))
        keys = sorted({k for rec in self.records for k in rec["results"]})
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(["checkpoint", "step", *keys])
        for rec in self.records:
            values = [rec["results"].get(k) for k in keys]
            writer.writerow(
                [rec["checkpoint"], rec["step"], *["" if v is None else v for v in values]]
            )
        atomic.write_text(self.csv_path, table.getvalue())
        return [self.json_path, self.csv_path]


def _json_number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def format_table(records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> str:
    """A plain-text table: one row per number, one column per checkpoint (by step)."""
    keys = list(keys or sorted({k for rec in records for k in rec["results"]}))
    header = ["", *[f"step {rec['step']}" for rec in records]]
    rows = [header, ["", *[str(rec["checkpoint"]) for rec in records]]]
    for key in keys:
        cells = [key.removeprefix("val/")]
        for rec in records:
            value = rec["results"].get(key)
            cells.append("-" if value is None else f"{value:.4f}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def tensorboard_dir(run_dir: Path) -> Path:
    """The run's newest ``tensorboard/version_*`` folder (created if the run has none)."""
    root = run_dir / "tensorboard"
    versions = sorted(
        (p for p in root.glob("version_*") if p.is_dir()),
        key=lambda p: int(p.name.split("_")[-1]) if p.name.split("_")[-1].isdigit() else -1,
    )
    return versions[-1] if versions else root / "version_0"


def log_to_tensorboard(
    folder: Path,
    step: int,
    results: Mapping[str, float],
    pictures: Mapping[str, Any] | None = None,
) -> None:
    """Write scalars (and HWC uint8 pictures) at ``step`` into a TensorBoard folder."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key, value in results.items():
            writer.add_scalar(key, value, step)
        for key, picture in (pictures or {}).items():
            writer.add_image(key, picture, step, dataformats="HWC")
    finally:
        writer.close()


def validate_checkpoints(
    checkpoints: Sequence[CheckpointInfo],
    make_tasks: Callable[[], list[Any]],
    *,
    results: ResultsFile,
    tensorboard: Path | None,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
    force: bool = False,
    unreadable: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Score each checkpoint on the sets of ``make_tasks()`` not yet in ``results``.

    All ranks call this together; rank 0 writes the results files and TensorBoard. Returns
    the records of the scored checkpoints. A checkpoint whose network cannot be built
    raises, or, when ``unreadable`` is given, adds its one-line reason there and is skipped.
    """

    tasks = make_tasks()
    names = [t.name for t in tasks]
    done: list[dict[str, Any]] = []
    for info in checkpoints:
        label = info.path.name
        todo = (
            tasks
            if force
            else [t for t in tasks if t.name not in results.scored_sets(label, info.step)]
        )
        if not todo:
            log.info("%s (step %d): already scored on %s; skipped", label, info.step, names)
            continue
        try:
            model = PropagationModel.from_pretrained(info.path).to(device)
        except (CheckpointError, WeightsMismatchError) as error:
            if unreadable is None:
                raise
            unreadable.append(one_line(error))
            continue
        scores = run_tasks(model, todo, rank=rank, world=world)
        if rank == 0:
            results.add(label, info.step, scores)
            results.save()
            if tensorboard is not None and info.step >= 0:
                pictures = {
                    f"val/{t.name}/tracks": t.preview
                    for t in todo
                    if getattr(t, "preview", None) is not None
                }
                log_to_tensorboard(tensorboard, info.step, scores, pictures)
        record = results.record(label, info.step) or {
            "checkpoint": label,
            "step": info.step,
            "results": scores,
        }
        done.append(record)
        log.info(
            "%s (step %d): %s",
            label,
            info.step,
            ", ".join(f"{k}={v:.4f}" for k, v in scores.items()),
        )
    return done
