"""The builder, training side: a parsed ``train`` config → the objects Lightning fits.

:func:`build_run` turns a :class:`~deva.config.schema.TrainConfig` into explicit objects —
the :class:`~deva.training.module.PropagationTrainingModule` with the stage's recipe, the data
module, the callbacks (checkpoints, saved config, gap curriculum, the Predictor), the
TensorBoard logger and the ``Trainer``. Nothing below reads a config key.

Distribution: ``trainer.devices`` × ``trainer.num_nodes`` processes (DDP). The stage's
``batch_size`` is *global*: each process loads ``batch_size / (world size × gradient
accumulation)`` samples per step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from deva.config import ConfigError
from deva.config.builder import autocast_dtype, weights_path
from deva.config.builder.tasks import validation_tasks
from deva.config.schema import (
    DataCommon,
    ShardsData,
    StageSection,
    StaticData,
    SyntheticData,
    TrainConfig,
    VideoData,
    parse_data,
)
from deva.data.datamodule import VOSDataModule
from deva.data.real_imagery import CutoutAppearance
from deva.data.synthetic_clips import SyntheticClipDataset
from deva.data.video import SourceOptions
from deva.inference.options import InferenceOptions
from deva.modeling.checkpoint import (
    CheckpointError,
    WeightsMismatchError,
    check_state_dict,
    load_file,
    split_checkpoint,
)
from deva.modeling.config import PRESETS, PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import init_from_imagenet
from deva.training.callbacks import (
    AtomicCheckpointIO,
    IterationProgressBar,
    MaxSkipCurriculum,
    RNGState,
    SaveConfig,
    StepCheckpoint,
)
from deva.training.module import PropagationTrainingModule
from deva.training.predictor import Predictor

log = logging.getLogger(__name__)

#: Set by the launching process so that re-launched DDP processes share the output folder.
RUN_DIR_ENV = "DEVA_RUN_DIR"

#: Stages of the published recipe, which start from ImageNet trunks or trained weights.
PUBLISHED_STAGES = ("static", "video")


@dataclass
class TrainingRun:
    """Everything :meth:`Trainer.fit` needs, built from one config."""

    module: PropagationTrainingModule
    datamodule: VOSDataModule
    trainer: Trainer
    checkpoint: StepCheckpoint
    output_dir: Path
    ckpt_path: str | None
    batch_size: int  # per device


def build_run(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> TrainingRun:
    """The module (with its starting weights), data module and trainer of ``config``."""
    check_devices(config.trainer)
    output_dir = output_folder(config)
    os.environ[RUN_DIR_ENV] = str(output_dir)
    ckpt_path = resume_path(config, output_dir)
    if ckpt_path is None and config.stage.name == "finetune" and not config.model.weights:
        raise ConfigError(
            "stage=finetune adapts trained weights: give model.weights=FILE "
            "(e.g. DEVA-propagation.pth or a run's model.pth)"
        )
    if ckpt_path is not None:
        model_config, state = resumed_model(config, ckpt_path), None
    else:
        model_config, state = initial_model(config)
    module = training_module(config, model_config)
    if ckpt_path is None:
        if state is not None:
            module.model.load_state_dict(state, strict=True)
        elif not imagenet_init(config, module) and config.stage.name in PUBLISHED_STAGES:
            log.warning(
                "WARNING: stage=%s starts from RANDOM weights (no model.weights, no "
                "init.pixel_trunk / init.mask_trunk): the published recipe starts the static "
                "stage from ImageNet ResNets and the video stage from the static stage's "
                "model.pth; see docs/training.md#imagenet-initialisation",
                config.stage.name,
            )
    trainer, checkpoint = build_trainer(config, output_dir, callbacks)
    stage = config.stage
    batch = per_device_batch_size(
        stage.batch_size, trainer.world_size, trainer.accumulate_grad_batches
    )
    max_skip = stage.max_skip.values[0] if stage.max_skip else 5
    data = datamodule(
        parse_data(config.data), stage, batch_size=batch, max_skip=max_skip, seed=config.seed
    )
    return TrainingRun(module, data, trainer, checkpoint, output_dir, ckpt_path, batch)


def per_device_batch_size(global_batch: int, world_size: int, accumulate: int = 1) -> int:
    """Samples per process and step for a global batch (samples per optimizer step)."""
    parts = max(1, int(world_size)) * max(1, int(accumulate))
    if global_batch < parts or global_batch % parts:
        raise ConfigError(
            f"the global batch size {global_batch} must be a multiple of devices × nodes × "
            f"gradient accumulation = {parts}"
        )
    return global_batch // parts


def output_folder(config: TrainConfig) -> Path:
    """``output_dir``, else the folder of a resumed checkpoint, else a new timestamped one."""
    if config.output_dir:
        return Path(config.output_dir)
    ckpt = config.ckpt_path
    if ckpt and ckpt != "last" and Path(ckpt).parent.name == "checkpoints":
        return Path(ckpt).parent.parent
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / "train" / f"{config.stage.name}_{stamp}"


def resume_path(config: TrainConfig, output_dir: Path) -> str | None:
    """``ckpt_path`` as a file path (``last`` = ``<output_dir>/checkpoints/last.ckpt``)."""
    ckpt = config.ckpt_path
    if not ckpt:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume not found: {path}")
    return str(path)


def preset_name(model: PropagationConfig) -> str:
    """The preset an architecture is (``tiny``, ``small``, ``published``), else ``custom``."""
    return next((name for name, cfg in PRESETS.items() if cfg == model), "custom")


def resumed_model(config: TrainConfig, ckpt_path: str) -> PropagationConfig:
    """The architecture of the checkpoint to resume, checked against its own weights.

    The checkpoint's recorded architecture wins over ``model.*`` (as ``model.weights``' does):
    resuming continues that network. A file that is not a readable training checkpoint, or
    whose weights do not fit its architecture, is a :class:`CheckpointError` /
    :class:`WeightsMismatchError` naming the file.
    """
    data = load_file(ckpt_path, what="checkpoint")
    if not isinstance(data, dict) or "state_dict" not in data or "optimizer_states" not in data:
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: not a deva-train checkpoint (no training state); "
            "start from its weights with model.weights= instead"
        )
    state, stored = split_checkpoint(data, source=ckpt_path)
    if stored is None:
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: it does not record its architecture "
            "(hyper_parameters.model_config)"
        )
    try:
        check_state_dict(PropagationModel(stored), state)
    except WeightsMismatchError as error:
        raise WeightsMismatchError(f"{ckpt_path}: {error}") from None
    asked = _asked_model(config)
    if asked is not None and asked != stored:
        log.info(
            "resuming the %s model of %s (the config asks for %s; the checkpoint wins)",
            preset_name(stored),
            ckpt_path,
            preset_name(asked),
        )
    return stored


def _asked_model(config: TrainConfig) -> PropagationConfig | None:
    try:
        return PropagationConfig.preset(config.model.preset)
    except ValueError:
        return None


def initial_model(config: TrainConfig) -> tuple[PropagationConfig, dict[str, torch.Tensor] | None]:
    """Architecture and starting weights: ``model.weights`` (published or ours; its
    architecture wins over ``model.preset``) or a random ``model.preset``."""
    weights = config.model.weights
    try:
        preset = PropagationConfig.preset(config.model.preset)
    except ValueError as error:
        raise ConfigError(f"model.preset: {error}") from None
    if weights:
        model = PropagationModel.from_pretrained(weights_path(weights))
        if model.config != preset:
            log.info(
                "architecture taken from %s: a %s model (the config asks for %s)",
                weights,
                preset_name(model.config),
                config.model.preset,
            )
        return model.config, model.state_dict()
    return preset, None


def training_module(
    config: TrainConfig, model_config: PropagationConfig
) -> PropagationTrainingModule:
    """The LightningModule with the stage's recipe (explicit arguments)."""
    stage = config.stage
    loss = stage.loss
    return PropagationTrainingModule(
        model_config.to_dict(),
        num_ref_frames=stage.num_ref_frames,
        ref_frames_per_sample=stage.ref_frames_per_sample,
        deep_update_prob=stage.deep_update_prob,
        lr=stage.lr,
        weight_decay=stage.weight_decay,
        schedule=stage.schedule,
        milestones=list(stage.milestones),
        gamma=stage.gamma,
        total_steps=stage.iterations,
        poly_power=stage.poly_power,
        warmup_steps=stage.warmup_steps,
        start_warm=loss.start_warm,
        end_warm=loss.end_warm,
        final_fraction=loss.final_fraction,
        dice_weight=loss.dice_weight,
        bootstrap_per_sample=loss.bootstrap_per_sample,
        dice_padded_slots=loss.dice_padded_slots,
        aux_weight=loss.aux_weight,
        pad_objects_to=config.pad_objects_to,
        freeze_batchnorm=config.freeze_batchnorm,
        compile=config.compile,
        image_log_every=config.image_log_every,
        train_config=dataclasses.asdict(config),
    )


