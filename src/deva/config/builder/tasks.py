"""The builder, validation side: ``validation.sets`` entries → the Predictor's tasks.

One task per named set, checked when built (folders, frames, detections, keys), so that a bad
set fails before training starts, with one error naming the set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from deva.data.synthetic import SyntheticVideoConfig
from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.tracker_config import TrackerConfig
from deva.training.tasks.base import PredictionTask
from deva.training.tasks.burst import BurstTask
from deva.training.tasks.panoptic import SyntheticPanopticTask, VipsegTask
from deva.training.tasks.tracking import TrackingTask
from deva.training.tasks.vos import SyntheticVideos, VOSTask, vos_folder_videos

log = logging.getLogger(__name__)


def validation_tasks(
    sets: Mapping[str, Mapping[str, Any]], *, options: InferenceOptions | None = None
) -> list[PredictionTask]:
    """Tasks from the ``validation.sets`` config: name → ``{type: ..., ...}``; a null entry is
    skipped. Every set is checked here (folders, frames, detections, keys), so a bad set fails
    before training starts, with one error naming the set.

    - ``synthetic`` (J&F): ``num_videos``, ``seed`` and SyntheticVideoConfig fields;
    - ``generic`` / ``davis`` (J&F): ``root`` (and ``split``, ``resolution`` for DAVIS);
      these three also take ``size`` (or ``shorter_side``), ``mem_every``, ``top_k`` and
      ``propagator`` (``hold``: the copy-the-first-mask baseline, whatever the weights;
      ``sam2`` / ``sam3`` / ``edgetam``: a SAM-family model) and ``propagator_model``;
    - ``vipseg`` (VPQ / STQ), ``burst`` (OWTA), ``synthetic_panoptic`` (VPQ / STQ): see
      :func:`build_tracking_task` — ``images``, ``gt``,
      ``detections``, ``max_videos``, ``max_frames`` and the tracker settings ``mode``,
      ``detect_every``, ``clip_size``, ``max_missed``, ``size``, ...
    """
    tasks: list[PredictionTask] = []
    for name, spec in sets.items():
        if spec is None:
            continue
        spec = dict(spec)
        kind = spec.pop("type", "synthetic")
        if kind in TRACKING_TYPES:
            tasks.append(build_tracking_task(str(name), kind, spec, options=options))
            continue
        if "size" in spec:
            spec["shorter_side"] = spec.pop("size")
        settings = {
            key: spec.pop(key)
            for key in ("shorter_side", "mem_every", "top_k", "propagator", "propagator_model")
            if key in spec
        }
        if kind == "synthetic":
            videos: Sequence[Any] = SyntheticVideos(**spec)
            settings.setdefault("shorter_side", -1)
        elif kind in ("generic", "davis"):
            root = spec.pop("root", None)
            if not root:
                raise ValueError(f"validation set {name!r} ({kind}) needs a root folder")
            videos = vos_folder_videos(root, kind, **spec)
        else:
            raise ValueError(
                f"validation set {name!r}: unknown type {kind!r}; expected one of "
                f"{['synthetic', 'generic', 'davis', *TRACKING_TYPES]}"
            )
        if len(videos) == 0:
            raise ValueError(f"validation set {name!r} is empty")
        tasks.append(VOSTask(str(name), videos, options=options, **settings))
    return tasks


TRACKING_TYPES = ("vipseg", "burst", "synthetic_panoptic")


def tracker_settings(name: str, spec: dict[str, Any], *, default_size: int) -> TrackerConfig:
    """Pop the tracker keys of a validation set (``mode``, ``detect_every``, ``clip_size``,
    ``max_missed``, ``size``, ``mem_every``, ``top_k``, ...) into a :class:`TrackerConfig`."""

    names = {f.name for f in fields(TrackerConfig)} - {"memory", "shorter_side"}
    kwargs = {key: spec.pop(key) for key in list(spec) if key in names}
    kwargs["shorter_side"] = int(spec.pop("size", spec.pop("shorter_side", default_size)))
    memory = {
        key: spec.pop(key) for key in list(spec) if key in {f.name for f in fields(MemoryConfig)}
    }
    try:
        return TrackerConfig(memory=MemoryConfig(**memory), **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"validation set {name!r}: {error}") from error


def build_tracking_task(
    name: str, kind: str, spec: dict[str, Any], *, options: InferenceOptions | None = None
) -> TrackingTask:
    """One tracking task from its ``validation.sets.<name>`` entry (``type`` already popped).

    Unknown keys are an error, so a typo fails at start-up rather than being ignored.
    """
    spec = dict(spec)
    # panoptic input (VIPSeg, the generator's things + stuff): things and stuff are matched
    # separately, as tools/evaluate.py does for benchmark=vipseg; BURST is matched as one group
    spec.setdefault("panoptic", kind != "burst")
    default_size = -1 if kind == "synthetic_panoptic" else 480
    config = tracker_settings(name, spec, default_size=default_size)
    common = {k: spec.pop(k) for k in ("max_frames", "preview_frames") if k in spec}
    common["options"] = options
    if kind == "synthetic_panoptic":
        return SyntheticPanopticTask(
            name, config, **common, **_checked(name, spec, _synthetic_keys())
        )
    paths = {}
    for key in ("images", "gt", "detections"):
        value = spec.pop(key, None)
        if not value:
            raise ValueError(f"validation set {name!r} ({kind}) needs {key}=PATH")
        paths[key] = value
    if kind == "vipseg":
        allowed = {"split", "max_videos"}
        return VipsegTask(name, config, **paths, **common, **_checked(name, spec, allowed))
    allowed = {"max_videos", "max_detections", "similarity"}
    return BurstTask(name, config, **paths, **common, **_checked(name, spec, allowed))


def _synthetic_keys() -> set[str]:

    return {"num_videos", "seed"} | {f.name for f in fields(SyntheticVideoConfig)}


def _checked(name: str, spec: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"validation set {name!r}: unknown key(s) {unknown}")
    return spec
