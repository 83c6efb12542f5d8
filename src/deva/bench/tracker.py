"""The tracker suite: the semi-online tracker over precomputed detections, variants
interleaved frame by frame, with the time shares of alignment, consensus and merging."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig

from deva.bench.common import MaskComparison, _kind, _model, _sync, _width
from deva.data.synthetic import SyntheticVideo, SyntheticVideoConfig, generate_video
from deva.inference.memory import MemoryConfig
from deva.inference.network import FrameFeatures
from deva.inference.options import InferenceOptions
from deva.inference.propagator import Propagator, reference_alignment
from deva.inference.tracker import DecoupledTracker
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.propagation import PropagationModel
from deva.types import Segment, Segmentation


def partition(height: int, width: int, count: int, seed: int, shift: float) -> Segmentation:
    """A Voronoi partition into ``count`` segments (about 10 % left as background), seeds
    drifting by ``shift`` pixels per unit of ``seed`` so that nearby frames roughly agree."""
    rng = np.random.default_rng(0)
    points = rng.uniform((0, 0), (height, width), size=(count, 2))
    drift = np.random.default_rng(seed).normal(0, shift, size=points.shape)
    points = points + drift
    scale = 4
    ys, xs = np.mgrid[0 : height // scale, 0 : width // scale] * scale
    dist = (ys[..., None] - points[:, 0]) ** 2 + (xs[..., None] - points[:, 1]) ** 2
    labels = dist.argmin(-1) + 1
    labels = np.repeat(np.repeat(labels, scale, 0), scale, 1)[:height, :width]
    padded = np.zeros((height, width), dtype=np.int64)
    padded[: labels.shape[0], : labels.shape[1]] = labels
    dropped = np.random.default_rng(seed + 1000).random(count) < 0.1
    padded[np.isin(padded, np.flatnonzero(dropped) + 1)] = 0
    ids = sorted(set(np.unique(padded).tolist()) - {0})
    segments = [
        Segment(id=i, category_id=i % 7, score=0.5 + 0.4 * ((i * 37) % 10) / 10, isthing=i % 4 != 0)
        for i in ids
    ]
    return Segmentation(mask=torch.from_numpy(padded), segments=segments)


class ListSegmenter:
    """Returns precomputed per-frame segmentations (the generator's simulated detections)."""

    def __init__(self, segmentations: list[Segmentation]) -> None:
        self.segmentations = segmentations

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        return self.segmentations[int(frame_name or 0)]


class PartitionSegmenter:
    """Returns a drifting Voronoi partition with a fixed number of segments per frame."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        h, w = image.shape[:2]
        return partition(h, w, self.count, int(frame_name or 0), shift=3.0)


class _LegacyPropagator(Propagator):
    """The previous alignment: one throw-away propagator per clip frame."""

    def align(
        self, sources: list[tuple[FrameFeatures, Segmentation]], target: FrameFeatures
    ) -> list[Segmentation]:
        out = []
        for features, seg in sources:
            if not seg.segments or not torch.as_tensor(seg.mask).any():
                empty = torch.zeros(target.size, dtype=torch.long)
                out.append(Segmentation(mask=empty, segments=[]))
                continue
            top_k = self.memory_config.top_k
            ids = reference_alignment(self.network, features, seg, target, top_k=top_k)
            present = set(torch.unique(ids).tolist())
            segments = [replace(s) for s in seg.segments if s.id in present]
            out.append(Segmentation(mask=ids, segments=segments))
        return out

    def fork(self) -> Propagator:
        return _LegacyPropagator(self.network, self.memory_config, mem_every=self.mem_every)


# The tracker's timed stages and the keys the suite reports them under.
_TIMED = {
    "consensus": "in_clip_consensus",
    "alignment": "align_segmentations",
    "merge": "merge_with_consensus",
}


class _TrackerVariant(NamedTuple):
    """One timed way of running the tracker."""

    name: str
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    plain: bool  # the plain eager model (InferenceOptions.plain)
    legacy: bool  # one throw-away propagator per alignment


def _tracker_variants(cfg: DictConfig, amp: torch.dtype | None) -> list[_TrackerVariant]:
    """The variants to time; ``fp32-reference`` first (the others' reference)."""
    variants = [
        _TrackerVariant("fp32-reference", None, True, True),
        _TrackerVariant("fp32-reference-batched", None, True, False),
        _TrackerVariant("fp32", None, False, False),
    ]
    if amp is not None:
        variants.append(_TrackerVariant(str(cfg.amp), amp, False, False))
    return variants


def _make_tracker(
    model: PropagationModel,
    video: SyntheticVideo,
    cfg: DictConfig,
    variant: _TrackerVariant,
    spent: dict[str, float],
) -> DecoupledTracker:
    """A semi-online tracker fed partitions or the video's own detections, its stages timed
    into ``spent``."""
    config = TrackerConfig(
        mode=TrackingMode.SEMI_ONLINE,
        clip_size=cfg.clip_size,
        detect_every=cfg.detect_every,
        shorter_side=-1,
        memory=MemoryConfig(),
    )
    segmenter = (
        ListSegmenter(video.detections)
        if cfg.tracker_detections == "video"
        else PartitionSegmenter(int(cfg.segments))
    )
    kind = _LegacyPropagator if variant.legacy else Propagator
    options = InferenceOptions(autocast=variant.dtype, plain=variant.plain)
    backend = kind(model, config.memory, mem_every=config.mem_every, options=options)

    @contextlib.contextmanager
    def timer(stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent[_TIMED[stage]] += time.perf_counter() - start

    return DecoupledTracker(backend, segmenter, config, timer=timer)


@dataclass
class _TrackerRun:
    """One variant's tracker, its masks by frame index and the time spent in it."""

    variant: _TrackerVariant
    tracker: DecoupledTracker
    spent: dict[str, float]
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def warm_up(self, frames: np.ndarray) -> None:
        """Track ``frames`` untimed, then forget them."""
        with torch.inference_mode():
            list(self.tracker.stream((f"{t:05d}", f) for t, f in enumerate(frames)))
        self.tracker.reset()
        self.spent.clear()

    def timed(self, call: Callable[[], list], device: torch.device) -> None:
        """Time one tracker call and keep the masks it returns."""
        start = time.perf_counter()
        with torch.inference_mode():
            results = call()
        _sync(device)
        self.seconds += time.perf_counter() - start
        for r in results:
            self.outputs[r.index] = r.mask


def _track_interleaved(
    runs: list[_TrackerRun], frames: np.ndarray, cfg: DictConfig, device: torch.device
) -> None:
    """Feed every run the frames one at a time, rotating which variant goes first."""
    # Warm-up (untimed): one clip per variant, so that first-call costs (oneDNN primitive
    # creation, the inference copy) are not charged to whichever variant runs first.
    for run in runs:
        run.warm_up(frames[: cfg.clip_size + 1])
    for t, frame in enumerate(frames):
        for run in runs[t % len(runs) :] + runs[: t % len(runs)]:
            run.timed(lambda tr=run.tracker, t=t, f=frame: tr.step(f"{t:05d}", f), device)
    for run in runs:
        run.timed(run.tracker.finish, device)


def _tracker_row(run: _TrackerRun, preset: str, source: str, cfg: DictConfig, frame: str) -> dict:
    """The timing row of one variant, with the time shares of the hooked calls."""
    total = run.seconds
    parts = {k: run.spent[k] for k in _TIMED.values()}
    parts["other"] = total - sum(parts.values())
    frames = len(run.outputs)
    return {
        "suite": "tracker",
        "preset": preset,
        "weights": source,
        "variant": run.variant.name,
        "precision": "fp32" if run.variant.dtype is None else str(cfg.amp),
        "frame": frame,
        "frames": frames,
        "fps": frames / total if total else float("nan"),
        "ms_per_frame": 1000 * total / max(frames, 1),
        "objects_created": run.tracker.registry.next_id - 1,
        "seconds": parts,
        "share": {k: v / total for k, v in parts.items()} if total else {},
    }


def _tracker_check(
    run: _TrackerRun, reference: _TrackerRun, device: torch.device, source: str
) -> dict[str, Any]:
    """One variant's masks against the reference variant's."""
    name = run.variant.name
    # Bit-identical on the CPU; cuDNN may pick other algorithms for the batched decoder's
    # larger batch, so on a GPU the batched alignment is an fp32 variant like the others.
    identical = name == "fp32-reference-batched" and device.type == "cpu"
    kind = "identical" if identical else _kind(run.variant.dtype)
    comparison = MaskComparison(name, reference.variant.name, kind)
    for index, mask in reference.outputs.items():
        comparison.add(run.outputs[index], mask, None)
    check = comparison.result()
    if source == "random" and kind != "identical" and not check["passed"]:
        # Tracker outputs carry no probabilities to find decisive pixels with; a random
        # network's near-uniform probabilities make any float reordering flip ties, and
        # merging then amplifies them.
        check["passed"] = None
        check["rule"] = "inconclusive: random weights (" + check["rule"] + " not met)"
    return check


def bench_tracker(
    preset: str, cfg: DictConfig, device: torch.device, amp: torch.dtype | None
) -> tuple[list[dict], list[dict]]:
    """Semi-online tracking with precomputed (partition) detections, variants interleaved."""
    height = int(cfg.tracker_size or cfg.size)
    width = _width(height)
    video = generate_video(
        SyntheticVideoConfig(
            num_frames=cfg.tracker_frames, height=height, width=width, num_objects=cfg.objects
        ),
        seed=cfg.seed,
    )
    model, source = _model(preset, device, cfg.seed, cfg.weights)
    runs = []
    for variant in _tracker_variants(cfg, amp):
        spent: dict[str, float] = defaultdict(float)
        runs.append(_TrackerRun(variant, _make_tracker(model, video, cfg, variant, spent), spent))
    _track_interleaved(runs, video.frames, cfg, device)
    reference = runs[0]
    rows = [_tracker_row(run, preset, source, cfg, f"{height}x{width}") for run in runs]
    checks = [
        {
            "suite": "tracker",
            "preset": preset,
            "weights": source,
            **_tracker_check(run, reference, device, source),
        }
        for run in runs[1:]
    ]
    return rows, checks