def imagenet_init(config: TrainConfig, module: PropagationTrainingModule) -> bool:
    """The trunks from ImageNet weights (``init.*``), when given; whether any was."""
    pixel, mask = config.init.pixel_trunk, config.init.mask_trunk
    if pixel or mask:
        init_from_imagenet(module.model, pixel, mask)
        log.info("trunks initialised from ImageNet weights: %s, %s", pixel, mask)
        return True
    return False


def check_devices(trainer: dict[str, Any]) -> None:
    """One line, before anything is built, when ``trainer`` asks for GPUs this machine lacks
    (Lightning would fail later with a traceback)."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator not in ("gpu", "cuda"):
        return
    devices = trainer.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        asked: int | None = len(devices)
    elif isinstance(devices, str) and devices.strip().isdigit():
        asked = int(devices)
    elif isinstance(devices, str) and "," in devices:
        asked = len([d for d in devices.split(",") if d.strip()])
    elif isinstance(devices, int) and devices > 0:
        asked = devices
    else:  # auto, -1: every GPU there is
        asked = None
    available = torch.cuda.device_count()
    what = f"trainer.accelerator={accelerator} with trainer.devices={devices}"
    if available == 0:
        count = asked if asked is not None else "at least 1"
        raise ConfigError(f"{what} asks for {count} GPU(s) but none is available; use trainer=cpu")
    if asked is not None and asked > available:
        raise ConfigError(
            f"{what} asks for {asked} GPU(s) but only {available} is/are available; "
            f"use trainer.devices={available}"
        )


def validation_autocast(name: str | None, accelerator: str) -> torch.dtype | None:
    """``validation.autocast`` as a dtype, checked now against the device validation will run
    on (``trainer.accelerator``), so that a bad choice fails before training starts."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    try:
        return autocast_dtype(name, torch.device("cuda" if gpu else "cpu"))
    except ConfigError as error:
        raise ConfigError(f"validation.autocast: {error}") from None


