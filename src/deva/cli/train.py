"""Train the propagation model.

    deva-train [stage=quick|scratch|synthetic|static|video|finetune|...] [trainer=cpu|gpu|ddp]
        [trainer.devices=N] [trainer.num_nodes=K] [data.*=...] [model.weights=FILE]
        [ckpt_path=FILE] [output_dir=DIR] [debug=fast]

Without arguments (``stage=quick``): the embedded checkpoint fine-tuned for a few minutes on the
CPU on generated videos of a new domain, with held-out numbers before and after, TensorBoard
logs and checkpoints under outputs/train/. See deva/configs/train.yaml for examples
and :mod:`deva.config.builder.training` for what is built. ``python tools/train.py`` takes the
same arguments.

Outputs (``output_dir``, default ``outputs/train/<stage>_<time>``): ``config.yaml`` (the
resolved config, also beside the checkpoints and inside them as ``hyper_parameters``),
``checkpoints/*.ckpt`` (resume with ``ckpt_path=``), ``tensorboard/``, the Predictor's numbers
by step (``validation_history.json``) and, at the end, ``model.pth`` (weights + architecture,
loadable with ``PropagationModel.from_pretrained``). Multi-node: run the same command on every
node with ``trainer.num_nodes=K`` (Lightning reads the cluster environment: SLURM, torchrun's
``MASTER_ADDR`` / ``NODE_RANK``, ...) and give an explicit shared ``output_dir``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import Callback, seed_everything
from omegaconf import DictConfig

from deva.cli.common import run_tool
from deva.config import compose, quote_paths
from deva.config.builder.training import TrainingRun, build_run
from deva.config.schema import TrainConfig, parse
from deva.modeling.weights import save_weights
from deva.training.callbacks import TrainingInterrupted
from deva.training.predictor import Predictor

log = logging.getLogger("train")

#: The Predictor's numbers of a run, by step, written into the output folder at the end.
VALIDATION_HISTORY = "validation_history.json"


def train(cfg: DictConfig | TrainConfig, *, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train the propagation model as ``cfg`` says; returns a summary.

    Returns ``{"global_rank", "global_step", "output_dir", "checkpoint_dir", "last_checkpoint",
    "weights", "metrics" (last logged values), "validation" (Predictor results), ...}``.
    ``callbacks`` are added to the configured ones (tests use this). Ctrl+C finishes the
    step, writes ``last.ckpt`` and raises :class:`TrainingInterrupted` saying how to resume
    (an empty message on ranks other than 0).
    """
    config = parse(TrainConfig, cfg)
    seed_everything(config.seed, workers=True, verbose=False)
    log.debug("seed %d", config.seed)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    run = build_run(config, callbacks)
    trainer = run.trainer
    if trainer.is_global_zero:
        log.info(_plan(config, run))
    try:
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
    except SystemExit:  # Lightning's answer to a KeyboardInterrupt inside fit
        if run.checkpoint.interrupted_at is None:
            raise
    if run.checkpoint.interrupted_at is not None:
        raise TrainingInterrupted(_resume_hint(run) if trainer.is_global_zero else "")
    weights = None
    if trainer.is_global_zero and not trainer.fast_dev_run and config.export.weights:
        path = save_weights(run.module.model, run.output_dir / "model.pth", half=config.export.half)
        weights = str(path)
    predictor = next((c for c in trainer.callbacks if isinstance(c, Predictor)), None)
    history_file = None
    if predictor is not None and predictor.history and trainer.is_global_zero:
        history_file = _write_history(run.output_dir, predictor)
    tensorboard = None
    if trainer.logger is not None and getattr(trainer.logger, "log_dir", None):
        tensorboard = str(trainer.logger.log_dir)
    return {
        "global_rank": int(trainer.global_rank),
        "global_step": int(trainer.global_step),
        "output_dir": str(run.output_dir),
        "checkpoint_dir": str(run.output_dir / "checkpoints"),
        "last_checkpoint": run.checkpoint.last_model_path or None,
        "weights": weights,
        "metrics": {k: _scalar(v) for k, v in trainer.callback_metrics.items()},
        "validation": dict(predictor.results) if predictor is not None else {},
        "validation_history": dict(predictor.history) if predictor is not None else {},
        "validation_file": str(history_file) if history_file else None,
        "tensorboard": tensorboard,
    }


def _resume_hint(run: TrainingRun) -> str:
    """The line of an interrupted run: at which step, and the arguments that resume it."""
    step = run.checkpoint.interrupted_at
    last = run.checkpoint.last_model_path
    if not last:
        return f"interrupted at step {step}; no checkpoint was written"
    return f"interrupted at step {step}; resume with ckpt_path={last} output_dir={run.output_dir}"


