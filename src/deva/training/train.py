"""``train(cfg)``: build everything from a composed ``train`` config and fit.

The config comes from :func:`deva.config.compose` (``deva/configs/train.yaml`` with the groups
``model``, ``stage``, ``data``, ``trainer``, ``debug``). This function turns it into explicit
objects — :class:`~deva.training.module.PropagationTrainingModule`, a data module, callbacks,
a TensorBoard logger and a Lightning ``Trainer`` — and calls ``fit``. Tests call it directly.

Distribution: ``trainer.devices`` × ``trainer.num_nodes`` processes (DDP). The stage's
``batch_size`` is *global*: each process loads ``batch_size / (world size × gradient
accumulation)`` samples per step. Multi-node: run the same command on every node with
``trainer.num_nodes=K`` (Lightning reads the cluster environment: SLURM, torchrun's
``MASTER_ADDR`` / ``NODE_RANK``, ...) and give an explicit shared ``output_dir``.

Outputs (``output_dir``, default ``outputs/train/<stage>_<time>``): ``config.yaml`` (the
resolved config, also beside the checkpoints and inside them as ``hyper_parameters``),
``checkpoints/*.ckpt`` (resume with ``ckpt_path=``), ``tensorboard/`` and, at the end,
``model.pth`` (weights + architecture, loadable with ``PropagationModel.from_pretrained``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from deva.config.options import autocast_dtype
from deva.inference.options import InferenceOptions
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import init_from_imagenet, save_weights
from deva.training.callbacks import MaxSkipCurriculum, SaveConfig, StepCheckpoint
from deva.training.data import build_datamodule
from deva.training.module import PropagationTrainingModule
from deva.training.predictor import Predictor
from deva.training.tasks.build import build_tasks

log = logging.getLogger(__name__)

#: Set by the launching process so that re-launched DDP processes share the output folder.
RUN_DIR_ENV = "DEVA_RUN_DIR"
#: The Predictor's numbers of a run, by step, written into the output folder at the end.
VALIDATION_HISTORY = "validation_history.json"


def per_device_batch_size(global_batch: int, world_size: int, accumulate: int = 1) -> int:
    """Samples per process and step for a global batch (samples per optimizer step)."""
    parts = max(1, int(world_size)) * max(1, int(accumulate))
    if global_batch < parts or global_batch % parts:
        raise ValueError(
            f"the global batch size {global_batch} must be a multiple of devices × nodes × "
            f"gradient accumulation = {parts}"
        )
    return global_batch // parts


def resolve_output_dir(cfg: DictConfig) -> Path:
    """``output_dir``, else the folder of a resumed checkpoint, else a new timestamped one."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last" and Path(ckpt).parent.name == "checkpoints":
        return Path(ckpt).parent.parent
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / "train" / f"{cfg.stage.name}_{stamp}"


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path`` as a file path (``last`` = ``<output_dir>/checkpoints/last.ckpt``)."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume not found: {path}")
    return str(path)


def initial_model(cfg: DictConfig) -> tuple[PropagationConfig, dict[str, torch.Tensor] | None]:
    """Architecture and starting weights: ``model.weights`` (published or ours; its
    architecture wins over ``model.preset``) or a random ``model.preset``."""
    weights = cfg.model.get("weights")
    if weights:
        model = PropagationModel.from_pretrained(weights)
        if model.config != PropagationConfig.preset(cfg.model.preset):
            log.info("architecture taken from %s (not preset %r)", weights, cfg.model.preset)
        return model.config, model.state_dict()
    return PropagationConfig.preset(cfg.model.preset), None