def predictor(config: TrainConfig) -> Predictor | None:
    """The Predictor callback of ``validation`` (None when nothing is to be validated)."""
    val = config.validation
    every = val.every_n_steps
    if not val.sets or (not every and not val.at_end and not val.at_start):
        return None
    dtype = validation_autocast(val.autocast, str(config.trainer.get("accelerator", "auto")))
    tasks = validation_tasks(val.sets, options=InferenceOptions(autocast=dtype))
    if not tasks:
        return None
    return Predictor(tasks, every_n_steps=every or None, at_start=val.at_start, at_end=val.at_end)


def build_trainer(
    config: TrainConfig, output_dir: Path, callbacks: Sequence[Callback] = ()
) -> tuple[Trainer, StepCheckpoint]:
    """The Lightning ``Trainer`` (``trainer`` are its keyword arguments) and callbacks.

    Checkpoints are written atomically and hold the random generators and the data
    position; the data module splits the data over ranks itself (no distributed sampler)."""
    ckpt_dir = output_dir / "checkpoints"
    checkpoint = StepCheckpoint(
        dirpath=ckpt_dir,
        filename="step_{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=config.checkpoint.every_n_steps or None,
        save_top_k=config.checkpoint.save_top_k,
        save_last=True,
    )
    text = OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(config)))
    all_callbacks: list[Callback] = [
        checkpoint,
        SaveConfig(text, [output_dir, ckpt_dir]),
        RNGState(),
    ]
    stage = config.stage
    if stage.max_skip:
        all_callbacks.append(
            MaxSkipCurriculum(
                values=list(stage.max_skip.values),
                boundaries=list(stage.max_skip.boundaries),
                total_steps=stage.iterations,
            )
        )
    validating = predictor(config)
    if validating is not None:
        all_callbacks.append(validating)
    all_callbacks += list(callbacks)
    if config.trainer.get("enable_progress_bar", True) and not any(
        isinstance(c, ProgressBar) for c in all_callbacks
    ):
        all_callbacks.append(IterationProgressBar())
    logger: Any = False
    if config.logger == "tensorboard":
        logger = TensorBoardLogger(
            save_dir=str(output_dir), name="tensorboard", default_hp_metric=False
        )
    elif config.logger != "none":
        raise ConfigError(f"logger: expected tensorboard or none, got {config.logger!r}")
    kwargs = dict(config.trainer)
    kwargs.setdefault("max_steps", stage.iterations)
    kwargs.setdefault("use_distributed_sampler", False)  # the training stream is per rank
    plugins = [*(kwargs.pop("plugins", None) or []), AtomicCheckpointIO()]
    trainer = Trainer(**kwargs, callbacks=all_callbacks, logger=logger, plugins=plugins)
    return trainer, checkpoint


