"""The builder: parsed configs (:mod:`deva.config.schema`) → library objects.

This module and :mod:`deva.config.builder.training` are the only code that reads config keys;
everything they build takes explicit, typed arguments. Here: the propagation model, how it
runs, the tracker's and memory's settings, image segmenters by name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from deva.config import ConfigError, repository_path
from deva.config.schema import ModelSection, RuntimeFields, TrackingFields
from deva.inference import options as runtime
from deva.inference.backend import PropagationBackend
from deva.inference.backends import make_backend, needs_model
from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.sam_video import FAMILIES
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.segmenters.registry import build_segmenter
from deva.types import ImageSegmenter

log = logging.getLogger(__name__)


def weights_path(weights: str) -> str:
    """``model.weights`` as given, or inside the repository when it names a file there (the
    embedded checkpoint, from any working folder); URLs and published names pass through."""
    if Path(weights).is_file() or "://" in weights or not repository_path(weights).is_file():
        return weights
    return str(repository_path(weights))


def model(section: ModelSection) -> PropagationModel:
    """The propagation network: loaded from ``weights`` (architecture from the file), or a
    randomly initialised ``preset`` with a loud warning when no weights are given."""
    if section.weights:
        return PropagationModel.from_pretrained(weights_path(section.weights))
    try:
        config = PropagationConfig.preset(section.preset)
    except ValueError as error:
        raise ConfigError(f"model.preset: {error}") from None
    log.warning(
        "NO WEIGHTS GIVEN: using a RANDOMLY INITIALISED %r propagation model; its masks are "
        "meaningless (pass model.weights=FILE, e.g. DEVA-propagation.pth)",
        section.preset,
    )
    return PropagationModel(config)


def propagation(
    section: ModelSection,
    tracker: TrackerConfig,
    options: InferenceOptions,
    *,
    local_files_only: bool | None = None,
) -> tuple[PropagationModel | PropagationBackend, InferenceOptions | None]:
    """What the tracker propagates with, and the options that go with it: our network (from
    ``section``, on the options' device) for ``propagator=deva``, else the ready backend
    ``tracker.propagator`` names (its model from ``tracker.propagator_model``), which runs
    with its own options (None)."""
    if needs_model(tracker.propagator):
        return model(section).to(options.torch_device()), options
    backend = make_backend(
        tracker.propagator,
        None,
        tracker.memory,
        mem_every=tracker.mem_every,
        options=options,
        source=tracker.propagator_model,
        local_files_only=local_files_only,
    )
    return backend, None


def propagation_summary(section: ModelSection, tracker: TrackerConfig) -> str:
    """How frames are propagated, for a tool's start-up line."""
    if needs_model(tracker.propagator):
        return f"weights {section.weights or 'RANDOM'}"
    if tracker.propagator in FAMILIES:
        source = tracker.propagator_model or FAMILIES[tracker.propagator].default_source
        return f"propagator {tracker.propagator}, model {source}"
    return f"propagator {tracker.propagator}, no propagation network"


def inference_options(section: RuntimeFields) -> InferenceOptions:
    """``device``, ``amp``, ``winograd``, ``compile``, ``chunk_size`` → :class:`InferenceOptions`
    (the precision is checked against the device now)."""
    options = InferenceOptions(
        device=section.device,
        winograd=section.winograd,
        compile=section.compile,
        chunk_size=section.chunk_size,
    )
    where = device(section)
    dtype = autocast_dtype(section.amp, where)
    try:
        return dataclasses.replace(options, autocast=dtype).resolved(where)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def autocast_dtype(name: str | None, device: torch.device) -> torch.dtype | None:
    """``amp`` (none | bf16 | fp16) as a dtype usable on ``device`` (one-line ConfigError)."""
    try:
        return runtime.autocast_dtype(name, device)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def device(section: RuntimeFields) -> torch.device:
    """The torch device of ``device`` (``auto``: CUDA, then MPS, then CPU)."""
    try:
        return runtime.pick_device(section.device)
    except RuntimeError as error:
        raise ConfigError(f"device: {error}") from None


def memory_config(section: Any) -> MemoryConfig:
    """``memory.*`` → :class:`MemoryConfig` (its consistency checks as one line)."""
    try:
        return MemoryConfig(**dataclasses.asdict(section))
    except ValueError as error:
        raise ConfigError(f"memory: {error}") from None


#: Benchmarks whose detections are panoptic (things and stuff matched separately).
PANOPTIC_BENCHMARKS = ("vipseg",)


def tracker_config(section: TrackingFields, *, panoptic: bool | None = None) -> TrackerConfig:
    """The tracker keys → :class:`TrackerConfig`. ``panoptic`` input (VIPSeg-style) matches
    things and stuff separately; every other input (generic detections, BURST, segmenters) is
    matched in one group. None: panoptic when the section's ``benchmark`` is one of
    :data:`PANOPTIC_BENCHMARKS` (``deva-evaluate``), else not."""
    if panoptic is None:
        panoptic = getattr(section, "benchmark", None) in PANOPTIC_BENCHMARKS
    try:
        return TrackerConfig(
            mode=TrackingMode.parse(section.mode),
            detect_every=section.detect_every,
            clip_size=section.clip_size,
            max_missed=section.max_missed,
            max_objects=section.max_objects,
            shorter_side=section.size,
            mem_every=section.mem_every,
            memory=memory_config(section.memory),
            panoptic=panoptic,
            incremental=section.incremental,
            propagator=section.propagator,
            propagator_model=section.propagator_model,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


# ---- image segmenters ----------------------------------------------------------------------
def offline_models(value: bool | None) -> bool | None:
    """``offline_models``: null follows ``$HF_HUB_OFFLINE``."""
    if value is None and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return True
    return value


def segmenter(
    section: Mapping[str, Any],
    *,
    prompt: str | None = None,
    detections: str | Path | None = None,
    device: torch.device | str | None = None,
    amp: str | None = None,
    local_files_only: bool | None = None,
) -> ImageSegmenter:
    """The image segmenter of a ``segmenter`` section (``name`` + its options), as
    :func:`~deva.segmenters.registry.build_segmenter` builds it; errors as one line."""
    options = dict(section)
    name = str(options.pop("name", ""))
    try:
        return build_segmenter(
            name,
            options,
            prompt=prompt,
            detections=detections,
            device=device,
            amp=amp,
            local_files_only=local_files_only,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