def _plan(config: TrainConfig, run: TrainingRun) -> str:
    """The line saying what is trained, on what, with which batch arithmetic, to where."""
    stage, trainer = config.stage, run.trainer
    what = config.model.weights or config.model.preset
    resuming = f"; resuming {run.ckpt_path}" if run.ckpt_path else ""
    return (
        f"training the {what} model ({stage.name} stage, {stage.iterations} iterations) on "
        f"{config.data['source']} data: global batch {stage.batch_size} = {run.batch_size} per "
        f"device × {trainer.world_size} process(es) × {trainer.accumulate_grad_batches} "
        f"accumulation, lr {stage.lr:g} ({stage.schedule}); output {run.output_dir}{resuming}"
    )


def _write_history(output_dir: Path, predictor: Predictor) -> Path:
    path = output_dir / VALIDATION_HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    history = {str(step): values for step, values in sorted(predictor.history.items())}
    path.write_text(json.dumps(history, indent=1))
    return path


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return value


#: The headline number of each kind of validation set, in the end-of-run table (every key is
#: in ``validation_history.json`` and TensorBoard).
HEADLINE_KEYS = {"jf": "J&F", "vpq": "VPQ", "stq": "STQ", "owta": "OWTA"}


def headline_table(history: Mapping[Any, Mapping[str, float]]) -> list[str]:
    """The headline numbers (J&F, VPQ, STQ, OWTA) of each validation set at the first and the
    last validated step of ``history`` (step -> ``{"val/<set>/<key>": value}``), as the
    lines of a small before -> after table; one column when only one step was validated."""
    steps = sorted(history, key=int)
    if not steps:
        return []
    first, last = history[steps[0]], history[steps[-1]]
    order = list(HEADLINE_KEYS)
    rows = []
    for key in sorted(last, key=lambda k: (k.split("/")[1:2], _rank(order, k))):
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "val" and parts[2] in HEADLINE_KEYS:
            rows.append((parts[1], HEADLINE_KEYS[parts[2]], first.get(key), last[key]))
    if not rows:
        return []
    width = max(len("set"), *(len(name) for name, *_ in rows))
    if len(steps) == 1:
        lines = [f"held-out numbers at step {steps[0]}:", f"  {'set':<{width}}  metric  value"]
        lines += [f"  {name:<{width}}  {metric:<6}  {_number(v)}" for name, metric, _, v in rows]
        return lines
    lines = [
        f"held-out numbers, step {steps[0]} -> step {steps[-1]}:",
        f"  {'set':<{width}}  metric  {'before':>7}  {'after':>7}  {'change':>7}",
    ]
    for name, metric, before, after in rows:
        change = "" if before is None else f"{after - before:+.3f}"
        lines.append(
            f"  {name:<{width}}  {metric:<6}  {_number(before):>7}  {_number(after):>7}  "
            f"{change:>7}"
        )
    return lines


def _rank(order: list[str], key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    return order.index(name) if name in order else len(order)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """Human-readable lines of a :func:`train` result (for the command line): where the
    checkpoint, the weights, the logs and the numbers are, and the headline validation
    numbers before and after (:func:`headline_table`)."""
    lines = [f"global step: {result['global_step']}", f"output: {result['output_dir']}"]
    if result.get("last_checkpoint"):
        lines.append(f"last checkpoint: {result['last_checkpoint']}")
    if result.get("weights"):
        lines.append(f"weights: {result['weights']}")
    if result.get("tensorboard"):
        lines.append(f"TensorBoard logs: {result['tensorboard']} (tensorboard --logdir ...)")
    if result.get("validation_file"):
        lines.append(f"validation numbers (every key): {result['validation_file']}")
    history = result.get("validation_history") or {}
    if not history and result.get("validation"):
        history = {result["global_step"]: result["validation"]}
    return lines + headline_table(history)


def _lightning_to_stdout() -> None:
    """Lightning's own console handlers write to stdout, like ours (stderr keeps the one-line
    errors)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """Compose ``train.yaml`` with ``argv`` and train; returns the exit status (2 with one
    line on a user error, 130 on Ctrl+C with the line that resumes the run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _lightning_to_stdout()
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    result: dict[str, Any] = {}

    def body() -> None:
        paths = ("ckpt_path", "output_dir", "model.weights", "data.urls")
        cfg = compose("train", quote_paths(argv, paths))
        result.update(train(cfg))
        if result.get("global_rank") == 0:  # DDP re-launches this for the other ranks
            for line in summary_lines(result):
                log.info(line)

    return run_tool("train:", body, silent=lambda: rank_zero_only.rank != 0)


if __name__ == "__main__":
    sys.exit(main())