def build_module(cfg: DictConfig, model_config: PropagationConfig) -> PropagationTrainingModule:
    """The LightningModule with the stage's recipe (explicit arguments)."""
    stage = cfg.stage
    loss = stage.loss
    return PropagationTrainingModule(
        model_config.to_dict(),
        num_ref_frames=stage.num_ref_frames,
        deep_update_prob=stage.deep_update_prob,
        lr=stage.lr,
        weight_decay=stage.weight_decay,
        schedule=stage.schedule,
        milestones=list(stage.get("milestones") or []),
        gamma=stage.get("gamma", 0.1),
        total_steps=stage.iterations,
        poly_power=stage.get("poly_power", 0.9),
        warmup_steps=stage.get("warmup_steps", 0),
        start_warm=loss.get("start_warm"),
        end_warm=loss.get("end_warm"),
        final_fraction=loss.get("final_fraction", 0.3),
        dice_weight=loss.get("dice_weight", 1.0),
        aux_weight=loss.get("aux_weight", 0.1),
        pad_objects_to=cfg.get("pad_objects_to"),
        freeze_batchnorm=cfg.get("freeze_batchnorm", True),
        compile=cfg.get("compile", False),
        image_log_every=cfg.get("image_log_every", 0),
        train_config=OmegaConf.to_container(cfg, resolve=True),
    )


def validation_autocast(name: str | None, accelerator: str) -> torch.dtype | None:
    """``validation.autocast`` as a dtype, checked now against the device validation will run
    on (``trainer.accelerator``), so that a bad choice fails before training starts."""

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return autocast_dtype(name, torch.device("cuda" if gpu else "cpu"))


def _predictor(cfg: DictConfig) -> Predictor | None:
    val = cfg.get("validation")
    if not val or not val.get("sets"):
        return None
    every = int(val.get("every_n_steps") or 0)
    at_start = bool(val.get("at_start", False))
    at_end = bool(val.get("at_end", True))
    if not every and not at_end and not at_start:
        return None
    dtype = validation_autocast(val.get("autocast"), cfg.trainer.get("accelerator", "auto"))
    sets = OmegaConf.to_container(val.sets, resolve=True)
    assert isinstance(sets, dict)
    tasks = build_tasks(sets, options=InferenceOptions(autocast=dtype))
    if not tasks:
        return None
    return Predictor(tasks, every_n_steps=every or None, at_start=at_start, at_end=at_end)


def build_trainer(
    cfg: DictConfig, output_dir: Path, callbacks: Sequence[Callback] = ()
) -> tuple[Trainer, ModelCheckpoint]:
    """The Lightning ``Trainer`` (``cfg.trainer`` are its keyword arguments) and callbacks."""
    ckpt_dir = output_dir / "checkpoints"
    ckpt_cfg = cfg.get("checkpoint") or {}
    checkpoint = StepCheckpoint(
        dirpath=ckpt_dir,
        filename="step_{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=int(ckpt_cfg.get("every_n_steps", 1000)) or None,
        save_top_k=int(ckpt_cfg.get("save_top_k", 1)),
        save_last=True,
    )
    all_callbacks: list[Callback] = [
        checkpoint,
        SaveConfig(OmegaConf.to_yaml(cfg, resolve=True), [output_dir, ckpt_dir]),
    ]
    curriculum = cfg.stage.get("max_skip")
    if curriculum:
        all_callbacks.append(
            MaxSkipCurriculum(
                values=list(curriculum["values"]),
                boundaries=list(curriculum["boundaries"]),
                total_steps=cfg.stage.iterations,
            )
        )
    predictor = _predictor(cfg)
    if predictor is not None:
        all_callbacks.append(predictor)
    all_callbacks += list(callbacks)
    logger: Any = False
    if cfg.get("logger", "tensorboard") == "tensorboard":
        logger = TensorBoardLogger(
            save_dir=str(output_dir), name="tensorboard", default_hp_metric=False
        )
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.setdefault("max_steps", cfg.stage.iterations)
    trainer = Trainer(**kwargs, callbacks=all_callbacks, logger=logger)
    return trainer, checkpoint


