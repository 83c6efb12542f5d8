"""The config schema: the type of every key the tools read, checked once at start-up.

The values — defaults included — live in the YAML files (``deva/configs/``); these dataclasses
say only which keys exist and what type each holds, so a field has no default here.
:func:`parse` merges a composed config into its schema and returns the typed dataclass, or
raises one :class:`~deva.config.ConfigError` line naming the key (``size: Value 'abc' of type
'str' could not be converted to Integer``). Sections whose keys depend on a choice (the
training data by ``data.source``) are parsed again by their variant (:func:`parse_data`);
free-form sections (Lightning's ``trainer`` arguments, a segmenter's options, validation
sets) are checked where they are used.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from deva.config import ConfigError
from deva.inference.memory import MemoryConfig

T = TypeVar("T")


def keys_of(library: type) -> type:
    """A schema section with the fields and types of a library dataclass and none of its
    defaults (the values are the YAML's)."""
    hints = typing.get_type_hints(library)
    fields = [(f.name, hints[f.name]) for f in dataclasses.fields(library)]
    return dataclasses.make_dataclass(f"{library.__name__}Keys", fields)


MemorySection = keys_of(MemoryConfig)


# ---- shared sections ---------------------------------------------------------------------------
@dataclass
class ModelSection:
    """The propagation network: a size preset and the weights to load (None: random)."""

    preset: str
    weights: str | None


@dataclass
class RuntimeFields:
    """How inference runs (:class:`~deva.inference.options.InferenceOptions`)."""

    device: str
    amp: str
    winograd: bool | None
    compile: bool
    chunk_size: int


@dataclass
class TrackingFields:
    """The decoupled tracker's settings (:class:`~deva.inference.tracker_config.TrackerConfig`)
    and the memory's (:class:`~deva.inference.memory.MemoryConfig`)."""

    mode: str
    detect_every: int
    clip_size: int
    max_missed: int
    incremental: bool
    max_objects: int | None
    size: int
    mem_every: int
    memory: MemorySection  # type: ignore[valid-type]
    propagator: str
    propagator_model: str | None


@dataclass
class ProcessesSection:
    """The processes a dataset's videos are split over (:mod:`deva.pipelines.sharding`)."""

    devices: int
    num_nodes: int
    accelerator: str


# ---- tools ---------------------------------------------------------------------------------
@dataclass
class TrackConfig(TrackingFields, RuntimeFields):
    """``deva-track`` / ``tools/track.py`` (``track.yaml``)."""

    model: ModelSection
    segmenter: dict[str, Any]
    input: str | None
    output: str | None
    overwrite: bool
    resume: bool
    state_every: int
    detections: str | None
    extra_detections: str
    prompt: str | None
    offline_models: bool | None
    progress: bool
    overlay: bool
    fps: float | None
    trainer: ProcessesSection


@dataclass
class EvaluateData:
    """Where a benchmark's files are (see ``evaluate.yaml``)."""

    root: str | None
    images: str | None
    detections: str | None
    gt: str | None
    split: str
    resolution: str
    meta: str | None


@dataclass
class EvaluateConfig(TrackingFields, RuntimeFields):
    """``deva-evaluate`` / ``tools/evaluate.py`` (``evaluate.yaml``)."""

    model: ModelSection
    benchmark: str
    data: EvaluateData
    output: str | None
    overwrite: bool
    resume: bool
    trainer: ProcessesSection
    use_all_masks: bool
    extra_detections: str


@dataclass
class AppConfig(TrackingFields, RuntimeFields):
    """``deva-app`` / ``tools/app.py`` (``app.yaml``)."""

    model: ModelSection
    segmenter: dict[str, Any]
    demo: str | None
    segmenters: list[str]
    prompt: str
    host: str
    port: int
    share: bool
    workdir: str | None
    keep_runs: int
    max_frames: int | None
    max_seconds: float | None
    max_file_mb: int
    cache_seconds: int
    offline_models: bool | None


@dataclass
class DemoConfig(RuntimeFields):
    """``deva-demo`` / ``tools/demo.py`` (``demo.yaml``)."""

    model: ModelSection
    output: str
    overwrite: bool
    seed: int
    num_frames: int
    height: int
    width: int
    size: int
    fps: float
    clip: str | None = None


@dataclass
class ValidationRun:
    """Precision and sets of a ``deva-validate`` run (``validate.yaml``)."""

    autocast: str | None
    sets: dict[str, Any]


@dataclass
class ValidateConfig:
    """``deva-validate`` / ``tools/validate.py`` (``validate.yaml``)."""

    run: str | None
    ckpt: str | None
    sets: Any  # a set name, a list of names, or null (all)
    force: bool
    threads: int | None
    output: str | None
    tensorboard: bool
    validation: ValidationRun
    trainer: dict[str, Any]


@dataclass
class BenchmarkConfig:
    """``deva-benchmark`` / ``tools/benchmark.py`` (``benchmark.yaml``); see :mod:`deva.bench`."""

    suite: Any  # a name, a list of names or null
    tasks: Any
    presets: Any  # a preset name or a list
    size: int
    frames: int
    warmup: int
    objects: int
    device: str
    amp: str
    compile: Any  # auto | true | false
    threads: int
    quick: bool
    out: str | None
    seed: int
    decisive_margin: float
    decisive_margin_amp: float
    weights: str
    segments: int
    tracker_detections: str
    clip_size: int
    detect_every: int
    repeats: int
    tracker_frames: int
    tracker_size: int | None
    memory_preset: str
    memory_frames: int
    memory_size: int
    memory_record_every: int
    rss_presets: Any
    rss_frames: int
    rss_modes: Any
    rss_lengths: Any
    rss_length_modes: Any
    rss_buffer_mib: float
    length_plot: str | None
    plot: str | None
    data_sources: Any
    data_workers: Any
    data_videos: int
    data_video_frames: int
    data_height: int
    data_width: int
    data_crop: int | None
    data_batch: int
    data_batches: int
    data_train_preset: str
    data_train_steps: int
    data_train_workers: int
    train_presets: Any
    train_size: int
    train_frames: int
    train_batch: int
    train_objects: int
    train_steps: int
    backends: Any  # a backend name or a list
    backend_preset: str
    backend_frames: int
    backend_models: dict[str, Any]
    quick_settings: dict[str, Any]


@dataclass
class DetectConfig(RuntimeFields):
    """``deva-detect`` / ``tools/detect.py`` (``detect.yaml``)."""

    segmenter: dict[str, Any]
    input: str | None
    output: str | None
    overwrite: bool
    resume: bool
    prompt: str | None
    offline_models: bool | None
    progress: bool
    trainer: ProcessesSection


@dataclass
class ScoreConfig:
    """``deva-score`` / ``tools/score.py`` (``score.yaml``)."""

    metric: str | None
    gt: str | None
    pred: str | None
    out: str | None
    verbose: bool
    split: str
    year: int
    resolution: str
    binary: bool | None
    task: str
    windows: Any  # window sizes: integers and inf
    num_classes: int | None
    strict: bool
    splits: Any  # a split name or a list
    similarity: str
    max_detections: int


@dataclass
class MakeShardsConfig:
    """``deva-make-shards`` / ``tools/make_shards.py`` (``make_shards.yaml``)."""

    dataset: str | None
    root: str | None
    output: str | None
    overwrite: bool
    samples_per_shard: int | None
    prefix: str | None
    split: str | None
    subset: str
    num_videos: int
    seed: int
    frames: int | None
    height: int | None
    width: int | None


@dataclass
class FetchWeightsConfig:
    """``deva-fetch-weights`` / ``tools/fetch_weights.py`` (``fetch_weights.yaml``)."""

    output: str
    wheel: str | None


@dataclass
class MakeRealConfig:
    """``deva-make-real`` / ``tools/make_real.py`` (``make_real.yaml``)."""

    output: str | None
    cutouts: list[str]
    backgrounds: list[str]
    debs: dict[str, str]
    val_fraction: float
    seed: int
    static_per_cutout: int
    min_cutout_pixels: int
    min_background_side: int
    videos: dict[str, int]
    video: dict[str, Any]
    overwrite: bool


@dataclass
class MakeClipsConfig:
    """``deva-make-clips`` / ``tools/make_clips.py`` (``make_clips.yaml``)."""

    output: str | None
    clips: list[str]
    debs: dict[str, str]
    overwrite: bool


@dataclass
class ConvertOvisConfig:
    """``deva-convert-ovis`` / ``tools/convert_ovis.py`` (``convert_ovis.yaml``)."""

    annotations: str | None
    images: str | None
    output: str | None
    link: str
    overwrite: bool


# ---- training ------------------------------------------------------------------------------
@dataclass
class LossSection:
    """Loss weights and the bootstrapped cross-entropy warm-up (None: the published one)."""

    start_warm: int | None
    end_warm: int | None
    final_fraction: float
    dice_weight: float
    aux_weight: float
    bootstrap_per_sample: bool
    dice_padded_slots: bool


@dataclass
class MaxSkipSection:
    """The maximum frame gap curriculum: ``values[i]`` from ``boundaries[i - 1]`` of the run."""

    values: list[int]
    boundaries: list[float]


@dataclass
class StageSection:
    """One training stage's recipe (``configs/stage/<name>.yaml``)."""

    name: str
    data_kind: str
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    milestones: list[int]
    gamma: float
    poly_power: float
    warmup_steps: int
    num_frames: int
    num_ref_frames: int
    ref_frames_per_sample: bool
    crop_size: int
    max_objects: int
    deep_update_prob: float
    accumulate_grad_batches: int
    loss: LossSection
    max_skip: MaxSkipSection | None
    freeze_batchnorm: bool


@dataclass
class DataCommon:
    """Keys every training data source has."""

    source: str
    augment: bool
    min_object_pixels: int
    fixed_seed: int | None
    num_workers: int
    pin_memory: bool
    persistent_workers: bool


@dataclass
class SyntheticData(DataCommon):
    """Synthetic videos generated on the fly (``data=synthetic``)."""

    samples_per_epoch: int
    video_frames: int
    height: int
    width: int
    video: dict[str, Any]
    real_root: str | None  # a deva-make-real folder: its train cut-outs and backgrounds
    real_fraction: float  # share of the videos that show them


@dataclass
class StaticData(DataCommon):
    """Image + mask folders turned into pseudo-videos (``data=static``)."""

    roots: Any  # a folder, a list of folders or name -> folder
    repeats: dict[str, int]  # root name -> copies in the mix


@dataclass
class SourceSection:
    """One video source's place in the mix (:class:`deva.data.video.SourceOptions`)."""

    repeats: int
    skip_divisor: int
    max_objects: int | None
    subset: str | None


@dataclass
class VideoData(DataCommon):
    """VOS training sets and your own videos (``data=video``)."""

    roots: dict[str, Any]  # source -> folder (generic: a folder or a list)
    sources: dict[str, SourceSection]


@dataclass
class ShardsData(DataCommon):
    """webdataset shards (``data=shards``)."""

    urls: Any  # a brace pattern, a folder or a list
    samples_per_epoch: int | None
    shuffle_buffer: int
    skip_divisors: dict[str, int]


DATA_SOURCES: dict[str, type[DataCommon]] = {
    "synthetic": SyntheticData,
    "static": StaticData,
    "video": VideoData,
    "shards": ShardsData,
}


@dataclass
class InitSection:
    """ImageNet trunk weights used when neither ``model.weights`` nor ``ckpt_path`` is given."""

    pixel_trunk: str | None
    mask_trunk: str | None


@dataclass
class CheckpointSection:
    every_n_steps: int
    save_top_k: int


@dataclass
class ExportSection:
    weights: bool
    half: bool


@dataclass
class ValidationSection:
    """The Predictor's cadence, precision and sets (``validation.sets.<name>``)."""

    every_n_steps: int
    at_start: bool
    at_end: bool
    autocast: str | None
    sets: dict[str, Any]


@dataclass
class TrainConfig:
    """``deva-train`` / ``tools/train.py`` (``train.yaml`` and its groups)."""

    seed: int
    output_dir: str | None
    ckpt_path: str | None
    logger: str
    image_log_every: int
    compile: bool
    freeze_batchnorm: bool
    pad_objects_to: int | None
    init: InitSection
    checkpoint: CheckpointSection
    export: ExportSection
    validation: ValidationSection
    trainer: dict[str, Any]
    model: ModelSection
    stage: StageSection
    data: dict[str, Any]  # parsed by its source: :func:`parse_data`


# ---- parsing -------------------------------------------------------------------------------
def parse(schema: type[T], cfg: DictConfig | dict[str, Any]) -> T:
    """``cfg`` checked against ``schema`` and returned as that dataclass (nested sections as
    theirs); one ConfigError line naming the first bad, unknown or missing key."""
    if isinstance(cfg, schema):
        return cfg
    try:
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"{missing[0]}: no value given (the config file lacks this key)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as error:
        raise ConfigError(_unknown_key(schema, error)) from None
    except OmegaConfBaseException as error:
        raise ConfigError(_message(error)) from None
    except (TypeError, ValueError) as error:  # a section's own checks (e.g. MemoryConfig)
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def parse_data(data: dict[str, Any]) -> DataCommon:
    """The ``data`` section as the dataclass of its ``source``."""
    source = data.get("source")
    if source not in DATA_SOURCES:
        raise ConfigError(
            f"data.source: unknown training data {source!r}; expected one of {sorted(DATA_SOURCES)}"
        )
    try:
        return parse(DATA_SOURCES[source], data)
    except ConfigError as error:
        raise ConfigError(f"data.{error}") from None


def _message(error: OmegaConfBaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    key = getattr(error, "full_key", None)
    return f"{key}: {text}" if key else text


def _unknown_key(schema: type, error: ConfigKeyError) -> str:
    """``key: unknown option (known: ...)`` for a key the schema does not have."""
    key = getattr(error, "full_key", None) or ""
    if not key:
        return _message(error)
    section: type | None = schema
    for part in key.split(".")[:-1]:
        section = _section_type(section, part) if section is not None else None
    known = sorted(f.name for f in dataclasses.fields(section)) if section else []
    hint = f" (known: {', '.join(known)})" if known else ""
    return f"{key}: unknown option{hint}"


def _section_type(section: type, name: str) -> type | None:
    """The dataclass type of field ``name`` of ``section`` (also inside ``X | None``)."""
    kind = typing.get_type_hints(section).get(name)
    for candidate in (kind, *typing.get_args(kind)):
        if dataclasses.is_dataclass(candidate):
            return candidate  # type: ignore[return-value]
    return None