def datamodule(
    data: DataCommon, stage: StageSection, *, batch_size: int, max_skip: int, seed: int = 0
) -> VOSDataModule:
    """The data module of the ``data`` section for ``stage`` (``batch_size`` per device):
    synthetic clips generated on the fly, image folders, VOS folders or shards."""
    common = {
        "batch_size": batch_size,
        "num_workers": data.num_workers,
        "crop_size": stage.crop_size,
        "num_frames": stage.num_frames,
        "max_objects": stage.max_objects,
        "max_skip": max_skip,
        "min_object_pixels": data.min_object_pixels,
        "augment": data.augment,
        "fixed_seed": data.fixed_seed,
        "pin_memory": data.pin_memory,
        "persistent_workers": data.persistent_workers,
        "seed": seed,
    }
    if isinstance(data, SyntheticData):
        if stage.name == "real" and not data.real_root:
            raise ConfigError(
                "stage=real trains on real cut-outs: give data.real_root=DIR, a folder "
                "made by tools/make_real.py output=DIR"
            )
        if data.real_root and not Path(data.real_root).is_dir():
            raise ConfigError(
                f"data.real_root={data.real_root} is not a folder: make it with "
                f"python tools/make_real.py output={data.real_root}"
            )
        dataset = SyntheticClipDataset(
            length=data.samples_per_epoch,
            num_frames=stage.num_frames,
            crop_size=stage.crop_size,
            max_objects=stage.max_objects,
            max_skip=max_skip,
            video_frames=data.video_frames,
            height=data.height,
            width=data.width,
            augment=data.augment,
            min_object_pixels=data.min_object_pixels,
            fixed_seed=data.fixed_seed,
            video=dict(data.video),
            appearance=CutoutAppearance.from_folder(data.real_root) if data.real_root else None,
            appearance_fraction=data.real_fraction,
        )
        return VOSDataModule(stage="video", dataset=dataset, **common)
    if isinstance(data, StaticData):
        if stage.max_objects != 1:
            raise ConfigError(
                f"stage.max_objects={stage.max_objects}: static pseudo-videos hold one object, "
                "the image's foreground (the published stage 0 too); set stage.max_objects=1"
            )
        roots = _static_roots(data.roots)
        return VOSDataModule(
            stage="static", roots=roots, static_repeats=_static_repeats(data, roots), **common
        )
    if isinstance(data, VideoData):
        return VOSDataModule(
            stage="video", roots=_video_roots(data), sources=_video_sources(data), **common
        )
    return _shards_datamodule(data, stage, common)  # type: ignore[arg-type]