def train(cfg: DictConfig, *, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train the propagation model as ``cfg`` says; returns a summary.

    Returns ``{"global_rank", "global_step", "output_dir", "checkpoint_dir", "last_checkpoint",
    "weights", "metrics" (last logged values), "validation" (Predictor results)}``.
    ``callbacks`` are added to the configured ones (tests use this).
    """
    seed_everything(int(cfg.seed), workers=True)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    output_dir = resolve_output_dir(cfg)
    os.environ[RUN_DIR_ENV] = str(output_dir)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    model_config, state = initial_model(cfg)
    module = build_module(cfg, model_config)
    if ckpt_path is None:
        if state is not None:
            module.model.load_state_dict(state, strict=True)
        else:
            _imagenet_init(cfg, module)
    trainer, checkpoint = build_trainer(cfg, output_dir, callbacks)
    stage = cfg.stage
    batch = per_device_batch_size(
        int(stage.batch_size), trainer.world_size, trainer.accumulate_grad_batches
    )
    curriculum = stage.get("max_skip")
    datamodule = build_datamodule(
        cfg.data,
        kind=stage.data_kind,
        batch_size=batch,
        num_frames=stage.num_frames,
        crop_size=stage.crop_size,
        max_objects=stage.max_objects,
        max_skip=int(curriculum["values"][0]) if curriculum else 5,
    )
    if trainer.is_global_zero:
        log.info(
            "training the %s model (%s stage, %d iterations) on %s data: global batch %d = "
            "%d per device × %d process(es) × %d accumulation; output %s%s",
            cfg.model.preset if not cfg.model.get("weights") else cfg.model.weights,
            stage.name,
            stage.iterations,
            cfg.data.source,
            stage.batch_size,
            batch,
            trainer.world_size,
            trainer.accumulate_grad_batches,
            output_dir,
            f"; resuming {ckpt_path}" if ckpt_path else "",
        )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    weights = None
    if trainer.is_global_zero and not trainer.fast_dev_run and cfg.get("export", {}).get("weights"):
        weights = str(
            save_weights(module.model, output_dir / "model.pth", half=bool(cfg.export.half))
        )
    predictor = next((c for c in trainer.callbacks if isinstance(c, Predictor)), None)
    history_file = None
    if predictor is not None and predictor.history and trainer.is_global_zero:
        history_file = output_dir / VALIDATION_HISTORY
        history_file.parent.mkdir(parents=True, exist_ok=True)
        history = {str(step): values for step, values in sorted(predictor.history.items())}
        history_file.write_text(json.dumps(history, indent=1))
    tensorboard = None
    if trainer.logger is not None and getattr(trainer.logger, "log_dir", None):
        tensorboard = str(trainer.logger.log_dir)
    return {
        "global_rank": int(trainer.global_rank),
        "global_step": int(trainer.global_step),
        "output_dir": str(output_dir),
        "checkpoint_dir": str(output_dir / "checkpoints"),
        "last_checkpoint": checkpoint.last_model_path or None,
        "weights": weights,
        "metrics": {k: _scalar(v) for k, v in trainer.callback_metrics.items()},
        "validation": dict(predictor.results) if predictor is not None else {},
        "validation_history": dict(predictor.history) if predictor is not None else {},
        "validation_file": str(history_file) if history_file else None,
        "tensorboard": tensorboard,
    }


def _imagenet_init(cfg: DictConfig, module: PropagationTrainingModule) -> None:
    init = cfg.get("init") or {}
    pixel, mask = init.get("pixel_trunk"), init.get("mask_trunk")
    if pixel or mask:
        init_from_imagenet(module.model, pixel, mask)
        log.info("trunks initialised from ImageNet weights: %s, %s", pixel, mask)


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return value


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """Human-readable lines of a :func:`train` result (for the command line): where the
    checkpoint, the weights, the logs and the numbers are, and the validation numbers at the
    first and the last validated step."""
    lines = [f"global step: {result['global_step']}", f"output: {result['output_dir']}"]
    if result.get("last_checkpoint"):
        lines.append(f"last checkpoint: {result['last_checkpoint']}")
    if result.get("weights"):
        lines.append(f"weights: {result['weights']}")
    if result.get("tensorboard"):
        lines.append(f"TensorBoard logs: {result['tensorboard']} (tensorboard --logdir ...)")
    if result.get("validation_file"):
        lines.append(f"validation numbers: {result['validation_file']}")
    history = result.get("validation_history") or {}
    steps = sorted(history)
    if len(steps) >= 2:
        first, last = history[steps[0]], history[steps[-1]]
        lines.append(f"validation at step {steps[0]} -> step {steps[-1]}:")
        for key in sorted(last):
            before = first.get(key, float("nan"))
            lines.append(f"  {key}: {before:.4f} -> {last[key]:.4f}")
    else:
        for key, value in sorted(result.get("validation", {}).items()):
            lines.append(f"{key}: {value:.4f}")
    return lines
