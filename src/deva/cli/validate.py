"""Score the checkpoints of a training run (or one checkpoint) on validation sets.

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

from deva.cli import quiet_albumentations
from deva.config import ConfigError, compose, quote_paths
from deva.inference.options import InferenceOptions

log = logging.getLogger("validate")


def _sets(cfg, run_dir: Path | None, first) -> dict:
    from omegaconf import OmegaConf

    from deva.training.validate import run_config

    stored = run_config(run_dir, first).get("validation", {}).get("sets") or {}
    added = OmegaConf.to_container(cfg.validation.sets, resolve=True) or {}
    sets = {**stored, **added}
    wanted = cfg.get("sets")
    if wanted is not None:
        wanted = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
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


def run(cfg) -> int:
    """Validate as ``cfg`` says; returns the number of checkpoints scored."""
    import torch
    from lightning.fabric import Fabric

    from deva.training.tasks.build import build_tasks
    from deva.training.train import validation_autocast
    from deva.training.validate import (
        ResultsFile,
        find_checkpoints,
        format_table,
        read_checkpoint_info,
        tensorboard_dir,
        validate_checkpoints,
    )

    if bool(cfg.run) == bool(cfg.ckpt):
        raise ConfigError("give exactly one of run=OUTPUT_DIR or ckpt=FILE")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.run:
        run_dir: Path | None = Path(cfg.run)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder not found: {run_dir}")
        checkpoints = find_checkpoints(run_dir)
        folder = run_dir
    else:
        info = read_checkpoint_info(cfg.ckpt)
        checkpoints = [info]
        parent = info.path.parent
        run_dir = parent.parent if parent.name == "checkpoints" else None
        folder = parent
    folder = Path(cfg.output) if cfg.output else folder
    sets = _sets(cfg, run_dir, checkpoints[0])
    dtype = validation_autocast(cfg.validation.get("autocast"), cfg.trainer.accelerator)
    build_tasks(
        sets, options=InferenceOptions(autocast=dtype)
    )  # every set is checked before any process starts

    fabric = Fabric(**cfg.trainer)

    def work(fabric: Fabric) -> int:
        results = ResultsFile(folder)
        tensorboard = tensorboard_dir(run_dir) if (run_dir and cfg.tensorboard) else None
        if fabric.global_rank == 0:
            print(
                f"validating {len(checkpoints)} checkpoint(s) on {sorted(sets)} with "
                f"{fabric.world_size} process(es) on {fabric.device}; results -> {folder}"
            )
        records = validate_checkpoints(
            checkpoints,
            lambda: build_tasks(sets, options=InferenceOptions(autocast=dtype)),
            results=results,
            tensorboard=tensorboard,
            rank=fabric.global_rank,
            world=fabric.world_size,
            device=fabric.device,
            force=bool(cfg.force),
        )
        if fabric.global_rank == 0:
            shown = [
                r for r in results.records if r["checkpoint"] in {c.path.name for c in checkpoints}
            ]
            print(format_table(shown) if shown else "nothing to score")
            print(f"wrote {results.json_path} and {results.csv_path}")
            if tensorboard is not None:
                print(f"TensorBoard: {tensorboard}")
        return len(records)

    return fabric.launch(work)


def main(argv: list[str] | None = None) -> int:
    """Compose ``validate.yaml`` with ``argv`` and score; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_albumentations()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        run(compose("validate", quote_paths(argv, ("run", "ckpt", "output"))))
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        print(f"validate: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