def _static_roots(roots: Any) -> dict[str, str]:
    """``data.roots`` of the static stage (a folder, a list or name → folder) by name (a
    listed folder is named by its base name)."""
    if isinstance(roots, str):
        roots = [roots]
    if isinstance(roots, dict):
        named = {str(k): v for k, v in roots.items() if v}
    else:
        named = {}
        for i, root in enumerate(r for r in roots or [] if r):
            name = Path(str(root).rstrip("/\\")).name or f"root{i}"
            named[name if name not in named else f"{name}-{i}"] = root
    if not named:
        raise ConfigError("data=static needs data.roots=[FOLDER,...] (image + mask folders)")
    return named


def _static_repeats(data: StaticData, roots: dict[str, str]) -> dict[str, int]:
    """Copies of each static root in the mix: ``data.repeats`` by root name, matched without
    regard to case (absent: 1)."""
    table = {str(k).lower(): v for k, v in dict(data.repeats or {}).items()}
    repeats = {}
    for name in roots:
        value = table.get(name.lower(), 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"data.repeats.{name}: expected a count ≥ 0, got {value!r}")
        repeats[name] = value
    return repeats


def _video_roots(data: VideoData) -> dict[str, Any]:
    """``data.roots`` of the video stage: the sources given a folder (generic: or a list)."""
    unknown = sorted(str(k) for k in data.roots if str(k) not in data.sources)
    if unknown:
        raise ConfigError(
            f"data.roots.{unknown[0]}: unknown video source (known: {', '.join(data.sources)})"
        )
    roots: dict[str, Any] = {}
    for key, value in data.roots.items():
        if isinstance(value, (list, tuple)):
            if key != "generic":
                raise ConfigError(f"data.roots.{key}: expected one folder, got a list")
            value = [str(v) for v in value if v]
        if value:
            roots[str(key)] = value
    if not roots:
        names = ", ".join(f"data.roots.{k}" for k in data.sources)
        raise ConfigError(
            f"data=video needs at least one folder: {names} (your own videos: "
            "data.roots.generic=DIR)"
        )
    return roots


def _video_sources(data: VideoData) -> dict[str, SourceOptions]:
    """``data.sources`` as the mix's per-source options (one line naming a bad value)."""
    sources = {}
    for key, section in data.sources.items():
        try:
            sources[str(key)] = SourceOptions(
                repeats=section.repeats,
                skip_divisor=section.skip_divisor,
                max_objects=section.max_objects,
                subset=section.subset,
            )
        except ValueError as error:
            raise ConfigError(f"data.sources.{key}: {error}") from None
    return sources


def _shards_datamodule(
    data: ShardsData, stage: StageSection, common: dict[str, Any]
) -> VOSDataModule:
    if not data.urls:
        raise ConfigError("data=shards needs data.urls=PATTERN (e.g. dir/train-{000..099}.tar)")
    if stage.data_kind not in ("static", "video"):
        raise ConfigError(f"shards need a stage of kind static or video, got {stage.data_kind!r}")
    urls = data.urls if isinstance(data.urls, str) else list(data.urls)
    return VOSDataModule(
        stage=stage.data_kind,  # type: ignore[arg-type]
        shard_urls=urls,
        samples_per_epoch=data.samples_per_epoch or None,
        shuffle_buffer=data.shuffle_buffer,
        sources={str(k): SourceOptions(skip_divisor=int(v)) for k, v in data.skip_divisors.items()},
        **common,
    )
