r"""Score the checkpoints of a training run (or one checkpoint) on validation sets.

    deva-validate run=OUTPUT_DIR | ckpt=FILE [sets=[panoptic,vip]] \
        [+validation.sets.vip={type: vipseg, images: DIR, gt: JSON, detections: DIR}] \
        [force=true] [trainer.devices=N]

Sets: by default those in the run's saved config; ``+validation.sets.<name>={...}`` adds sets
exactly as in training (types synthetic, generic, davis, synthetic_panoptic, vipseg, burst).
Prints a table and writes ``validation.json`` / ``validation.csv`` into the run folder (or
next to a single checkpoint file) and the numbers into the run's TensorBoard at each
checkpoint's global step. Checkpoints already scored on a set are skipped unless force=true.
``python tools/validate.py`` takes the same arguments.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from omegaconf import DictConfig

from deva.cli.common import run_tool
from deva.config import ConfigError, compose, quote_paths
from deva.config.builder.tasks import validation_tasks
from deva.config.builder.training import validation_autocast
from deva.config.schema import ValidateConfig, parse
from deva.inference.options import InferenceOptions
from deva.training.validate import (
    CheckpointInfo,
    ResultsFile,
    find_checkpoints,
    format_table,
    read_checkpoint_info,
    run_config,
    tensorboard_dir,
    validate_checkpoints,
)

log = logging.getLogger("validate")


def _sets(
    config: ValidateConfig, run_dir: Path | None, first: CheckpointInfo | None
) -> dict[str, Any]:
    """The sets to score: the run's saved ones plus those given here, filtered by ``sets``."""
    stored = run_config(run_dir, first).get("validation", {}).get("sets") or {}
    sets = {**stored, **config.validation.sets}
    if config.sets is not None:
        wanted = [config.sets] if isinstance(config.sets, str) else [str(w) for w in config.sets]
        unknown = [w for w in wanted if w not in sets]
        if unknown:
            raise ConfigError(f"unknown set(s) {unknown}; configured: {sorted(sets)}")
        sets = {name: sets[name] for name in wanted}
    sets = {name: spec for name, spec in sets.items() if spec is not None}
    if not sets:
        raise ConfigError(
            "no validation sets: the run has none configured; add +validation.sets.NAME={...}"
        )
    return sets


def _checkpoints(
    config: ValidateConfig, unreadable: list[str]
) -> tuple[list[CheckpointInfo], Path | None, Path]:
    """The checkpoints to score, the run folder (None for a lone file) and the output folder;
    the unreadable checkpoints of a run go to ``unreadable`` (one line each)."""
    if bool(config.run) == bool(config.ckpt):
        raise ConfigError("give exactly one of run=OUTPUT_DIR or ckpt=FILE")
    if config.run:
        run_dir: Path | None = Path(config.run)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder not found: {run_dir}")
        checkpoints = find_checkpoints(run_dir, unreadable=unreadable)
        folder = run_dir
    else:
        info = read_checkpoint_info(config.ckpt)
        checkpoints = [info]
        parent = info.path.parent
        # A checkpoint of a training run (<run>/checkpoints/, beside the run's config.yaml)
        # logs into the run's TensorBoard; any other folder named checkpoints/ is left alone.
        in_run = parent.name == "checkpoints" and (parent.parent / "config.yaml").is_file()
        run_dir = parent.parent if in_run else None
        folder = parent
    return checkpoints, run_dir, Path(config.output) if config.output else folder


class NothingScored(ValueError):
    """No checkpoint of the run could be scored (all unreadable)."""


def run(cfg: DictConfig | ValidateConfig, *, unreadable: list[str] | None = None) -> int:
    """Validate as ``cfg`` says; returns the number of checkpoints scored. The checkpoints
    that cannot be read are skipped, each with one line in ``unreadable`` (logged when not
    given); :class:`NothingScored` when none could be read."""
    config = parse(ValidateConfig, cfg)
    if config.threads:
        torch.set_num_threads(config.threads)
    problems: list[str] = [] if unreadable is None else unreadable
    checkpoints, run_dir, folder = _checkpoints(config, problems)
    sets = _sets(config, run_dir, checkpoints[0] if checkpoints else None)
    accelerator = str(config.trainer.get("accelerator", "auto"))
    options = InferenceOptions(
        autocast=validation_autocast(config.validation.autocast, accelerator)
    )
    validation_tasks(sets, options=options)  # every set is checked before any process starts
    if not checkpoints:
        raise NothingScored(f"no checkpoint could be scored ({len(problems)} unreadable)")
    fabric = Fabric(**config.trainer)
    unreadable_before = len(problems)

    def work(fabric: Fabric) -> int:
        results = ResultsFile(folder)
        tensorboard = tensorboard_dir(run_dir) if (run_dir and config.tensorboard) else None
        if fabric.global_rank == 0:
            print(
                f"validating {len(checkpoints)} checkpoint(s) on {sorted(sets)} with "
                f"{fabric.world_size} process(es) on {fabric.device}; results -> {folder}"
            )
        records = validate_checkpoints(
            checkpoints,
            lambda: validation_tasks(sets, options=options),
            results=results,
            tensorboard=tensorboard,
            rank=fabric.global_rank,
            world=fabric.world_size,
            device=fabric.device,
            force=config.force,
            unreadable=problems if fabric.global_rank == 0 else [],
        )
        if fabric.global_rank == 0:
            names = {c.path.name for c in checkpoints}
            shown = [r for r in results.records if r["checkpoint"] in names]
            print(format_table(shown) if shown else "nothing to score")
            print(f"wrote {results.json_path} and {results.csv_path}")
            if tensorboard is not None:
                print(f"TensorBoard: {tensorboard}")
        return len(records)

    scored = fabric.launch(work)
    if unreadable is None:
        for line in problems:
            log.warning("skipped: %s", line)
    if len(problems) - unreadable_before >= len(checkpoints):  # none of them could be built
        raise NothingScored(f"no checkpoint could be scored ({len(problems)} unreadable)")
    return scored


def main(argv: list[str] | None = None) -> int:
    """Compose ``validate.yaml`` with ``argv`` and score; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    unreadable: list[str] = []

    def body() -> None:
        try:
            run(
                compose("validate", quote_paths(argv, ("run", "ckpt", "output"))),
                unreadable=unreadable,
            )
        finally:
            for line in unreadable:  # one line each, whether or not others were scored
                print(f"validate: skipped {line}", file=sys.stderr)

    return run_tool("validate:", body)


if __name__ == "__main__":
    sys.exit(main())
